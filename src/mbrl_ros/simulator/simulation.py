"""MuJoCo simulation of an arm at a fixed control period (pure core: no ROS).

``ArmSimulator`` owns the MuJoCo model and data, applies a torque for one control period
(``n_substeps`` physics steps, zero-order hold) or for any duration (``advance``), adds seeded
torque and sensor noise, and resets to a configured or randomised initial state. ``CommandHold``
is the effort interface of a ros2_control robot: the latest command held until it is too old, then
zero torque. The simulator node and the offline tests use this same class,
so a run over ROS and a run offline with the same seed give the same trajectory.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import mujoco
import numpy as np

from mbrl_ros.common.settings import Settings, setting
from mbrl_ros.robot.description import (
    RobotDescription,
    build_mujoco_model,
    home_position,
    mujoco_joint_indices,
)
from mbrl_ros.robot.gains import robot_gain_caps


@dataclass(frozen=True)
class SimConfig(Settings):
    """Physics, noise and reset settings (the simulator node's parameters, built offline without
    ROS). ``scene``: the MuJoCo scene parts (a name in sim/ or an MJCF path; None = the arm
    alone), a plain field: the node declares its own parameter for it."""

    physics_timestep: float = setting(
        0.002, "MuJoCo timestep (s; hardware: the longest substep)", (1e-5, 0.05)
    )
    control_period: float = setting(0.01, "time between joint states / commands (s)", (1e-5, 1.0))
    torque_noise_std: float = setting(
        0.0, "Gaussian noise added to applied torques, before the clamp (N·m)", (0.0, 100.0)
    )
    position_noise_std: float = setting(
        0.0, "Gaussian noise on published positions (rad)", (0.0, 1.0)
    )
    velocity_noise_std: float = setting(
        0.0, "Gaussian noise on published velocities (rad/s)", (0.0, 10.0)
    )
    initial_position: list = setting(
        [], "reset position (rad, robot joint order); [] = zero or mid-range", (-10.0, 10.0)
    )
    initial_position_noise: float = setting(
        0.0, "uniform ± noise on the reset position (rad)", (0.0, 3.2)
    )
    hold_damping: float = setting(
        1.0,
        "safe hold: torque −d·q̇ (N·m·s/rad), capped per joint so that it cannot oscillate",
        (0.0, 1000.0),
    )
    gravity_compensation: bool = setting(
        False,
        "the arm cancels its own weight; commands are torques on top of it (as Franka's FCI); "
        "false: a plain effort interface, where the arm has weight",
    )
    seed: int = setting(0, "seed of the noise and reset randomisation", (0, 2**31 - 1))
    scene: str | None = "scene"

    @property
    def n_substeps(self) -> int:
        ratio = self.control_period / self.physics_timestep
        n = int(round(ratio))
        if n < 1 or abs(ratio - n) > 1e-6 * max(1.0, ratio):
            raise ValueError(
                f"control_period {self.control_period} s is not a whole multiple of "
                f"physics_timestep {self.physics_timestep} s"
            )
        return n


@dataclass
class SimState:
    """Measured state after a step: (n,) position rad, velocity rad/s, applied effort N·m."""

    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray
    steps: int = field(default=0)


class ArmSimulator:
    """One arm in MuJoCo, stepped one control period at a time."""

    def __init__(self, robot: RobotDescription, config: SimConfig = SimConfig()):
        self.robot, self.config = robot, config
        self.n_substeps = config.n_substeps
        self.model = build_mujoco_model(
            robot,
            scene=config.scene,
            timestep=config.physics_timestep,
            gravity_compensation=config.gravity_compensation,
        )
        self.data = mujoco.MjData(self.model)
        self.qpos_idx, self.dof_idx = mujoco_joint_indices(self.model, robot)
        n = robot.n_joints
        init = (
            home_position(robot)
            if not config.initial_position
            else np.asarray(config.initial_position, float)
        )
        if init.shape != (n,):
            raise ValueError(f"initial_position has {init.size} values, the robot has {n} joints")
        lower, upper = robot.limits.lower, robot.limits.upper
        if np.any(init < lower) or np.any(init > upper):
            raise ValueError(f"initial_position {init.tolist()} is outside the joint limits")
        self.initial_position = init
        self.effort_limit = robot.limits.effort
        self.hold_damping = np.minimum(
            config.hold_damping, robot_gain_caps(robot, robot.joint_names, config.control_period)[1]
        )
        self.rng = np.random.default_rng(config.seed)
        self.steps = 0
        self.applied = np.zeros(n)
        self.reset(randomize=False)

    def reset(self, randomize: bool = True) -> None:
        """Back to the initial position (± uniform noise if ``randomize``), zero velocity."""
        mujoco.mj_resetData(self.model, self.data)
        q = self.initial_position.copy()
        if randomize and self.config.initial_position_noise > 0:
            q += self.rng.uniform(-1, 1, q.shape) * self.config.initial_position_noise
            q = np.clip(q, self.robot.limits.lower, self.robot.limits.upper)
        self.data.qpos[self.qpos_idx] = q
        self.data.qvel[self.dof_idx] = 0.0
        self.applied = np.zeros_like(q)
        mujoco.mj_forward(self.model, self.data)

    def set_state(self, position: np.ndarray, velocity: np.ndarray) -> None:
        """Put the arm at joint ``position`` (n,) rad (clipped into the limits) moving at
        ``velocity`` (n,) rad/s, e.g. a start state drawn by a learner."""
        q, qd = np.asarray(position, dtype=float), np.asarray(velocity, dtype=float)
        n = self.robot.n_joints
        if (
            q.shape != (n,)
            or qd.shape != (n,)
            or not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd)))
        ):
            raise ValueError(f"state must be {n} finite positions and {n} finite velocities")
        self.reset(randomize=False)
        self.data.qpos[self.qpos_idx] = np.clip(q, self.robot.limits.lower, self.robot.limits.upper)
        self.data.qvel[self.dof_idx] = qd
        mujoco.mj_forward(self.model, self.data)

    def set_target(self, point: np.ndarray) -> None:
        """Move the scene's reach-target marker (mocap body 'target') to ``point`` (3,) m in the
        base frame (the world: the robot is attached at its origin), so cameras see it. Visual
        only: no physics changes. ValueError if the scene has no target."""
        body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "target")
        point = np.asarray(point, dtype=float)
        if body < 0 or self.model.body_mocapid[body] < 0:
            raise ValueError(f"scene {self.config.scene!r} has no mocap body 'target'")
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise ValueError(f"target must be 3 finite coordinates, got {point.tolist()}")
        self.data.mocap_pos[self.model.body_mocapid[body]] = point

    def render(self, camera) -> np.ndarray:
        """``camera``'s (mbrl_ros.simulator.camera.Camera) view of the current state and target: rgb
        uint8 (height, width, 3). Positions are recomputed first: after mj_step MuJoCo's body poses
        are those of the last substep's start."""
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        return camera.render(self.data)

    def hold_torque(self) -> np.ndarray:
        """The safe hold: joint damping −d·q̇ (N·m), d capped by ``gains.gain_caps``, within the
        effort limits."""
        return np.clip(
            -self.hold_damping * self.data.qvel[self.dof_idx], -self.effort_limit, self.effort_limit
        )

    def step(self, torque: np.ndarray) -> None:
        """Apply ``torque`` (n,) N·m (+ noise, clamped to the effort limits) for one control
        period."""
        self._apply(torque)
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self.steps += 1

    def advance(self, torque: np.ndarray, duration: float) -> None:
        """Apply ``torque`` (n,) N·m (+ noise, clamped) for ``duration`` s of physics, in
        ceil(duration / physics_timestep) equal substeps of at most the physics timestep, so the
        physics follows a clock off its grid (a wall clock) exactly."""
        if not duration >= 0:
            raise ValueError(f"duration must be >= 0 s, got {duration}")
        self._apply(torque)
        n = math.ceil(duration / self.config.physics_timestep - 1e-9)
        if n > 0:
            self.model.opt.timestep = duration / n
            try:
                mujoco.mj_step(self.model, self.data, nstep=n)
            finally:
                self.model.opt.timestep = self.config.physics_timestep
        self.steps += 1

    def _apply(self, torque: np.ndarray) -> None:
        """Set the motors to ``torque`` (+ noise), clamped to the effort limits."""
        torque = np.asarray(torque, dtype=float)
        if torque.shape != self.applied.shape or not np.all(np.isfinite(torque)):
            raise ValueError(f"torque must be {self.applied.shape[0]} finite values, got {torque}")
        if self.config.torque_noise_std > 0:
            torque = torque + self.rng.normal(0.0, self.config.torque_noise_std, torque.shape)
        self.applied = np.clip(torque, -self.effort_limit, self.effort_limit)
        self.data.ctrl[:] = self.applied

    def measure(self) -> SimState:
        """Current state as the sensors report it (with sensor noise, if configured)."""
        q = self.data.qpos[self.qpos_idx].copy()
        qd = self.data.qvel[self.dof_idx].copy()
        if self.config.position_noise_std > 0:
            q += self.rng.normal(0.0, self.config.position_noise_std, q.shape)
        if self.config.velocity_noise_std > 0:
            qd += self.rng.normal(0.0, self.config.velocity_noise_std, qd.shape)
        return SimState(q, qd, self.applied.copy(), self.steps)


def simulate(
    sim: ArmSimulator,
    act: Callable[[np.ndarray, int], np.ndarray],
    steps: int,
    start=None,
    command_filter: Callable[[SimState, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One episode offline: from ``start`` (n,) rad at rest (None: ``sim.reset()``, its pose and
    noise), ``steps`` control periods of u_t = act(x_t, t), x = [q rad, q̇ rad/s] as measured,
    passed through ``command_filter(state, u)`` when given (a safety layer) and applied for one
    period (the simulator clamps to the effort limits). Returns the measured states X (T+1, 2n)
    and the applied torques U (T, n) N·m."""
    if start is not None:
        sim.set_state(start, np.zeros(sim.robot.n_joints))
    else:
        sim.reset()
    n = sim.robot.n_joints
    X, U = np.empty((steps + 1, 2 * n)), np.empty((steps, n))
    s = sim.measure()
    X[0] = np.concatenate([s.position, s.velocity])
    for t in range(steps):
        u = act(X[t], t)
        if command_filter is not None:
            u = command_filter(s, u)
        sim.step(u)
        s = sim.measure()
        X[t + 1] = np.concatenate([s.position, s.velocity])
        U[t] = s.effort
    return X, U


class CommandHold:
    """Zero-order hold of the latest command (n,) N·m, as a ros2_control effort interface applies
    it: in force until it is older than ``timeout`` s, then zero torque; a malformed command
    (``clear``) means zero torque until the next valid one. Times are one monotonic clock's, in s.
    Thread-safe: commands come from one thread, the control loop reads from another."""

    def __init__(self, n: int, timeout: float):
        self.n, self.timeout = n, timeout
        self._lock = threading.Lock()
        self._torque: np.ndarray | None = None
        self._since = 0.0

    def set(self, torque: np.ndarray, now: float) -> None:
        torque = np.array(torque, dtype=float)
        if torque.shape != (self.n,) or not np.all(np.isfinite(torque)):
            raise ValueError(f"torque must be {self.n} finite values, got {torque}")
        with self._lock:
            self._torque, self._since = torque, now

    def clear(self) -> None:
        with self._lock:
            self._torque = None

    def torque(self, now: float) -> tuple[np.ndarray, bool]:
        """(torque in force at ``now``, whether it is a command: False for zero torque)."""
        with self._lock:
            if self._torque is None or now - self._since > self.timeout:
                return np.zeros(self.n), False
            return self._torque.copy(), True
