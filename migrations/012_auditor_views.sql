-- Views for auditors: plain SQL over the ledger and the projection, with stable names and
-- columns, so that questions about what happened can be answered with psql alone (plus
-- the one index the queue view needs). The README's "SQL for auditors" section has a
-- query for each.

-- Every event of a job, with who recorded it. Filter on job_id and order by version.
create view job_timeline as
select e.stream_id                        as job_id,
       j.org_id,
       e.version,
       e.position,
       e.type,
       e.recorded_at,
       e.metadata ->> 'actor'             as actor,
       e.metadata ->> 'request_id'        as request_id,
       e.metadata ->> 'correlation_id'    as correlation_id,
       e.data
from events e
join jobs j on j.job_id = e.stream_id;

-- The queue view reads only the jobs that wait, however long the history grows.
create index jobs_waiting on jobs (target) where status in ('submitted', 'grouped', 'retrying');

-- What waits, per target, in the order a device slot of that target would take it if it
-- had no app installed: effective priority (priority plus the runner's default ageing of
-- one point per 300 seconds waited), then age. A slot prefers groups whose app it already
-- has, and runners configured with another ageing rate order accordingly.
create view queue as
select row_number() over (
           partition by j.target
           order by j.priority + extract(epoch from now() - j.submitted_at)::float8 / 300 desc,
                    j.submitted_at, j.job_id
       )                                                          as claim_rank,
       j.target,
       j.job_id,
       j.org_id,
       j.status,
       j.group_id,
       g.group_key,
       j.app_version_id,
       j.test_path,
       j.priority,
       j.priority + extract(epoch from now() - j.submitted_at)::float8 / 300
                                                                  as effective_priority,
       j.attempts,
       j.submitted_at,
       extract(epoch from now() - j.submitted_at)::float8         as waited_s,
       j.not_before
from jobs j
left join groups g on g.group_id = j.group_id
where j.status in ('submitted', 'grouped', 'retrying');

-- One row per group: its jobs by status, attempts run and installs done.
create view group_summary as
select g.group_id,
       g.org_id,
       g.strategy,
       g.group_key,
       g.app_version_id,
       g.target,
       g.queued + g.assigned + g.running + g.passed + g.failed + g.cancelled + g.timed_out
                                                      as jobs,
       g.queued,
       g.assigned,
       g.running,
       g.passed,
       g.failed,
       g.cancelled,
       g.timed_out,
       g.attempts,
       g.installs,
       g.queued + g.assigned + g.running = 0          as done,
       g.created_at,
       g.updated_at
from groups g;

-- One row per device: how much of its registered time it spent running tests (the sum of
-- the durations its runs reported), and what it ran and installed.
create view device_utilisation as
select d.device_id,
       d.name,
       d.target,
       d.agent_id,
       d.state,
       d.current_group,
       d.active_jobs,
       d.attempts,
       d.installs,
       cardinality(d.installed_apps)                                        as apps_installed,
       d.busy_s,
       extract(epoch from coalesce(d.retired_at, now()) - d.registered_at)::float8
                                                                            as registered_s,
       d.busy_s / nullif(
           extract(epoch from coalesce(d.retired_at, now()) - d.registered_at)::float8, 0
       )                                                                    as utilisation,
       d.registered_at,
       d.last_seen_at,
       d.retired_at
from devices d;

-- Installs done against the installs a per-job install would have needed (one per attempt
-- run), per organisation, app version and target.
create view install_savings as
select g.org_id,
       g.app_version_id,
       g.target,
       count(*)                                                   as groups,
       sum(g.attempts)                                            as per_job_installs,
       sum(g.installs)                                            as installs,
       sum(g.attempts) - sum(g.installs)                          as installs_saved,
       (sum(g.attempts) - sum(g.installs))::float8 / nullif(sum(g.attempts), 0)
                                                                  as saved_fraction
from groups g
group by g.org_id, g.app_version_id, g.target;
