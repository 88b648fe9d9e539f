"""Executor node ``lg_executor``: runs the latest linear-Gaussian controller against the arm.

Subscribes ``/joint_states`` and ``/mbrl/controller`` (controller artifacts,
std_msgs/UInt8MultiArray, transient local); publishes ``/effort_controller/commands`` (torques in
``joint_names`` order, tagged with the stamp of the joint state they answer); service ``~/estop`` (std_srvs/SetBool: true latches
the hold, false releases it); ``/diagnostics`` with counters of every safety event.

For each joint state, step t = ⌊(stamp − start)/dt⌋ of the controller gives u (deterministic
``act``, or ``sample`` with noise seeded by (seed, controller start) when ``stochastic``), which
goes through the safety layer (``mbrl_ros.safety``) and out.

* ``sync`` (lockstep graphs): a state that no controller covers waits, and **nothing is
  published**, so a lockstep sim waits too; the state is answered as soon as a covering
  controller arrives. The graph advances at the planner's pace, deterministically. Safety holds
  (e-stop, non-finite state) are still published.
* ``realtime``: the latest controller is used; past its end, before its start, without one or
  when it is older than ``max_plan_age`` (node clock) the hold law is published. Only the newest
  joint state is kept (a late callback skips a backlog rather than answering old states). A
  watchdog on the node clock (sim time under ``use_sim_time``) publishes the hold (untagged)
  ``max_state_age`` after the last joint state and then every ``control_period`` until one comes.

A malformed joint state (missing joints, bad sizes, non-finite values) is answered with the hold
law (at the last good position, zero velocity); a state whose stamp goes backwards is dropped.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, UInt8MultiArray
from std_srvs.srv import SetBool

from mbrl_ros.artifacts import ArtifactError
from mbrl_ros.controller import (STATE_LAYOUT_QQD, LinearGaussianController,
                                 exploration_noise, seconds_to_ns)
from mbrl_ros.msgconv import JointSample, MessageError, read_joint_state, stamp_to_ns
from mbrl_ros.nodes.diagnostics import ERROR, OK, WARN, Diagnostics
from mbrl_ros.nodes.messages import COMMAND_QOS, LATCHED_QOS, STATE_QOS, command_msg
from mbrl_ros.nodes.params import Param, declare_params, select_joints
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.robot import load_robot
from mbrl_ros.safety import (HOLD_LAWS, LIMIT_RESPONSES, SafetyConfig, SafetyLayer,
                             robot_gain_caps)


PARAMS = [
    Param("robot", "arm7", "robot description: a name in urdf/ (arm7, arm2) or a URDF path"),
    Param("joint_names", [], "joints of x and u, in order; [] = all joints in robot order"),
    Param("mode", "sync", "sync (wait for a covering controller; lockstep) or realtime",
          choices=("sync", "realtime")),
    Param("stochastic", False, "sample u ~ N(mean, Σ_t) instead of the mean"),
    Param("seed", 0, "seed of the exploration noise (mixed with each controller's start)",
          (0, 2**31 - 1)),
    Param("noise_smoothing", 0.0, "std of the temporal smoothing of the noise (steps); 0 = white",
          (0.0, 1000.0)),
    Param("control_period", 0.01, "the robot's control period (s): watchdog period, gain caps",
          (1e-4, 1.0)),
    Param("max_state_age", 0.05, "realtime: hold when no joint state for this long (s); 0 = off",
          (0.0, 3600.0)),
    Param("max_plan_age", 1.0, "realtime: hold when the controller is older than this (s); 0 = off",
          (0.0, 3600.0)),
    Param("safety_enabled", True, "watchdogs and limit guards (clamp and NaN guard always run)"),
    Param("hold_law", "damping", "safe hold: zero torque, joint damping, or PD at the position "
          "where the hold began", choices=HOLD_LAWS),
    Param("damping", 2.0, "damping hold gain (N·m·s/rad)", (0.0, 1e4)),
    Param("hold_kp", 50.0, "PD hold stiffness (N·m/rad)", (0.0, 1e5)),
    Param("hold_kd", 5.0, "PD hold damping (N·m·s/rad)", (0.0, 1e4)),
    Param("position_margin", 0.05, "distance from a position limit where the guard acts (rad)",
          (0.0, 3.2)),
    Param("velocity_margin", 0.2, "distance from the velocity limit where the guard acts (rad/s)",
          (0.0, 100.0)),
    Param("limit_response", "brake", "at a limit guard: brake the joint or hold the arm",
          choices=LIMIT_RESPONSES),
    Param("brake_kp", 200.0, "stiffness of the virtual wall at the position margin (N·m/rad)",
          (0.0, 1e5)),
    Param("brake_kd", 10.0, "damping of the position wall and velocity brake (N·m·s/rad)",
          (0.0, 1e4)),
    Param("cap_gains", True, "bound all hold/brake gains to what is stable at control_period "
          "for the robot's inertia (see mbrl_ros.safety)"),
    Param("diagnostics_period", 1.0, "wall seconds between /diagnostics messages", (0.0, 3600.0)),
]


class LGExecutorNode(Node):
    """The executor; ``node_kwargs`` go to rclpy's Node (parameter_overrides, context, ...)."""

    def __init__(self, **node_kwargs):
        super().__init__("lg_executor", **node_kwargs)
        p = self.p = declare_params(self, PARAMS)
        robot = load_robot(p.robot)
        self.names, idx = select_joints(robot, p.joint_names)
        lim = robot.limits
        caps = robot_gain_caps(robot, self.names, p.control_period) if p.cap_gains else None
        self.safety = SafetyLayer(
            lim.lower[idx], lim.upper[idx], lim.velocity[idx], lim.effort[idx], SafetyConfig(
                enabled=p.safety_enabled, hold_law=p.hold_law, damping=p.damping,
                hold_kp=p.hold_kp, hold_kd=p.hold_kd, position_margin=p.position_margin,
                velocity_margin=p.velocity_margin, limit_response=p.limit_response,
                brake_kp=p.brake_kp, brake_kd=p.brake_kd, max_state_age=p.max_state_age,
                max_plan_age=p.max_plan_age), caps)
        self.n = len(self.names)
        self.realtime = p.mode == "realtime"
        self.controller: LinearGaussianController | None = None
        self.noise: np.ndarray | None = None
        self.plan_time_ns: int | None = None
        self.last_state: JointSample | None = None
        self.state_time_ns: int | None = None
        self.pending: JointSample | None = None
        self.last_index: int | None = None
        self.hold_reason = ""
        self._compute = [0, 0, 0]  # steps, total ns, max ns since the last report
        self._period_ns = seconds_to_ns(p.control_period)
        self._max_state_age_ns = seconds_to_ns(p.max_state_age)

        self.cmd_pub = self.create_publisher(Float64MultiArray, "/effort_controller/commands",
                                             COMMAND_QOS)
        # realtime: keep only the newest state, so a late callback never works through a backlog
        state_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE) \
            if self.realtime else STATE_QOS
        self.create_subscription(JointState, "/joint_states", self._on_state, state_qos)
        self.create_subscription(UInt8MultiArray, "/mbrl/controller", self._on_controller,
                                 LATCHED_QOS)
        self.create_service(SetBool, "~/estop", self._on_estop)
        self.diag = Diagnostics(self, "executor", self._report, p.diagnostics_period)
        # The stale-state watchdog (node clock: sim time if set) is re-armed by every state, so
        # it costs nothing while states flow; once it fires it holds every control period.
        self._watchdog_timer = None
        if self.realtime and p.safety_enabled and p.max_state_age > 0:
            self._watchdog_timer = self.create_timer(p.max_state_age, self._watchdog)
        g = self.safety.gains
        self.get_logger().info(
            f"{robot.name}: {self.n} joints, {p.mode} mode, "
            f"{'stochastic' if p.stochastic else 'deterministic'}, hold law {p.hold_law} "
            f"(damping {np.round(g['damping'], 3).tolist()} N·m·s/rad after caps), safety "
            f"{'on' if p.safety_enabled else 'off (clamp and NaN guard only)'}")

    # -- inputs ------------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_state(self, msg: JointState) -> None:
        start = time.perf_counter_ns()
        now = self._now_ns()
        try:
            state = read_joint_state(msg, self.names)
        except MessageError as exc:
            self._on_bad_state(msg, str(exc), now)
            return
        if self.last_state is not None and state.stamp_ns == self.last_state.stamp_ns:
            return  # the same state re-sent (the lockstep sim repeats its first state)
        if self.last_state is not None and state.stamp_ns < self.last_state.stamp_ns:
            self.diag.warn("stamp_backwards", f"joint state stamp {state.stamp_ns} ns is before "
                                              f"{self.last_state.stamp_ns} ns: dropped")
            return
        self.last_state, self.state_time_ns = state, now
        if self._watchdog_timer is not None:
            if self._watchdog_timer.timer_period_ns != self._max_state_age_ns:
                self._watchdog_timer.timer_period_ns = self._max_state_age_ns
            self._watchdog_timer.reset()
        self.diag.count("states")
        self._answer(state, now, start)

    def _on_bad_state(self, msg: JointState, problem: str, now: int) -> None:
        """Hold at the last good position with zero velocity, tagged with the message's stamp
        when it is readable and not going backwards."""
        self.diag.warn("rejected_state", f"joint state rejected: {problem}: hold")
        try:
            stamp = stamp_to_ns(msg.header.stamp)
        except (AttributeError, TypeError, ValueError):
            return
        if self.last_state is not None and stamp < self.last_state.stamp_ns:
            return
        q = self.last_state.position if self.last_state is not None else np.full(self.n, np.nan)
        self._send(q, np.zeros(self.n), None, stamp, now=None, why="bad_state")

    def _on_controller(self, msg: UInt8MultiArray) -> None:
        now = self._now_ns()
        try:
            c = LinearGaussianController.from_bytes(bytes(msg.data), joint_names=self.names)
            if c.state_layout != STATE_LAYOUT_QQD:
                raise ArtifactError(f"state_layout '{c.state_layout}' is not supported by the "
                                    f"executor (needs '{STATE_LAYOUT_QQD}')")
        except ArtifactError as exc:
            self.diag.warn("rejected_controller", f"controller rejected: {exc}")
            return
        self.controller, self.plan_time_ns = c, now
        self.noise = None
        if self.p.stochastic and not c.deterministic:
            rng = np.random.default_rng([self.p.seed, c.start_ns])
            self.noise = exploration_noise(c.T, c.du, rng, self.p.noise_smoothing)
        self.diag.count("controllers")
        if self.pending is not None and c.covers(self.pending.stamp_ns):
            state, self.pending = self.pending, None
            self._answer(state, now, time.perf_counter_ns())

    def _on_estop(self, request: SetBool.Request, response: SetBool.Response):
        self.safety.set_estop(request.data)
        self.diag.count("estop_engaged" if request.data else "estop_released")
        text = (f"e-stop engaged: holding ({self.p.hold_law}) until released"
                if request.data else "e-stop released")
        self.get_logger().warning(text)
        if request.data and self.pending is not None:
            state, self.pending = self.pending, None
            self._answer(state, self._now_ns(), time.perf_counter_ns())
        elif request.data and self.realtime and self.last_state is not None:
            s = self.last_state
            self._send(s.position, s.velocity, None, None, now=self._now_ns(), why="estop")
        self.diag.publish()
        response.success, response.message = True, text
        return response

    # -- acting --------------------------------------------------------------------------------
    def _answer(self, state: JointSample, now: int, start_ns: int) -> None:
        c = self.controller
        t = c.index(state.stamp_ns) if c is not None else None
        if t is None and not self.realtime and not self.safety.estopped:
            self.pending = state  # sync: wait (publish nothing) until a controller covers it
            self.diag.count("waiting")
            return
        self.pending = None
        u, why = None, "no_plan"
        if t is not None:
            x = np.concatenate([state.position, state.velocity])
            with np.errstate(over="ignore", invalid="ignore"):  # non-finite u: the safety hold
                u = c.sample(x, t, z=self.noise[t]) if self.noise is not None else c.act(x, t)
        elif c is not None:
            why = "plan_expired" if state.stamp_ns >= c.end_ns else "plan_not_started"
        self.last_index = t
        self._send(state.position, state.velocity, u, state.stamp_ns,
                   now=now if self.realtime else None, why=why)
        spent = time.perf_counter_ns() - start_ns
        self._compute = [self._compute[0] + 1, self._compute[1] + spent,
                         max(self._compute[2], spent)]

    def _send(self, q, qd, u, stamp_ns: int | None, now: int | None, why: str) -> None:
        u_safe, events = self.safety.filter(q, qd, u, now, state_time_ns=self.state_time_ns,
                                            plan_time_ns=self.plan_time_ns, why=why)
        for e in events:
            self.diag.warn(e.key, e.message)
        self.cmd_pub.publish(command_msg(u_safe, stamp_ns))
        self.diag.count("commands")
        reason = events[0].key if self.safety.holding and events else ""
        if reason != self.hold_reason:
            self.hold_reason = reason
            self.diag.publish()

    def _watchdog(self) -> None:
        """Realtime: no joint state for max_state_age: hold (at the last position, the velocity
        untrusted), then again every control period until a state arrives."""
        s = self.last_state
        if s is None:
            return
        if self._watchdog_timer.timer_period_ns != self._period_ns:
            self._watchdog_timer.timer_period_ns = self._period_ns
            self._watchdog_timer.reset()  # a new period applies from the next reset
        self._send(s.position, np.zeros(self.n), None, None, now=self._now_ns(),
                   why="stale_state")

    def _report(self) -> tuple[int, str, dict]:
        c = self.controller
        values = {"mode": self.p.mode, "estop": self.safety.estopped,
                  "holding": self.safety.holding,
                  "waiting_for_stamp_ns": -1 if self.pending is None else self.pending.stamp_ns,
                  "controller_steps": c.T if c else 0,
                  "controller_start_s": c.start_ns * 1e-9 if c else 0.0,
                  "controller_end_s": c.end_ns * 1e-9 if c else 0.0,
                  "step_index": -1 if self.last_index is None else self.last_index}
        steps, total, worst = self._compute
        if steps:
            values |= {"compute_us_mean": total / steps * 1e-3, "compute_us_max": worst * 1e-3}
            self._compute = [0, 0, 0]
        if self.safety.estopped:
            return ERROR, "e-stop latched: holding", values
        if self.safety.holding:
            return WARN, f"holding ({self.hold_reason or 'safety'})", values
        if self.pending is not None:
            return OK, "waiting for a controller covering the current state", values
        return OK, "running" if c else "no controller yet", values


def main(args=None) -> int:
    return run_node(lambda: LGExecutorNode(), "lg_executor", args)


if __name__ == "__main__":
    sys.exit(main())
