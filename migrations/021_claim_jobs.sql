-- The end of a claim in one statement (runner/claim.py): while the agent's lease holds,
-- end the slot's previous occupancy, append the jobs' JobAssigned and record the new
-- occupancy. An idle slot claiming fresh jobs of an unlimited org needs nothing else, so
-- its whole claim is one round trip; a claim that chose from the jobs table ends with it
-- inside its transaction.
--
-- The key-share lock on the lease row keeps a rescuer from expiring the agent until the
-- claim commits. Returns false, appending nothing, when the lease has lapsed. The
-- claim's commit does not wait for its WAL flush (runner/claim.py says why that is safe).

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
declare
    lease_held boolean;
begin
    perform set_config('synchronous_commit', 'off', true);
    select l.expires_at > now() into lease_held
    from agent_leases l
    where l.agent_id = slot_agent
    for key share;
    if not coalesce(lease_held, false) then
        return false;
    end if;
    delete from slot_occupancy o where o.device_id = slot_device and o.agent_id = slot_agent;
    perform append_events(streams, expected_versions, offsets,
                          event_types, event_data, event_metadata);
    insert into slot_occupancy
        (device_id, agent_id, org_id, target, group_id, app_version_id, job_ids)
    values (slot_device, slot_agent, unit_org, slot_target, unit_group, unit_app_version,
            streams);
    return true;
end;
$$;
