-- The fleet's maintenance (rescuing dead agents' jobs, queue timeouts, waking agents
-- for retries that fell due) is done by one agent per interval, not by every agent
-- every interval: a fleet of hundreds would otherwise keep a core of the server busy
-- sweeping an empty queue (bench/fleet.py). Each agent asks for the turn every
-- interval (runner/agent.py); the first to ask after it falls due takes it.
create table fleet_turns (
    chore   text primary key,
    done_at timestamptz not null
);

insert into fleet_turns (chore, done_at) values ('maintenance', 'epoch');
