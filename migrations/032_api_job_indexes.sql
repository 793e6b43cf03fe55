-- Indexes on the jobs projection for the API's own queries, so none of them scans every
-- job. A submit looks for an identical job still queued or running (to return it rather
-- than queue a duplicate): a small partial index, as only active jobs are in it. Listing
-- jobs across organisations (local mode, the dashboard) goes newest first.

create index jobs_active_duplicates on jobs (org_id, app_version_id, test_path, target)
    where status in ('submitted', 'grouped', 'assigned', 'running', 'retrying');

create index jobs_newest on jobs (submitted_at desc, job_id desc);
