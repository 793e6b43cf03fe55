-- The dashboard's reads of the projections (http_api/dashboard_views.py). With a token,
-- each is limited to the token's organisation: a device shows only if the organisation
-- used it, and only the app versions the organisation has.

-- name: runs
-- Newest first: each run's jobs by status, when it began and ended, what it tested.
with by_status as (
    select run_id, status, count(*)::integer as jobs, min(org_id) as org_id,
           min(submitted_at) as submitted_at, max(finished_at) as finished_at,
           min(repo) as repo, min(commit) as commit, min(build) as build,
           min(app_version_id) as app_version_id
    from jobs
    where run_id is not null and (%(org_id)s::text is null or org_id = %(org_id)s)
    group by run_id, status
)
select run_id, min(org_id) as org_id, jsonb_object_agg(status, jobs) as counts,
       sum(jobs)::integer as jobs, min(submitted_at) as submitted_at,
       max(finished_at) as finished_at, min(repo) as repo, min(commit) as commit,
       min(build) as build, min(app_version_id) as app_version_id
from by_status
group by run_id
order by min(submitted_at) desc, run_id
limit %(limit)s;

-- name: run_window
-- When a run's jobs were submitted and last finished, and whether all have ended.
select min(submitted_at) as since, max(finished_at) as until,
       bool_and(finished_at is not null) as done,
       array_agg(job_id) as job_ids,
       array_agg(distinct group_id) filter (where group_id is not null) as group_ids
from jobs
where run_id = %(run_id)s and (%(org_id)s::text is null or org_id = %(org_id)s);

-- name: job_labels
select job_id, test_path, status, run_id
from jobs
where job_id = any(%(job_ids)s::uuid[]);

-- name: dashboard_devices
-- Slots with what they offer; with a token, only those its organisation's jobs used,
-- and of their installed apps only the organisation's own app versions.
select d.device_id, d.name, d.target, d.agent_id, d.capabilities, d.state,
       case when %(org_id)s::text is null or g.org_id = %(org_id)s
            then d.current_group end as current_group,
       case when %(org_id)s::text is null then d.installed_apps
            else array(select app from unnest(d.installed_apps) app
                       where exists (select 1 from jobs j
                                     where j.org_id = %(org_id)s
                                       and j.app_version_id = app)) end as installed_apps,
       d.registered_at, d.last_seen_at
from devices d
left join groups g on g.group_id = d.current_group
where %(org_id)s::text is null
   or exists (select 1 from jobs j where j.device_id = d.device_id and j.org_id = %(org_id)s)
   or d.device_id = any(%(also)s::uuid[])
order by d.target, d.name, d.device_id;

-- name: queue_by_profile
-- Jobs waiting for a slot, by target and the device profile they need (open_jobs,
-- migrations/040).
select target, platform, device, os_version, status, count(*)::integer as jobs
from open_jobs
where device_id is null and (%(org_id)s::text is null or org_id = %(org_id)s)
group by target, platform, device, os_version, status
order by target, platform nulls first, device nulls first, os_version nulls first, status;
