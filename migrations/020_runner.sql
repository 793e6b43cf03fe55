-- The runner's operational state: agent leases, the device slots each agent offers,
-- which org and batch occupy each busy slot, and per-org parallel limits. It changes
-- every few seconds and only matters now, so it lives in plain tables, not in the
-- ledger (a heartbeat event per agent every few seconds would bloat it). Also the
-- indexes the runner's periodic queries need.

-- One row per running agent process; the agent renews expires_at while it lives. A
-- lapsed lease is final: renewing requires expires_at still in the future.
create table agent_leases (
    agent_id   text primary key,
    -- The agent's configured name; a new process of the same name supersedes older ones.
    name       text        not null,
    host       text        not null,
    pid        integer     not null,
    started_at timestamptz not null default now(),
    expires_at timestamptz not null
);

create index agent_leases_by_name on agent_leases (name);

-- The slots of live agents, to count the slots of a target when sizing batches.
create table agent_slots (
    device_id uuid primary key,
    agent_id  text not null references agent_leases (agent_id) on delete cascade,
    target    text not null
);

-- A busy slot: written in the transaction that appends the batch's JobAssigned events
-- and deleted once every job of the batch has ended (or by the rescuer, in the
-- transaction that appends their JobLeaseExpired). So every attempt the ledger shows
-- open is listed here, and an org's rows count the slots it occupies. No cascade from
-- agent_leases: a lease is deleted only after its batches were dealt with.
create table slot_occupancy (
    device_id      uuid primary key,
    agent_id       text        not null references agent_leases (agent_id),
    org_id         text        not null,
    target         text        not null,
    group_id       uuid        not null,
    app_version_id text        not null,
    job_ids        uuid[]      not null,
    since          timestamptz not null default now()
);

create index slot_occupancy_by_org on slot_occupancy (org_id);
create index slot_occupancy_by_agent on slot_occupancy (agent_id);

-- How many slots an org may occupy at once (BrowserStack-style plans). Claims lock the
-- org's row while they count its occupancy, so the limit holds under races. Orgs
-- without a row are unlimited.
create table org_limits (
    org_id     text primary key,
    max_slots  integer     not null check (max_slots >= 0),
    updated_at timestamptz not null default now()
);

-- Queue timeouts are swept from the jobs projection.
create index jobs_queue_deadlines on jobs (submitted_at)
    where queue_timeout_s is not null and status in ('submitted', 'grouped', 'retrying');

-- Finding the BrowserStack reference of an app version already uploaded.
create index events_build_uploaded on events ((data ->> 'app_version_id'), position)
    where type = 'BuildUploaded';
