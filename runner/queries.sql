-- The runner's SQL. Jobs come from open_jobs (migrations/040_open_jobs.sql), which the
-- ledger keeps in step with every job event; the runner's own tables are its agents'
-- leases and slots, and the org limits.

-- name: hold_lease
-- Whether the agent still holds its lease. The key-share lock keeps a rescuer from
-- expiring the agent until the claim that asked commits, so a claim never hands a job to
-- an agent whose jobs are being handed on.
select expires_at > now() from agent_leases where agent_id = %(agent_id)s for key share;

-- name: held_by_slot
-- Jobs assigned to the slot that it never started: a claim of its that committed while
-- its connection broke, which its next claim takes up.
select job_id, version, attempt, handed_back, max_attempts, test_path, build, timeout_s,
       org_id, group_id, app_version_id
from open_jobs
where device_id = %(device_id)s and agent_id = %(agent_id)s and status = 'assigned'
order by priority desc, submitted_at, job_id
for update;

-- name: queue_summary
-- What waits for the slot, per claim unit (group and app version) and priority: its
-- org and whether the org has a parallel limit, how many jobs, how long the oldest has
-- waited, and how many other slots run the unit now. Orgs at their limit are left out
-- (the claim checks again under the org's lock). The last column is the number of live
-- slots of the target.
with claimable as (
    select o.group_id, o.app_version_id, o.org_id, o.priority, o.submitted_at
    from open_jobs o
    where o.target = %(target)s
      and o.device_id is null
      and o.group_id is not null
      and (o.not_before is null or o.not_before <= now())
      and slot_serves_v1(%(platform)s, %(device)s, %(os_version)s,
                         o.platform, o.device, o.os_version)
), busy as (
    select o.group_id, o.app_version_id, count(distinct o.device_id) as slots
    from open_jobs o
    where o.device_id is not null
      and o.device_id <> %(device_id)s
      and o.group_id in (select group_id from claimable)
    group by o.group_id, o.app_version_id
), full_orgs as (
    select l.org_id
    from org_limits l
    where l.max_slots <= (select count(distinct o.device_id) from open_jobs o
                          where o.org_id = l.org_id and o.device_id is not null)
)
select c.group_id, c.app_version_id, c.org_id,
       c.org_id in (select org_id from org_limits), c.priority, count(*)::integer,
       extract(epoch from now() - min(c.submitted_at))::float8,
       coalesce(min(b.slots), 0)::integer,
       (select count(*)
        from agent_slots s join agent_leases a using (agent_id)
        where s.target = %(target)s and a.expires_at > now())::integer
from claimable c
left join busy b on b.group_id = c.group_id and b.app_version_id = c.app_version_id
where c.org_id not in (select org_id from full_orgs)
group by c.group_id, c.app_version_id, c.org_id, c.priority;

-- name: try_unit
-- Whether no other claim is choosing jobs of this claim unit right now. Idle slots that
-- claim at the same moment would all pick the best unit and split it, an install each;
-- instead each goes for the next unit, and sees the first one as busy once its claim
-- has committed. Held until the claim commits.
select pg_try_advisory_xact_lock(hashtextextended(%(group_id)s::text || '/' || %(app_version_id)s, 0));

-- name: lock_org_limit
-- Serialises the claims of one limited org; the count that follows runs after the lock
-- is granted, so it sees every assignment committed by the claims before it.
select max_slots from org_limits where org_id = %(org_id)s for update;

-- name: org_occupancy
-- The slots holding the org's jobs.
select count(distinct device_id)::integer
from open_jobs
where org_id = %(org_id)s and device_id is not null;

-- name: lock_jobs
-- Up to %(limit)s claimable jobs of one claim unit for the slot, best first (effective
-- priority as in runner/policy.py, then age). Rows another claim has locked are skipped:
-- no two claims take one job, and none waits for another.
select o.job_id, o.version, o.attempt, o.handed_back, o.max_attempts, o.test_path, o.build,
       o.timeout_s, o.org_id, o.group_id, o.app_version_id
from open_jobs o
where o.group_id = %(group_id)s
  and o.app_version_id = %(app_version_id)s
  and o.target = %(target)s
  and o.device_id is null
  and (o.not_before is null or o.not_before <= now())
  and slot_serves_v1(%(platform)s, %(device)s, %(os_version)s,
                     o.platform, o.device, o.os_version)
order by o.priority + %(ageing_per_s)s * extract(epoch from now() - o.submitted_at) desc,
         o.submitted_at, o.job_id
limit %(limit)s
for update skip locked;

-- name: ended_elsewhere
-- Of the jobs a slot holds, those no longer held by its agent: cancelled, or handed on
-- by a rescuer.
select h.job_id
from unnest(%(ids)s::uuid[]) as h(job_id)
where not exists (select 1 from open_jobs o
                  where o.job_id = h.job_id and o.agent_id = %(agent_id)s);

-- name: stream_tails
-- Each stream's events from the version an append expected on, and who wrote them.
select stream_id, version, metadata ->> 'actor'
from events
where stream_id = any(%(ids)s) and version >= %(after)s;

-- name: hold_life
-- Held on the lease's connection for the agent's life (migrations/042_agent_life_locks.sql).
select pg_advisory_lock(agent_life_key_v1(%(agent_id)s));

-- name: one_rescuer
-- One agent at a time looks for dead agents: the others skip their turn.
select pg_try_advisory_xact_lock(hashtextextended('qgjob rescuer', 0));

-- name: end_dead_leases
-- Live leases whose agent's life lock is free: the agent's connection is gone, so it is.
-- Their leases end now; the locks taken to find out are let go at once. The asking agent
-- is left out: its own session may be the one holding its lock.
with dead as (
    select agent_id from agent_leases
    where expires_at > now()
      and agent_id <> %(agent_id)s
      and pg_try_advisory_lock(agent_life_key_v1(agent_id))
), ended as (
    update agent_leases l set expires_at = now()
    from dead where l.agent_id = dead.agent_id
    returning l.agent_id
)
select agent_id, pg_advisory_unlock(agent_life_key_v1(agent_id)) from ended;

-- name: acquire_lease
insert into agent_leases (agent_id, name, host, pid, expires_at)
values (%(agent_id)s, %(name)s, %(host)s, %(pid)s, now() + make_interval(secs => %(ttl_s)s));

-- name: supersede_agents
-- A new process with an agent's name means the older ones are gone (or must be): their
-- leases lapse now, so the rescuer hands their jobs on at once.
update agent_leases set expires_at = now()
where name = %(name)s and agent_id <> %(agent_id)s and expires_at > now();

-- name: other_live_lease
-- Whether a newer process of the agent's name runs: then this one must not come back.
select exists (
    select 1 from agent_leases
    where name = %(name)s and agent_id <> %(agent_id)s and expires_at > now()
);

-- name: renew_lease
-- A lapsed lease is never renewed: the rescuer may already have taken its jobs.
update agent_leases set expires_at = now() + make_interval(secs => %(ttl_s)s)
where agent_id = %(agent_id)s and expires_at > now()
returning agent_id;

-- name: release_lease
delete from agent_leases where agent_id = %(agent_id)s;

-- name: register_slot
insert into agent_slots (device_id, agent_id, target, platform, device, os_version)
values (%(device_id)s, %(agent_id)s, %(target)s, %(platform)s, %(device)s, %(os_version)s)
on conflict (device_id) do update
    set agent_id = excluded.agent_id,
        target = excluded.target,
        platform = excluded.platform,
        device = excluded.device,
        os_version = excluded.os_version;

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

-- name: jobs_of_agent
-- Every attempt an agent holds, as a rescuer hands it on.
select job_id, version, attempt, handed_back, max_attempts, org_id, status
from open_jobs
where agent_id = %(agent_id)s
order by job_id
for update;

-- name: take_maintenance_turn
-- This agent's turn at the fleet's maintenance, if it fell due: the time of the last
-- turn, or no row. An agent that loses the race skips the row instead of waiting.
with due as (
    select chore, done_at from fleet_turns
    where chore = 'maintenance'
      and done_at <= now() - make_interval(secs => %(interval_s)s)
    for update skip locked
)
update fleet_turns t set done_at = now()
from due where t.chore = due.chore
returning due.done_at;

-- name: notify_due_retries
-- Wake the agents of each target where a retry's backoff ran out since the last turn:
-- nothing else tells them that the job became claimable.
select pg_notify('qgjob_queue', target)
from (select distinct target from open_jobs
      where device_id is null
        and not_before > %(since)s
        and not_before <= now()) due;

-- name: queue_overdue
-- Jobs that never started and waited longer than their queue timeout. The wait is
-- compared in seconds: no interval is built from a stored number, however large.
select job_id, version, status, attempt, max_attempts, org_id, queue_timeout_s
from open_jobs
where queue_timeout_s is not null
  and started_at is null
  and device_id is null
  and extract(epoch from now() - submitted_at) >= queue_timeout_s
limit 500;

-- name: uploaded_build
-- The organisation's latest upload of a build (runner/uploads.py): of its digest when the
-- job named an uploaded build, else of the app version's build. Never another org's.
select data ->> 'reference', (data ->> 'expires_at')::timestamptz
from events
where type = 'BuildUploaded'
  and metadata ->> 'org_id' = %(org_id)s
  and case when %(build)s::text is null
           then data ->> 'build' is null and data ->> 'app_version_id' = %(app_version_id)s
           else data ->> 'build' = %(build)s
      end
order by position desc
limit 1;

-- name: job_bundles
-- The test bundle each job was submitted with, if any.
select stream_id, data ->> 'bundle'
from events
where stream_id = any(%(job_ids)s) and type = 'JobSubmitted';

-- name: lock_upload
-- Held while one agent looks for, or makes, an organisation's upload of a build, so that
-- agents on other hosts wait for its bs:// id instead of uploading the build again. A
-- session lock, because the upload outlasts any transaction worth holding open; the
-- lock goes with the connection should the agent die.
select pg_advisory_lock(hashtextextended(%(key)s, 0));

-- name: unlock_upload
select pg_advisory_unlock(hashtextextended(%(key)s, 0));
