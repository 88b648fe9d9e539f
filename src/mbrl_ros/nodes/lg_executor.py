"""Executor node ``lg_executor``: runs the latest linear-Gaussian controller against the arm.

Subscribes ``/joint_states``, ``/mbrl/controller`` (controller artifacts,
std_msgs/UInt8MultiArray, transient local), ``/mbrl/homing_controller`` (the same artifacts, from
the episode manager: ``mbrl_ros.control.homing``) and ``/mbrl/planner_heartbeat`` (std_msgs/Header);
publishes ``/effort_controller/commands`` (torques in ``joint_names`` order, tagged in sync mode
with the stamp of the joint state they answer, in realtime mode with the time they are sent:
``nodes.safe_command_node``); service ``~/estop`` (std_srvs/SetBool: true latches the hold, false
releases it); ``/diagnostics`` with counters of every safety event, whether homing is active and
the latency state stamp → command. The safety glue (intake, watchdog, e-stop, gravity, output) is
shared with the policy runner (``nodes.safe_command_node``).

For each joint state, step t = ⌊(stamp − start)/dt⌋ of the controller gives u (deterministic
``act``, or ``sample`` with noise seeded by (seed, controller start) when ``stochastic``), which
goes through the safety layer (``mbrl_ros.control.safety``) and out. A controller is used only for
states stamped before its stated validity (``valid_until_ns``: a replanning planner's plan goes
stale when the next one is due), so a dead or late planner's plan is held within one control period
of going stale. Controllers beyond what the arm can do (``plausibility.ControllerBounds``:
feedforward over the effort limits, gains that saturate a joint for a tiny state error, noise
wider than the effort limit, nominal states beyond the joint limits) are refused, as are
malformed ones; the last good controller stays.

**Homing.** A homing controller valid at a state's stamp takes precedence over the planner's
(always deterministic; neither the planner's heartbeat nor ``max_plan_age`` applies to it: its
own validity does). When the arm has settled the episode manager republishes it truncated
(``with_validity``) and the planner's controllers take over from that stamp.

* ``sync`` (lockstep graphs): a state that no controller covers waits, and **nothing is
  published**, so a lockstep sim waits too; the state is answered as soon as a covering
  controller arrives. The graph advances at the planner's pace, deterministically. Safety holds
  (e-stop, non-finite state) are still published.
* ``realtime``: the newest of the last few controllers that is valid at the state's stamp is
  used (a planner that plans ahead of its latency publishes plans that start in the future: the
  one before runs until then); past its validity, before its start, without one,
  when it is older than ``max_plan_age`` (node clock), or when the planner's heartbeat, once
  heard, has been silent for ``heartbeat_timeout`` (node clock) the hold law is published. Only
  the newest joint state is kept (a late callback skips a backlog rather than answering old
  states). A watchdog on the node clock (sim time under ``use_sim_time``) publishes the hold
  ``max_state_age`` after the last joint state and then every ``control_period`` until one comes.
  Every command is tagged with its send time.

A malformed or implausible joint state is answered with the hold law (at the last good position,
zero velocity); a state whose stamp goes backwards is dropped (``nodes.intake``).
"""

from __future__ import annotations

import sys
from collections import deque

import numpy as np
from std_msgs.msg import Header, UInt8MultiArray

from mbrl_ros.common.msgconv import JointSample, seconds_to_ns
from mbrl_ros.control.controller import LinearGaussianController, exploration_noise
from mbrl_ros.data.topics import CONTROLLER, PLANNER_HEARTBEAT
from mbrl_ros.nodes.intake import subscribe
from mbrl_ros.nodes.messages import LATCHED_QOS
from mbrl_ros.nodes.params import Param
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.nodes.safe_command_node import SAFETY_PARAMS, SafeCommandNode

RECENT_CONTROLLERS = 4  # realtime: controllers kept to choose from (the newest valid one runs)

PARAMS = SAFETY_PARAMS + [
    Param(
        "mode",
        "sync",
        "sync (wait for a covering controller; lockstep) or realtime",
        choices=("sync", "realtime"),
    ),
    Param("stochastic", False, "sample u ~ N(mean, Σ_t) instead of the mean"),
    Param(
        "seed",
        0,
        "seed of the exploration noise (mixed with each controller's start)",
        (0, 2**31 - 1),
    ),
    Param(
        "noise_smoothing",
        0.0,
        "std of the temporal smoothing of the noise (steps); 0 = white",
        (0.0, 1000.0),
    ),
    Param(
        "max_plan_age",
        1.0,
        "realtime: hold when the controller is older than this (s); 0 = off",
        (0.0, 3600.0),
    ),
    Param(
        "heartbeat_timeout",
        0.5,
        "realtime: once a planner heartbeat has been heard, hold "
        "while it is silent for longer than this (s); 0 = off",
        (0.0, 3600.0),
    ),
]


class LGExecutorNode(SafeCommandNode):
    """The executor; ``node_kwargs`` go to rclpy's Node (parameter_overrides, context, ...)."""

    WAITING = "waiting for a controller covering the current state"

    def __init__(self, **node_kwargs):
        super().__init__("lg_executor", PARAMS, "executor", **node_kwargs)
        p = self.p
        self.controller: LinearGaussianController | None = None
        self.noise: np.ndarray | None = None
        # (controller, its noise, node clock at arrival): the newest few, realtime picks among them
        self.recent: deque[tuple] = deque(maxlen=RECENT_CONTROLLERS)
        self.last_index: int | None = None
        self.heartbeat_ns: int | None = None  # node clock when the last heartbeat came
        self._heartbeat_timeout_ns = seconds_to_ns(p.heartbeat_timeout)
        subscribe(
            self,
            self.diag,
            UInt8MultiArray,
            CONTROLLER,
            LATCHED_QOS,
            self._on_controller,
            self._read_controller,
            "controller",
        )
        subscribe(
            self, self.diag, Header, PLANNER_HEARTBEAT, 10, self._on_heartbeat, what="heartbeat"
        )
        g = self.safety.gains
        self.get_logger().info(
            f"{self.robot.name}: {self.n} joints, {p.mode} mode, "
            f"{'stochastic' if p.stochastic else 'deterministic'}, hold law {p.hold_law} "
            f"(damping {np.round(g['damping'], 3).tolist()} N·m·s/rad after caps), safety "
            f"{'on' if p.safety_enabled else 'off (clamp and NaN guard only)'}"
        )

    def _on_heartbeat(self, _msg: Header) -> None:
        self.heartbeat_ns = self._now_ns()

    def _planner_silent(self, now: int) -> bool:
        return bool(
            self._heartbeat_timeout_ns
            and self.heartbeat_ns is not None
            and now - self.heartbeat_ns > self._heartbeat_timeout_ns
        )

    def _on_controller(self, c: LinearGaussianController) -> None:
        noise = None
        if self.p.stochastic and not c.deterministic:
            rng = np.random.default_rng([self.p.seed, c.start_ns])
            noise = exploration_noise(c.T, c.du, rng, self.p.noise_smoothing)
        self.recent.append((c, noise, self._now_ns()))
        self._use(len(self.recent) - 1)
        self.diag.count("controllers")
        if self.pending is not None and c.valid_at(self.pending.stamp_ns):
            self._answer_pending()

    # -- acting --------------------------------------------------------------------------------
    def _answer(self, state: JointSample, now: int, start_ns: int) -> None:
        if self._answer_homing(state, now, start_ns):
            assert self.homing is not None  # _answer_homing acts only with a homing controller
            self.last_index = self.homing.index(state.stamp_ns)
            return
        x = np.concatenate([state.position, state.velocity])
        if self.realtime:  # the newest recent controller valid now (see the module docstring)
            self._use(
                next(
                    (
                        i
                        for i in range(len(self.recent) - 1, -1, -1)
                        if self.recent[i][0].valid_at(state.stamp_ns)
                    ),
                    len(self.recent) - 1,
                )
            )
        c = self.controller
        t = c.index(state.stamp_ns) if c is not None and c.valid_at(state.stamp_ns) else None
        if t is None and not self.realtime and not self.safety.estopped:
            self.pending = state  # sync: wait (publish nothing) until a controller covers it
            self.diag.count("waiting")
            return
        self.pending = None
        u, why = None, "no_plan"
        if t is not None and self.realtime and self._planner_silent(now):
            t, why = None, "planner_silent"
        elif t is not None and c is not None:  # (t is only set with a controller)
            with np.errstate(over="ignore", invalid="ignore"):  # non-finite u: the safety hold
                u = c.sample(x, t, z=self.noise[t]) if self.noise is not None else c.act(x, t)
        elif c is not None and why == "no_plan":
            why = (
                "plan_expired"
                if state.stamp_ns >= c.end_ns
                else "plan_stale"
                if state.stamp_ns >= c.valid_until_ns
                else "plan_not_started"
            )
        self.last_index = t
        self._send(
            state.position,
            state.velocity,
            u,
            state.stamp_ns,
            now=now if self.realtime else None,
            why=why,
        )
        self._record_compute(start_ns)

    def _use(self, i: int) -> None:
        """Run recent controller i (with its noise and arrival time; none while there is none)."""
        if self.recent:
            self.controller, self.noise, self.plan_time_ns = self.recent[i]

    def _status(self) -> tuple[str, dict]:
        c, h = self.controller, self.homing
        status = "homing" if self.homing_active else "running" if c else "no controller yet"
        return status, {
            "homing_active": self.homing_active,
            "homing_valid_until_s": h.valid_until_ns * 1e-9 if h else 0.0,
            "controller_steps": c.T if c else 0,
            "controller_start_s": c.start_ns * 1e-9 if c else 0.0,
            "controller_end_s": c.end_ns * 1e-9 if c else 0.0,
            "step_index": -1 if self.last_index is None else self.last_index,
        }


def main(args=None) -> int:
    return run_node(lambda: LGExecutorNode(), "lg_executor", args)


if __name__ == "__main__":
    sys.exit(main())
