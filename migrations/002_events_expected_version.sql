-- An append states the version it expects the stream to be at. A stale expectation
-- (another writer got there first) is caught by unique (stream_id, version); this function
-- catches the other kind, an expectation ahead of the stream, which would leave a gap.
-- It raises instead of filtering rows out so that a multi-stream append is all or nothing.

create function events_expect_version(expected_stream uuid, expected integer) returns integer
language plpgsql stable as $$
begin
    if expected > 0 and not exists (
        select 1 from events where stream_id = expected_stream and version = expected
    ) then
        raise exception 'stream % is not at version %', expected_stream, expected
            using errcode = 'serialization_failure';
    end if;
    return expected;
end;
$$;
