-- How many job attempts each device lost because its agent stopped renewing its lease,
-- kept by the projector so /metrics reports lease expiries without scanning the ledger.

alter table devices
    add column lease_expiries integer not null default 0;
