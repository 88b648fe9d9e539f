"""PILCO's pendulum swing-up on the MuJoCo scene ``sim/pendulum.xml``: a 1 kg, 1 m rod whose
2.5 N·m motor cannot hold it horizontal (4.9 N·m needed), so it must be swung up.

State [θ, θ̇] (rad, rad/s) of the joint 'hinge', θ = 0 hanging down, θ = π upright (not wrapped);
control period 0.1 s (zero-order hold), as in PILCO. The task: from x_0 ~ N(0, diag(0.1², 0.1²))
bring the rod to θ = π and keep it there, cost 1 − exp(−½ ((θ − π)²/σ_θ² + θ̇²/σ_ω²)) with
σ_θ = 1 rad, σ_ω = 2 rad/s. The width must leave the cost at the bottom non-flat: with 0.5 rad,
c(0) = 1 − 3·10⁻⁹ and L-BFGS sees no gradient; with 1 rad, 1 − 7·10⁻³ (PILCO's own cost on the
tip distance, width 0.5 m, gives 1 − 3·10⁻⁴ there).
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from mbrl_ros.common.paths import resolve_resource
from mbrl_ros.data.dataset import joint_state_names
from mbrl_ros.dynamics.base import Progress
from mbrl_ros.policy.errors import PolicyError
from mbrl_ros.policy.pilco.cost import SaturatingCost
from mbrl_ros.policy.pilco.loop import PilcoConfig, PilcoResult, PilcoTask, run_pilco
from mbrl_ros.policy.pilco.policies import RBFPolicy

JOINT = "hinge"


class PendulumSystem:
    """The MuJoCo pendulum of ``scene`` (a path or a name in sim/) stepped every
    ``control_period`` s; measured states carry Gaussian noise of ``observation_noise_std``
    (rad, rad/s), seeded."""

    joint_names: tuple[str, ...] = (JOINT,)
    state_names = joint_state_names((JOINT,))

    def __init__(
        self,
        control_period: float = 0.1,
        observation_noise_std: float = 0.01,
        seed: int = 0,
        scene: str = "pendulum",
    ):
        path = resolve_resource(scene, "sim", ".xml")
        try:
            self.model = mujoco.MjModel.from_xml_path(str(path))
        except ValueError as exc:
            raise PolicyError(f"{path}: MuJoCo cannot load the pendulum ({exc})") from None
        joint = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, JOINT)
        if joint < 0 or self.model.nu != 1 or self.model.nq != 1:
            raise PolicyError(f"{path}: expected one joint '{JOINT}' with one motor")
        ratio = control_period / self.model.opt.timestep
        self.n_substeps = int(round(ratio))
        if self.n_substeps < 1 or abs(ratio - self.n_substeps) > 1e-6 * ratio:
            raise PolicyError(
                f"control_period {control_period} s is not a whole multiple of the "
                f"physics timestep {self.model.opt.timestep} s"
            )
        if not observation_noise_std >= 0:
            raise PolicyError(f"observation_noise_std must be ≥ 0, got {observation_noise_std}")
        self.dt = float(control_period)
        self.effort_limit = self.model.actuator_ctrlrange[:, 1].copy()
        self.noise = float(observation_noise_std)
        self.data = mujoco.MjData(self.model)
        self.rng = np.random.default_rng(seed)

    def _measure(self) -> np.ndarray:
        x = np.array([self.data.qpos[0], self.data.qvel[0]])
        return x + self.rng.normal(0.0, self.noise, 2) if self.noise > 0 else x

    def reset(self, state: np.ndarray) -> np.ndarray:
        """Set [θ, θ̇] (rad, rad/s); the measured state."""
        state = np.asarray(state, dtype=float)
        if state.shape != (2,) or not np.all(np.isfinite(state)):
            raise PolicyError(f"pendulum state must be 2 finite values [θ, θ̇], got {state}")
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[0], self.data.qvel[0] = state
        mujoco.mj_forward(self.model, self.data)
        return self._measure()

    def step(self, torque: np.ndarray) -> np.ndarray:
        """Apply ``torque`` (1,) N·m (clamped to ±2.5) for one control period; measured state."""
        torque = np.asarray(torque, dtype=float).reshape(-1)
        if torque.shape != (1,) or not np.all(np.isfinite(torque)):
            raise PolicyError(f"pendulum torque must be one finite value, got {torque}")
        self.data.ctrl[0] = np.clip(torque[0], -self.effort_limit[0], self.effort_limit[0])
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        return self._measure()


def swingup_task(
    system: PendulumSystem,
    horizon_s: float = 3.0,
    start_std: float = 0.1,
    angle_width: float = 1.0,
    velocity_width: float = 2.0,
) -> PilcoTask:
    """Swing-up to θ = π at rest within ``horizon_s``; cost widths in rad and rad/s."""
    cost = SaturatingCost([math.pi, 0.0], np.diag([1 / angle_width**2, 1 / velocity_width**2]))
    return PilcoTask(
        system, cost, np.zeros(2), np.eye(2) * start_std**2, int(round(horizon_s / system.dt))
    )


def swingup_policy(system: PendulumSystem, basis: int = 30, seed: int = 0) -> RBFPolicy:
    """RBF policy with ``basis`` centres spread over the swing (θ ∈ [−π/2, 3π/2], θ̇ ∈ [−6, 6]),
    lengthscales 1 rad and 3 rad/s, small random weights."""
    rng = np.random.default_rng(seed)
    centres = np.column_stack(
        [rng.uniform(-math.pi / 2, 3 * math.pi / 2, basis), rng.uniform(-6.0, 6.0, basis)]
    )
    return RBFPolicy(centres, system.effort_limit, [1.0, 3.0], seed=seed)


def upright_error(states: np.ndarray) -> np.ndarray:
    """|θ − π| wrapped to [0, π] (rad) for states (..., 2)."""
    return np.abs((np.asarray(states)[..., 0] - math.pi + math.pi) % (2 * math.pi) - math.pi)


def holds_upright(
    states: np.ndarray,
    dt: float,
    hold_s: float = 1.0,
    angle_tol: float = 0.2,
    velocity_tol: float = 1.0,
) -> bool:
    """Whether the last ``hold_s`` seconds of ``states`` (T, 2) are all within ``angle_tol`` rad
    of upright and ``velocity_tol`` rad/s of rest."""
    last = np.asarray(states)[-max(1, int(round(hold_s / dt))) :]
    return bool(
        np.all(upright_error(last) <= angle_tol) and np.all(np.abs(last[:, 1]) <= velocity_tol)
    )


def swing_up(
    config: PilcoConfig = PilcoConfig(),
    horizon_s: float = 3.0,
    basis: int = 30,
    progress: Progress | None = print,
) -> PilcoResult:
    """PILCO on the pendulum until ``config.solved_streak`` policy trials in a row hold it upright
    (``holds_upright``) or ``config.trials`` policy trials have run."""
    system = PendulumSystem(seed=config.seed)
    task = swingup_task(system, horizon_s)
    policy = swingup_policy(system, basis, config.seed)
    return run_pilco(
        task, policy, config, progress, solved=lambda states: holds_upright(states, system.dt)
    )
