-- name: lock
select pg_advisory_lock(%(key)s);

-- name: unlock
select pg_advisory_unlock(%(key)s);

-- name: create_table
create table if not exists schema_migrations (
    version    integer primary key,
    name       text not null,
    checksum   text not null,
    applied_at timestamptz not null default now()
);

-- name: applied
select version, name, checksum from schema_migrations order by version;

-- name: record
insert into schema_migrations (version, name, checksum)
values (%(version)s, %(name)s, %(checksum)s);
