-- name: insert_jobs
-- Rows come in as one JSON array of objects keyed by column name: one parameter for any
-- number of rows, and far cheaper to build in Python than one array per column.
insert into jobs (
    job_id, version, org_id, app_version_id, test_path, target, platform, device,
    os_version, priority, build, repo, commit, tags, run_id, max_attempts, timeout_s,
    queue_timeout_s, supersede_key, rerun_of, status, group_id, device_id, agent_id,
    attempts, flaky, failure_kind, last_error, output, tests, not_before, submitted_at,
    grouped_at, assigned_at, started_at, finished_at, duration_s, updated_at
)
select job_id, version, org_id, app_version_id, test_path, target, platform, device,
       os_version, priority, build, repo, commit, tags, run_id, max_attempts, timeout_s,
       queue_timeout_s, supersede_key, rerun_of, status, group_id, device_id, agent_id,
       attempts, flaky, failure_kind, last_error, output, tests, not_before, submitted_at,
       grouped_at, assigned_at, started_at, finished_at, duration_s, updated_at
from json_populate_recordset(null::jobs, %(rows)s::json);

-- name: update_jobs
-- Only the columns a job's later events change.
update jobs set
    version = j.version,
    status = j.status,
    group_id = j.group_id,
    device_id = j.device_id,
    agent_id = j.agent_id,
    attempts = j.attempts,
    flaky = j.flaky,
    failure_kind = j.failure_kind,
    last_error = j.last_error,
    output = j.output,
    tests = j.tests,
    not_before = j.not_before,
    grouped_at = j.grouped_at,
    assigned_at = j.assigned_at,
    started_at = j.started_at,
    finished_at = j.finished_at,
    duration_s = j.duration_s,
    updated_at = j.updated_at
from json_populate_recordset(null::jobs, %(rows)s::json) as j
where jobs.job_id = j.job_id;

-- name: upsert_devices
insert into devices (
    device_id, version, name, target, agent_id, capabilities, state, current_group,
    installed_apps, installs, registered_at, last_seen_at, active_jobs, attempts, busy_s,
    retired_at, lease_expiries, installed_by_org
)
select device_id, version, name, target, agent_id, capabilities, state, current_group,
       installed_apps, installs, registered_at, last_seen_at, active_jobs, attempts, busy_s,
       retired_at, lease_expiries, installed_by_org
from json_populate_recordset(null::devices, %(rows)s::json)
on conflict (device_id) do update set
    version = excluded.version,
    name = excluded.name,
    target = excluded.target,
    agent_id = excluded.agent_id,
    capabilities = excluded.capabilities,
    state = excluded.state,
    current_group = excluded.current_group,
    installed_apps = excluded.installed_apps,
    installed_by_org = excluded.installed_by_org,
    installs = excluded.installs,
    last_seen_at = excluded.last_seen_at,
    active_jobs = excluded.active_jobs,
    attempts = excluded.attempts,
    busy_s = excluded.busy_s,
    retired_at = excluded.retired_at,
    lease_expiries = excluded.lease_expiries;

-- name: create_groups
insert into groups (
    group_id, org_id, strategy, group_key, app_version_id, target, created_at, updated_at
)
select group_id, org_id, strategy, group_key, app_version_id, target, created_at, created_at
from json_populate_recordset(null::groups, %(rows)s::json)
on conflict (group_id) do update set
    -- The same in whatever order jobs were grouped (see NewGroup in projections/fold.py).
    created_at = least(groups.created_at, excluded.created_at),
    app_version_id = case
        when groups.app_version_id = excluded.app_version_id then groups.app_version_id
    end;

-- name: add_to_groups
-- Each row holds what a batch adds to a group's counters.
update groups set
    queued = groups.queued + d.queued,
    assigned = groups.assigned + d.assigned,
    running = groups.running + d.running,
    passed = groups.passed + d.passed,
    failed = groups.failed + d.failed,
    errored = groups.errored + d.errored,
    cancelled = groups.cancelled + d.cancelled,
    timed_out = groups.timed_out + d.timed_out,
    installs = groups.installs + d.installs,
    attempts = groups.attempts + d.attempts,
    updated_at = greatest(groups.updated_at, d.updated_at)
from json_populate_recordset(null::groups, %(rows)s::json) as d
where groups.group_id = d.group_id;

-- name: add_to_queue_depth
-- Each row's depth is what a batch adds to it.
insert into queue_depth (org_id, target, status, depth)
select org_id, target, status, depth
from json_populate_recordset(null::queue_depth, %(rows)s::json)
on conflict (org_id, target, status) do update
set depth = queue_depth.depth + excluded.depth;

-- name: drop_empty_queue_depth
-- A row exists while a job has that status, whatever the batch sizes were.
delete from queue_depth where depth = 0;
