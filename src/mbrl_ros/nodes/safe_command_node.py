"""What every node that commands the arm's torques shares (``lg_executor``, ``policy_runner``):
the safety parameters, the ``SafetyLayer`` built from them, the joint-state intake, publishing
on ``/effort_controller/commands`` through the safety layer, the ``~/estop`` service, the
real-time stale-state watchdog and the common part of ``/diagnostics``.

**Homing** (real-time graphs on a robot without resets): a homing controller from the episode
manager on ``/mbrl/homing_controller`` (``mbrl_ros.control.homing``) that is valid at a state's
stamp answers it before anything else (``_answer_homing``); controllers beyond what the arm can do
(``plausibility.ControllerBounds``) are refused.

A subclass computes torques in ``_answer(state, now, start_ns)``: it either publishes with
``_send`` (the safety layer turns a missing or non-finite torque into the hold) or, in ``sync``
mode (lockstep graphs), parks the state in ``self.pending`` and publishes nothing until it can
answer it (``_answer_pending``). In ``sync`` mode commands are tagged with the stamp of the joint
state they answer (``msgconv``), so a lockstep simulator matches them to its steps. In
``realtime`` mode every command, holds included, is tagged with the node's clock time when it is
sent: the time from which the command is in force on
the robot, what the fitter resamples with. Such a tag is never before the stamp of the state it
answers (clocks of two machines may disagree; a state the intake accepted ahead of the clock,
at most ``max_stamp_ahead``, holds the tags at its stamp until the clock passes it) and strictly
increases while the node clock does (a rejected message's stamp never moves it). The latency state
stamp → send (node clock, realtime) is reported on /diagnostics (``latency_ms_median``,
``latency_ms_max`` over the commands since the last report, at most the last LATENCY_WINDOW).

``robot_compensates_gravity: false``: the safety layer adds the URDF's gravity torque g(q)
(``mbrl_ros.robot.gravity``) to every command before the effort clamp (``mbrl_ros.control.safety``);
the node refuses to start when the URDF cannot give g (no inertials) or ``joint_names`` leaves
joints out.

* ``sync``: a state that cannot be answered yet waits and nothing is published, so a lockstep sim
  waits too; safety holds (e-stop, non-finite state) are still published. The first state is
  answered only once ``min_command_subscribers`` subscriptions are matched to the command topic
  (the sim and the nodes that learn from or record commands), so none of them misses the first
  commands because DDS had not connected it yet.
* ``realtime``: only the newest joint state is kept (a late callback skips a backlog); a watchdog
  on the node clock (sim time under ``use_sim_time``) publishes the hold (tagged with its send
  time) ``max_state_age`` after the last joint state and then every ``control_period`` until one
  comes.

Joint states come through ``nodes.intake.JointStateIntake``: a malformed or implausible one
(missing joints, bad sizes, non-finite values, beyond the URDF bounds, stamped too far ahead of
the node clock) is answered with the hold law (at the last good position, zero velocity); a state
whose stamp goes backwards is dropped; the same stamp again (the lockstep sim repeats its first
state) is ignored. A fault in answering a state also publishes the hold.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import replace

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.timer import Timer
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, UInt8MultiArray
from std_srvs.srv import SetBool

from mbrl_ros.common.artifacts import ArtifactError
from mbrl_ros.common.msgconv import JointSample, seconds_to_ns, stamp_to_ns
from mbrl_ros.control.controller import STATE_LAYOUT_QQD, LinearGaussianController
from mbrl_ros.control.plausibility import ControllerBounds
from mbrl_ros.control.safety import SafetyConfig, SafetyLayer
from mbrl_ros.data.topics import COMMANDS, HOMING_CONTROLLER
from mbrl_ros.nodes.diagnostics import ERROR, OK, WARN, Diagnostics
from mbrl_ros.nodes.intake import STATE_GATE_PARAMS, JointStateIntake, describe, subscribe
from mbrl_ros.nodes.messages import COMMAND_QOS, LATCHED_QOS, NEWEST_ONLY, STATE_QOS, command_msg
from mbrl_ros.nodes.params import ConfigError, Param, declare_params, select_joints
from mbrl_ros.robot.description import RobotDescriptionError, load_robot
from mbrl_ros.robot.gravity import GravityModel, JointGravity

LATENCY_WINDOW = 2000  # commands in the latency statistics

SAFETY_PARAMS = [
    Param("robot", "arm7", "robot description: a name in urdf/ (arm7, arm2) or a URDF path"),
    Param("joint_names", [], "joints of x and u, in order; [] = all joints in robot order"),
    Param(
        "control_period",
        0.01,
        "the robot's control period (s): watchdog period, gain caps",
        (1e-4, 1.0),
    ),
    *SafetyConfig.params(),
    Param(
        "robot_compensates_gravity",
        True,
        "the robot's effort interface cancels the arm's "
        "weight; false: add the URDF's gravity torque g(q) to every command",
    ),
    Param(
        "cap_gains",
        True,
        "bound all hold/brake gains to what is stable at control_period "
        "for the robot's inertia (see mbrl_ros.control.safety)",
    ),
    Param("diagnostics_period", 1.0, "wall seconds between /diagnostics messages", (0.0, 3600.0)),
    Param(
        "min_command_subscribers",
        1,
        "sync: answer the first state once this many "
        "subscriptions are matched to the command topic",
        (1, 1000),
    ),
    Param(
        "realtime_priority",
        0,
        "realtime: run every thread of the node under SCHED_FIFO at "
        "this priority (1-99, needs root or an rtprio limit), so other "
        "work on the machine cannot delay commands and watchdogs; "
        "0 = normal scheduling",
        (0, 99),
    ),
    Param(
        "max_feedforward_ratio",
        2.0,
        "refuse controllers whose feedforward û + k exceeds this many times a joint's effort limit",
        (0.1, 100.0),
        runtime=True,
        safer="lower",
    ),
    Param(
        "min_saturating_error",
        1e-3,
        "refuse controllers whose gains reach a joint's effort "
        "limit for a smaller state error (rad or rad/s)",
        (1e-9, 10.0),
        runtime=True,
        safer="higher",
    ),
] + STATE_GATE_PARAMS


def fifo_scheduling(priority: int) -> str | None:
    """Put every thread of this process (Linux) under SCHED_FIFO at ``priority``; children do
    not inherit it. None, or why it could not be done."""
    try:
        for tid in os.listdir("/proc/self/task"):
            os.sched_setscheduler(
                int(tid), os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority)
            )
    except (OSError, AttributeError) as exc:
        return describe(exc)
    return None


def gravity_in_order(robot, names) -> JointGravity:
    """q (n,) in ``names`` order → g(q) (n,) N·m in that order; ConfigError when the URDF cannot
    give g or ``names`` leave some of the robot's joints out."""
    missing = [j for j in robot.joint_names if j not in names]
    if missing:
        raise ConfigError(
            f"parameter 'robot_compensates_gravity' = false needs every joint of "
            f"{robot.name} in 'joint_names' (gravity depends on all of them); "
            f"missing {missing}"
        )
    try:
        return JointGravity(GravityModel(robot), names)
    except RobotDescriptionError as exc:
        raise ConfigError(f"parameter 'robot_compensates_gravity' = false: {exc}") from None


class SafeCommandNode(Node):
    """Base of the torque-commanding nodes. ``params`` must contain ``SAFETY_PARAMS`` (the safety
    layer's ``SafetyConfig.params()`` and the node's wiring) and a ``mode`` parameter (sync or
    realtime); a node whose commands come from plans that go stale
    also declares ``max_plan_age`` (s, 0 = off): the safety layer's watchdog on
    ``self.plan_time_ns``. ``title`` names the diagnostics status. Subclasses implement
    ``_answer`` and ``_status``."""

    WAITING = "waiting for what the current state needs"

    def __init__(self, node_name: str, params: list[Param], title: str, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        p = self.p = declare_params(self, params, self._set_params)
        self.robot = load_robot(p.robot)
        self.names, _ = select_joints(self.robot, p.joint_names)
        gravity = None if p.robot_compensates_gravity else gravity_in_order(self.robot, self.names)
        self.safety = SafetyLayer.for_robot(
            self.robot,
            self.names,
            p.control_period,
            SafetyConfig.select(vars(p)),
            cap_gains=p.cap_gains,
            gravity=gravity,
            max_plan_age=getattr(p, "max_plan_age", 0.0),
        )
        self.n = len(self.names)
        self.realtime = p.mode == "realtime"
        self.plan_time_ns: int | None = None
        self.last_state: JointSample | None = None
        self.state_time_ns: int | None = None
        self.pending: JointSample | None = None
        self.hold_reason = ""
        self._compute = [0, 0, 0]  # steps, total ns, max ns since the last report
        # realtime: state stamp → send (ns) of the commands since the last report (the newest)
        self._latency_ns: deque[int] = deque(maxlen=LATENCY_WINDOW)
        self._last_tag = -1  # realtime: the last send-time tag and send time (node clock, ns)
        self._last_sent = -1
        self._period_ns = seconds_to_ns(p.control_period)
        self._max_state_age_ns = seconds_to_ns(p.max_state_age)
        self._matched = False  # sync: the command topic's subscribers are matched
        self._match_timer: Timer | None = None

        self.cmd_pub = self.create_publisher(Float64MultiArray, COMMANDS, COMMAND_QOS)
        self.diag = Diagnostics(self, title, self._report, p.diagnostics_period)
        state_qos = NEWEST_ONLY if self.realtime else STATE_QOS
        self.intake = JointStateIntake(
            self,
            self.diag,
            self.robot,
            self.names,
            p,
            self._on_state,
            state_qos,
            on_rejected=self._on_bad_state,
        )
        self.create_service(SetBool, "~/estop", self._on_estop)
        self.bounds = ControllerBounds(
            self.safety.effort, self.intake.gate, p.max_feedforward_ratio, p.min_saturating_error
        )
        self.homing: LinearGaussianController | None = None
        self.homing_active = False  # the last state was answered by the homing controller
        subscribe(
            self,
            self.diag,
            UInt8MultiArray,
            HOMING_CONTROLLER,
            LATCHED_QOS,
            self._on_homing,
            self._read_controller,
            "homing_controller",
        )
        if self.realtime and p.realtime_priority:
            problem = fifo_scheduling(p.realtime_priority)
            if problem:
                self.get_logger().warning(
                    f"realtime_priority {p.realtime_priority} not applied "
                    f"({problem}): normal scheduling"
                )
        # The stale-state watchdog (node clock: sim time if set) is re-armed by every state, so
        # it costs nothing while states flow; once it fires it holds every control period.
        self._watchdog_timer: Timer | None = None
        if self.realtime and p.safety_enabled and p.max_state_age > 0:
            self._watchdog_timer = self.create_timer(p.max_state_age, self._watchdog)

    def _set_params(self, changes) -> None:
        """Runtime parameters (only ever tighter than at start-up): the guards' margins and the
        bounds on the controllers accepted from now on (the running one was checked already)."""
        new = vars(self.p) | dict(changes)
        self.safety.set_margins(new["position_margin"], new["velocity_margin"])
        self.bounds = replace(
            self.bounds,
            max_feedforward_ratio=new["max_feedforward_ratio"],
            min_saturating_error=new["min_saturating_error"],
        )
        self.get_logger().info(f"parameters set at run time: {dict(changes)}")

    # -- linear-Gaussian controllers, homing ---------------------------------------------------
    def _read_controller(self, msg: UInt8MultiArray) -> LinearGaussianController:
        """A controller artifact this node can run (ArtifactError naming what is wrong)."""
        c = LinearGaussianController.from_bytes(bytes(msg.data), joint_names=self.names)
        if c.state_layout != STATE_LAYOUT_QQD:
            raise ArtifactError(
                f"state_layout '{c.state_layout}' is not supported by the "
                f"{self.get_name()} (needs '{STATE_LAYOUT_QQD}')"
            )
        self.bounds.check(c)
        return c

    def _on_homing(self, c: LinearGaussianController) -> None:
        self.homing = c
        self.diag.count("homing_controllers")
        if self.pending is not None and c.valid_at(self.pending.stamp_ns):
            self._answer_pending()

    def _answer_homing(self, state: JointSample, now: int, start_ns: int) -> bool:
        """Answer ``state`` with the homing controller if one is valid at its stamp (True)."""
        h = self.homing
        active = h is not None and h.valid_at(state.stamp_ns)
        if active != self.homing_active:
            self.homing_active = active
            self.get_logger().info(
                "homing: following the homing controller" if active else "homing over"
            )
            self.diag.publish()  # homing_active changed: say so now
        if h is None or not active:
            return False
        self.pending = None
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite u: the safety hold
            u = h.act(np.concatenate([state.position, state.velocity]), h.index(state.stamp_ns))
        self._send(
            state.position,
            state.velocity,
            u,
            state.stamp_ns,
            now=now if self.realtime else None,
            why="homing",
            plan_time_ns=None,
        )
        self._record_compute(start_ns)
        return True

    # -- to implement ----------------------------------------------------------------------------
    def _answer(self, state: JointSample, now: int, start_ns: int) -> None:
        """Compute and ``_send`` the command for ``state`` (received at ``now`` on the node
        clock, handling began at ``start_ns`` on perf_counter_ns), or park it in
        ``self.pending`` (sync mode, nothing published) until it can be answered."""
        raise NotImplementedError

    def _status(self) -> tuple[str, dict]:
        """(message while running normally, node-specific diagnostic values)."""
        raise NotImplementedError

    # -- inputs ----------------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_state(self, state: JointSample) -> None:
        start = time.perf_counter_ns()
        now = self._now_ns()
        self.last_state, self.state_time_ns = state, now
        if self._watchdog_timer is not None:
            if self._watchdog_timer.timer_period_ns != self._max_state_age_ns:
                self._watchdog_timer.timer_period_ns = self._max_state_age_ns
            self._watchdog_timer.reset()
        self.diag.count("states")
        if not self._outputs_ready():
            self.pending = state  # sync: answered by _wait_for_outputs once they are matched
            return
        try:
            self._answer(state, now, start)
        except Exception:
            self.pending = None
            self._send(state.position, state.velocity, None, state.stamp_ns, now=None, why="fault")
            raise  # reported by the intake

    def _outputs_ready(self) -> bool:
        """Sync: whether the command publisher is matched with ``min_command_subscribers``
        subscriptions yet (checked until it is, then no more)."""
        if self._matched or self.realtime:
            return True
        self._matched = self.cmd_pub.get_subscription_count() >= self.p.min_command_subscribers
        if not self._matched and self._match_timer is None:
            self._match_timer = self.create_timer(
                0.05, self._wait_for_outputs, clock=Clock(clock_type=ClockType.STEADY_TIME)
            )
        return self._matched

    def _wait_for_outputs(self) -> None:
        if self._outputs_ready():
            if self._match_timer is not None:  # (this timer's callback: it is)
                self.destroy_timer(self._match_timer)
            self._answer_pending()

    def _on_bad_state(self, msg: JointState, problem: str) -> None:
        """Hold at the last good position with zero velocity, tagged with the message's stamp
        when it is readable and not going backwards."""
        try:
            stamp = stamp_to_ns(msg.header.stamp)
        except (AttributeError, TypeError, ValueError):
            return
        if stamp < 0 or (self.last_state is not None and stamp < self.last_state.stamp_ns):
            return
        q = self.last_state.position if self.last_state is not None else np.full(self.n, np.nan)
        self._send(q, np.zeros(self.n), None, stamp, now=None, why="bad_state", accepted=False)

    def _answer_pending(self) -> None:
        """Answer the parked state (if any) now: call when what it waited for has arrived."""
        if self.pending is not None and self._outputs_ready():
            state, self.pending = self.pending, None
            self._answer(state, self._now_ns(), time.perf_counter_ns())

    def _on_estop(self, request: SetBool.Request, response: SetBool.Response):
        self.safety.set_estop(request.data)
        self.diag.count("estop_engaged" if request.data else "estop_released")
        text = (
            f"e-stop engaged: holding ({self.p.hold_law}) until released"
            if request.data
            else "e-stop released"
        )
        self.get_logger().warning(text)
        if request.data and self.pending is not None:
            self._answer_pending()
        elif request.data and self.realtime and self.last_state is not None:
            s = self.last_state
            self._send(s.position, s.velocity, None, None, now=self._now_ns(), why="estop")
        self.diag.publish()
        response.success, response.message = True, text
        return response

    # -- output ----------------------------------------------------------------------------------
    def _send(
        self,
        q,
        qd,
        u,
        stamp_ns: int | None,
        now: int | None,
        why: str,
        plan_time_ns: int | None | bool = True,
        accepted: bool = True,
    ) -> None:
        """Publish the safety layer's output for state (q, q̇) and proposed torque ``u`` (None:
        the hold, reported as ``why``) answering the state stamped ``stamp_ns`` (None: no state,
        e.g. the watchdog; ``accepted`` False: a rejected message's stamp, which may be anything,
        so it neither moves send-time tags nor counts in the latency); ``now`` (node clock)
        enables the age watchdogs (realtime); ``plan_time_ns``: when the controller in use came
        (True: ``self.plan_time_ns``; None: no plan-age check)."""
        if plan_time_ns is True:
            plan_time_ns = self.plan_time_ns
        u_safe, events = self.safety.filter(
            q, qd, u, now, state_time_ns=self.state_time_ns, plan_time_ns=plan_time_ns, why=why
        )
        for e in events:
            self.diag.warn(e.key, e.message)
        tag = stamp_ns
        if self.realtime:
            sent = self._now_ns()
            if sent < self._last_sent:  # the clock went back (a restarted sim): tags restart
                self._last_tag = -1
            self._last_sent = sent
            stamp = stamp_ns if accepted else None
            if stamp is not None:
                self._latency_ns.append(sent - stamp)
            tag = self._last_tag = max(sent, stamp or 0, self._last_tag + 1)
        self.cmd_pub.publish(command_msg(u_safe, tag))
        self.diag.count("commands")
        reason = events[0].key if self.safety.holding and events else ""
        if reason != self.hold_reason:
            self.hold_reason = reason
            self.diag.publish()

    def _record_compute(self, start_ns: int) -> None:
        """Count the time from ``start_ns`` (perf_counter_ns) as one answered state."""
        spent = time.perf_counter_ns() - start_ns
        self._compute = [
            self._compute[0] + 1,
            self._compute[1] + spent,
            max(self._compute[2], spent),
        ]

    def _watchdog(self) -> None:
        """Realtime: no joint state for max_state_age: hold (at the last position, the velocity
        untrusted), then again every control period until a state arrives."""
        s, timer = self.last_state, self._watchdog_timer
        if s is None or timer is None:
            return
        if timer.timer_period_ns != self._period_ns:
            timer.timer_period_ns = self._period_ns
            timer.reset()  # a new period applies from the next reset
        self._send(s.position, np.zeros(self.n), None, None, now=self._now_ns(), why="stale_state")

    def _report(self) -> tuple[int, str, dict]:
        running, extra = self._status()
        values = {
            "mode": self.p.mode,
            "estop": self.safety.estopped,
            "holding": self.safety.holding,
            "robot_compensates_gravity": self.p.robot_compensates_gravity,
            "waiting_for_stamp_ns": -1 if self.pending is None else self.pending.stamp_ns,
            **extra,
        }
        steps, total, worst = self._compute
        if steps:
            values |= {"compute_us_mean": total / steps * 1e-3, "compute_us_max": worst * 1e-3}
            self._compute = [0, 0, 0]
        if self._latency_ns:
            latency = np.array(self._latency_ns) * 1e-6
            self._latency_ns.clear()
            values |= {
                "latency_ms_median": float(np.median(latency)),
                "latency_ms_max": float(latency.max()),
            }
        if self.safety.estopped:
            return ERROR, "e-stop latched: holding", values
        if self.safety.holding:
            return WARN, f"holding ({self.hold_reason or 'safety'})", values
        if self.pending is not None:
            return OK, self.WAITING, values
        return OK, running, values
