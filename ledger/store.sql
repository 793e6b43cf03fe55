-- name: append
-- One statement for any number of events on any number of streams, so an append is one
-- round trip and all or nothing (migrations/040_open_jobs.sql).
select position, stream_id, version, recorded_at from append_events_v2(%(events)s);

-- name: read_stream
select position, stream_id, version, type, data, metadata, recorded_at, txid::text::bigint
from events
where stream_id = %(stream_id)s
order by version;

-- name: read_after
-- Commit-safe tailing. Only rows written by transactions older than every transaction
-- still running (below the snapshot's xmin) are read: such a transaction has ended, so no
-- row can later appear before them in (txid, position) order. A transaction still running
-- holds the reader back until it ends, instead of being skipped when it commits late.
select position, stream_id, version, type, data, metadata, recorded_at, txid::text::bigint
from events
where (txid, position) > (%(txid)s::text::xid8, %(position)s)
  and txid < pg_snapshot_xmin(pg_current_snapshot())
-- The table's columns, not the output column txid, so that the events_commit_order
-- index is walked instead of the whole table sorted.
order by events.txid, events.position
limit %(limit)s;

-- name: stream_version
select coalesce(max(version), 0) from events where stream_id = %(stream_id)s;

-- name: head
-- The checkpoint of the newest event a reader may read now: a tail that starts here
-- sees only what commits from now on.
select txid::text::bigint, position
from events
where txid < pg_snapshot_xmin(pg_current_snapshot())
order by events.txid desc, events.position desc
limit 1;

-- name: flush
-- Waits until every commit so far, this session's unflushed ones included, is on disk.
-- PostgreSQL has no function for that, but a transaction that has a transaction id and
-- wrote WAL commits synchronously: it flushes the WAL up to its commit record, and so
-- everything before it. A transactional logical-decoding message is the smallest such
-- write (a few bytes of WAL, no table touched); nothing decodes it.
select pg_logical_emit_message(true, 'qgjob', 'flush');
