"""Tasks of the tabletop suite and their geometric success rules.

A task is one family applied to one object, named ``"{family}-{object}"``, e.g. ``"lift-red"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_distill.sim.tabletop.instructions import FAMILIES, OBJECT_COLORS

CUBE_HALF_SIZE_M = 0.02
ZONE_HALF_SIZE_M = 0.05
REACH_TOLERANCE_M = 0.03
LIFT_HEIGHT_M = 0.08
LIFT_HOLD_DISTANCE_M = 0.04
ON_TABLE_MAX_HEIGHT_M = 0.03

MAX_EPISODE_STEPS = {"reach": 40, "push": 100, "lift": 60}

ALL_TASKS = tuple(f"{family}-{obj}" for family in FAMILIES for obj in OBJECT_COLORS)


@dataclass(frozen=True)
class Task:
    """One family applied to one object."""

    family: str
    object: str

    @property
    def name(self) -> str:
        return f"{self.family}-{self.object}"

    @property
    def max_episode_steps(self) -> int:
        return MAX_EPISODE_STEPS[self.family]


def parse_task(name: str) -> Task:
    """Parse ``"family-object"`` into a Task, or raise ValueError listing the valid names."""
    family, _, obj = name.partition("-")
    if family not in FAMILIES or obj not in OBJECT_COLORS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(ALL_TASKS)}")
    return Task(family, obj)


def resolve_tasks(spec: str) -> list[str]:
    """Expand a comma-separated list of tasks and families, or ``all``, into task names."""
    names: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if item == "all":
            names.extend(ALL_TASKS)
        elif item in FAMILIES:
            names.extend(f"{item}-{obj}" for obj in OBJECT_COLORS)
        else:
            names.append(parse_task(item).name)
    return list(dict.fromkeys(names))


def is_success(
    family: str, grasp_pos: np.ndarray, object_pos: np.ndarray, zone_pos: np.ndarray | None
) -> bool:
    """Apply the success rule of a family to world positions in metres.

    - reach: the grasp point (between the fingertips) is within 3 cm of the object centre.
    - push: the object centre lies inside the named 10 x 10 cm zone and the object rests on
      the table (centre below 3 cm).
    - lift: the object centre is at least 8 cm above the table and within 4 cm of the grasp
      point, so it is held rather than thrown.
    """
    if family == "reach":
        return bool(np.linalg.norm(grasp_pos - object_pos) < REACH_TOLERANCE_M)
    if family == "push":
        inside = np.all(np.abs(object_pos[:2] - zone_pos[:2]) < ZONE_HALF_SIZE_M)
        return bool(inside and object_pos[2] < ON_TABLE_MAX_HEIGHT_M)
    if family == "lift":
        near_grasp = np.linalg.norm(grasp_pos - object_pos) < LIFT_HOLD_DISTANCE_M
        return bool(object_pos[2] >= LIFT_HEIGHT_M and near_grasp)
    raise ValueError(f"unknown task family {family!r}; valid families: {', '.join(FAMILIES)}")
