-- The append as a function, so that a statement elsewhere in qgjob (a submit, a claim)
-- can append events and do its own work in one round trip. It is still the ledger's one
-- way of writing several events (ledger/store.py appends through it too): the rows come
-- in as parallel arrays, in order, and land all together or not at all. PL/pgSQL, not
-- SQL, because PL/pgSQL keeps the insert's plan for the session instead of planning it
-- on every call.

create function append_events(
    -- Per event: its stream, the version the writer expects the stream at, its place
    -- among the write's events on that stream (1, 2, …), its type, data and metadata.
    streams uuid[], expected_versions integer[], offsets integer[],
    event_types text[], event_data jsonb[], event_metadata jsonb[]
) returns table ("position" bigint, stream_id uuid, version integer, recorded_at timestamptz)
language plpgsql as $$
-- The result's columns are named as the table's, which the insert means.
#variable_conflict use_column
begin
    return query
    insert into events (stream_id, version, type, data, metadata)
    select w.stream_id, events_expect_version(w.stream_id, w.expected) + w.offset_in_write,
           w.type, w.data, w.metadata
    from unnest(streams, expected_versions, offsets, event_types, event_data, event_metadata)
         with ordinality as w(stream_id, expected, offset_in_write, type, data, metadata, ord)
    order by w.ord
    returning events.position, events.stream_id, events.version, events.recorded_at;
end;
$$;
