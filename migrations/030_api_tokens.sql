-- Per-organisation API tokens for the HTTP API. Only a SHA-256 digest of each token is
-- stored: a leaked copy of this table does not let anyone call the API. A token is shown
-- once, when `qgjobd token create` makes it.

create table api_tokens (
    token_id   uuid        primary key,
    org_id     text        not null,
    token_hash bytea       not null unique,
    label      text,
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);
