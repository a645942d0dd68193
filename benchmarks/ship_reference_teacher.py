"""Copy a finished teacher run into the package as the shipped ``reference`` teacher.

Usage: python benchmarks/ship_reference_teacher.py --run runs/teacher_reference

Writes ``policies/checkpoints/reference/`` (float16 safetensors, config, tokenizer, the run's
source record) and ``benchmarks/reference_teacher/`` (training config, source record and the
training log, metrics.csv). Weights load back as float32 through ``load_policy``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from vla_distill.policies import load_policy, save_policy

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT_DIR = REPO / "policies" / "checkpoints" / "reference"
RECORD_DIR = REPO / "benchmarks" / "reference_teacher"
MAX_SIZE_BYTES = 30 * 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="train-teacher run folder with final/")
    args = parser.parse_args()
    run = Path(args.run)
    model, processor = load_policy(run / "final")
    if CHECKPOINT_DIR.exists():
        shutil.rmtree(CHECKPOINT_DIR)
    save_policy(model.half(), CHECKPOINT_DIR, processor)
    size = (CHECKPOINT_DIR / "model.safetensors").stat().st_size
    if size > MAX_SIZE_BYTES:
        raise SystemExit(f"reference weights are {size} bytes, above the 30 MiB limit; choose a smaller preset")
    RECORD_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("train_config.json", "source.json", "metrics.csv"):
        source = run / name if (run / name).is_file() else run / "final" / name
        shutil.copy(source, RECORD_DIR / name)
    shutil.copy(RECORD_DIR / "source.json", CHECKPOINT_DIR / "source.json")
    print(f"wrote {CHECKPOINT_DIR} ({size} bytes of weights) and {RECORD_DIR}")


if __name__ == "__main__":
    main()
