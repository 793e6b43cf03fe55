-- name: read_checkpoint
-- The checkpoint, created at the start of the ledger the first time. One statement, and
-- no write once the row exists: the projector reads it every time it wakes.
with created as (
    insert into projector_checkpoints (name)
    select %(name)s
    where not exists (select from projector_checkpoints where name = %(name)s)
    on conflict do nothing
    returning txid, position
)
select txid::text::bigint, position from created
union all
select txid::text::bigint, position from projector_checkpoints where name = %(name)s;

-- name: read_events
-- The events after a checkpoint, in commit-safe order: the same rule as read_after in
-- ledger/store.sql (see the reasoning there). The projector has its own copy because it
-- reads every event there is: it asks for the metadata of submits and installs only (the
-- rest it never uses), reads in binary, and takes the data as text, so that a payload seen before (most
-- JobStarted, JobAssigned and JobGrouped events repeat one) is not decoded again. The
-- order names the table's columns, not the output column txid, so that it walks the
-- events_commit_order index.
select position, stream_id, version, type, data::text, recorded_at, txid::text::bigint,
       case when type in ('JobSubmitted', 'AppInstalled') then metadata end
from events
where (txid, position) > (%(txid)s::text::xid8, %(position)s)
  and txid < pg_snapshot_xmin(pg_current_snapshot())
order by events.txid, events.position
limit %(limit)s;
