-- What the API accepted for each submit request, written in the transaction that appends
-- the request's JobSubmitted events, so both land or neither does.
--
-- It serves two purposes the event ledger cannot serve cheaply. Idempotency: a retried
-- request with the same Idempotency-Key finds the first one's row (unique per org) and gets
-- the same jobs back; a concurrent retry waits on the unique index until the first commits.
-- Runs: the jobs of a suite are known the moment it is accepted, before the projector has
-- put them in `jobs`, so waiting on a run never sees a partial suite as the whole of it.
-- A row is written for every suite and for every request carrying an Idempotency-Key.

create table api_submissions (
    -- Also the correlation id of the events the request appended.
    submission_id   uuid        primary key,
    org_id          text        not null,
    idempotency_key text,
    -- SHA-256 of the request body, so a key reused for a different request is refused.
    request_hash    bytea       not null,
    -- Set for a suite.
    run_id          uuid,
    -- The jobs the request answered with, in order: new ones, or an identical active job.
    job_ids         uuid[]      not null,
    created_at      timestamptz not null default now(),
    unique (org_id, idempotency_key)
);

create index api_submissions_by_run on api_submissions (run_id) where run_id is not null;
