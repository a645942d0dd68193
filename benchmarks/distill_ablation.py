"""Distillation ablation on the tabletop suite: which loss terms and rounds matter.

Usage:
    python benchmarks/distill_ablation.py --teacher reference --demos runs/quickstart/demos.h5 \\
        --out runs/ablation --episodes 50 --seed 1000 [--on-policy-student runs/quickstart/student]

Rows (student preset ``small``, 1,000 optimizer steps per round, batch 64):
- hard-label only: cross-entropy to the expert's action bins of the demonstrations (behaviour
  cloning), no rounds;
- offline KD: soft-label KL (T = 2) + feature matching (weight 0.1), no rounds;
- offline KD + relation: as above plus relational KD (weight 0.1), no rounds;
- KD with on-policy rounds: the ``student-small`` preset (soft + feature + hard label 0.5) with
  2 DAgger rounds. ``--on-policy-student`` reuses the student of a quickstart run with that
  preset instead of distilling it again.
Every student is evaluated on the same ``--episodes`` episodes per task (seeds S..S+N-1).
Writes ``ablation.json`` and ``ablation.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vla_distill.distill import distill, load_distill_config
from vla_distill.evaluation import evaluate, summarize, write_eval_info
from vla_distill.policy_loading import load_rollout_policy
from vla_distill.sim import suite_tasks

ROWS = {
    "hard-label only": {"rounds": 0, "loss": {"kd_loss_weight": 0.0, "feature_loss_weight": 0.0, "relation_loss_weight": 0.0, "hard_label_weight": 1.0}},
    "offline KD (soft + feature)": {"rounds": 0, "loss": {"kd_loss_weight": 1.0, "feature_loss_weight": 0.1, "relation_loss_weight": 0.0, "hard_label_weight": 0.0}},
    "offline KD + relation": {"rounds": 0, "loss": {"kd_loss_weight": 1.0, "feature_loss_weight": 0.1, "relation_loss_weight": 0.1, "hard_label_weight": 0.0}},
    "KD + 2 on-policy rounds": {"rounds": 2},
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def run_row(name: str, overrides: dict, args, reuse: Path | None) -> dict:
    folder = Path(args.out) / slug(name)
    started = time.perf_counter()
    if reuse is not None:
        student = reuse
    else:
        config = load_distill_config("student-small", seed=args.train_seed, **overrides)
        result = distill(args.teacher, config, folder, demos=args.demos, command=f"benchmarks/distill_ablation.py row {name!r}")
        student = Path(result.student_dir)
    train_s = time.perf_counter() - started
    policy = load_rollout_policy(str(student), num_threads=1)
    records = evaluate(policy, suite_tasks("tabletop"), args.episodes, args.seed, num_envs=args.num_envs)
    info = summarize(str(student), "tabletop", args.seed, args.episodes, records)
    write_eval_info(info, folder / "eval")
    params = sum(p.numel() for p in policy.policy.parameters())
    return {"row": name, "student": str(student), "success_rate": info["success_rate"], "ci95": info["ci95"],
            "params": params, "distill_wall_time_s": None if reuse else train_s, "reused": reuse is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="reference", help="teacher checkpoint folder or 'reference'")
    parser.add_argument("--demos", required=True, help="demonstration HDF5 file for round 0")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per task (default: 50)")
    parser.add_argument("--seed", type=int, default=1000, help="evaluation seed of episode 0 (default: 1000)")
    parser.add_argument("--train-seed", type=int, default=0, help="distillation seed (default: 0)")
    parser.add_argument("--num-envs", type=int, default=1, help="evaluation worker processes (default: 1)")
    parser.add_argument("--on-policy-student", default=None, help="reuse this student for the on-policy row")
    args = parser.parse_args()

    results = []
    for name, overrides in ROWS.items():
        reuse = Path(args.on_policy_student) if (args.on_policy_student and overrides.get("rounds")) else None
        results.append(run_row(name, overrides, args, reuse))
        print(json.dumps(results[-1]), flush=True)
    out = Path(args.out)
    (out / "ablation.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| variant | success rate | Wilson 95% interval | student params | distillation wall time |", "|---|---:|---|---:|---:|"]
    for r in results:
        wall = "reused" if r["reused"] else f"{r['distill_wall_time_s']:.0f} s"
        lines.append(f"| {r['row']} | {r['success_rate']:.3f} | [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {r['params']:,} | {wall} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
