-- Which organisation installed which app on a device. Devices are the operator's fleet,
-- shared by every organisation, but an app version id names a build only within its
-- organisation, and which builds an organisation tests is its own business: the API
-- shows each organisation its own installs alone. The projector keeps the column up to
-- date from each AppInstalled's metadata; here it is filled in for what it applied
-- already, app versions in order of first install as it would have listed them.

alter table devices add column installed_by_org jsonb not null default '{}';

update devices
set installed_by_org = installs.by_org
from (
    select stream_id, jsonb_object_agg(org_id, apps) as by_org
    from (
        select stream_id, org_id, jsonb_agg(app_version_id order by first_position) as apps
        from (
            select stream_id, metadata->>'org_id' as org_id,
                   data->>'app_version_id' as app_version_id, min(position) as first_position
            from events
            where type = 'AppInstalled'
            group by 1, 2, 3
        ) as first_installs
        group by 1, 2
    ) as per_org
    group by 1
) as installs
where installs.stream_id = devices.device_id;
