-- What each API token may do. `jobs` is everything an organisation's user or CI does
-- (submit, read, cancel, wait); `metrics` is scraping /metrics, for a Prometheus that
-- should be able to do nothing else. Tokens made before scopes existed keep `jobs`.

alter table api_tokens
    add column scopes text[] not null default '{jobs}'
        check (scopes <@ array['jobs', 'metrics'] and cardinality(scopes) > 0);

create index api_tokens_by_org on api_tokens (org_id, created_at);
