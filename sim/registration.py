"""Environment ids of vla-distill and the suites built from them."""

from __future__ import annotations

import gymnasium as gym

from vla_distill.sim.tabletop.tasks import ALL_TASKS

ENV_ID = "vla_distill/Tabletop-v0"
SUITES = {"tabletop": ENV_ID}


def register_envs() -> None:
    """Register every environment id once per process."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="vla_distill.sim.tabletop.env:TabletopEnv")


def suite_tasks(suite: str) -> tuple[str, ...]:
    """Return the task names of a suite, or raise ValueError for an unknown suite."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; available suites: {', '.join(SUITES)}")
    return ALL_TASKS
