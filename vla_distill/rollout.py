"""Run seeded episodes of a policy on vector envs, one task at a time.

Episode ``i`` of a task uses ``reset(seed=seeds[i])`` whatever the number of worker
processes, so every policy evaluated with the same seeds gets identical episodes. The
vector env runs with auto-reset disabled: a finished sub-env is reset explicitly with its
next seed, so no reset observation is ever paired with the previous episode's action.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import vla_distill.sim  # noqa: F401  registers the environment ids
from vla_distill.sim import ENV_ID

logger = logging.getLogger(__name__)


@dataclass
class EpisodeRecord:
    """Outcome of one episode; the step arrays are filled only when recording is on.

    ``actions`` contains the label of each step: the executed action, or for the noisy expert
    the clean expert action.
    """

    task: str
    seed: int
    instruction: str
    success: bool = False
    steps: int = 0
    images: list = field(default_factory=list)
    states: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    target_offsets: list = field(default_factory=list)
    frames: list = field(default_factory=list)


class ExpertPolicy:
    """The suite's scripted expert, run inside each env on privileged state."""

    name = "expert"

    def __init__(self, noise_std: float = 0.0):
        if noise_std < 0:
            raise ValueError(f"expert noise must be >= 0, got {noise_std}")
        self.noise_std = noise_std

    def act(self, envs: gym.vector.VectorEnv, obs: dict) -> tuple[np.ndarray, np.ndarray]:
        """Return the actions to execute (noisy) and the clean expert actions to record."""
        pairs = np.stack(envs.call("expert_actions", self.noise_std))  # (B, 2, 7)
        return pairs[:, 0], pairs[:, 1]


class ExpertLabelledPolicy:
    """A policy that drives while the scripted expert labels every visited state (DAgger).

    On each step and in each env, the expert's clean action is executed instead of the
    driver's with probability ``expert_share``, and Gaussian noise with std ``noise_std`` is
    added to whichever action runs. Both draws come from the episode's own expert RNG. The
    recorded label is always the clean expert action, so a policy trained on the result learns
    to recover from the driver's mistakes and from the perturbed states around its path.
    """

    def __init__(self, driver, expert_share: float = 0.0, noise_std: float = 0.0):
        if not 0.0 <= expert_share <= 1.0:
            raise ValueError(f"--expert-share must be in [0, 1], got {expert_share}")
        if noise_std < 0:
            raise ValueError(f"invalid --noise {noise_std}: the std must be >= 0")
        self.driver = driver
        self.expert_share = expert_share
        self.noise_std = noise_std
        self.name = f"{driver.name} labelled by expert"

    def act(self, envs: gym.vector.VectorEnv, obs: dict) -> tuple[np.ndarray, np.ndarray]:
        """Return the actions to execute (the driver's, or by chance the expert's, plus noise) and the expert labels."""
        clean = np.stack(envs.call("expert_actions", 0.0))[:, 1]
        driven = self.driver.act(envs, obs)
        use_expert = np.array(envs.call("expert_takes_over", self.expert_share), dtype=bool)
        executed = np.where(use_expert[:, None], clean, driven)
        if self.noise_std > 0:
            executed = np.clip(executed + np.stack(envs.call("action_noise", self.noise_std)), -1.0, 1.0)
        return executed.astype(np.float32), clean

    def reset(self) -> None:
        if hasattr(self.driver, "reset"):
            self.driver.reset()


class ObservationPolicy:
    """Adapter for any policy with ``predict_action(batched_obs) -> (B, 7)``."""

    def __init__(self, policy, name: str):
        self.policy = policy
        self.name = name

    def act(self, envs: gym.vector.VectorEnv, obs: dict) -> np.ndarray:
        return np.asarray(self.policy.predict_action(obs), dtype=np.float32)


def _make_env(kwargs: dict) -> gym.Env:
    # Module-level so spawned workers import this module, which registers the env ids.
    return gym.make(ENV_ID, disable_env_checker=True, **kwargs)


def make_vector_env(num_envs: int, image_size: int = 64, render_size: int | None = None):
    """Create ``num_envs`` tabletop envs, in worker processes when more than one.

    Each reset names its task through ``options={"task": ...}``, so one vector env serves
    every task of an evaluation.
    """
    if num_envs < 1:
        raise ValueError(f"--num-envs must be at least 1, got {num_envs}")
    kwargs = {"task": "all", "image_size": image_size}
    if render_size:
        kwargs.update(render_mode="rgb_array", render_size=render_size)
    factories = [functools.partial(_make_env, kwargs) for _ in range(num_envs)]
    if num_envs == 1:
        return gym.vector.SyncVectorEnv(factories, autoreset_mode=AutoresetMode.DISABLED)
    # spawn: a forked child would inherit the parent's OpenGL and torch thread state.
    return gym.vector.AsyncVectorEnv(
        factories, shared_memory=False, context="spawn", autoreset_mode=AutoresetMode.DISABLED
    )


def run_episodes(
    policy,
    episodes: Sequence[tuple[str, int]],
    num_envs: int = 1,
    image_size: int = 64,
    record_steps: bool = False,
    video_episodes: Sequence[tuple[str, int]] = (),
    render_size: int = 256,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
) -> list[EpisodeRecord]:
    """Run one episode per (task, seed) pair and return the records in the same order.

    ``record_steps`` keeps every observation, action and target offset (``TabletopEnv.target_offsets``); episodes listed in
    ``video_episodes`` keep rendered frames for a video.
    """
    episodes = [(str(task), int(seed)) for task, seed in episodes]
    if not episodes:
        return []
    num_envs = max(1, min(num_envs, len(episodes)))
    video_episodes = set(video_episodes)
    envs = make_vector_env(num_envs, image_size, render_size if video_episodes else None)
    try:
        # AsyncVectorEnv returns a masked-out sub-env's last observation, which is None
        # before its first reset, so every sub-env is reset once here. Each episode's own
        # reset(seed=...) reseeds its env, so this reset changes no episode.
        envs.reset(options={"task": episodes[0][0]})
        return _drive(envs, policy, episodes, record_steps, video_episodes, on_episode)
    finally:
        envs.close()


def _drive(envs, policy, episodes, record_steps, video_episodes, on_episode) -> list[EpisodeRecord]:
    num_envs = envs.num_envs
    pending = list(episodes)
    active: list[EpisodeRecord | None] = [None] * num_envs
    finished: dict[tuple[str, int], EpisodeRecord] = {}
    obs = _reset_slots(envs, pending, active, np.ones(num_envs, dtype=bool), None)
    if hasattr(policy, "reset"):
        policy.reset()

    while any(record is not None for record in active):
        _capture_frames(envs, active, video_episodes)
        actions = policy.act(envs, obs)
        # A policy may return (executed, label) pairs; the label is what gets recorded.
        actions, labels = actions if isinstance(actions, tuple) else (actions, actions)
        if record_steps:
            _record_step(envs, active, obs, labels)
        obs, _, terminated, truncated, info = envs.step(actions)
        done = np.zeros(num_envs, dtype=bool)
        for i, record in enumerate(active):
            if record is None:
                continue
            record.steps += 1
            if terminated[i] or truncated[i]:
                record.success = bool(info["is_success"][i])
                done[i] = True
        if done.any():
            _capture_frames(envs, [r if done[i] else None for i, r in enumerate(active)], video_episodes)
        for i in np.flatnonzero(done):
            record = active[i]
            finished[(record.task, record.seed)] = record
            if on_episode is not None:
                on_episode(record)
            active[i] = None
        if done.any() and pending:
            obs = _reset_slots(envs, pending, active, done, obs)
    return [finished[key] for key in episodes]


def _record_step(envs, active, obs, labels) -> None:
    """Append the observation, label and privileged target offsets of each active slot."""
    offsets = envs.call("target_offsets")
    for i, record in enumerate(active):
        if record is not None:
            record.images.append(obs["image"][i])
            record.states.append(obs["state"][i])
            record.actions.append(labels[i].astype(np.float32))
            record.target_offsets.append(offsets[i])


def _reset_slots(envs, pending, active, mask, obs) -> dict:
    """Start the next pending episodes in the masked slots and return the merged observation.

    Slots that receive the same task are reset together; a reset names its task in options.
    """
    assigned: dict[int, tuple[str, int]] = {}
    for i in np.flatnonzero(mask):
        if pending:
            assigned[int(i)] = pending.pop(0)
    for task in dict.fromkeys(task for task, _ in assigned.values()):
        group = np.array([assigned.get(i, ("", 0))[0] == task for i in range(envs.num_envs)])
        seeds = [assigned[i][1] if group[i] else None for i in range(envs.num_envs)]
        new_obs, _ = envs.reset(seed=seeds, options={"reset_mask": group, "task": task})
        obs = new_obs if obs is None else _merge(obs, new_obs, group)
        for i in np.flatnonzero(group):
            task_name, seed = assigned[int(i)]
            active[i] = EpisodeRecord(task=task_name, seed=seed, instruction=str(new_obs["instruction"][i]))
    return obs


def _merge(old: dict, new: dict, mask: np.ndarray) -> dict:
    merged = {}
    for key in old:
        if isinstance(old[key], np.ndarray) and old[key].dtype != object:
            merged[key] = np.where(mask.reshape((-1,) + (1,) * (old[key].ndim - 1)), new[key], old[key])
        else:
            merged[key] = tuple(n if m else o for o, n, m in zip(old[key], new[key], mask))
    return merged


def _capture_frames(envs, active, video_episodes) -> None:
    recording = [i for i, r in enumerate(active) if r is not None and (r.task, r.seed) in video_episodes]
    if not recording:
        return
    frames = envs.call("render")
    for i in recording:
        active[i].frames.append(frames[i])
