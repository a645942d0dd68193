"""The language-conditioned MuJoCo tabletop environment."""

from __future__ import annotations

import string
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from vla_distill.sim.gl import require_gl_backend
from vla_distill.sim.tabletop.expert import ScriptedExpert
from vla_distill.sim.tabletop.instructions import FAMILIES, INSTRUCTION_SETS, OBJECT_COLORS, ZONE_COLORS, sample_instruction
from vla_distill.sim.tabletop.layout import Layout, sample_layout
from vla_distill.sim.tabletop.tasks import ALL_TASKS, CUBE_HALF_SIZE_M, Task, is_success, parse_task

SCENE_PATH = Path(__file__).parent / "assets" / "tabletop.xml"
STATE_NAMES = ("ee_x_m", "ee_y_m", "ee_z_m", "gripper_opening_m")
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
# Privileged training targets: the named cube relative to the grasp point, and the named
# zone relative to that cube (NaN for tasks without a zone). See ``target_offsets``.
TARGET_OFFSET_NAMES = ("cube_dx_m", "cube_dy_m", "cube_dz_m", "zone_dx_m", "zone_dy_m")
MAX_INSTRUCTION_CHARS = 64
GRASP_OFFSET_M = np.array([0.0, 0.0, -0.04])  # grasp site relative to the mocap body
WORKSPACE_LOW_M = np.array([-0.25, -0.22, 0.02])
WORKSPACE_HIGH_M = np.array([0.25, 0.25, 0.25])
FINGER_TRAVEL_M = 0.04


class TabletopEnv(gym.Env):
    """A table with three coloured cubes, two coloured zones and a parallel gripper.

    The instruction names the task: reach a cube, push a cube into a zone, or lift a cube.
    Cube and zone positions, cube yaw, the gripper's start and the instruction's wording
    are drawn anew at every reset.

    ## Action space

    ``Box(-1, 1, (7,), float32)``, one control step = 10 physics steps of 2 ms (20 Hz).

    | index | name    | meaning                                        | unit at +1            |
    |-------|---------|------------------------------------------------|-----------------------|
    | 0-2   | dx dy dz| end-effector displacement (world frame)        | 0.02 m per step       |
    | 3-5   | drot    | rotation command; ignored (the gripper does not rotate), kept for 7-D VLA action spaces such as OpenVLA's | - |
    | 6     | gripper | finger target: -1 fully open (8 cm), +1 closed | -                     |

    The end effector is clipped to x in [-0.25, 0.25], y in [-0.22, 0.25], z in [0.02, 0.25] m.

    ## Observation space

    ``Dict`` with keys:

    | key           | type                | meaning                                          |
    |---------------|---------------------|--------------------------------------------------|
    | image         | uint8 (H, W, 3)     | front camera, RGB; H = W = ``image_size`` (64)   |
    | wrist_image   | uint8 (H, W, 3)     | wrist camera; only with ``wrist_camera=True``    |
    | state         | float32 (4,)        | see the table below                              |
    | instruction   | str                 | e.g. "push the red cube into the yellow zone"    |

    | state index | name              | unit                                                |
    |-------------|-------------------|-----------------------------------------------------|
    | 0-2         | ee_x, ee_y, ee_z  | m, grasp point between the fingertips, world frame  |
    | 3           | gripper_opening   | m, distance between the finger pads (0 to 0.08)     |

    The table top is the plane z = 0; the world origin is its centre, +y points away from
    the front camera.

    ## Success, termination and reward

    ``info["is_success"]`` is reported on every step, by the rules in ``tasks.is_success``.
    Reach: the grasp point comes within 3 cm of the cube centre. Push: the cube centre lies in
    the 10 x 10 cm zone. Lift: the cube is 8 cm above the table and held. The episode terminates on success
    and is truncated at the family's step limit (reach 40, push 100, lift 60). The reward is
    1.0 on the step that succeeds and 0.0 otherwise.

    ## Arguments

    ``task``: a task name (``"lift-red"``), a family (``"lift"``, object drawn per episode)
    or ``"all"`` (family and object drawn per episode). ``instruction_set``: ``"train"`` or
    ``"heldout"`` paraphrases. ``reset(options={"task": ...})`` overrides ``task`` for one
    episode.

    ## Version history

    - v0: first release.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str = "all",
        image_size: int = 64,
        wrist_camera: bool = False,
        instruction_set: str = "train",
        render_mode: str | None = None,
        render_size: int = 256,
        frame_skip: int = 10,
        max_delta_m: float = 0.02,
    ):
        self._task_choices = _task_choices(task)
        if not 16 <= image_size <= 512:
            raise ValueError(f"image_size must be between 16 and 512 pixels, got {image_size}")
        if instruction_set not in INSTRUCTION_SETS:
            raise ValueError(f"unknown instruction_set {instruction_set!r}; choose 'train' or 'heldout'")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unsupported render_mode {render_mode!r}; use 'rgb_array' or None")
        self.task_spec = task
        self.image_size = image_size
        self.wrist_camera = wrist_camera
        self.instruction_set = instruction_set
        self.render_mode = render_mode
        self.render_size = render_size
        self.frame_skip = frame_skip
        self.max_delta_m = max_delta_m

        self.model = mujoco.MjModel.from_xml_path(str(SCENE_PATH))
        self.data = mujoco.MjData(self.model)
        self._ids = _lookup_ids(self.model)
        self._renderer: mujoco.Renderer | None = None
        self._video_renderer: mujoco.Renderer | None = None

        self.action_space = spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)
        self.observation_space = self._make_observation_space()

        self.task: Task | None = None
        self.zone: str | None = None
        self.instruction = ""
        self.layout: Layout | None = None
        self.elapsed_steps = 0
        self._target_m = np.zeros(3)
        self._expert = ScriptedExpert()
        self._expert_rng = np.random.default_rng(0)

    # -- spaces ---------------------------------------------------------------------------

    def _make_observation_space(self) -> spaces.Dict:
        image = spaces.Box(0, 255, shape=(self.image_size, self.image_size, 3), dtype=np.uint8)
        entries = {
            "image": image,
            "state": spaces.Box(-np.inf, np.inf, shape=(len(STATE_NAMES),), dtype=np.float32),
            "instruction": spaces.Text(
                max_length=MAX_INSTRUCTION_CHARS, min_length=1, charset=string.ascii_lowercase + " "
            ),
        }
        if self.wrist_camera:
            entries["wrist_image"] = image
        return spaces.Dict(entries)

    # -- gymnasium API ----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        choices = _task_choices(options["task"]) if options and options.get("task") else self._task_choices
        # A single choice draws nothing, so reset(seed, options={"task": t}) on any env gives the
        # same episode as reset(seed) on an env made for task t.
        family, obj = choices[int(rng.integers(len(choices)))] if len(choices) > 1 else choices[0]
        self.task = Task(family, obj)
        self.zone = ZONE_COLORS[int(rng.integers(len(ZONE_COLORS)))] if family == "push" else None
        self.layout = sample_layout(rng, obj, self.zone)
        self.instruction = sample_instruction(rng, family, obj, self.zone, self.instruction_set)
        self._expert_rng = np.random.default_rng(int(rng.integers(2**31)))
        self._apply_layout(self.layout)
        self._expert.reset()
        self.elapsed_steps = 0
        return self._observation(), self._info()

    def step(self, action):
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (7,):
            raise ValueError(f"action must have shape (7,), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or infinity: {action}")
        action = np.clip(action, -1.0, 1.0)
        self._advance(action)
        self.elapsed_steps += 1

        info = self._info()
        terminated = info["is_success"]
        truncated = (not terminated) and self.elapsed_steps >= self.task.max_episode_steps
        reward = 1.0 if terminated else 0.0
        return self._observation(), reward, terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._video_renderer is None:
            require_gl_backend()
            self._video_renderer = mujoco.Renderer(self.model, self.render_size, self.render_size)
        self._video_renderer.update_scene(self.data, camera="front")
        return self._video_renderer.render()

    def close(self):
        for renderer in (self._renderer, self._video_renderer):
            if renderer is not None:
                renderer.close()
        self._renderer = None
        self._video_renderer = None

    # -- privileged access for the scripted expert and tests ------------------------------

    def grasp_position(self) -> np.ndarray:
        return self.data.site_xpos[self._ids["grasp"]].copy()

    def object_position(self, color: str) -> np.ndarray:
        return self.data.xpos[self._ids[f"cube_{color}"]].copy()

    def zone_position(self, color: str) -> np.ndarray:
        return self.data.geom_xpos[self._ids[f"zone_{color}"]].copy()

    def gripper_opening(self) -> float:
        qpos = self.data.qpos
        return float(qpos[self._ids["finger_left_qpos"]] + qpos[self._ids["finger_right_qpos"]])

    def target_positions(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Return the named object's and (push only) the named zone's centres in metres."""
        zone = self.zone_position(self.zone) if self.zone else None
        return self.object_position(self.task.object), zone

    def target_offsets(self) -> np.ndarray:
        """Return float32 (5,): named cube minus grasp point (x, y, z), named zone minus cube (x, y).

        The zone entries are NaN for reach and lift. Collection records these next to each
        step, so a learner can get the positions of the named objects as an auxiliary target.
        """
        cube, zone = self.target_positions()
        zone_offset = zone[:2] - cube[:2] if zone is not None else np.full(2, np.nan)
        return np.concatenate([cube - self.grasp_position(), zone_offset]).astype(np.float32)

    def expert_action(self, noise_std: float = 0.0) -> np.ndarray:
        """Return the scripted expert's action for the current state, with optional Gaussian noise."""
        return self.expert_actions(noise_std)[0]

    def expert_actions(self, noise_std: float = 0.0) -> np.ndarray:
        """Return a (2, 7) array: the action to execute (noisy) and the expert's clean action.

        Executing the noisy action while recording the clean one as the label shows a learner
        how to recover from small deviations (DART, Laskey et al. 2017).
        """
        clean = np.clip(self._expert.act(self), -1.0, 1.0)
        noisy = clean
        if noise_std > 0:
            noisy = np.clip(clean + self.action_noise(noise_std), -1.0, 1.0)
        return np.stack([noisy, clean]).astype(np.float32)

    def action_noise(self, noise_std: float) -> np.ndarray:
        """Return float64 (7,) Gaussian noise with std ``noise_std``, drawn from this episode's expert RNG.

        A std of 0 draws nothing, so collection without noise leaves the RNG stream unchanged.
        """
        if noise_std <= 0:
            return np.zeros(len(ACTION_NAMES))
        return self._expert_rng.normal(0.0, noise_std, size=len(ACTION_NAMES))

    def expert_takes_over(self, share: float) -> bool:
        """Return True with probability ``share``, drawn from this episode's expert RNG.

        Collection that mixes a driver's and the expert's actions draws here, so each
        episode's draws depend on its seed only, not on worker count or order.
        """
        return bool(self._expert_rng.random() < share)

    def set_object_position(self, color: str, xyz) -> None:
        """Teleport a cube (for tests of the success rule); runs mj_forward."""
        qpos_adr = self._ids[f"cube_{color}_qpos"]
        self.data.qpos[qpos_adr : qpos_adr + 3] = xyz
        mujoco.mj_forward(self.model, self.data)

    def set_gripper_position(self, xyz) -> None:
        """Teleport the grasp point (for tests of the success rule); runs mj_forward."""
        self._place_gripper(np.asarray(xyz, dtype=np.float64))

    # -- internals --------------------------------------------------------------------------

    def _apply_layout(self, layout: Layout) -> None:
        mujoco.mj_resetData(self.model, self.data)
        for color, xy in layout.zone_xy.items():
            self.model.geom_pos[self._ids[f"zone_{color}"], :2] = xy
        for color in OBJECT_COLORS:
            adr = self._ids[f"cube_{color}_qpos"]
            yaw = layout.cube_yaw[color]
            self.data.qpos[adr : adr + 3] = [*layout.cube_xy[color], CUBE_HALF_SIZE_M]
            self.data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        for finger in ("finger_left", "finger_right"):
            self.data.qpos[self._ids[f"{finger}_qpos"]] = FINGER_TRAVEL_M
        self.data.ctrl[:] = FINGER_TRAVEL_M
        self._place_gripper(layout.gripper_xyz)

    def _place_gripper(self, grasp_xyz: np.ndarray) -> None:
        """Put the mocap target and the gripper body at rest with the grasp point at grasp_xyz."""
        self._target_m = grasp_xyz.copy()
        self.data.mocap_pos[0] = grasp_xyz - GRASP_OFFSET_M
        adr = self._ids["gripper_qpos"]
        self.data.qpos[adr : adr + 3] = grasp_xyz - GRASP_OFFSET_M
        self.data.qpos[adr + 3 : adr + 7] = [1.0, 0.0, 0.0, 0.0]
        self.data.qvel[self._ids["gripper_dof"] : self._ids["gripper_dof"] + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def _advance(self, action: np.ndarray) -> None:
        start = self._target_m
        goal = np.clip(start + action[:3] * self.max_delta_m, WORKSPACE_LOW_M, WORKSPACE_HIGH_M)
        self.data.ctrl[:] = FINGER_TRAVEL_M * (1.0 - action[6]) / 2.0
        # The mocap body is kinematic: moving it in equal increments over the physics steps
        # keeps contact forces bounded instead of teleporting 2 cm into a cube at once.
        for k in range(1, self.frame_skip + 1):
            self.data.mocap_pos[0] = start + (goal - start) * (k / self.frame_skip) - GRASP_OFFSET_M
            mujoco.mj_step(self.model, self.data)
        self._target_m = goal

    def _state(self) -> np.ndarray:
        return np.array([*self.grasp_position(), self.gripper_opening()], dtype=np.float32)

    def _camera_image(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            require_gl_backend()
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def _observation(self) -> dict:
        obs = {"image": self._camera_image("front"), "state": self._state(), "instruction": self.instruction}
        if self.wrist_camera:
            obs["wrist_image"] = self._camera_image("wrist")
        return obs

    def _info(self) -> dict:
        obj_pos, zone_pos = self.target_positions()
        success = is_success(self.task.family, self.grasp_position(), obj_pos, zone_pos)
        return {"is_success": success, "task": self.task.name}


def _task_choices(spec: str) -> list[tuple[str, str]]:
    if spec == "all":
        return [(t.split("-")[0], t.split("-")[1]) for t in ALL_TASKS]
    if spec in FAMILIES:
        return [(spec, obj) for obj in OBJECT_COLORS]
    task = parse_task(spec)
    return [(task.family, task.object)]


def _lookup_ids(model: mujoco.MjModel) -> dict[str, int]:
    def obj_id(kind, name):
        return mujoco.mj_name2id(model, kind, name)

    ids = {"grasp": obj_id(mujoco.mjtObj.mjOBJ_SITE, "grasp")}
    gripper = obj_id(mujoco.mjtObj.mjOBJ_JOINT, "gripper")
    ids["gripper_qpos"] = int(model.jnt_qposadr[gripper])
    ids["gripper_dof"] = int(model.jnt_dofadr[gripper])
    for color in OBJECT_COLORS:
        ids[f"cube_{color}"] = obj_id(mujoco.mjtObj.mjOBJ_BODY, f"cube_{color}")
        joint = obj_id(mujoco.mjtObj.mjOBJ_JOINT, f"cube_{color}")
        ids[f"cube_{color}_qpos"] = int(model.jnt_qposadr[joint])
    for color in ZONE_COLORS:
        ids[f"zone_{color}"] = obj_id(mujoco.mjtObj.mjOBJ_GEOM, f"zone_{color}")
    for finger in ("finger_left", "finger_right"):
        joint = obj_id(mujoco.mjtObj.mjOBJ_JOINT, finger)
        ids[f"{finger}_qpos"] = int(model.jnt_qposadr[joint])
    return ids
