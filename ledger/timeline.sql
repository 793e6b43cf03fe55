-- The device timeline's reads of the ledger (ledger/timeline.py): the events that start,
-- end or install something on a device slot, by time. The BRIN index events_by_time
-- (migrations/090) serves the window.

-- name: device_activity
select e.recorded_at, e.type, e.stream_id,
       case when e.type = 'AppInstalled' then e.stream_id
            when e.type = 'JobAssigned' then (e.data ->> 'device_id')::uuid end as device_id,
       (e.data ->> 'attempt')::integer as attempt,
       e.data ->> 'app_version_id' as app_version_id,
       (e.data ->> 'group_id')::uuid as group_id,
       e.data ->> 'kind' as kind,
       coalesce((e.data ->> 'handed_back')::boolean, false) as handed_back,
       e.metadata ->> 'org_id' as org_id
from events e
where e.recorded_at >= %(since)s and e.recorded_at <= %(until)s
  and e.type in ('AppInstalled', 'JobAssigned', 'JobStarted', 'JobPassed', 'JobFailed',
                 'JobRetryScheduled', 'JobCancelled', 'JobTimedOut', 'JobLeaseExpired')
  and (%(org_id)s::text is null or e.metadata ->> 'org_id' = %(org_id)s)
order by e.recorded_at, e.position;

-- name: assignments_before
-- The assignments of attempts that began before a window and ended in it.
select e.recorded_at, e.type, e.stream_id, (e.data ->> 'device_id')::uuid as device_id,
       (e.data ->> 'attempt')::integer as attempt, null::text as app_version_id,
       null::uuid as group_id, null::text as kind, false as handed_back,
       e.metadata ->> 'org_id' as org_id
from events e
where e.stream_id = any(%(job_ids)s::uuid[]) and e.type = 'JobAssigned'
  and e.recorded_at < %(since)s
order by e.recorded_at, e.position;

-- name: run_activity
-- A run's jobs' activity and the installs for its groups, by stream (the index on
-- (stream_id, version)) rather than by time: a run's window also holds every other run's.
with slots as (
    select distinct (data ->> 'device_id')::uuid as device_id
    from events
    where stream_id = any(%(job_ids)s::uuid[]) and type = 'JobAssigned'
)
select e.recorded_at, e.type, e.stream_id,
       case when e.type = 'AppInstalled' then e.stream_id
            when e.type = 'JobAssigned' then (e.data ->> 'device_id')::uuid end as device_id,
       (e.data ->> 'attempt')::integer as attempt,
       e.data ->> 'app_version_id' as app_version_id,
       (e.data ->> 'group_id')::uuid as group_id,
       e.data ->> 'kind' as kind,
       coalesce((e.data ->> 'handed_back')::boolean, false) as handed_back,
       e.metadata ->> 'org_id' as org_id
from events e
where (e.stream_id = any(%(job_ids)s::uuid[])
       and e.type in ('JobAssigned', 'JobStarted', 'JobPassed', 'JobFailed', 'JobRetryScheduled',
                      'JobCancelled', 'JobTimedOut', 'JobLeaseExpired'))
   or (e.stream_id in (select device_id from slots) and e.type = 'AppInstalled'
       and (e.data ->> 'group_id')::uuid = any(%(group_ids)s::uuid[]))
order by e.recorded_at, e.position;
