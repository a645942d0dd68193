"""Scripted experts that read privileged simulator state.

Each family is a feedback law: the action depends only on the current positions of the
grasp point, the named cube and zone, and the finger opening, not on earlier steps. A policy
that observes the same scene can therefore imitate every label. An expert with hidden phases
gives different labels to states that look alike, and behaviour cloning averages them into
actions that stall.

The grasp point descends along a cone around its goal: the farther it is sideways, the
higher it stays. The fingers thus pass above the other cubes, and the descent starts
gradually instead of at a sharp distance threshold. Actions are the displacement to the waypoint in units of the env's maximum step
(2 cm), clipped to [-1, 1], so the expert moves at full speed when far and settles when close.
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
CONE_RADIUS_M = 0.01  # sideways distance from the goal inside which the cone is at its lowest
CONE_SLOPE = 1.0  # metres of height gained per metre of sideways distance beyond that radius
RISE_MARGIN_M = 0.02  # below the cone by this much or more, the expert only climbs
GRASP_XY_TOLERANCE_M = 0.012
GRASP_Z_TOLERANCE_M = 0.012
CLOSED_OPENING_M = 0.045  # finger opening below which the fingers hold a 4 cm cube
LIFT_SPEED_FRACTION = 0.5
PUSH_SPEED_FRACTION = 0.5


class ScriptedExpert:
    """Feedback-law expert for reach, push and lift."""

    def reset(self) -> None:
        """Start a new episode. The expert keeps no state between steps."""

    def act(self, env: "TabletopEnv") -> np.ndarray:
        grasp = env.grasp_position()
        obj, zone = env.target_positions()
        family = env.task.family
        if family == "reach":
            waypoint, speed = cone_waypoint(grasp, obj[:2], REACH_HEIGHT_M)
            gripper = OPEN
        elif family == "lift":
            waypoint, speed, gripper = _lift(grasp, obj, env.gripper_opening())
        else:
            waypoint, speed, gripper = _push(grasp, obj, zone)
        action = np.zeros(7)
        action[:3] = np.clip((waypoint - grasp) / env.max_delta_m, -speed, speed)
        action[6] = gripper
        return action


def cone_waypoint(grasp: np.ndarray, goal_xy: np.ndarray, goal_z: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the waypoint toward (goal_xy, goal_z) on a cone that keeps the fingers high, and speed limits.

    The cone's height grows with the sideways distance from the goal, up to the hover height.
    Below the cone the sideways speed shrinks linearly to zero at RISE_MARGIN_M under it, so
    the fingers climb before they sweep sideways, and the action changes smoothly with the state.
    """
    sideways = float(np.linalg.norm(grasp[:2] - goal_xy))
    cone_z = goal_z + np.clip((sideways - CONE_RADIUS_M) * CONE_SLOPE, 0.0, HOVER_HEIGHT_M - goal_z)
    sideways_speed = float(np.clip(1.0 - (cone_z - grasp[2]) / RISE_MARGIN_M, 0.0, 1.0))
    return np.array([goal_xy[0], goal_xy[1], cone_z]), np.array([sideways_speed, sideways_speed, 1.0])


def _lift(grasp, obj, opening):
    """Descend open around the cube, close once it sits between the fingers, then rise."""
    between_fingers = (
        np.linalg.norm(grasp[:2] - obj[:2]) < GRASP_XY_TOLERANCE_M
        and abs(grasp[2] - obj[2]) < GRASP_Z_TOLERANCE_M
    )
    if not between_fingers:
        return *cone_waypoint(grasp, obj[:2], GRASP_HEIGHT_M), OPEN
    if opening > CLOSED_OPENING_M:
        return grasp.copy(), np.ones(3), CLOSE  # hold still while the fingers close
    # A held cube slips when the fingers accelerate upward at full speed.
    return np.array([grasp[0], grasp[1], LIFT_TARGET_HEIGHT_M]), np.array([1.0, 1.0, LIFT_SPEED_FRACTION]), CLOSE


def _push(grasp, obj, zone):
    """Lower the closed fingers behind the cube on its line to the zone, then push along it."""
    direction = zone[:2] - obj[:2]
    direction /= max(np.linalg.norm(direction), 1e-6)
    if _behind_cube(grasp, obj, direction):
        # Steer toward the contact point behind the cube and one full step beyond it, so the
        # push goes on while lateral drift is corrected.
        contact = obj[:2] - direction * PUSH_STANDOFF_M + direction * 0.02
        speed = np.array([PUSH_SPEED_FRACTION, PUSH_SPEED_FRACTION, 1.0])
        return np.array([*contact, PUSH_HEIGHT_M]), speed, CLOSE
    approach = obj[:2] - direction * PUSH_APPROACH_M
    return *cone_waypoint(grasp, approach, PUSH_HEIGHT_M), CLOSE


def _behind_cube(grasp, obj, direction) -> bool:
    """Return whether the low fingers are behind the cube on the line to the zone."""
    offset = obj[:2] - grasp[:2]
    along = float(offset @ direction)
    lateral = abs(float(offset[0] * direction[1] - offset[1] * direction[0]))
    low = grasp[2] < PUSH_HEIGHT_M + 0.01
    return low and 0.015 < along < PUSH_APPROACH_M + 0.015 and lateral < 0.02
