"""Scripted experts that read privileged simulator state.

Each family is a small state machine over waypoints of the grasp point. Actions are the
displacement to the next waypoint in units of the env's maximum step (2 cm), clipped to
[-1, 1], so the expert moves at full speed when far and settles exactly when close.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vla_distill.sim.tabletop.env import TabletopEnv

OPEN, CLOSE = -1.0, 1.0
HOVER_HEIGHT_M = 0.09
GRASP_HEIGHT_M = 0.02
LIFT_TARGET_HEIGHT_M = 0.15
REACH_HEIGHT_M = 0.035
PUSH_HEIGHT_M = 0.02
PUSH_STANDOFF_M = 0.045  # grasp point behind the cube centre while pushing
PUSH_APPROACH_M = 0.065  # where the expert lowers the closed fingers before a push
XY_TOLERANCE_M = 0.008
Z_TOLERANCE_M = 0.006
CLOSE_STEPS = 6
LIFT_SPEED_FRACTION = 0.5
PUSH_SPEED_FRACTION = 0.5


class ScriptedExpert:
    """Waypoint-following expert for reach, push and lift."""

    def __init__(self):
        self.phase = 0
        self.counter = 0

    def reset(self) -> None:
        self.phase = 0
        self.counter = 0

    def act(self, env: "TabletopEnv") -> np.ndarray:
        grasp = env.grasp_position()
        obj, zone = env.target_positions()
        family = env.task.family
        if family == "reach":
            waypoint, gripper = self._reach(grasp, obj)
        elif family == "lift":
            waypoint, gripper = self._lift(grasp, obj)
        else:
            waypoint, gripper = self._push(grasp, obj, zone)
        action = np.zeros(7)
        action[:3] = np.clip((waypoint - grasp) / env.max_delta_m, -1.0, 1.0)
        if family == "push" and self.phase == 2:
            action[:2] = np.clip(action[:2], -PUSH_SPEED_FRACTION, PUSH_SPEED_FRACTION)
        if family == "lift" and self.phase == 3:
            # A held cube slips when the fingers accelerate upward at full speed.
            action[2] = min(action[2], LIFT_SPEED_FRACTION)
        action[6] = gripper
        return action

    def _reach(self, grasp, obj):
        above = np.array([obj[0], obj[1], HOVER_HEIGHT_M])
        if self.phase == 0 and _close_xy(grasp, above):
            self.phase = 1
        if self.phase == 0:
            return _rise_first(grasp, above), OPEN
        return np.array([obj[0], obj[1], REACH_HEIGHT_M]), OPEN

    def _lift(self, grasp, obj):
        above = np.array([obj[0], obj[1], HOVER_HEIGHT_M])
        low = np.array([obj[0], obj[1], GRASP_HEIGHT_M])
        if self.phase == 0 and _close_xy(grasp, above):
            self.phase = 1
        if self.phase == 1 and abs(grasp[2] - low[2]) < Z_TOLERANCE_M:
            self.phase = 2
        if self.phase == 2:
            self.counter += 1
            if self.counter >= CLOSE_STEPS:
                self.phase = 3
        if self.phase == 0:
            return _rise_first(grasp, above), OPEN
        if self.phase == 1:
            return low, OPEN
        if self.phase == 2:
            return grasp, CLOSE
        return np.array([grasp[0], grasp[1], LIFT_TARGET_HEIGHT_M]), CLOSE

    def _push(self, grasp, obj, zone):
        direction = zone[:2] - obj[:2]
        direction /= max(np.linalg.norm(direction), 1e-6)
        approach_xy = obj[:2] - direction * PUSH_APPROACH_M
        if self.phase == 2 and _lost_contact(grasp, obj, direction):
            self.phase = 0
        if self.phase == 0:
            above = np.array([*approach_xy, HOVER_HEIGHT_M])
            if _close_xy(grasp, above):
                self.phase = 1
            else:
                return _rise_first(grasp, above), CLOSE
        if self.phase == 1:
            low = np.array([*approach_xy, PUSH_HEIGHT_M])
            if abs(grasp[2] - PUSH_HEIGHT_M) < Z_TOLERANCE_M:
                self.phase = 2
            else:
                return low, CLOSE
        # Steer toward the contact point behind the cube and one full step beyond it, so the
        # push goes on while lateral drift is corrected.
        contact = obj[:2] - direction * PUSH_STANDOFF_M
        return np.array([*(contact + direction * 0.02), PUSH_HEIGHT_M]), CLOSE


def _close_xy(a, b) -> bool:
    return bool(np.linalg.norm(a[:2] - b[:2]) < XY_TOLERANCE_M)


def _rise_first(grasp, waypoint):
    """Climb to the waypoint's height before moving sideways when low, to avoid sweeping cubes."""
    if grasp[2] < waypoint[2] - 0.02:
        return np.array([grasp[0], grasp[1], waypoint[2]])
    return waypoint


def _lost_contact(grasp, obj, direction) -> bool:
    """Return whether the fingers are no longer behind the cube on the line to the zone."""
    offset = obj[:2] - grasp[:2]
    along = float(offset @ direction)
    lateral = abs(float(offset[0] * direction[1] - offset[1] * direction[0]))
    return along < 0.015 or lateral > 0.02
