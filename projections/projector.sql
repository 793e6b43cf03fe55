-- name: try_lock
-- One active projector per name: a session-level advisory lock, held on a connection of
-- its own (never in a transaction) for as long as the projector runs.
select pg_try_advisory_lock(7117004, hashtext(%(name)s));

-- name: alive
select 1;
