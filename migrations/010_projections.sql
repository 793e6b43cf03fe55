-- The read model: tables the projector keeps up to date from the ledger, one row per
-- job, group and device, plus queue depth counters. Only the projector writes them; the
-- API, the runner and auditors read them. Each row notes the stream version it reflects.

create table projector_checkpoints (
    name           text primary key,
    txid           xid8        not null default '0',
    position       bigint      not null default 0,
    events_applied bigint      not null default 0,
    updated_at     timestamptz not null default now()
);

create table jobs (
    job_id          uuid primary key,
    version         integer          not null,
    org_id          text             not null,
    app_version_id  text             not null,
    test_path       text             not null,
    target          text             not null,
    priority        smallint         not null,
    build           text,
    repo            text,
    commit          text,
    tags            text[]           not null default '{}',
    run_id          uuid,
    max_attempts    integer          not null,
    timeout_s       double precision,
    queue_timeout_s double precision,
    status          text             not null,
    group_id        uuid,
    device_id       uuid,
    agent_id        text,
    attempts        integer          not null default 0,
    flaky           boolean          not null default false,
    failure_kind    text,
    last_error      text,
    output          text,
    not_before      timestamptz,
    submitted_at    timestamptz      not null,
    grouped_at      timestamptz,
    assigned_at     timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    duration_s      double precision,
    updated_at      timestamptz      not null
);

create index jobs_by_org on jobs (org_id, submitted_at desc, job_id desc);
create index jobs_by_run on jobs (run_id) where run_id is not null;
create index jobs_queued on jobs (target, group_id) where status in ('grouped', 'retrying');

create table groups (
    group_id       uuid primary key,
    org_id         text        not null,
    strategy       text        not null,
    group_key      text        not null,
    app_version_id text        not null,
    target         text        not null,
    created_at     timestamptz not null,
    queued         integer     not null default 0,
    assigned       integer     not null default 0,
    running        integer     not null default 0,
    passed         integer     not null default 0,
    failed         integer     not null default 0,
    cancelled      integer     not null default 0,
    timed_out      integer     not null default 0,
    installs       integer     not null default 0,
    updated_at     timestamptz not null
);

create table devices (
    device_id      uuid primary key,
    version        integer     not null,
    name           text        not null,
    target         text        not null,
    agent_id       text        not null,
    capabilities   jsonb       not null default '{}',
    state          text        not null,
    current_group  uuid,
    installed_apps text[]      not null default '{}',
    installs       integer     not null default 0,
    registered_at  timestamptz not null,
    last_seen_at   timestamptz not null
);

create table queue_depth (
    org_id text    not null,
    target text    not null,
    status text    not null,
    depth  integer not null,
    primary key (org_id, target, status)
);
