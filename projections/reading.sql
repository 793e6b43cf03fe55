-- name: read_events
-- The events after a checkpoint, in commit-safe order: the same rule as read_after in
-- ledger/store.sql (see the reasoning there). The projector has its own copy because it
-- reads every event there is: it asks for the metadata of submits only (the rest it never
-- uses), reads in binary, and takes the data as text, so that a payload seen before (most
-- JobStarted, JobAssigned and JobGrouped events repeat one) is not decoded again. The
-- order names the table's columns, not the output column txid, so that it walks the
-- events_commit_order index.
select position, stream_id, version, type, data::text, recorded_at, txid::text::bigint,
       case when type = 'JobSubmitted' then metadata end
from events
where (txid, position) > (%(txid)s::text::xid8, %(position)s)
  and txid < pg_snapshot_xmin(pg_current_snapshot())
order by events.txid, events.position
limit %(limit)s;
