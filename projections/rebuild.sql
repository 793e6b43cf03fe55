-- name: try_lock
-- One rebuild per projection at a time: the copies live in one schema per name.
select pg_try_advisory_lock(7117005, hashtext(%(name)s));

-- name: live_schema
select n.nspname
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.oid = to_regclass('jobs');

-- name: columns
select column_name
from information_schema.columns
where table_schema = %(schema)s and table_name = %(table)s
order by ordinal_position;

-- name: ensure_checkpoint
insert into {checkpoints} (name) values (%(name)s) on conflict do nothing;

-- name: lock_checkpoint
select 1 from {checkpoints} where name = %(name)s for update;

-- name: delete_missing
delete from {live} as t
where not exists (select 1 from {replayed} as r where ({replayed_keys}) = ({live_keys}));

-- name: copy_rows
-- Rows equal to the replayed ones are left alone, so a rebuild that changes nothing
-- writes nothing.
insert into {live} as t ({columns})
select {columns} from {replayed}
on conflict ({keys}) do update set ({columns}) = row({excluded_columns})
where (t.*) is distinct from (excluded.*);

-- name: copy_checkpoint
update {checkpoints} as c
set txid = r.txid, position = r.position, events_applied = r.events_applied, updated_at = now()
from {replayed} as r
where c.name = %(name)s and r.name = %(name)s;
