-- The event ledger: one append-only table, one row per event.
--
-- `position` gives every event a global number; `(stream_id, version)` is unique, so a
-- writer that states the version it expects loses cleanly to a concurrent writer instead
-- of overwriting it. `txid` is the writing transaction's id: readers order and checkpoint
-- by (txid, position) and only read rows whose transaction is older than every running
-- one, so an event that commits late is never skipped (see ledger/store.py).

create table events (
    position    bigint generated always as identity primary key,
    stream_id   uuid        not null,
    version     integer     not null check (version > 0),
    type        text        not null,
    data        jsonb       not null,
    metadata    jsonb       not null,
    recorded_at timestamptz not null default clock_timestamp(),
    txid        xid8        not null default pg_current_xact_id(),
    unique (stream_id, version)
);

create index events_commit_order on events (txid, position);

create function events_refuse_change() returns trigger
language plpgsql as $$
begin
    raise exception 'the events table is append-only: % is not allowed', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

create trigger events_append_only_rows
    before update or delete on events
    for each row execute function events_refuse_change();

create trigger events_append_only_truncate
    before truncate on events
    for each statement execute function events_refuse_change();
