-- name: begin_claim
-- migrations/035_standing_claims.sql
select begin_claim(%(device_id)s, %(agent_id)s, %(last_batch)s::uuid[]);

-- name: queue_summary
-- What waits for a target, per claim unit (group and app version) and priority, with
-- how long its oldest job has waited and how many slots of other agents run the unit
-- now. Orgs at their parallel limit are left out (the claim re-checks under the org's
-- lock). The last column is the number of live slots of the target.
with busy as (
    select group_id, app_version_id, count(*) as slots
    from slot_occupancy
    where target = %(target)s and agent_id <> %(agent_id)s
    group by group_id, app_version_id
), full_orgs as (
    select l.org_id
    from org_limits l
    where l.max_slots <= (select count(*) from slot_occupancy o where o.org_id = l.org_id)
)
select j.group_id, j.app_version_id, j.org_id, j.priority, count(*)::integer,
       extract(epoch from now() - min(j.submitted_at))::float8,
       coalesce(min(b.slots), 0)::integer,
       (select count(*)
        from agent_slots s join agent_leases a using (agent_id)
        where s.target = %(target)s and a.expires_at > now())::integer
from jobs j
left join busy b on b.group_id = j.group_id and b.app_version_id = j.app_version_id
where j.status in ('grouped', 'retrying')
  and j.target = %(target)s
  and (j.not_before is null or j.not_before <= now())
  and j.org_id not in (select org_id from full_orgs)
group by j.group_id, j.app_version_id, j.org_id, j.priority;

-- name: limited_orgs
select org_id from org_limits;

-- name: lock_org_limit
-- Serialises the claims of one limited org; the count that follows runs after the lock
-- is granted, so it sees every occupancy committed by the claims before it.
select max_slots from org_limits where org_id = %(org_id)s for update;

-- name: org_occupancy
select count(*)::integer from slot_occupancy where org_id = %(org_id)s;

-- name: lock_jobs
-- Up to %(limit)s runnable jobs of one claim unit, best first (effective priority as in
-- runner/policy.py, then age). A row the projector has not caught up with (its stream
-- has moved past the row's version) is skipped, as are rows another claim has locked:
-- the locks only cut contention, the append at each job's version decides ownership.
select j.job_id, j.version, j.status, j.attempts, j.max_attempts, j.test_path, j.build,
       j.timeout_s, j.org_id
from jobs j
where j.group_id = %(group_id)s
  and j.app_version_id = %(app_version_id)s
  and j.target = %(target)s
  and j.status in ('grouped', 'retrying')
  and (j.not_before is null or j.not_before <= now())
  and not exists (select 1 from events e where e.stream_id = j.job_id and e.version > j.version)
order by j.priority + %(ageing_per_s)s * extract(epoch from now() - j.submitted_at) desc,
         j.submitted_at, j.job_id
limit %(limit)s
for update of j skip locked;

-- name: claim_jobs
-- migrations/035_standing_claims.sql
select claim_jobs(
    slot_device => %(device_id)s,
    slot_agent => %(agent_id)s,
    slot_target => %(target)s,
    last_batch => %(last_batch)s::uuid[],
    unit_org => %(org_id)s,
    unit_group => %(group_id)s,
    unit_app_version => %(app_version_id)s,
    events => %(events)s
);

-- name: release_slot
delete from slot_occupancy where device_id = %(device_id)s and agent_id = %(agent_id)s;

-- name: still_standing
select exists (
    select 1 from standing_claims where device_id = %(device_id)s and agent_id = %(agent_id)s
);

-- name: stand
-- migrations/035_standing_claims.sql
select stand(%(device_id)s, %(agent_id)s, %(target)s, %(last_batch)s::uuid[], %(installed)s);

-- name: stream_tails
-- Each stream's events from the version an append expected on, and who wrote them.
select stream_id, version, metadata ->> 'actor'
from events
where stream_id = any(%(ids)s) and version >= %(after)s;

-- name: cancelled_jobs
select distinct stream_id from events where stream_id = any(%(ids)s) and type = 'JobCancelled';

-- name: handed_back_attempts
select count(*)::integer from events
where stream_id = %(job_id)s and type = 'JobRetryScheduled' and data ->> 'handed_back' = 'true';

-- name: acquire_lease
insert into agent_leases (agent_id, name, host, pid, expires_at)
values (%(agent_id)s, %(name)s, %(host)s, %(pid)s, now() + make_interval(secs => %(ttl_s)s));

-- name: supersede_agents
-- A new process with an agent's name means the older ones are gone (or must be): their
-- leases lapse now, so the rescuer hands their jobs on at once.
update agent_leases set expires_at = now()
where name = %(name)s and agent_id <> %(agent_id)s and expires_at > now();

-- name: renew_lease
-- A lapsed lease is never renewed: the rescuer may already have taken its jobs.
update agent_leases set expires_at = now() + make_interval(secs => %(ttl_s)s)
where agent_id = %(agent_id)s and expires_at > now()
returning agent_id;

-- name: release_lease
delete from agent_leases where agent_id = %(agent_id)s;

-- name: register_slot
insert into agent_slots (device_id, agent_id, target)
values (%(device_id)s, %(agent_id)s, %(target)s)
on conflict (device_id) do update set agent_id = excluded.agent_id, target = excluded.target;

-- name: set_org_limit
insert into org_limits (org_id, max_slots) values (%(org_id)s, %(max_slots)s)
on conflict (org_id) do update set max_slots = excluded.max_slots, updated_at = now();

-- name: lapsed_leases
-- Rescuers skip leases another rescuer (or a claim still committing) holds.
select agent_id from agent_leases
where expires_at <= now()
order by expires_at
limit 20
for update skip locked;

-- name: occupancy_of_agent
select device_id, job_ids from slot_occupancy where agent_id = %(agent_id)s;

-- name: occupancy_of_slot
select job_ids from slot_occupancy where device_id = %(device_id)s and agent_id = %(agent_id)s;

-- name: release_agent_occupancy
delete from slot_occupancy where agent_id = %(agent_id)s;

-- name: queue_overdue
-- Jobs that never started and waited longer than their queue timeout.
select j.job_id, j.version, j.status, j.attempts, j.max_attempts, j.org_id, j.queue_timeout_s
from jobs j
where j.queue_timeout_s is not null
  and j.status in ('submitted', 'grouped', 'retrying')
  and j.started_at is null
  and j.submitted_at + make_interval(secs => j.queue_timeout_s) <= now()
  and not exists (select 1 from events e where e.stream_id = j.job_id and e.version > j.version)
limit 500;

-- name: uploaded_build
select data ->> 'reference' from events
where type = 'BuildUploaded' and data ->> 'app_version_id' = %(app_version_id)s
order by position desc
limit 1;

-- name: fresh_events
-- The ledger's events after a checkpoint, in commit-safe order (the rule of read_after in
-- ledger/store.sql), each JobGrouped of a job that has not moved on since with its job's
-- submit; runner/fresh.py keeps those and reads past the rest. The submit is looked up
-- per event, by a subquery: as a join, the planner would hash every submit in the ledger
-- for the few events read here.
select e.txid::text::bigint, e.position, e.stream_id, e.version, e.data ->> 'group_id',
       case when e.type = 'JobGrouped'
                 and not exists (select from events later
                                 where later.stream_id = e.stream_id and later.version > e.version)
       then (select s.data from events s where s.stream_id = e.stream_id and s.version = 1)
       end
from events e
where (e.txid, e.position) > (%(txid)s::text::xid8, %(position)s)
  and e.txid < pg_snapshot_xmin(pg_current_snapshot())
order by e.txid, e.position
limit %(limit)s;
