-- A dead agent is known at once: each agent holds a session-level advisory lock under
-- this key on its lease's connection for as long as it lives (runner/agent.py). The
-- lock goes when the connection does, however the process died, so a rescuer that can
-- take it knows the agent is gone and hands its jobs on without waiting for the lease
-- to lapse (runner/rescue.py). The lease still covers an agent that is alive but cut
-- off from the database.

create function agent_life_key_v1(agent text) returns bigint
language sql immutable as $$ select hashtextextended('qgjob agent ' || agent, 0) $$;
