"""The safety layer between any command source (executor, policy runner) and the arm's motors.

``SafetyLayer.filter(q, qd, u, now_ns, ...)`` turns a proposed torque (or none) into one that is
safe to send, and reports what it did as events. In order:

1. non-finite or implausible state (``plausibility.StateGate`` of the limits: a state far beyond
   them is a sensor fault or a lie, and a torque law computed from it would overflow), non-finite
   command, e-stop, stale state, stale plan, no command → the **hold law** for the whole arm:
   ``zero`` (u = 0), ``damping`` (u = −D q̇) or ``pd`` (u = Kp (q_h − q) − Kd q̇ with q_h the
   position latched when the hold began). With a stale state the velocity is not trusted and
   taken as zero; with an implausible one neither are the implausible positions.
2. joint position guard: within ``position_margin`` of a limit, a virtual spring-damper wall
   starting at the margin (``brake_kp``, ``brake_kd``) bounds the torque towards the limit;
   velocity guard: within ``velocity_margin`` of the velocity limit, the torque along the motion
   is bounded by −``brake_kd`` q̇. ``limit_response = "hold"`` applies the hold law instead.
3. gravity (a robot that does not compensate its own weight): + g(q) on every output, the hold
   law and the brakes included, so a hold holds the arm instead of letting it fall. g is taken
   at the state's positions when the state is plausible (finite and through the gate; a stale
   state's last positions count), otherwise at the last plausible state's: a lie must not feed
   the gravity model (before any plausible state, no gravity term).
4. effort clamp to ±effort limit.

The effort clamp and the non-finite guard always run; ``safety_enabled = False`` switches off the
watchdogs and limit guards only. The output is always finite and within the effort limits.

The configured gains are bounded by the stable caps of ``mbrl_ros.robot.gains`` at the control
period (``caps``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from mbrl_ros.common.settings import Settings, setting
from mbrl_ros.control.plausibility import CONTINUOUS_BOUND, StateGate
from mbrl_ros.robot.description import RobotDescription
from mbrl_ros.robot.gains import robot_gain_caps

HOLD_LAWS = ("zero", "damping", "pd")
LIMIT_RESPONSES = ("brake", "hold")


class SafetyEvent(NamedTuple):
    """``key``: a counter name (e.g. "stale_state"); ``message``: a line for the log."""

    key: str
    message: str


@dataclass(frozen=True)
class SafetyConfig(Settings):
    """The safety layer's settings (the parameters of the torque-commanding nodes, built offline
    without ROS); gains are per joint (the same for every joint), times in s (0 switches a
    watchdog off)."""

    max_state_age: float = setting(
        0.05, "realtime: hold when no joint state for this long (s); 0 = off", (0.0, 3600.0)
    )
    safety_enabled: bool = setting(
        True, "watchdogs and limit guards (clamp and NaN guard always run)"
    )
    hold_law: str = setting(
        "damping",
        "safe hold: zero torque, joint damping, or PD at the position where the hold began",
        choices=HOLD_LAWS,
    )
    damping: float = setting(2.0, "damping hold gain (N·m·s/rad)", (0.0, 1e4))
    hold_kp: float = setting(50.0, "PD hold stiffness (N·m/rad)", (0.0, 1e5))
    hold_kd: float = setting(5.0, "PD hold damping (N·m·s/rad)", (0.0, 1e4))
    position_margin: float = setting(
        0.05,
        "distance from a position limit where the guard acts (rad)",
        (0.0, 3.2),
        runtime=True,
        safer="higher",
    )
    velocity_margin: float = setting(
        0.2,
        "distance from the velocity limit where the guard acts (rad/s)",
        (0.0, 100.0),
        runtime=True,
        safer="higher",
    )
    limit_response: str = setting(
        "brake", "at a limit guard: brake the joint or hold the arm", choices=LIMIT_RESPONSES
    )
    brake_kp: float = setting(
        200.0, "stiffness of the virtual wall at the position margin (N·m/rad)", (0.0, 1e5)
    )
    brake_kd: float = setting(
        10.0, "damping of the position wall and velocity brake (N·m·s/rad)", (0.0, 1e4)
    )


class SafetyLayer:
    """Filters commands for an arm with limits ``lower``, ``upper`` (rad), ``velocity`` (rad/s),
    ``effort`` (N·m), each (n,), in the order of the q, q̇, u arrays given to ``filter``.
    ``caps`` = (kp_max, kd_max) from ``gain_caps`` bounds the configured gains (``self.gains``).
    ``gravity``: q (n,) rad → g(q) (n,) N·m in the same joint order, added to every output (a
    robot that does not compensate gravity); None: the robot compensates. ``max_plan_age`` (s, 0
    = off): hold when the plan (``plan_time_ns`` of ``filter``) is older, for a command source
    whose plans go stale."""

    def __init__(
        self,
        lower,
        upper,
        velocity,
        effort,
        config: SafetyConfig = SafetyConfig(),
        caps: tuple[np.ndarray, np.ndarray] | None = None,
        gravity: Callable[[np.ndarray], np.ndarray] | None = None,
        max_plan_age: float = 0.0,
    ):
        self.lower, self.upper, self.velocity, self.effort = (
            np.asarray(a, dtype=np.float64) for a in (lower, upper, velocity, effort)
        )
        n = self.effort.shape[0] if self.effort.ndim == 1 else -1
        if n < 1 or any(a.shape != (n,) for a in (self.lower, self.upper, self.velocity)):
            raise ValueError("limits must be four (n,) arrays")
        if not (np.all(np.isfinite(self.effort)) and np.all(self.effort > 0)):
            raise ValueError(f"effort limits must be finite and positive, got {self.effort}")
        if (
            np.any(np.isnan(self.lower) | np.isnan(self.upper) | np.isnan(self.velocity))
            or np.any(self.lower >= self.upper)
            or np.any(self.velocity <= 0)
        ):
            raise ValueError("position limits must satisfy lower < upper and velocity limits > 0")
        self.config, self.max_plan_age = config, max_plan_age
        self.n = n
        self.gate = StateGate(
            np.where(np.isfinite(self.lower), self.lower, -CONTINUOUS_BOUND),
            np.where(np.isfinite(self.upper), self.upper, CONTINUOUS_BOUND),
            self.velocity,
            max_ahead_ns=0,
        )
        self.set_margins(config.position_margin, config.velocity_margin)
        gains = {}
        for name in ("damping", "hold_kp", "hold_kd", "brake_kp", "brake_kd"):
            g = np.full(n, getattr(config, name))
            if caps is not None:
                g = np.minimum(g, caps[0] if name.endswith("kp") else caps[1])
            gains[name] = g
        self.gains = gains
        self.gravity = gravity
        self.gravity_torque = np.zeros(n)  # g at the last plausible state (N·m)
        self.estopped = False
        self.holding = False
        self._hold_position: np.ndarray | None = None

    @classmethod
    def for_robot(
        cls,
        robot: RobotDescription,
        joint_names,
        period: float,
        config: SafetyConfig = SafetyConfig(),
        *,
        cap_gains: bool = True,
        gravity: Callable[[np.ndarray], np.ndarray] | None = None,
        max_plan_age: float = 0.0,
    ) -> SafetyLayer:
        """The layer for ``joint_names`` of ``robot`` (its URDF limits in that order), with the
        configured gains capped to be stable at ``period`` s (``robot_gain_caps``) unless
        ``cap_gains`` is false; ``gravity`` and ``max_plan_age`` as in ``__init__``."""
        names = list(joint_names)
        idx, lim = robot.index_of(names), robot.limits
        caps = robot_gain_caps(robot, names, period) if cap_gains else None
        return cls(
            lim.lower[idx],
            lim.upper[idx],
            lim.velocity[idx],
            lim.effort[idx],
            config,
            caps,
            gravity,
            max_plan_age,
        )

    def set_margins(self, position_margin: float, velocity_margin: float) -> None:
        """Where the limit guards act: ``position_margin`` rad inside the position limits,
        ``velocity_margin`` rad/s below the velocity limits (also on a running layer)."""
        self.config = self.config.replace(
            position_margin=position_margin, velocity_margin=velocity_margin
        )
        self._hi_edge = self.upper - position_margin
        self._lo_edge = self.lower + position_margin
        self._v_edge = self.velocity - velocity_margin

    def set_estop(self, engaged: bool) -> None:
        """Engage (latch) or release the e-stop; while engaged every output is the hold law."""
        self.estopped = bool(engaged)

    def hold_command(self, q, qd) -> np.ndarray:
        """The hold law at state (q, q̇), finite even where q or q̇ is not (those joints get 0)."""
        q = np.asarray(q, dtype=np.float64)
        qd = np.where(np.isfinite(qd), qd, 0.0)
        law, g = self.config.hold_law, self.gains
        if law == "zero":
            return np.zeros(self.n)
        if law == "damping":
            return -g["damping"] * qd
        if self._hold_position is None and np.all(np.isfinite(q)):
            self._hold_position = q.copy()
        if self._hold_position is None:
            return -g["hold_kd"] * qd
        u = g["hold_kp"] * (self._hold_position - q) - g["hold_kd"] * qd
        return np.where(np.isfinite(u), u, 0.0)

    def filter(
        self,
        q,
        qd,
        u,
        now_ns: int | None = None,
        *,
        state_time_ns: int | None = None,
        plan_time_ns: int | None = None,
        why: str = "no_plan",
    ) -> tuple[np.ndarray, list[SafetyEvent]]:
        """Safe torque (n,) for state q, q̇ (n,) and proposed torque ``u`` (n,) or None (then the
        hold law, with event ``why``). ``state_time_ns`` / ``plan_time_ns``: when the state and the
        plan were received on the clock of ``now_ns``; compared with max_state_age/max_plan_age."""
        with np.errstate(over="ignore", invalid="ignore"):  # huge inputs: handled below
            return self._filter(q, qd, u, now_ns, state_time_ns, plan_time_ns, why)

    def _filter(self, q, qd, u, now_ns, state_time_ns, plan_time_ns, why):
        cfg, events = self.config, []
        q = np.asarray(q, dtype=np.float64)
        qd = np.asarray(qd, dtype=np.float64)
        hold = None
        if q.shape != (self.n,) or qd.shape != (self.n,):
            raise ValueError(f"q and qd must be ({self.n},), got {q.shape} and {qd.shape}")
        finite = np.isfinite(q).all() and np.isfinite(qd).all()
        problem = self.gate.problem(q, qd) if finite else None
        if self.gravity is not None and finite and problem is None:
            self.gravity_torque = np.asarray(self.gravity(q), dtype=np.float64)
        if not finite:
            hold = SafetyEvent("non_finite_state", "joint state has non-finite values: hold")
        elif problem is not None:
            hold = SafetyEvent("implausible_state", f"implausible joint state ({problem}): hold")
            slack = self.gate.position_slack
            q = np.where((q >= self.gate.lower - slack) & (q <= self.gate.upper + slack), q, np.nan)
            qd = np.zeros(self.n)
        elif self.estopped:
            hold = SafetyEvent("estop", "e-stop engaged: hold (call ~/estop false to release)")
        elif (
            cfg.safety_enabled
            and now_ns is not None
            and _older(now_ns, state_time_ns, cfg.max_state_age)
        ):
            hold = SafetyEvent("stale_state", f"joint state older than {cfg.max_state_age} s: hold")
            qd = np.zeros(self.n)
        elif (
            cfg.safety_enabled
            and now_ns is not None
            and _older(now_ns, plan_time_ns, self.max_plan_age)
        ):
            hold = SafetyEvent("stale_plan", f"controller older than {self.max_plan_age} s: hold")
        elif u is None:
            hold = SafetyEvent(why, f"no command ({why}): hold")
        else:
            u = np.asarray(u, dtype=np.float64)
            if u.shape != (self.n,) or not np.isfinite(u).all():
                hold = SafetyEvent(
                    "non_finite_command",
                    f"command of shape {u.shape} is not {self.n} finite values: hold",
                )
        if hold is None and cfg.safety_enabled:
            u, guard_events = self._guard(q, qd, u)
            events += guard_events
            if guard_events and cfg.limit_response == "hold":
                hold = guard_events[0]
        if hold is not None:
            if hold not in events:
                events.insert(0, hold)
            if not self.holding:
                self._hold_position = None
            self.holding = True
            u = self.hold_command(q, qd)
        else:
            self.holding = False
            self._hold_position = None
        if self.gravity is not None:
            u = u + self.gravity_torque
        clamped = np.minimum(np.maximum(u, -self.effort), self.effort)
        over = clamped != u
        if over.any():
            events.append(
                SafetyEvent(
                    "effort_clamped", f"torque clamped on joints {np.flatnonzero(over).tolist()}"
                )
            )
        if not np.isfinite(clamped).all():  # cannot happen; the output must be finite regardless
            clamped = np.where(np.isfinite(clamped), clamped, 0.0)
        return clamped, events

    def _guard(self, q, qd, u) -> tuple[np.ndarray, list[SafetyEvent]]:
        """Position walls and velocity brakes; returns the bounded torque and events."""
        hi, lo = q > self._hi_edge, q < self._lo_edge
        fast = np.abs(qd) > self._v_edge
        if not (hi.any() or lo.any() or fast.any()):
            return u, []
        cfg, g = self.config, self.gains
        events = []
        wall_hi = -g["brake_kp"] * (q - self._hi_edge) - g["brake_kd"] * qd
        wall_lo = g["brake_kp"] * (self._lo_edge - q) - g["brake_kd"] * qd
        bounded = np.where(hi & (u > wall_hi), wall_hi, u)
        bounded = np.where(lo & (bounded < wall_lo), wall_lo, bounded)
        hit = np.flatnonzero(bounded != u)
        if hit.size:
            events.append(
                SafetyEvent(
                    "position_guard",
                    f"joints {hit.tolist()} within {cfg.position_margin} rad of a "
                    "position limit: braking",
                )
            )
        brake = -g["brake_kd"] * qd
        braked = np.where(fast & (qd > 0) & (bounded > brake), brake, bounded)
        braked = np.where(fast & (qd < 0) & (braked < brake), brake, braked)
        hit = np.flatnonzero(braked != bounded)
        if hit.size:
            events.append(
                SafetyEvent(
                    "velocity_guard",
                    f"joints {hit.tolist()} within {cfg.velocity_margin} rad/s of "
                    "the velocity limit: braking",
                )
            )
        return braked, events


def _older(now_ns: int, then_ns: int | None, max_age_s: float) -> bool:
    return max_age_s > 0 and then_ns is not None and now_ns - then_ns > max_age_s * 1e9
