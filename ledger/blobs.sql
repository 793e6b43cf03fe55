-- name: find
select kind, size, name, created_at
from blobs
where org_id = %(org_id)s and sha256 = %(sha256)s;

-- name: begin_blob
-- The row comes first, so a concurrent upload of the same content waits here until this
-- one commits (and then finds it) or rolls back (and then writes it itself).
insert into blobs (org_id, sha256, kind, size, name)
values (%(org_id)s, %(sha256)s, %(kind)s, 0, %(name)s)
on conflict (org_id, sha256) do nothing
returning blob_id;

-- name: put_chunk
insert into blob_chunks (blob_id, seq, data) values (%(blob_id)s, %(seq)s, %(data)b);

-- name: finish_blob
update blobs set size = %(size)s where blob_id = %(blob_id)s
returning kind, size, name, created_at;

-- name: blob_id
select blob_id from blobs where org_id = %(org_id)s and sha256 = %(sha256)s;

-- name: chunk
select data from blob_chunks where blob_id = %(blob_id)s and seq = %(seq)s;

-- name: delete
delete from blobs where org_id = %(org_id)s and sha256 = %(sha256)s;

-- name: touch_many
update blobs set referenced_at = now()
where org_id = %(org_id)s and sha256 = any(%(digests)s)
returning sha256;

-- name: collect_garbage
-- A blob goes once its retention has passed since it was stored or last named by a
-- submitted job, and no unfinished job names it. Unfinished jobs are few, and each one's
-- JobSubmitted is found by its stream's first version, so this stays cheap however long
-- the ledger grows.
delete from blobs b
where greatest(b.created_at, b.referenced_at) < now() - %(retention)s
  and not exists (
      select 1
      from jobs j
      join events e on e.stream_id = j.job_id and e.version = 1
      where j.org_id = b.org_id
        and j.status not in ('passed', 'failed', 'cancelled', 'timed_out')
        and 'sha256:' || encode(b.sha256, 'hex') in (e.data ->> 'bundle', e.data ->> 'build')
  )
returning org_id, encode(sha256, 'hex');
