-- The HTTP API's SQL. Reads go to the projection tables (jobs, groups, devices,
-- queue_depth, projector_checkpoints) and to the API's own tables; events are read only
-- through ledger.store.

-- name: token_org
select token_id, org_id, scopes
from api_tokens
where token_hash = %(token_hash)s and revoked_at is null;

-- name: create_token
insert into api_tokens (token_id, org_id, token_hash, label, scopes)
values (%(token_id)s, %(org_id)s, %(token_hash)s, %(label)s, %(scopes)s);

-- name: list_tokens
select token_id, org_id, scopes, label, created_at, revoked_at
from api_tokens
where %(org_id)s::text is null or org_id = %(org_id)s
order by org_id, created_at, token_id;

-- name: revoke_token
-- The notification tells every API process to forget the tokens it trusts (auth.py), so
-- the revocation holds on all of them as soon as this commits.
with revoked as (
    update api_tokens set revoked_at = coalesce(revoked_at, now())
    where token_id = %(token_id)s
    returning token_id, revoked_at
)
select revoked.token_id, revoked.revoked_at, pg_notify(%(channel)s, revoked.token_id::text)
from revoked;

-- name: submit
-- migrations/040_open_jobs.sql
select duplicate, claimed, recorded_at
from submit_jobs_v2(
    check_duplicate => %(check_duplicate)s,
    org => %(org_id)s,
    app_version => %(app_version_id)s,
    test => %(test_path)s,
    target_type => %(target)s,
    submission => %(submission_id)s,
    request_key => %(idempotency_key)s,
    body_hash => %(request_hash)s,
    run => %(run_id)s,
    new_jobs => %(job_ids)s,
    events => %(events)s
);

-- name: unschedulable
-- migrations/040_open_jobs.sql
select o.job_id, unschedulable_v1(o)
from open_jobs o
where o.job_id = any(%(job_ids)s::uuid[]) and o.device_id is null;

-- name: submission_by_key
select request_hash, run_id, job_ids
from api_submissions
where org_id = %(org_id)s and idempotency_key = %(idempotency_key)s;

-- name: submission_of_run
select org_id, job_ids from api_submissions where run_id = %(run_id)s;

-- name: job
select job_id, org_id, app_version_id, test_path, target, platform, device, os_version,
       priority, status, run_id, group_id,
       device_id, attempts, flaky, failure_kind, last_error, build, repo, commit, tags,
       max_attempts, timeout_s, submitted_at, started_at, finished_at, duration_s
from jobs
where job_id = %(job_id)s and (%(org_id)s::text is null or org_id = %(org_id)s);

-- name: jobs_by_id
select job_id, org_id, app_version_id, test_path, target, platform, device, os_version,
       priority, status, run_id, group_id,
       device_id, attempts, flaky, failure_kind, last_error, build, repo, commit, tags,
       max_attempts, timeout_s, submitted_at, started_at, finished_at, duration_s
from jobs
where job_id = any(%(job_ids)s::uuid[]);

-- name: jobs_of_run
select job_id, org_id, app_version_id, test_path, target, platform, device, os_version,
       priority, status, run_id, group_id,
       device_id, attempts, flaky, failure_kind, last_error, build, repo, commit, tags,
       max_attempts, timeout_s, submitted_at, started_at, finished_at, duration_s
from jobs
where run_id = %(run_id)s and (%(org_id)s::text is null or org_id = %(org_id)s)
order by submitted_at, job_id;

-- name: jobs_page
-- Newest first, keyset-paginated on (submitted_at, job_id): the index jobs_by_org serves it.
select job_id, org_id, app_version_id, test_path, target, platform, device, os_version,
       priority, status, run_id, group_id,
       device_id, attempts, flaky, failure_kind, last_error, build, repo, commit, tags,
       max_attempts, timeout_s, submitted_at, started_at, finished_at, duration_s
from jobs
where (%(org_id)s::text is null or org_id = %(org_id)s)
  and (%(status)s::text is null or status = %(status)s)
  and (%(app_version_id)s::text is null or app_version_id = %(app_version_id)s)
  and (%(run_id)s::uuid is null or run_id = %(run_id)s)
  and (%(after_at)s::timestamptz is null
       or (submitted_at, job_id) < (%(after_at)s::timestamptz, %(after_id)s::uuid))
order by submitted_at desc, job_id desc
limit %(limit)s;

-- name: groups
select group_id, org_id, strategy, group_key, app_version_id, target, created_at, queued,
       assigned, running, passed, failed, cancelled, timed_out, installs, updated_at
from groups
where (%(org_id)s::text is null or org_id = %(org_id)s)
order by updated_at desc, group_id
limit %(limit)s;

-- name: devices
-- Devices are the operator's fleet, shared by every organisation; the group a device
-- works on and the apps installed on it are shown only to the organisation that owns
-- them (migrations/061_device_installs_by_org.sql).
select d.device_id, d.name, d.target, d.agent_id, d.capabilities, d.state,
       case when %(org_id)s::text is null or g.org_id = %(org_id)s
            then d.current_group end as current_group,
       case when %(org_id)s::text is null then d.installed_apps
            else array(
                select installed.app
                from jsonb_array_elements_text(d.installed_by_org -> %(org_id)s::text)
                     with ordinality as installed (app, n)
                order by installed.n
            )
       end as installed_apps,
       d.installs, d.registered_at, d.last_seen_at
from devices d
left join groups g on g.group_id = d.current_group
order by d.target, d.name, d.device_id;

-- name: status_counts
-- queue_depth counts the jobs of every status, finished ones included.
select status, sum(depth)::integer as jobs
from queue_depth
where (%(org_id)s::text is null or org_id = %(org_id)s)
group by status;

-- name: queue_by_target
select target, status, sum(depth)::integer as depth
from queue_depth
where (%(org_id)s::text is null or org_id = %(org_id)s)
  and status in ('submitted', 'grouped', 'retrying', 'assigned', 'running')
  and depth > 0
group by target, status
order by target, status;

-- name: read_model_version
-- Changes whenever any projector applies a batch; waiters compare it to know whether
-- the projections moved on.
select coalesce(
    string_agg(name || '@' || txid::text || ':' || position::text, ',' order by name), ''
)
from projector_checkpoints;

-- name: queue_depth_all
select org_id, target, status, depth
from queue_depth
where %(org_id)s::text is null or org_id = %(org_id)s;

-- name: job_durations
-- Finished jobs' run times in histogram buckets: bucket i counts durations in
-- [bounds[i], bounds[i+1]), bucket 0 those below the first bound.
select target, status, width_bucket(duration_s, %(bounds)s::float8[]) as bucket,
       count(*)::bigint as jobs, sum(duration_s) as total_s
from jobs
where duration_s is not null and status in ('passed', 'failed', 'timed_out')
  and (%(org_id)s::text is null or org_id = %(org_id)s)
group by target, status, bucket;

-- name: device_states
select target, state, count(*)::integer as devices, sum(lease_expiries)::bigint
from devices
group by target, state;

-- name: install_savings
-- Installs done, and installs saved by grouping (one install per job would have needed
-- one per attempt), from the projector's auditor view.
select target, coalesce(sum(installs), 0)::bigint, coalesce(sum(installs_saved), 0)::bigint
from install_savings
group by target;

-- name: projector_lag
-- One row per projector: name, events behind, seconds behind, whether one is running.
select name, events_behind, seconds_behind, running from projector_lag order by name;
