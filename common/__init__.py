"""What the agent and the coordinator really share: config, auth, errors, health, web basics."""

__version__ = "0.1.0"
