"""The runner: device agents that claim grouped jobs, install apps once and run tests.

``run_agent(url, config, stop)`` runs one agent (``qgjobd runner`` is its command);
runner/policy.py is the claim policy, runner/executors/ what actually runs tests.
"""

from runner.agent import Agent, run_agent
from runner.claim import LeaseLost
from runner.config import AgentConfig, ConfigError, RetryPolicy, load_config, slots_from_spec
from runner.policy import ClaimPolicy

__all__ = [
    "Agent",
    "AgentConfig",
    "ClaimPolicy",
    "ConfigError",
    "LeaseLost",
    "RetryPolicy",
    "load_config",
    "run_agent",
    "slots_from_spec",
]
