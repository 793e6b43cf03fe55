-- A submit in one statement, so in one round trip (http_api/submit.py): its two checks,
-- then its jobs' events, in one transaction.
--
-- `duplicate`: an identical job still waiting or running, which a submit without `force`
-- answers with (asked for single jobs only). `claimed`: the request's Idempotency-Key (or
-- suite) recorded for this request, with the jobs it answers with; the insert blocks
-- while a concurrent request with the same key is uncommitted, then inserts nothing if
-- that request committed, and the caller answers with that request's jobs. A request
-- with neither key nor suite has nothing to claim. The events are appended only when the
-- request was claimed and has no duplicate; `recorded_at` then holds their times, in order.
--
-- Appended jobs are announced in the same transaction, on the channels of
-- ledger/wakeup.py: the device agents with the jobs (ledger/announcement.py), the
-- projector without. A NOTIFY holds a database-wide lock until its transaction has
-- committed, but this commit does not wait for the disk, so the lock is held for
-- microseconds: measured with 8 clients, submits went faster (about 480 to 580 a
-- second) than with a separate NOTIFY after the commit, and reach agents sooner.

create function submit_jobs(
    check_duplicate boolean,
    org text,
    app_version text,
    test text,
    target_type text,
    submission uuid,
    request_key text,
    body_hash bytea,
    run uuid,
    new_jobs uuid[],
    -- The jobs' events, as append_events takes them.
    streams uuid[], expected_versions integer[], offsets integer[],
    event_types text[], event_data jsonb[], event_metadata jsonb[],
    announcement text,
    out duplicate uuid,
    out claimed boolean,
    out recorded_at timestamptz[]
)
language plpgsql as $$
begin
    -- The submit's commit does not wait for its WAL flush (http_api/submit.py says why).
    perform set_config('synchronous_commit', 'off', true);
    if check_duplicate then
        select j.job_id into duplicate
        from jobs j
        where j.org_id = org
          and j.app_version_id = app_version
          and j.test_path = test
          and j.target = target_type
          and j.status in ('submitted', 'grouped', 'assigned', 'running', 'retrying')
        order by j.submitted_at
        limit 1;
    end if;
    claimed := request_key is null and run is null;
    if not claimed then
        insert into api_submissions
            (submission_id, org_id, idempotency_key, request_hash, run_id, job_ids)
        values (submission, org, request_key, body_hash, run,
                case when duplicate is null then new_jobs else array[duplicate] end)
        on conflict (org_id, idempotency_key) do nothing;
        claimed := found;
    end if;
    if claimed and duplicate is null then
        select array_agg(a.recorded_at order by a.position) into recorded_at
        from append_events(streams, expected_versions, offsets,
                           event_types, event_data, event_metadata) as a;
        perform pg_notify('qgjob_jobs', announcement), pg_notify('qgjob_events', '');
    end if;
end;
$$;
