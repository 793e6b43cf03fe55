-- Standing claims: an idle slot's claim on the next job for its target, which the
-- submit of that job fulfils in its own transaction (runner/standing.py says why).
--
-- A slot that finds nothing to claim leaves a row here. A submit of one grouped job,
-- for an org without a parallel limit, takes the best row of the job's target whose
-- agent holds its lease: a slot with the job's app installed first, then the one idle
-- longest. It deletes the row, appends the job's JobAssigned for that slot with the
-- job's other events and records the slot's occupancy, as the slot's own claim would
-- have (claim_jobs), and its notification tells the agent which slot got the job. The
-- JobAssigned is written as the runner's: the slot made the claim, the submit only
-- matched a job to it.
--
-- Every claim a slot makes itself begins by withdrawing its standing claim
-- (begin_claim). Row locks decide a race between the two: whichever deletes the row
-- first wins, and a claim that finds an occupancy it does not know of learns that its
-- slot was given a batch ('given'), which it runs, or hands back when it never heard
-- which.

create table standing_claims (
    device_id                uuid primary key,
    agent_id                 text        not null
                             references agent_leases (agent_id) on delete cascade,
    target                   text        not null,
    installed_app_version_id text,
    since                    timestamptz not null default clock_timestamp()
);

create index standing_claims_by_target on standing_claims (target, since);

drop function claim_jobs(uuid, text, text, text, uuid, text,
                         uuid[], integer[], integer[], text[], jsonb[], jsonb[]);
drop function submit_jobs(boolean, text, text, text, text, uuid, text, bytea, uuid, uuid[],
                          uuid[], integer[], integer[], text[], jsonb[], jsonb[], text);
drop function append_events(uuid[], integer[], integer[], text[], jsonb[], jsonb[]);
drop function begin_claim(uuid, text);

-- Every claim of a slot opens here: it withdraws the slot's standing claim, ends the
-- slot's last batch (*last_batch*: its jobs, as the slot knows them) and says whether
-- the agent still holds its lease: 'open', or 'lease_lost'. It says 'given' instead
-- when the slot holds a batch it does not know of: one a submit gave it, or one a claim
-- of its committed unbeknown to it (its connection broke before the reply).
create function begin_claim(slot_device uuid, slot_agent text, last_batch uuid[])
returns text
language plpgsql as $$
declare
    lease_held boolean;
begin
    perform set_config('synchronous_commit', 'off', true);
    delete from standing_claims s where s.device_id = slot_device and s.agent_id = slot_agent;
    delete from slot_occupancy o
    where o.device_id = slot_device and o.agent_id = slot_agent and o.job_ids = last_batch;
    if exists (select 1 from slot_occupancy o
               where o.device_id = slot_device and o.agent_id = slot_agent) then
        return 'given';
    end if;
    select l.expires_at > now() into lease_held
    from agent_leases l
    where l.agent_id = slot_agent
    for key share;
    return case when coalesce(lease_held, false) then 'open' else 'lease_lost' end;
end;
$$;

create function claim_jobs(
    slot_device uuid,
    slot_agent text,
    slot_target text,
    last_batch uuid[],
    unit_org text,
    unit_group uuid,
    unit_app_version text,
    -- The JobAssigned events, one per job of the batch, as append_events takes them.
    events jsonb
) returns text
language plpgsql as $$
declare
    opened text := begin_claim(slot_device, slot_agent, last_batch);
begin
    if opened <> 'open' then
        return opened;
    end if;
    insert into slot_occupancy
        (device_id, agent_id, org_id, target, group_id, app_version_id, job_ids)
    select slot_device, slot_agent, unit_org, slot_target, unit_group, unit_app_version,
           array_agg(a.stream_id order by a.position)
    from append_events(events) a;
    return opened;
end;
$$;

-- A slot with nothing to claim stands: begin_claim, then, while the lease holds, the
-- standing claim, with the app the slot has installed. Returns what begin_claim said.
create function stand(slot_device uuid, slot_agent text, slot_target text,
                      last_batch uuid[], installed text)
returns text
language plpgsql as $$
declare
    opened text := begin_claim(slot_device, slot_agent, last_batch);
begin
    if opened = 'open' then
        -- A device's row may still be an earlier process's, superseded by this one.
        insert into standing_claims (device_id, agent_id, target, installed_app_version_id)
        values (slot_device, slot_agent, slot_target, installed)
        on conflict (device_id) do update
            set agent_id = excluded.agent_id,
                target = excluded.target,
                installed_app_version_id = excluded.installed_app_version_id,
                since = excluded.since;
    end if;
    return opened;
end;
$$;

-- Takes the best standing claim for a job of *job_org*, *job_target* and
-- *job_app_version*, if there is one to take: the row is deleted, and the agent's lease
-- locked until the submit commits, so that no rescuer hands on the job meanwhile.
create function take_standing_claim(
    job_org text, job_target text, job_app_version text,
    out device_id uuid, out agent_id text
)
language plpgsql as $$
begin
    delete from standing_claims s
    where s.device_id = (
        select c.device_id
        from standing_claims c
        join agent_leases l on l.agent_id = c.agent_id
        where c.target = job_target
          and l.expires_at > now()
          -- An org's limit is counted by the slots' own claims.
          and not exists (select 1 from org_limits o where o.org_id = job_org)
        order by c.installed_app_version_id is not distinct from job_app_version desc,
                 c.since
        limit 1
        for update of c skip locked
        for key share of l skip locked
    )
    returning s.device_id, s.agent_id into device_id, agent_id;
end;
$$;

-- migrations/033_submit_jobs.sql, and now: a single grouped job (*grouped_in* set) may
-- go straight to a standing claim.
create function submit_jobs(
    check_duplicate boolean,
    org text,
    app_version text,
    test text,
    target_type text,
    submission uuid,
    request_key text,
    body_hash bytea,
    run uuid,
    new_jobs uuid[],
    grouped_in uuid,
    -- The jobs' events, as append_events takes them.
    events jsonb,
    announcement text,
    out duplicate uuid,
    out claimed boolean,
    out recorded_at timestamptz[]
)
language plpgsql as $$
declare
    given_device uuid;
    given_agent text;
begin
    -- The submit's commit does not wait for its WAL flush (http_api/submit.py says why).
    perform set_config('synchronous_commit', 'off', true);
    if check_duplicate then
        select j.job_id into duplicate
        from jobs j
        where j.org_id = org
          and j.app_version_id = app_version
          and j.test_path = test
          and j.target = target_type
          and j.status in ('submitted', 'grouped', 'assigned', 'running', 'retrying')
        order by j.submitted_at
        limit 1;
    end if;
    claimed := request_key is null and run is null;
    if not claimed then
        insert into api_submissions
            (submission_id, org_id, idempotency_key, request_hash, run_id, job_ids)
        values (submission, org, request_key, body_hash, run,
                case when duplicate is null then new_jobs else array[duplicate] end)
        on conflict (org_id, idempotency_key) do nothing;
        claimed := found;
    end if;
    if not claimed or duplicate is not null then
        return;
    end if;
    if grouped_in is not null and announcement <> '' then
        select t.device_id, t.agent_id into given_device, given_agent
        from take_standing_claim(org, target_type, app_version) t;
    end if;
    if given_device is not null then
        -- The job's JobAssigned, as the slot's claim would have written it, goes in with
        -- its submit and grouping; the announcement says which slot it is for.
        events := events || jsonb_build_object(
            'stream_id', new_jobs[1],
            'expected_version', 0,
            'nth', jsonb_array_length(events) + 1,
            'type', 'JobAssigned',
            'data', jsonb_build_object(
                'attempt', 1, 'device_id', given_device, 'agent_id', given_agent),
            'metadata', events -> 0 -> 'metadata'
                || jsonb_build_object('actor', 'runner:' || given_agent));
        insert into slot_occupancy
            (device_id, agent_id, org_id, target, group_id, app_version_id, job_ids)
        values (given_device, given_agent, org, target_type, grouped_in, app_version,
                new_jobs);
        announcement := format('{"assigned":{"device_id":"%s","agent_id":%s},"jobs":%s}',
                               given_device, to_json(given_agent), announcement);
    end if;
    select array_agg(a.recorded_at order by a.position) into recorded_at
    from append_events(events) as a;
    perform pg_notify('qgjob_jobs', announcement);
    -- A job given to a slot is appended to again within milliseconds, and the runner's
    -- notification of that wakes the projector: waking it now as well would only make it
    -- compete for the CPU with the job's start.
    if given_device is null then
        perform pg_notify('qgjob_events', '');
    end if;
end;
$$;
