"""Random episode layouts: where the cubes, the zones and the gripper start."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_distill.sim.tabletop.instructions import OBJECT_COLORS, ZONE_COLORS
from vla_distill.sim.tabletop.tasks import CUBE_HALF_SIZE_M, ZONE_HALF_SIZE_M

CUBE_X_RANGE_M = (-0.16, 0.16)
CUBE_Y_RANGE_M = (-0.10, 0.14)
ZONE_X_RANGE_M = (-0.19, 0.19)
ZONE_Y_RANGE_M = (-0.10, 0.17)
MIN_CUBE_SPACING_M = 0.07
MIN_ZONE_SPACING_M = 0.14
# A cube starts clear of every zone, by at least this much beyond the zone edge (max-norm).
ZONE_CLEARANCE_M = ZONE_HALF_SIZE_M + CUBE_HALF_SIZE_M + 0.01
PUSH_DISTANCE_RANGE_M = (0.10, 0.24)
MAX_CUBE_YAW_RAD = 0.3
MAX_ATTEMPTS = 1000


@dataclass
class Layout:
    """Initial positions of one episode, in metres (world frame)."""

    cube_xy: dict[str, np.ndarray]
    cube_yaw: dict[str, float]
    zone_xy: dict[str, np.ndarray]
    gripper_xyz: np.ndarray


def _uniform_xy(rng: np.random.Generator, x_range, y_range) -> np.ndarray:
    return np.array([rng.uniform(*x_range), rng.uniform(*y_range)])


def _sample_zones(rng: np.random.Generator) -> dict[str, np.ndarray]:
    for _ in range(MAX_ATTEMPTS):
        first = _uniform_xy(rng, ZONE_X_RANGE_M, ZONE_Y_RANGE_M)
        second = _uniform_xy(rng, ZONE_X_RANGE_M, ZONE_Y_RANGE_M)
        if np.linalg.norm(first - second) >= MIN_ZONE_SPACING_M:
            return dict(zip(ZONE_COLORS, (first, second)))
    raise RuntimeError("failed to place the target zones; the zone ranges are too small")


def _cube_fits(xy, placed, zones, target_zone) -> bool:
    if any(np.linalg.norm(xy - other) < MIN_CUBE_SPACING_M for other in placed):
        return False
    if any(np.max(np.abs(xy - zone)) < ZONE_CLEARANCE_M for zone in zones.values()):
        return False
    if target_zone is None:
        return True
    distance = np.linalg.norm(xy - target_zone)
    return PUSH_DISTANCE_RANGE_M[0] <= distance <= PUSH_DISTANCE_RANGE_M[1]


def sample_layout(rng: np.random.Generator, target: str, zone: str | None) -> Layout:
    """Draw one layout; the target cube is placed first so a push target keeps its distance."""
    zones = _sample_zones(rng)
    order = [target] + [color for color in OBJECT_COLORS if color != target]
    cube_xy: dict[str, np.ndarray] = {}
    for color in order:
        target_zone = zones[zone] if (color == target and zone is not None) else None
        for _ in range(MAX_ATTEMPTS):
            xy = _uniform_xy(rng, CUBE_X_RANGE_M, CUBE_Y_RANGE_M)
            if _cube_fits(xy, cube_xy.values(), zones, target_zone):
                cube_xy[color] = xy
                break
        else:
            return sample_layout(rng, target, zone)
    cube_yaw = {color: float(rng.uniform(-MAX_CUBE_YAW_RAD, MAX_CUBE_YAW_RAD)) for color in OBJECT_COLORS}
    gripper = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.16, -0.12), rng.uniform(0.12, 0.15)])
    return Layout({c: cube_xy[c] for c in OBJECT_COLORS}, cube_yaw, zones, gripper)
