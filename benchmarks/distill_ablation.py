"""Distillation ablation on the tabletop suite: which loss terms and rounds matter.

Usage:
    python benchmarks/distill_ablation.py --teacher reference \\
        --demos runs/qs_ref/demos.h5 runs/qs_ref/driven.h5 --round0-from runs/qs_ref \\
        --on-policy-student runs/qs_ref/student --out runs/ablation --episodes 50 --seed 1000

Every row starts from the same distillation config (``--config``, default
``student-reference``: the default student, batch 64, the target-offset term) and the same
round 0 data. Only the loss weights and the number of on-policy rounds change:

- hard-label only: cross-entropy to the expert's action bins (behaviour cloning), no rounds;
- offline KD (soft + feature): soft-label KL at the config's temperature plus feature matching, no rounds;
- offline KD + relation: as above plus relational KD (weight 0.1), no rounds;
- KD + R on-policy rounds: the config unchanged (soft + feature + hard label) with ``--rounds``
  DAgger rounds. ``--on-policy-student`` reuses a student distilled with exactly that config
  (for example the reference quickstart's) instead of distilling it again.

The offline rows train for ``--offline-steps`` optimizer steps (default: the on-policy row's
total, so every row gets the same number of steps). ``--round0-from`` copies the round 0
labels of an earlier run on the same files instead of labelling them once per row.
Every student is evaluated on the same ``--episodes`` episodes per task (seeds S..S+N-1).
``--rows`` picks rows by folder name (bc, kd, kd-relation, on-policy). Each row distills into
``--out/<row>``; a finished row is reused and an interrupted one resumed. Writes
``ablation.json`` and ``ablation.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vla_distill.distill import distill, load_distill_config
from vla_distill.distill.run_logs import ROUNDS_FILE, read_rounds
from vla_distill.evaluation import evaluate, summarize, write_eval_info
from vla_distill.policy_loading import load_rollout_policy
from vla_distill.sim import suite_tasks

# Folder name, table name and loss weights of each offline row.
OFFLINE_ROWS = {
    "bc": ("hard-label only", {"kd_loss_weight": 0.0, "feature_loss_weight": 0.0, "relation_loss_weight": 0.0, "hard_label_weight": 1.0}),
    "kd": ("offline KD (soft + feature)", {"kd_loss_weight": 1.0, "feature_loss_weight": 0.1, "relation_loss_weight": 0.0, "hard_label_weight": 0.0}),
    "kd-relation": ("offline KD + relation", {"kd_loss_weight": 1.0, "feature_loss_weight": 0.1, "relation_loss_weight": 0.1, "hard_label_weight": 0.0}),
}
ON_POLICY_ROW = "on-policy"
ROW_KEYS = (*OFFLINE_ROWS, ON_POLICY_ROW)


def row_configs(args) -> dict[str, tuple[str, object]]:
    """Return the table name and DistillConfig of each row in ``args.rows``, keyed by folder name."""
    on_policy = load_distill_config(args.config, seed=args.train_seed, rounds=args.rounds, num_threads=args.num_threads)
    offline_steps = args.offline_steps or on_policy.total_steps
    configs = {
        key: (name, load_distill_config(args.config, seed=args.train_seed, rounds=0, steps_per_round=offline_steps,
                                        num_threads=args.num_threads, loss=weights))
        for key, (name, weights) in OFFLINE_ROWS.items()
    }
    plural = "s" if args.rounds != 1 else ""
    configs[ON_POLICY_ROW] = (f"KD + {args.rounds} on-policy round{plural}", on_policy)
    return {key: configs[key] for key in ROW_KEYS if key in args.rows}


def distill_row(key: str, name: str, config, args) -> tuple[Path, float | None]:
    """Distill one row's student, or reuse ``--on-policy-student`` for the on-policy row.

    A row whose folder contains a finished student is not distilled again and an interrupted one
    is resumed. The wall time is the sum of the run's per-round times in rounds.csv.
    """
    if config.rounds > 0 and args.on_policy_student:
        student = Path(args.on_policy_student)
        return student, run_wall_time_s(student.parent)
    folder = Path(args.out) / key
    if not (folder / "student" / "model.safetensors").is_file():
        resume = any((folder / "checkpoints").glob("*.pt"))
        distill(args.teacher, config, folder, resume=resume, demos=args.demos, round0_from=args.round0_from,
                command=f"benchmarks/distill_ablation.py row {name!r}")
    return folder / "student", run_wall_time_s(folder)


def run_wall_time_s(run_dir: Path) -> float | None:
    """Return the summed round times of a distillation run folder, None without rounds.csv."""
    path = run_dir / ROUNDS_FILE
    return sum(float(row["wall_time_s"]) for row in read_rounds(path)) if path.is_file() else None


def evaluate_row(key: str, name: str, config, args) -> dict:
    student, wall_time_s = distill_row(key, name, config, args)
    policy = load_rollout_policy(str(student), num_threads=1)
    records = evaluate(policy, suite_tasks("tabletop"), args.episodes, args.seed, num_envs=args.num_envs)
    info = summarize(str(student), "tabletop", args.seed, args.episodes, records)
    write_eval_info(info, Path(args.out) / key / "eval")
    return {
        "row": name, "student": str(student), "success_rate": info["success_rate"], "ci95": info["ci95"],
        "per_task": info["per_task"], "params": sum(p.numel() for p in policy.policy.parameters()),
        "optimizer_steps": config.total_steps, "distill_wall_time_s": wall_time_s,
    }


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| variant | success rate | Wilson 95% interval | student params | optimizer steps | distillation wall time |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in results:
        wall = "unknown" if r["distill_wall_time_s"] is None else f"{r['distill_wall_time_s']:.0f} s"
        lines.append(f"| {r['row']} | {r['success_rate']:.3f} | [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] "
                     f"| {r['params']:,} | {r['optimizer_steps']:,} | {wall} |")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="reference", help="teacher checkpoint folder or 'reference'")
    parser.add_argument("--demos", nargs="+", required=True, help="round 0 HDF5 files, joined in order")
    parser.add_argument("--round0-from", default=None, help="run folder whose round 0 labels of --demos are copied")
    parser.add_argument("--config", default="student-reference", help="distillation preset or JSON file (default: student-reference)")
    parser.add_argument("--rounds", type=int, default=4, help="on-policy rounds of the last row (default: 4)")
    parser.add_argument("--offline-steps", type=int, default=None, help="optimizer steps of the offline rows (default: the on-policy row's total)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes per task (default: 50)")
    parser.add_argument("--seed", type=int, default=1000, help="evaluation seed of episode 0 (default: 1000)")
    parser.add_argument("--train-seed", type=int, default=0, help="distillation seed (default: 0)")
    parser.add_argument("--num-envs", type=int, default=1, help="evaluation worker processes (default: 1)")
    parser.add_argument("--num-threads", type=int, default=2, help="torch threads for distillation (default: 2)")
    parser.add_argument("--rows", nargs="+", choices=ROW_KEYS, default=list(ROW_KEYS),
                        help=f"rows to run, in table order whatever the order given (default: all of {', '.join(ROW_KEYS)})")
    parser.add_argument("--on-policy-student", default=None, help="reuse this student for the on-policy row")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for key, (name, config) in row_configs(args).items():
        results.append(evaluate_row(key, name, config, args))
        print(json.dumps(results[-1]), flush=True)
        (out / "ablation.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    (out / "ablation.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
