-- One claimable queue: open_jobs, kept by the ledger in the transaction of every event
-- that changes a job, and the one way a device slot takes work from it (docs/claiming.md).
--
-- Before this, jobs reached slots four ways (a standing claim fulfilled inside the
-- submit, jobs carried in a notification, jobs read back from the ledger, the jobs
-- projection), each with its own recovery. Now a job is claimable exactly while its row
-- here says so, and the row changes in the same transaction as the job's events: nothing
-- waits for the projector, and a row a claim has locked cannot be given to another.
--
-- From here on every SQL function has one definition: a function that changes later gets
-- a new versioned name and the old one is dropped (tests/test_migrate.py checks it).

drop function submit_jobs(boolean, text, text, text, text, uuid, text, bytea, uuid, uuid[],
                          uuid, jsonb, text);
drop function claim_jobs(uuid, text, text, uuid[], text, uuid, text, jsonb);
drop function stand(uuid, text, text, uuid[], text);
drop function take_standing_claim(text, text, text);
drop function begin_claim(uuid, text, uuid[]);
drop function append_events(jsonb);
drop table standing_claims;
-- Which slot holds which jobs is now open_jobs' device_id.
drop table slot_occupancy;
-- The queue lives in open_jobs now; these indexes on the jobs projection served it.
drop index jobs_queue_deadlines;
drop index jobs_queued;
drop index jobs_waiting;

-- Every job that has not ended: waiting for a slot (device_id null), or held by one. The
-- row follows the job's stream version, so a claim appends at the version it locked.
create table open_jobs (
    job_id          uuid primary key,
    version         integer          not null,
    status          text             not null,
    org_id          text             not null,
    app_version_id  text             not null,
    test_path       text             not null,
    target          text             not null,
    -- What the job needs of the device; null: anything of its target.
    platform        text,
    device          text,
    os_version      text,
    priority        smallint         not null,
    build           text,
    timeout_s       double precision,
    queue_timeout_s double precision,
    max_attempts    integer          not null,
    submitted_at    timestamptz      not null,
    group_id        uuid,
    -- Attempts assigned so far, and how many of them were handed back uncounted.
    attempt         integer          not null default 0,
    handed_back     integer          not null default 0,
    not_before      timestamptz,
    started_at      timestamptz,
    device_id       uuid,
    agent_id        text
);

create index open_jobs_claimable on open_jobs (target, group_id) where device_id is null;
create index open_jobs_held on open_jobs (device_id) where device_id is not null;
create index open_jobs_by_agent on open_jobs (agent_id) where agent_id is not null;
create index open_jobs_by_org on open_jobs (org_id) where device_id is not null;
create index open_jobs_same_test on open_jobs (org_id, app_version_id, test_path, target);
create index open_jobs_queue_deadlines on open_jobs (submitted_at)
    where queue_timeout_s is not null and started_at is null;

-- What an appended statement's job events leave each job as. The JobSubmitted of a new
-- job inserts its row; then each job's last event of the statement decides: an end
-- (a verdict with no retry after it, a cancel, a timeout) deletes the row, anything else
-- moves it to its new version and state. A job whose row becomes claimable wakes the
-- agents of its target (runner/agent.py): the NOTIFY is inside the appending
-- transaction, which costs little here because the statements that make work claimable
-- (a submit, a retry, a hand-back) are few next to results, and a submit commits without
-- waiting for the disk.
create function open_jobs_follow_v1() returns trigger
language plpgsql as $$
declare
    last record;
    woken text[] := '{}';
begin
    insert into open_jobs (job_id, version, status, org_id, app_version_id, test_path, target,
                           platform, device, os_version, priority, build, timeout_s,
                           queue_timeout_s, max_attempts, submitted_at)
    select a.stream_id, a.version, 'submitted', a.data ->> 'org_id', a.data ->> 'app_version_id',
           a.data ->> 'test_path', a.data ->> 'target', a.data ->> 'platform',
           a.data ->> 'device', a.data ->> 'os_version', (a.data ->> 'priority')::smallint,
           a.data ->> 'build', (a.data ->> 'timeout_s')::float8,
           (a.data ->> 'queue_timeout_s')::float8, (a.data ->> 'max_attempts')::integer,
           a.recorded_at
    from appended a
    where a.type = 'JobSubmitted';

    for last in
        select distinct on (a.stream_id) a.stream_id, a.version, a.type, a.data, a.recorded_at
        from appended a
        where a.type like 'Job%'
        order by a.stream_id, a.version desc
    loop
        if last.type in ('JobPassed', 'JobFailed', 'JobLeaseExpired', 'JobCancelled',
                         'JobTimedOut') then
            delete from open_jobs where job_id = last.stream_id;
            continue;
        end if;
        update open_jobs o
        set version = last.version,
            status = case last.type
                         when 'JobGrouped' then 'grouped'
                         when 'JobAssigned' then 'assigned'
                         when 'JobStarted' then 'running'
                         when 'JobRetryScheduled' then 'retrying'
                         else o.status
                     end,
            group_id = case when last.type = 'JobGrouped'
                            then (last.data ->> 'group_id')::uuid else o.group_id end,
            attempt = case when last.type = 'JobAssigned'
                           then (last.data ->> 'attempt')::integer else o.attempt end,
            handed_back = o.handed_back
                          + case when last.type = 'JobRetryScheduled'
                                      and (last.data ->> 'handed_back')::boolean
                                 then 1 else 0 end,
            not_before = case when last.type = 'JobRetryScheduled'
                              then (last.data ->> 'not_before')::timestamptz
                              else o.not_before end,
            started_at = case when last.type = 'JobStarted'
                              then last.recorded_at else o.started_at end,
            device_id = case last.type
                            when 'JobAssigned' then (last.data ->> 'device_id')::uuid
                            when 'JobRetryScheduled' then null
                            else o.device_id
                        end,
            agent_id = case last.type
                           when 'JobAssigned' then last.data ->> 'agent_id'
                           when 'JobRetryScheduled' then null
                           else o.agent_id
                       end
        where o.job_id = last.stream_id;
        if last.type in ('JobGrouped', 'JobRetryScheduled') then
            woken := woken || (select o.target from open_jobs o where o.job_id = last.stream_id);
        end if;
    end loop;

    for last in select distinct t as target from unnest(woken) t loop
        perform pg_notify('qgjob_queue', last.target);
    end loop;
    return null;
end;
$$;

create trigger events_keep_open_jobs
    after insert on events
    referencing new table as appended
    for each statement execute function open_jobs_follow_v1();

-- The ledger's one way to append (ledger/store.py): any number of events on any number
-- of streams, in one statement, all or nothing. Each event is an object {"stream_id",
-- "expected_version", "nth", "type", "data", "metadata"}, *nth* its place among the
-- write's events on that stream (1, 2, ...).
--
-- It first locks the open_jobs rows of the streams it appends to, in job id order. The
-- trigger above updates those rows after the insert, and a claim locks them before its
-- insert; without this, a cancel inserting its event while a claim holds the row would
-- wait for the claim's row as the claim waits for the cancel's version: a deadlock.
-- Taking the rows first, in one order, makes the later writer wait, then lose cleanly
-- on the version the first one took.
create function append_events_v2(events jsonb)
returns table ("position" bigint, stream_id uuid, version integer, recorded_at timestamptz)
language plpgsql as $$
-- The result's columns are named as the table's, which the insert means.
#variable_conflict use_column
begin
    perform 1
    from open_jobs o
    where o.job_id in (select (e ->> 'stream_id')::uuid from jsonb_array_elements(events) e)
    order by o.job_id
    for update;

    return query
    insert into events (stream_id, version, type, data, metadata)
    select w.stream_id,
           case when w.expected_version = 0 then 0
                else events_expect_version(w.stream_id, w.expected_version)
           end + w.nth,
           w.type, w.data, w.metadata
    from rows from (
             jsonb_to_recordset(events) as (stream_id uuid, expected_version integer,
                                            nth integer, type text, data jsonb, metadata jsonb)
         ) with ordinality as w(stream_id, expected_version, nth, type, data, metadata, ord)
    order by w.ord
    returning events.position, events.stream_id, events.version, events.recorded_at;
end;
$$;

-- Whether a slot offering these capabilities serves a job needing those: every need the
-- job states is met (a null need is none). The device model compares without case; the
-- OS version is a prefix by whole components, so "14" matches "14" and "14.1", not "141".
create function slot_serves_v1(
    slot_platform text, slot_device text, slot_os_version text,
    need_platform text, need_device text, need_os_version text
) returns boolean
language sql immutable as $$
    select (need_platform is null or need_platform = slot_platform)
       and (need_device is null or lower(need_device) = lower(slot_device))
       and (need_os_version is null or slot_os_version = need_os_version
            or starts_with(slot_os_version, need_os_version || '.'))
$$;

-- A live agent's slots with what they offer, to size batches and to tell a job that no
-- slot can serve.
alter table agent_slots
    add column platform text,
    add column device text,
    add column os_version text;

-- A submit in one statement (http_api/submit.py): its two checks, then its jobs' events.
--
-- `duplicate`: an identical job still open, which a submit without `force` answers with
-- (asked for single jobs only). `claimed`: the request's Idempotency-Key (or suite)
-- recorded for this request, with the jobs it answers with; the insert blocks while a
-- concurrent request with the same key is uncommitted, then inserts nothing if that
-- request committed, and the caller answers with that request's jobs. A request with
-- neither key nor suite has nothing to claim. The events are appended only when the
-- request was claimed and has no duplicate; `recorded_at` then holds their times.
--
-- The commit does not wait for its WAL flush: the caller waits for it afterwards, so
-- devices may start the jobs a moment before the answer goes out (http_api/submit.py).
create function submit_jobs_v2(
    check_duplicate boolean,
    org text,
    app_version text,
    test text,
    target_type text,
    submission uuid,
    request_key text,
    body_hash bytea,
    run uuid,
    new_jobs uuid[],
    -- The jobs' events, as append_events_v2 takes them.
    events jsonb,
    out duplicate uuid,
    out claimed boolean,
    out recorded_at timestamptz[]
)
language plpgsql as $$
begin
    perform set_config('synchronous_commit', 'off', true);
    if check_duplicate then
        select o.job_id into duplicate
        from open_jobs o
        where o.org_id = org
          and o.app_version_id = app_version
          and o.test_path = test
          and o.target = target_type
        order by o.submitted_at
        limit 1;
    end if;
    claimed := request_key is null and run is null;
    if not claimed then
        insert into api_submissions
            (submission_id, org_id, idempotency_key, request_hash, run_id, job_ids)
        values (submission, org, request_key, body_hash, run,
                case when duplicate is null then new_jobs else array[duplicate] end)
        on conflict (org_id, idempotency_key) do nothing;
        claimed := found;
    end if;
    if claimed and duplicate is null then
        select array_agg(a.recorded_at order by a.position) into recorded_at
        from append_events_v2(events) as a;
        perform pg_notify('qgjob_events', '');
    end if;
end;
$$;

-- Why no slot can take a waiting job, or null when some live slot serves it.
create function unschedulable_v1(job open_jobs) returns text
language sql stable as $$
    select case when not exists (
                    select 1
                    from agent_slots s
                    join agent_leases l on l.agent_id = s.agent_id
                    where l.expires_at > now()
                      and s.target = job.target
                      and slot_serves_v1(s.platform, s.device, s.os_version,
                                         job.platform, job.device, job.os_version))
                then 'no live ' || job.target || ' slot'
                     || coalesce(' offers ' || nullif(concat_ws(', ',
                                     'platform ' || job.platform,
                                     'device ' || job.device,
                                     'OS version ' || job.os_version), ''),
                                 ' is registered')
           end
$$;

-- Jobs open when this migration runs, rebuilt from their streams.
insert into open_jobs (job_id, version, status, org_id, app_version_id, test_path, target,
                       priority, build, timeout_s, queue_timeout_s, max_attempts,
                       submitted_at, group_id, attempt, handed_back, not_before, started_at,
                       device_id, agent_id)
select s.stream_id, last.version,
       case last.type
           when 'JobSubmitted' then 'submitted'
           when 'JobGrouped' then 'grouped'
           when 'JobAssigned' then 'assigned'
           when 'JobStarted' then 'running'
           else 'retrying'
       end,
       s.data ->> 'org_id', s.data ->> 'app_version_id', s.data ->> 'test_path',
       s.data ->> 'target', (s.data ->> 'priority')::smallint, s.data ->> 'build',
       (s.data ->> 'timeout_s')::float8, (s.data ->> 'queue_timeout_s')::float8,
       (s.data ->> 'max_attempts')::integer, s.recorded_at,
       (select (g.data ->> 'group_id')::uuid from events g
        where g.stream_id = s.stream_id and g.type = 'JobGrouped'),
       coalesce((select max((e.data ->> 'attempt')::integer) from events e
                 where e.stream_id = s.stream_id and e.type = 'JobAssigned'), 0),
       (select count(*) from events e
        where e.stream_id = s.stream_id and e.type = 'JobRetryScheduled'
          and (e.data ->> 'handed_back')::boolean),
       case when last.type = 'JobRetryScheduled'
            then (last.data ->> 'not_before')::timestamptz end,
       (select min(e.recorded_at) from events e
        where e.stream_id = s.stream_id and e.type = 'JobStarted'),
       case when last.type in ('JobAssigned', 'JobStarted') then assigned.device_id end,
       case when last.type in ('JobAssigned', 'JobStarted') then assigned.agent_id end
from events s
cross join lateral (
    select e.version, e.type, e.data from events e
    where e.stream_id = s.stream_id order by e.version desc limit 1
) last
left join lateral (
    select (e.data ->> 'device_id')::uuid as device_id, e.data ->> 'agent_id' as agent_id
    from events e
    where e.stream_id = s.stream_id and e.type = 'JobAssigned'
    order by e.version desc limit 1
) assigned on true
where s.type = 'JobSubmitted'
  and last.type in ('JobSubmitted', 'JobGrouped', 'JobAssigned', 'JobStarted',
                    'JobRetryScheduled');

-- Which jobs wait, and why: the order a slot of the target with no app installed would
-- take them in (effective priority with the runner's default ageing of a point per 300
-- seconds, then age), and, for a job no live slot can serve, the reason.
drop view queue;
create view queue as
select row_number() over (
           partition by o.target
           order by o.priority + extract(epoch from now() - o.submitted_at)::float8 / 300 desc,
                    o.submitted_at, o.job_id
       )                                                          as claim_rank,
       o.target,
       o.job_id,
       o.org_id,
       o.status,
       o.group_id,
       g.group_key,
       o.app_version_id,
       o.test_path,
       o.platform,
       o.device,
       o.os_version,
       o.priority,
       o.priority + extract(epoch from now() - o.submitted_at)::float8 / 300
                                                                  as effective_priority,
       o.attempt                                                  as attempts,
       o.submitted_at,
       extract(epoch from now() - o.submitted_at)::float8         as waited_s,
       o.not_before,
       unschedulable_v1(o)                                        as unschedulable
from open_jobs o
left join groups g on g.group_id = o.group_id
where o.device_id is null;
