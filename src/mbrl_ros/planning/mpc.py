"""Model-predictive control through a learned model (the lecture's MBRL v1.5), pure core.

``MPC.act(x, stamp_ns, target)`` returns the controller the executor should run from ``stamp_ns``:
* the base policy π0 (random torques, open loop, ``replan_every`` steps) while there is no model,
  no target, or during the first ``random_steps`` control periods after the first call;
* otherwise a fresh plan from the planner (warm-started from the previous plan);
* if the planner reports NaN: the previous plan when it still covers ``stamp_ns``, else π0 —
  and the step says so (``source``).

In real time a plan takes effect some time after the state it starts from was measured (the
latency of the plan and of DDS). With ``lead_ns`` > 0, ``act`` plans from the model's prediction of
the state ⌈lead/dt⌉ control periods ahead, under the previous plan's actions (the ones the executor
runs meanwhile, within the planner's torque box), and the plan starts then.

``feedback`` says which gains a plan carries between replans: ``plan`` the planner's own (iLQR's
K_t; none for the shooting planners), ``none`` open loop (K = 0), ``tracking`` a joint-space PD
law on the deviation from the plan's nominal states, ``tracking_gains`` (kp, kd) in physical
units (N·m/rad, N·m·s/rad) that hold off the plan, where a young model's K_t does not;
``bounded`` the planner's K_t with each joint's row bounded by those gains: the L1 norm of its
position gains at most kp_j and of its velocity gains at most kd_j (rows scaled down, direction
kept), so the feedback torque stays within kp_j·max|δq| + kd_j·max|δq̇| (on arm7 iLQR's rows
were ~10× the gains stable at the control period, and the arm left the plan).
The same object serves the planner node and offline experiments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mbrl_ros.common.msgconv import seconds_to_ns
from mbrl_ros.common.settings import Settings, setting
from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.control.homing import homing_gains
from mbrl_ros.control.random_torque import RandomTorquePolicy
from mbrl_ros.data.dataset import joint_state_names
from mbrl_ros.data.features import EE_NAMES
from mbrl_ros.dynamics.base import DynamicsModel, ModelError
from mbrl_ros.planning import PLANNERS, predict_ahead
from mbrl_ros.planning.base import Planner, PlanResult
from mbrl_ros.robot.description import RobotDescription
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.tasks.reach import ReachCost

FEEDBACK = ("plan", "none", "tracking", "bounded")  # the gains between replans (see above)


@dataclass(frozen=True)
class PlannerSettings(Settings):
    """What ``build_mpc`` builds an MPC from: the planner node declares these as its parameters
    (with its own, see ``nodes/mpc_planner.py``); offline code builds them directly."""

    control_period: float = setting(
        0.05, "control period of the graph = the model's dt (s)", (1e-4, 1.0)
    )
    planner: str = setting("icem", "planning algorithm", choices=tuple(sorted(PLANNERS)))
    horizon: int = setting(20, "planning horizon (control periods)", (1, 1000), runtime=True)
    replan_every: int = setting(
        1, "control periods between replans (≤ horizon)", (1, 1000), runtime=True
    )
    samples: int = setting(
        200, "population (cem, icem), samples (mppi, random)", (1, 1_000_000), runtime=True
    )
    elites: int = setting(20, "elites (cem, icem)", (1, 100_000), runtime=True)
    iterations: int = setting(3, "optimiser iterations", (1, 1000), runtime=True)
    propagation: str = setting(
        "mean",
        "model propagation for sampling planners",
        choices=("mean", "sample", "ts1", "tsinf"),
    )
    particles: int = setting(1, "particles per action sequence (1 for 'mean')", (1, 1000))
    seed: int = setting(0, "planner and base-policy seed", (0, 2**31 - 1))
    random_seconds: float = setting(0.0, "run π0 for this much time at the start (s)", (0.0, 1e6))
    feedback: str = setting(
        "plan",
        "gains a plan carries between replans: plan (the planner's own: iLQR's K), none "
        "(open loop: û + k along the plan) or tracking (joint-space PD on the deviation from the "
        "plan's nominal states: gains a young model's K cannot spoil) or bounded (iLQR's K with "
        "each joint's row bounded by the tracking gains, L1 norm)",
        choices=FEEDBACK,
    )
    tracking_gain_fraction: float = setting(
        0.5,
        "feedback tracking and bounded: PD gains (bounds) as this fraction of the gains "
        "stable at the control period (homing's rule)",
        (1e-3, 1.0),
    )
    tracking_damping: float = setting(
        1.0,
        "feedback tracking and bounded: the damping gains as this multiple of the tracking "
        "gains' (above 1 only where the executor runs faster than control_period: its own "
        "period's limit is what keeps it stable)",
        (0.0, 10.0),
    )
    random_scale: float = setting(
        0.3, "π0 torque amplitude, fraction of the effort limits", (0.0, 1.0)
    )
    random_hold_steps: int = setting(2, "control periods each π0 torque is held", (1, 100000))
    w_l2: float = setting(1.0, "reach cost: weight of ½·d² (1/m²)", (0.0, 1e6), runtime=True)
    w_log: float = setting(1.0, "reach cost: weight of log(d² + α)", (0.0, 1e6), runtime=True)
    alpha: float = setting(1e-4, "reach cost: α of the log term (m²)", (1e-12, 1.0), runtime=True)
    terminal_weight: float = setting(
        10.0, "reach cost: weight of the last step", (0.0, 1e6), runtime=True
    )
    w_velocity: float = setting(
        0.0, "reach cost: weight of the final joint speed²", (0.0, 1e6), runtime=True
    )
    w_speed: float = setting(
        0.0,
        "reach cost: weight of the joint speed² at every step (damps the joints the target "
        "leaves free)",
        (0.0, 1e6),
        runtime=True,
    )
    w_action: float = setting(1e-3, "action penalty weight (per (N·m)²)", (0.0, 1e6), runtime=True)
    w_limit: float = setting(
        1.0, "joint position and velocity limit penalty weight", (0.0, 1e6), runtime=True
    )
    limit_margin: float = setting(
        0.1,
        "limit penalty: starts this far inside a position limit (rad)",
        (1e-6, 10.0),
        runtime=True,
    )
    velocity_margin: float = setting(
        0.5,
        "limit penalty: starts this far below a velocity limit (rad/s)",
        (1e-6, 100.0),
        runtime=True,
    )
    effort_fraction: float = setting(
        1.0,
        "planned torques stay within this fraction of the "
        "effort limits (the executor clamps at the full limits)",
        (0.01, 1.0),
        runtime=True,
    )
    joint_effort_fraction: list = setting(
        [],
        "per joint, in joint_names order: the fractions of the effort limits that bound "
        "plans and π0 (a robot configuration's effort_fraction); [] = effort_fraction and "
        "random_scale for all joints",
        (0.0, 1.0),
    )
    device: str = setting("", "torch device for planning; '' = cuda if available, else cpu")


@dataclass
class MPCStep:
    """controller to run from the step's stamp; source: 'pi0', 'plan' or 'previous' (after a
    NaN plan); plan: the planner's result when it ran."""

    controller: LinearGaussianController
    source: str
    plan: PlanResult | None = None


class MPC:
    """Receding-horizon control of ``joint_names`` (a subset order of the robot's joints)."""

    def __init__(
        self,
        robot: RobotDescription,
        joint_names: Sequence[str],
        planner: Planner,
        cost: ReachCost,
        *,
        dt: float,
        replan_every: int,
        random_steps: int,
        base_policy: RandomTorquePolicy,
        feedback: str = "plan",
        tracking_gains: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        if replan_every < 1 or replan_every > planner.horizon:
            raise ValueError(
                f"replan_every {replan_every} must be in [1, horizon {planner.horizon}]"
            )
        self.robot, self.joint_names = robot, tuple(joint_names)
        self.planner, self.cost = planner, cost
        self.dt_ns = seconds_to_ns(dt)
        self.replan_every, self.random_steps = replan_every, random_steps
        self.base_policy = base_policy
        if feedback not in FEEDBACK:
            raise ValueError(f"feedback {feedback!r} must be one of {', '.join(FEEDBACK)}")
        if feedback in ("tracking", "bounded") and tracking_gains is None:
            raise ValueError(f"feedback '{feedback}' needs tracking_gains (kp, kd)")
        self.feedback, self.tracking_gains = feedback, tracking_gains
        self.fk = ForwardKinematics(robot)
        self.model: DynamicsModel | None = None
        self.previous: LinearGaussianController | None = None
        self.with_ee = False
        self.first_stamp: int | None = None
        # π0 controllers' length: until the next replan (lockstep); in real time longer, so the
        # executor runs on while the next one is on its way
        self.pi0_steps = replan_every

    def set_model(self, model: DynamicsModel) -> None:
        """Use ``model`` from now on (``check_model`` first)."""
        self.with_ee = self.check_model(model)
        self.model = model

    def check_model(self, model: DynamicsModel) -> bool:
        """Whether ``model``'s state has end-effector features; ModelError if it is for other
        joints, another control period or a state layout other than [q, q̇] (+ features)."""
        sig = model.signature
        if tuple(sig.joint_names) != self.joint_names:
            raise ModelError(
                f"model is for joints {list(sig.joint_names)}, the planner controls "
                f"{list(self.joint_names)}"
            )
        if abs(sig.dt * 1e9 - self.dt_ns) > 1e3:
            raise ModelError(
                f"model control period {sig.dt} s differs from the planner's {self.dt_ns / 1e9} s"
            )
        base = joint_state_names(self.joint_names)
        if tuple(sig.state_names) not in (base, base + EE_NAMES):
            raise ModelError(
                f"model state layout {list(sig.state_names)} is not [q, q̇] (+ {list(EE_NAMES)})"
            )
        return len(sig.state_names) > len(base)

    def reset(self) -> None:
        """A new episode (the arm was reset), or the last plan was not run: the next plan starts
        cold, not from the last one."""
        self.previous = None

    def model_state(self, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        """The model's state vector for joint positions and velocities (n,) each."""
        if not self.with_ee:
            return np.concatenate([q, qd])
        ee = self.fk.ee_position(torch.as_tensor(q, dtype=torch.float64)).numpy()
        return np.concatenate([q, qd, ee])

    def warming_up(self, stamp_ns: int) -> bool:
        """Whether ``stamp_ns`` is within the first ``random_steps`` periods (π0 by design),
        counted from the first state ``act`` was asked about (``stamp_ns`` itself before that).
        No side effect."""
        first = stamp_ns if self.first_stamp is None else self.first_stamp
        return stamp_ns - first < self.random_steps * self.dt_ns

    def act(
        self,
        q: np.ndarray,
        qd: np.ndarray,
        stamp_ns: int,
        target: np.ndarray | None,
        lead_ns: int = 0,
        offset: np.ndarray | None = None,
    ) -> MPCStep:
        """The controller to run from ``stamp_ns``, or with ``lead_ns`` > 0 from the first control
        step at or after ``stamp_ns + lead_ns`` (see the module docstring); ``offset`` (dx,): a
        disturbance estimate added to every predicted step (offset-free MPC,
        ``dynamics.offset``)."""
        if self.first_stamp is None:  # the warm-up counts from here, model or not
            self.first_stamp = stamp_ns
        if self.model is None or target is None or self.warming_up(stamp_ns):
            return MPCStep(self.pi0(stamp_ns), "pi0")
        self.cost.set_target(target)
        model = self.model if offset is None else self.model.with_offset(offset)
        x, start_ns = self.predict_ahead(self.model_state(q, qd), stamp_ns, lead_ns, model)
        result = self.planner.plan(x, model, self.cost, warm=self.previous, start_ns=start_ns)
        if result.ok and result.controller is not None:  # (an ok plan has a controller)
            self.previous = self._with_feedback(result.controller)
            return MPCStep(self.previous, "plan", result)
        if self.previous is not None and self.previous.covers(stamp_ns):
            return MPCStep(self.previous, "previous", result)
        return MPCStep(self.pi0(stamp_ns), "pi0", result)

    def _with_feedback(self, c: LinearGaussianController) -> LinearGaussianController:
        """Plan ``c`` with the gains of ``feedback``."""
        if self.feedback == "plan":
            return c
        if self.feedback == "none":
            return c.without_feedback()
        assert self.tracking_gains is not None  # __init__ requires them for these modes
        kp, kd = self.tracking_gains
        n = len(self.joint_names)
        if self.feedback == "bounded":
            return c.with_gains(bound_gains(c.K, kp, kd))
        K = np.zeros((n, c.dx))
        K[:, :n], K[:, n : 2 * n] = -np.diag(kp), -np.diag(kd)
        return c.with_gains(K)

    def predict_ahead(
        self, x: np.ndarray, stamp_ns: int, lead_ns: int, model: DynamicsModel | None = None
    ) -> tuple[np.ndarray, int]:
        """(model state (dx,), stamp ns) ⌈lead/dt⌉ control periods after ``stamp_ns``: ``model``'s
        (default: the MPC's) mean prediction from x under the previous plan's actions where it
        covers the step (as the executor runs it, clamped to the planner's torque box), zero
        torque elsewhere. x unchanged for lead ≤ 0."""
        model = self.model if model is None else model
        if model is None:
            raise ValueError("MPC.predict_ahead needs a model")
        steps = -(-int(lead_ns) // self.dt_ns) if lead_ns > 0 else 0
        until_ns = stamp_ns + steps * self.dt_ns
        return predict_ahead(
            model,
            x,
            stamp_ns,
            until_ns,
            self.previous,
            self.planner.action_low,
            self.planner.action_high,
        ), until_ns

    def pi0(self, stamp_ns: int) -> LinearGaussianController:
        """The base policy's open-loop controller of ``pi0_steps`` steps from ``stamp_ns``."""
        return self.base_policy.controller(self.pi0_steps, self.dt_ns, stamp_ns, self.joint_names)


def bound_gains(K: np.ndarray, kp: np.ndarray, kd: np.ndarray) -> np.ndarray:
    """Gains K (T, n, dx) on a state [q, q̇, …] (n joints) with row j's position part scaled to
    an L1 norm of at most kp_j (N·m/rad) and its velocity part to at most kd_j (N·m·s/rad), the
    gains on further features set to 0 (they have no bound in joint units); a new array."""
    K = np.array(K, dtype=np.float64)
    n = K.shape[1]
    for part, cap in ((slice(0, n), kp), (slice(n, 2 * n), kd)):
        norm = np.abs(K[..., part]).sum(-1, keepdims=True)
        K[..., part] *= np.minimum(1.0, np.asarray(cap)[:, None] / np.maximum(norm, 1e-300))
    K[..., 2 * n :] = 0.0
    return K


def planner_options(s: PlannerSettings) -> dict:
    """Keyword arguments of planner ``s.planner`` (a name of PLANNERS)."""
    sampling: dict[str, Any] = {"mode": s.propagation, "particles": s.particles}
    population = dict(population=s.samples, elites=s.elites, iterations=s.iterations, **sampling)
    options: dict[str, dict[str, Any]] = {
        "cem": population,
        "icem": population,
        "mppi": dict(samples=s.samples, iterations=s.iterations, **sampling),
        "random_shooting": dict(samples=s.samples, **sampling),
        "ilqr": dict(iterations=s.iterations),
    }
    return options[s.planner]


def build_mpc(robot: RobotDescription, joint_index: Sequence[int], s: PlannerSettings) -> MPC:
    """The MPC of settings ``s`` for the joints ``joint_index`` of ``robot``. PlanError,
    TaskError or ValueError name a bad setting."""
    idx = list(joint_index)
    names = [robot.joint_names[i] for i in idx]
    effort = robot.limits.effort[idx]
    per_joint = np.asarray(s.joint_effort_fraction, dtype=float)
    if per_joint.size and (
        per_joint.shape != (len(idx),) or not np.all((per_joint > 0) & (per_joint <= 1))
    ):
        raise ValueError(
            f"joint_effort_fraction {per_joint.tolist()} must be {len(idx)} values "
            f"in (0, 1], one per joint"
        )
    box = (per_joint if per_joint.size else s.effort_fraction) * effort
    base_policy = RandomTorquePolicy(
        effort, per_joint if per_joint.size else s.random_scale, s.random_hold_steps, s.seed + 1
    )
    planner = PLANNERS[s.planner](s.horizon, -box, box, seed=s.seed, **planner_options(s))
    # the cost in the planner's dtype: float32 plans need no float64 pass through it
    cost = ReachCost(
        robot,
        w_l2=s.w_l2,
        w_log=s.w_log,
        alpha=s.alpha,
        terminal_weight=s.terminal_weight,
        w_velocity=s.w_velocity,
        w_speed=s.w_speed,
        w_action=s.w_action,
        w_limit=s.w_limit,
        limit_margin=s.limit_margin,
        velocity_margin=s.velocity_margin,
    ).to(s.device or "cpu", planner.dtype)
    tracking = s.feedback in ("tracking", "bounded")
    return MPC(
        robot,
        names,
        planner,
        cost,
        dt=s.control_period,
        replan_every=s.replan_every,
        random_steps=int(round(s.random_seconds / s.control_period)),
        base_policy=base_policy,
        feedback=s.feedback,
        tracking_gains=_tracking_gains(robot, names, s) if tracking else None,
    )


def _tracking_gains(robot, names, s: PlannerSettings) -> tuple[np.ndarray, np.ndarray]:
    """(kp, kd) of feedback tracking / bounded: homing's gains at the control period, the
    damping scaled by ``tracking_damping``."""
    kp, kd = homing_gains(robot, names, s.control_period, s.tracking_gain_fraction)
    return kp, s.tracking_damping * kd
