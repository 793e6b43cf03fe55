-- The blob store: test bundles and app builds uploaded by organisations, named by the
-- SHA-256 of their content (ledger/blobs.py).
--
-- A blob is one row in `blobs` and its content is rows of `blob_chunks` of about 1 MiB,
-- so neither an upload nor a download ever holds a whole blob in memory. `(org_id,
-- sha256)` is unique: an organisation stores given content once (deduplication), and
-- another organisation's copy is a row of its own, invisible to the first. A blob is
-- written in one transaction, its row first: a concurrent upload of the same content
-- waits on the unique index and then finds it, and a refused or broken upload leaves no
-- row and no chunk behind.

create table blobs (
    blob_id       bigint generated always as identity primary key,
    org_id        text        not null,
    sha256        bytea       not null check (length(sha256) = 32),
    kind          text        not null check (kind in ('build', 'bundle')),
    size          bigint      not null check (size >= 0),
    -- The file name it was uploaded as (an APK's, say), for people and for executors
    -- that care about a build's suffix.
    name          text        not null,
    created_at    timestamptz not null default now(),
    -- When a submitted job last named it; retention counts from this (or created_at).
    referenced_at timestamptz,
    unique (org_id, sha256)
);

create table blob_chunks (
    blob_id bigint  not null references blobs on delete cascade,
    seq     integer not null check (seq >= 0),
    data    bytea   not null,
    primary key (blob_id, seq)
);

-- Builds and bundles are compressed archives already: storing chunks as they are saves
-- PostgreSQL a compression attempt per chunk that would gain nothing.
alter table blob_chunks alter column data set storage external;
