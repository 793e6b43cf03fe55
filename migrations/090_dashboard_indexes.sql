-- Indexes for the dashboard's reads (http_api/dashboard_views.py).
--
-- The device timeline reads the ledger's events by time. A BRIN index suits an
-- append-only table whose recorded_at grows with position: it costs the append path
-- almost nothing and narrows a window read to the block ranges that hold it.
create index events_by_time on events using brin (recorded_at);

-- "The devices an organisation used" looks jobs up by device.
create index jobs_by_device on jobs (device_id, org_id) where device_id is not null;
