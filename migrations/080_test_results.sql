-- Results a team can act on. A job's result events now carry each test case of its spec
-- (CaseResult in ledger/events.py); the job row keeps those of its last finished attempt.
-- An infrastructure failure that is not retried ends the job 'error' instead of 'failed',
-- so CI can tell "our device broke" from "your test broke"; groups count such jobs as
-- errored. Jobs record the key a newer run may supersede them by and the run they rerun.
-- Views for auditors: every test case of every attempt (test_results), and per test the
-- runs, passes, failures, flaky passes and flake rate (test_history, flaky_tests).

alter table jobs
    add column tests         jsonb,
    add column supersede_key text,
    add column rerun_of      uuid;

create index jobs_by_supersede_key on jobs (org_id, supersede_key)
    where supersede_key is not null;

alter table groups
    add column errored integer not null default 0;

-- Jobs that ended on an infrastructure failure before this migration move to 'error',
-- as a rebuild of the projection from the ledger would move them: their counts first,
-- then the rows.
update groups g
set failed = g.failed - moved.jobs, errored = g.errored + moved.jobs
from (
    select group_id, count(*)::integer as jobs
    from jobs
    where status = 'failed' and failure_kind = 'infrastructure' and group_id is not null
    group by group_id
) moved
where g.group_id = moved.group_id;

insert into queue_depth (org_id, target, status, depth)
select j.org_id, j.target, moved.status, moved.sign * count(*)::integer
from jobs j
cross join (values ('error', 1), ('failed', -1)) as moved (status, sign)
where j.status = 'failed' and j.failure_kind = 'infrastructure'
group by j.org_id, j.target, moved.status, moved.sign
on conflict (org_id, target, status) do update set depth = queue_depth.depth + excluded.depth;

update jobs set status = 'error' where status = 'failed' and failure_kind = 'infrastructure';

delete from queue_depth where depth = 0;

-- group_summary (migrations/012) with the errored count beside failed.
drop view group_summary;
create view group_summary as
select g.group_id,
       g.org_id,
       g.strategy,
       g.group_key,
       g.app_version_id,
       g.target,
       g.queued + g.assigned + g.running + g.passed + g.failed + g.errored + g.cancelled
           + g.timed_out                              as jobs,
       g.queued,
       g.assigned,
       g.running,
       g.passed,
       g.failed,
       g.errored,
       g.cancelled,
       g.timed_out,
       g.attempts,
       g.installs,
       g.queued + g.assigned + g.running = 0          as done,
       g.created_at,
       g.updated_at
from groups g;

-- One row per test case per attempt, from the jobs' JobPassed and JobFailed events.
-- test_title joins the describe titles and the test's own with ' > '.
create view test_results as
select j.org_id,
       e.stream_id                                    as job_id,
       j.run_id,
       j.status                                       as job_status,
       (e.data ->> 'attempt')::integer                as attempt,
       c ->> 'file'                                   as test_file,
       (select string_agg(t.title, ' > ' order by t.n)
        from jsonb_array_elements_text(c -> 'title_path') with ordinality as t (title, n))
                                                      as test_title,
       c ->> 'status'                                 as status,
       (c ->> 'duration_s')::float8                   as duration_s,
       (c ->> 'retry')::integer                       as retry,
       c -> 'error' ->> 'message'                     as error,
       c -> 'error' ->> 'file'                        as error_file,
       (c -> 'error' ->> 'line')::integer             as error_line,
       e.recorded_at
from events e
join jobs j on j.job_id = e.stream_id
cross join lateral jsonb_array_elements(e.data -> 'tests') as c
where e.type in ('JobPassed', 'JobFailed');

-- Per organisation, test file and test title, over the jobs that ended: a job is one run
-- of each of its tests, judged by the test's result in the job's last attempt. A flaky
-- pass is a run that passed after failing: on a job retry, or on the test runner's own
-- retry within an attempt. Skipped tests are not runs.
create view test_history as
with per_job as (
    select org_id, test_file, test_title, job_id,
           (array_agg(status order by attempt desc))[1]                  as final_status,
           bool_or(status in ('failed', 'flaky'))                        as failed_once,
           max(recorded_at) filter (where status in ('failed', 'flaky')) as last_failure
    from test_results
    where status <> 'skipped'
      and job_status in ('passed', 'failed', 'error', 'cancelled', 'timed_out')
    group by org_id, test_file, test_title, job_id
),
durations as (
    select org_id, test_file, test_title,
           percentile_cont(0.5) within group (order by duration_s) as median_duration_s
    from test_results
    where status <> 'skipped'
    group by org_id, test_file, test_title
)
select p.org_id,
       p.test_file,
       p.test_title,
       count(*)::integer                                                         as runs,
       (count(*) filter (where p.final_status in ('passed', 'flaky')))::integer  as passes,
       (count(*) filter (where p.final_status = 'failed'))::integer              as failures,
       (count(*) filter (where p.final_status = 'flaky'
                            or (p.final_status = 'passed' and p.failed_once)))::integer
                                                                                 as flaky_passes,
       (count(*) filter (where p.final_status = 'flaky'
                            or (p.final_status = 'passed' and p.failed_once)))::float8
           / count(*)                                                            as flake_rate,
       max(p.last_failure)                                                       as last_failure,
       d.median_duration_s
from per_job p
join durations d using (org_id, test_file, test_title)
group by p.org_id, p.test_file, p.test_title, d.median_duration_s;

-- The tests of test_history that passed after failing at least once.
create view flaky_tests as
select * from test_history where flaky_passes > 0;
