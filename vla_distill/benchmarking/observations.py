"""Real observations of the tabletop suite for benchmarks, and their on-disk form.

Loading saved observations imports only numpy, so a child process that measures a
policy's memory does not also load MuJoCo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OBSERVATION_EPISODES = (("reach-red", 0), ("push-green", 1), ("lift-blue", 2))


def suite_observations(image_size: int = 64) -> list[dict]:
    """Return single observations from a few seeded expert episodes of the tabletop suite."""
    from vla_distill.rollout import ExpertPolicy, run_episodes  # noqa: PLC0415

    records = run_episodes(ExpertPolicy(), OBSERVATION_EPISODES, image_size=image_size, record_steps=True)
    observations = []
    for record in records:
        for image, state in zip(record.images, record.states):
            observations.append({"image": image, "state": state, "instruction": record.instruction})
    return observations


def save_observations(observations: list[dict], path: Path) -> None:
    np.savez(
        path,
        image=np.stack([o["image"] for o in observations]),
        state=np.stack([o["state"] for o in observations]),
        instruction=np.array([o["instruction"] for o in observations]),
    )


def load_observations(path: Path) -> list[dict]:
    data = np.load(path)
    return [
        {"image": data["image"][i], "state": data["state"][i], "instruction": str(data["instruction"][i])}
        for i in range(len(data["image"]))
    ]
