-- name: lock_checkpoint
-- Every batch's transaction starts here. The row lock makes whoever applies batches under
-- this name (a second projector, a direct catch-up, a rebuild swapping its tables in) take
-- turns, and each turn sees the checkpoint the previous one committed: a batch read from
-- any other checkpoint is dropped and read again.
select txid::text::bigint, position
from projector_checkpoints
where name = %(name)s
for update;

-- name: save_checkpoint
update projector_checkpoints
set txid = %(txid)s::text::xid8,
    position = %(position)s,
    events_applied = events_applied + %(applied)s,
    updated_at = now()
where name = %(name)s;

-- name: load_jobs
select job_id, version, org_id, app_version_id, test_path, target, platform, device,
       os_version, priority, build, repo, commit, tags, run_id, max_attempts, timeout_s,
       queue_timeout_s, supersede_key, rerun_of, status, group_id, device_id, agent_id,
       attempts, flaky, failure_kind, last_error, output, tests, not_before, submitted_at,
       grouped_at, assigned_at, started_at, finished_at, duration_s, updated_at
from jobs
where job_id = any(%(job_ids)b::uuid[]);

-- name: load_devices
select device_id, version, name, target, agent_id, capabilities, state, current_group,
       installed_apps, installs, registered_at, last_seen_at, active_jobs, attempts, busy_s,
       retired_at, installed_by_org, lease_expiries
from devices
where device_id = any(%(device_ids)b::uuid[]);
