-- name: stream_versions
select stream_id, max(version)
from events
where stream_id = any(%(stream_ids)b::uuid[])
group by stream_id;
