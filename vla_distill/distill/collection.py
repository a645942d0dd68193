"""Data collection of each distillation round, labelled by the teacher.

* Round 0 takes the steps of a demonstration file, whose expert actions are kept, or, without
  one, rollouts driven by the teacher's argmax actions.
* Round r >= 1 (DAgger, Ross et al. 2011, "A Reduction of Imitation Learning and Structured
  Prediction to No-Regret Online Learning") rolls out the student. In each step and env the
  teacher's action is executed instead with probability ``config.teacher_share(r)``.

Every visited step is labelled afterwards by a batched teacher pass over the recorded
observations (``label_steps``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vla_distill.distill.config import DistillConfig
from vla_distill.data.demos import TARGET_OFFSET_DIM
from vla_distill.distill.labels import CollectedSteps, LabelledRound, label_steps
from vla_distill.rollout import EpisodeRecord, ObservationPolicy, run_episodes
from vla_distill.training.data import load_training_demos

logger = logging.getLogger(__name__)

# Stream of the numpy seed sequence of the action mixing, kept apart from other seeded draws.
MIXING_STREAM = 11


class MixedPolicy:
    """Execute the teacher's action with probability ``teacher_share`` per env and step, else the student's.

    The choice is a Bernoulli draw per env from ``rng`` at every step, including envs whose
    episode has ended, so the draws of a step do not depend on which episodes are still running.
    """

    name = "student-teacher-mixture"

    def __init__(self, student, teacher, teacher_share: float, rng: np.random.Generator) -> None:
        self.student = student
        self.teacher = teacher
        self.teacher_share = teacher_share
        self.rng = rng

    def act(self, envs, obs: dict) -> np.ndarray:
        """Return the (B, A) actions to execute for a batched observation."""
        actions = np.asarray(self.student.predict_action(obs), dtype=np.float32)
        use_teacher = self.rng.random(len(actions)) < self.teacher_share
        if use_teacher.any():
            rows = np.flatnonzero(use_teacher)
            subset = {
                "image": obs["image"][rows],
                "state": obs["state"][rows],
                "instruction": [obs["instruction"][i] for i in rows],
            }
            actions[rows] = self.teacher.predict_action(subset)
        return actions


def collect_round(
    round_index: int,
    config: DistillConfig,
    teacher,
    student,
    demos_paths: list[Path],
    progress: bool = False,
) -> LabelledRound:
    """Collect the steps of one round and label them with the teacher."""
    started = time.perf_counter()
    if round_index == 0 and demos_paths:
        steps = demonstration_steps(demos_paths, teacher.config)
    else:
        policy = round_policy(round_index, config, teacher, student)
        steps = rollout_steps(policy, round_index, config, teacher.config, progress)
    logits, features = label_steps(
        teacher, steps.images, steps.states, steps.step_instructions(), config.label_batch_size
    )
    logger.info(
        "round %d: collected and labelled %d steps of %d episodes in %.1f s",
        round_index, steps.n_rows, len(steps.episode_task), time.perf_counter() - started,
    )
    return LabelledRound(round_index, steps, logits, features)


def round_policy(round_index: int, config: DistillConfig, teacher, student):
    """Return the policy that drives the rollouts of a round: the teacher in round 0, else a mixture."""
    teacher.eval()
    if round_index == 0:
        return ObservationPolicy(teacher, name="teacher")
    student.eval()
    rng = np.random.default_rng([config.seed, MIXING_STREAM, round_index])
    share = config.teacher_share(round_index)
    logger.info("round %d: the teacher's action is executed with probability %.3f", round_index, share)
    return MixedPolicy(student, teacher, share, rng)


def demonstration_steps(paths: list[Path], policy_config) -> CollectedSteps:
    """Return every committed step of the demonstration files with its expert action."""
    demos = load_training_demos(paths, policy_config)
    logger.info("round 0: %d steps of %d episodes from %s", len(demos.actions), demos.n_episodes, ", ".join(map(str, paths)))
    offsets = demos.target_offsets
    if offsets is None:
        offsets = np.full((len(demos.actions), TARGET_OFFSET_DIM), np.nan, dtype=np.float32)
    return CollectedSteps(
        images=demos.images,
        states=demos.states.astype(np.float32),
        expert_actions=demos.actions.astype(np.float32),
        has_expert=np.ones(len(demos.actions), dtype=bool),
        target_offsets=offsets.astype(np.float32),
        episode_index=demos.episode_index.astype(np.int64),
        episode_task=list(demos.episode_task),
        episode_instruction=list(demos.episode_instruction),
        episode_seed=np.asarray(demos.episode_seed, dtype=np.int64),
        episode_success=np.asarray(demos.episode_success, dtype=bool),
    )


def rollout_steps(policy, round_index: int, config: DistillConfig, policy_config, progress: bool) -> CollectedSteps:
    """Run the round's seeded episodes with ``policy`` and return every visited step."""
    seeds = config.round_seeds(round_index)
    tasks = config.task_names() if round_index == 0 else config.rollout_task_names()
    episodes = [(task, seed) for task in tasks for seed in seeds]
    bar = tqdm(total=len(episodes), desc=f"round {round_index} rollouts", unit="episode", disable=not progress, dynamic_ncols=True)
    try:
        records = run_episodes(
            policy,
            episodes,
            num_envs=config.num_envs,
            image_size=policy_config.image_size,
            record_steps=True,
            on_episode=lambda record: bar.update(1),
        )
    finally:
        bar.close()
    successes = sum(record.success for record in records)
    logger.info("round %d: %d of %d rollout episodes succeeded", round_index, successes, len(records))
    return steps_from_records(records, policy_config.action_dim)


def steps_from_records(records: list[EpisodeRecord], action_dim: int) -> CollectedSteps:
    """Stack the recorded observations of rollout episodes, which carry no expert actions."""
    images = np.concatenate([np.stack(record.images) for record in records])
    states = np.concatenate([np.stack(record.states) for record in records]).astype(np.float32)
    lengths = [len(record.images) for record in records]
    return CollectedSteps(
        images=images,
        states=states,
        expert_actions=np.zeros((len(images), action_dim), dtype=np.float32),
        has_expert=np.zeros(len(images), dtype=bool),
        target_offsets=np.concatenate([np.stack(record.target_offsets) for record in records]).astype(np.float32),
        episode_index=np.repeat(np.arange(len(records), dtype=np.int64), lengths),
        episode_task=[record.task for record in records],
        episode_instruction=[record.instruction for record in records],
        episode_seed=np.array([record.seed for record in records], dtype=np.int64),
        episode_success=np.array([record.success for record in records], dtype=bool),
    )
