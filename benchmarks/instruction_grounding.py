"""Measure whether a policy follows the cube colour named in its instruction.

Usage: python benchmarks/instruction_grounding.py --policy reference --scenes 30 --seed 2000

For each seeded reach scene, the expert takes two steps. The policy then receives the same
observation three times, naming the red, green and blue cube in turn. The script prints the
fraction of scenes where the colour changes the policy's dx or dy, and how often the signs of
the policy's dx and dy match the expert's for the named cube. A policy that ignores the colour
scores 0 on the first figure and about 0.5 on the second.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vla_distill.policies import load_policy
from vla_distill.sim.tabletop.env import TabletopEnv
from vla_distill.sim.tabletop.instructions import OBJECT_COLORS
from vla_distill.sim.tabletop.tasks import Task


def scene_actions(env: TabletopEnv, policy, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return the policy's and the expert's actions for each named colour in one scene."""
    obs, _ = env.reset(seed=seed)
    for _ in range(2):
        obs, *_ = env.step(env.expert_action(0.3))
    policy_actions, expert_actions = [], []
    for color in OBJECT_COLORS:
        env.task = Task("reach", color)
        policy_actions.append(policy.predict_action({**obs, "instruction": f"reach the {color} cube"}))
        expert_actions.append(env.expert_action())
    return policy_actions, expert_actions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="reference", help="PyTorch checkpoint folder or 'reference'")
    parser.add_argument("--scenes", type=int, default=30, help="number of seeded scenes")
    parser.add_argument("--seed", type=int, default=2000, help="seed of the first scene")
    args = parser.parse_args()
    if args.scenes < 1:
        parser.error(f"--scenes must be at least 1, got {args.scenes}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    try:
        policy, _ = load_policy(args.policy)
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"cannot load --policy {args.policy!r}: {error}")
    env = TabletopEnv(task="reach-red")
    changed, sign_matches = 0, []
    for seed in range(args.seed, args.seed + args.scenes):
        policy_actions, expert_actions = scene_actions(env, policy, seed)
        changed += any(not np.allclose(policy_actions[0][:2], other[:2]) for other in policy_actions[1:])
        for ours, expert in zip(policy_actions, expert_actions):
            sign_matches.append(np.array_equal(np.sign(np.round(ours[:2], 1)), np.sign(np.round(expert[:2], 1))))
    env.close()
    result = {
        "policy": args.policy,
        "scenes": args.scenes,
        "seeds": [args.seed, args.seed + args.scenes - 1],
        "colour_changes_xy_action": changed / args.scenes,
        "xy_sign_agreement": float(np.mean(sign_matches)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
