-- A group's app version is the one its jobs share. Under the default strategy they always
-- share one; under repo, tag, priority or a custom strategy they may not, and then the
-- group has none (null) rather than whichever job happened to be grouped first, which
-- would make the row depend on the order batches were applied in.

alter table groups alter column app_version_id drop not null;
