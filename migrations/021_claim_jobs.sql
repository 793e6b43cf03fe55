-- A claim in the database (runner/claim.py).
--
-- begin_claim opens one: it ends the slot's previous batch (every job of it has ended by
-- now) and says whether the agent still holds its lease. The key-share lock on the lease
-- row keeps a rescuer from expiring the agent until the claim commits. The claim's
-- commit does not wait for its WAL flush (runner/claim.py says why that is safe).
--
-- claim_jobs is the end of one, in one statement: begin_claim, then, while the lease
-- holds, the jobs' JobAssigned and the slot's new occupancy. An idle slot claiming fresh
-- jobs of an unlimited org needs nothing else, so its whole claim is one round trip; a
-- claim that chose from the jobs table ends with it inside its transaction. Returns
-- false, appending nothing, when the lease has lapsed.

create function begin_claim(slot_device uuid, slot_agent text) returns boolean
language plpgsql as $$
declare
    lease_held boolean;
begin
    perform set_config('synchronous_commit', 'off', true);
    delete from slot_occupancy o where o.device_id = slot_device and o.agent_id = slot_agent;
    select l.expires_at > now() into lease_held
    from agent_leases l
    where l.agent_id = slot_agent
    for key share;
    return coalesce(lease_held, false);
end;
$$;

create function claim_jobs(
    slot_device uuid,
    slot_agent text,
    slot_target text,
    unit_org text,
    unit_group uuid,
    unit_app_version text,
    -- The JobAssigned events, as append_events takes them.
    streams uuid[], expected_versions integer[], offsets integer[],
    event_types text[], event_data jsonb[], event_metadata jsonb[]
) returns boolean
language plpgsql as $$
begin
    if not begin_claim(slot_device, slot_agent) then
        return false;
    end if;
    perform append_events(streams, expected_versions, offsets,
                          event_types, event_data, event_metadata);
    insert into slot_occupancy
        (device_id, agent_id, org_id, target, group_id, app_version_id, job_ids)
    values (slot_device, slot_agent, unit_org, slot_target, unit_group, unit_app_version,
            streams);
    return true;
end;
$$;
