-- How far each projector is behind the ledger, for /metrics and /readyz: events not yet
-- applied and the age of the oldest of them (0 when caught up), and whether a projector
-- of that name is running (it holds advisory lock (7117004, hashtext(name)) while it does;
-- see projections/projector.sql). Counting only the unapplied tail keeps it cheap.

create view projector_lag as
select c.name,
       behind.events                                                  as events_behind,
       coalesce(extract(epoch from now() - behind.oldest)::float8, 0) as seconds_behind,
       exists (
           select 1
           from pg_locks l
           where l.locktype = 'advisory'
             and l.database = (select oid from pg_database where datname = current_database())
             and l.classid = 7117004::oid
             and l.objid = hashtext(c.name)::oid
             and l.objsubid = 2
             and l.granted
       )                                                              as running,
       c.events_applied,
       c.updated_at                                                   as applied_at
from projector_checkpoints c
cross join lateral (
    select count(*) as events, min(e.recorded_at) as oldest
    from events e
    where (e.txid, e.position) > (c.txid, c.position)
) behind;
