-- Counters the projector keeps beside the rows of 010, so that auditors' questions
-- (device utilisation, installs saved by grouping) are answered from a few rows instead
-- of a scan over history: attempts assigned per group and per device, jobs on a device
-- right now, its busy time and when it was retired. Also a checkpoint row for the default
-- projector, so its lag is reported (as everything behind) before it first runs.

alter table groups
    add column attempts integer not null default 0;

alter table devices
    add column active_jobs integer          not null default 0,
    add column attempts    integer          not null default 0,
    add column busy_s      double precision not null default 0,
    add column retired_at  timestamptz;

create index jobs_by_group on jobs (group_id) where group_id is not null;

insert into projector_checkpoints (name) values ('main') on conflict do nothing;
