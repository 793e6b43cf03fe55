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
       max_attempts, timeout_s, supersede_key, rerun_of, submitted_at, started_at, finished_at,
       duration_s, tests
from jobs
where job_id = %(job_id)s and (%(org_id)s::text is null or org_id = %(org_id)s);

-- name: jobs_by_id
select job_id, org_id, app_version_id, test_path, target, platform, device, os_version,
       priority, status, run_id, group_id,
       device_id, attempts, flaky, failure_kind, last_error, build, repo, commit, tags,
       max_attempts, timeout_s, supersede_key, rerun_of, submitted_at, started_at, finished_at,
       duration_s, tests
from jobs
where job_id = any(%(job_ids)s::uuid[]);

-- name: jobs_of_run
select job_id, org_id, app_version_id, test_path, target, platform, device, os_version,
       priority, status, run_id, group_id,
       device_id, attempts, flaky, failure_kind, last_error, build, repo, commit, tags,
       max_attempts, timeout_s, supersede_key, rerun_of, submitted_at, started_at, finished_at,
       duration_s, tests
from jobs
where run_id = %(run_id)s and (%(org_id)s::text is null or org_id = %(org_id)s)
order by submitted_at, job_id;

-- name: jobs_page
-- Newest first, keyset-paginated on (submitted_at, job_id): the index jobs_by_org serves it.
select job_id, org_id, app_version_id, test_path, target, platform, device, os_version,
       priority, status, run_id, group_id,
       device_id, attempts, flaky, failure_kind, last_error, build, repo, commit, tags,
       max_attempts, timeout_s, supersede_key, rerun_of, submitted_at, started_at, finished_at,
       duration_s, tests
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
       assigned, running, passed, failed, errored, cancelled, timed_out, installs, updated_at
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
where duration_s is not null and status in ('passed', 'failed', 'error', 'timed_out')
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

-- name: superseded_jobs
-- The unfinished jobs of the organisation's runs other than this one with the same
-- supersede key, submitted before it (index jobs_by_supersede_key).
select job_id, org_id, status, run_id
from jobs
where org_id = %(org_id)s
  and supersede_key = %(supersede_key)s
  and run_id is distinct from %(run_id)s
  and submitted_at < %(before)s
  and status in ('submitted', 'grouped', 'retrying', 'assigned', 'running')
order by submitted_at, job_id;

-- name: test_history
-- The auditor view test_history (migrations/080), flaky tests only unless asked for all.
select org_id, test_file, test_title, runs, passes, failures, flaky_passes, flake_rate,
       last_failure, median_duration_s
from test_history
where (%(org_id)s::text is null or org_id = %(org_id)s)
  and (not %(flaky_only)s or flaky_passes > 0)
order by flake_rate desc, runs desc, test_file, test_title
limit %(limit)s;

-- name: job_waits
-- What holds each of these waiting jobs (http_api/waiting.py), from open_jobs and the
-- runner's live state (migrations/040_open_jobs.sql): its retry backoff; why no live
-- slot can serve it, if none can; how many live slots can, and how many of those hold
-- jobs now; how many jobs a slot of its target would take before it (the queue view);
-- its organisation's slot limit and use.
select o.job_id,
       o.target,
       o.not_before,
       o.not_before is not null and o.not_before > now() as backing_off,
       unschedulable_v1(o) as unschedulable,
       (select count(*)
        from agent_slots s join agent_leases l on l.agent_id = s.agent_id
        where l.expires_at > now() and s.target = o.target
          and slot_serves_v1(s.platform, s.device, s.os_version,
                             o.platform, o.device, o.os_version))::integer as slots,
       (select count(distinct h.device_id)
        from open_jobs h join agent_slots s on s.device_id = h.device_id
        where s.target = o.target
          and slot_serves_v1(s.platform, s.device, s.os_version,
                             o.platform, o.device, o.os_version))::integer as busy_slots,
       (select q.claim_rank - 1 from queue q where q.job_id = o.job_id)::integer as jobs_ahead,
       lim.max_slots as org_max_slots,
       (select count(distinct h.device_id) from open_jobs h
        where h.org_id = o.org_id and h.device_id is not null)::integer as org_slots_used
from open_jobs o
left join org_limits lim on lim.org_id = o.org_id
where o.job_id = any(%(job_ids)s::uuid[]) and o.device_id is null;

