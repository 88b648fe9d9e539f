"""How nodes take messages (DESIGN.md §5: no message can crash a node).

Every message taken is counted on /diagnostics as ``received <topic>``.

* ``subscribe``: a subscription whose callback first decodes the message with a parser; *any*
  exception of the parser (malformed, absurd, a RecursionError from deeply nested JSON, ...)
  rejects the message: counted as ``rejected_<what>`` on /diagnostics and logged (throttled).
  An exception of the handler after a good decode is a fault of the node: counted as
  ``callback_errors`` (the diagnostics level becomes ERROR) and logged with its traceback; the
  node keeps running.
* ``JointStateIntake``: the one way nodes take ``/joint_states``: decoded in the node's joint
  order, checked for plausibility (``plausibility.StateGate``: URDF bounds; on a wall clock also
  a stamp window against it), repeated stamps ignored, stamps going backwards dropped — until
  the node's clock itself jumps back (a restarted simulator), or ``RECOVER_AFTER`` states in a
  row go on from an earlier stamp, which then is the timeline (one state stamped far ahead, a
  spoof or a glitch, cannot lock a node out).

Under simulated time (``use_sim_time``) no stamp window applies: a node's view of sim time comes
from best-effort /clock messages and lags its states by any amount under load, so a window there
would reject good states (and make lockstep runs depend on load).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from rclpy.clock import JumpThreshold, ROSClock
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState

from mbrl_ros.common.msgconv import JointSample, read_joint_state, seconds_to_ns
from mbrl_ros.control.plausibility import StateGate
from mbrl_ros.data.topics import STATES
from mbrl_ros.nodes.diagnostics import Diagnostics
from mbrl_ros.nodes.params import Param

RECOVER_AFTER = 3  # states in a row from an earlier stamp that make it the timeline again

# Declared by every node that takes joint states (the gate's settings).
STATE_GATE_PARAMS = [
    Param(
        "max_stamp_ahead",
        0.5,
        "joint states stamped further ahead of this node's wall clock "
        "are rejected (s; the clocks of robot and node must agree this "
        "well; not under use_sim_time); 0 = no check",
        (0.0, 3600.0),
    ),
    Param(
        "position_slack",
        0.5,
        "joint states further beyond a URDF position limit are rejected (rad)",
        (0.0, 100.0),
    ),
    Param(
        "velocity_factor",
        100.0,
        "joint states faster than this many times a URDF velocity "
        "limit are rejected (a simulated arm that falls without "
        "gravity compensation reaches 12× arm7's)",
        (1.0, 1e4),
    ),
]


def describe(exc: BaseException) -> str:
    """One line naming an exception (its text, else its type), at most 200 characters."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def subscribe(
    node: Node,
    diag: Diagnostics,
    msg_type,
    topic: str,
    qos: QoSProfile | int,
    handle: Callable[[Any], None],
    parse: Callable[[Any], Any] | None = None,
    what: str = "message",
    **kwargs,
):
    """``node.create_subscription`` whose callback runs ``handle(parse(msg))`` (``parse`` None:
    ``handle(msg)``); see the module docstring for what happens to exceptions."""

    received = f"received {node.resolve_topic_name(topic)}"

    def callback(msg) -> None:
        diag.count(received)
        try:
            value = msg if parse is None else parse(msg)
        except Exception as exc:  # noqa: BLE001 - every parser failure is a rejected message
            diag.warn(f"rejected_{what}", f"{topic}: {what} rejected: {describe(exc)}")
            return
        try:
            handle(value)
        except Exception as exc:  # noqa: BLE001 - a fault of this node, reported, not fatal
            diag.fault(
                f"{topic}: handling a {what} failed: {describe(exc)}", traceback.format_exc()
            )

    return node.create_subscription(msg_type, topic, callback, qos, **kwargs)


class JointStateIntake:
    """Joint states for ``names`` (joints of ``robot``) to ``handle(sample)``; a rejected message
    goes to ``on_rejected(msg, problem)`` when given (torque-commanding nodes hold). ``settings``:
    the node's values of STATE_GATE_PARAMS (attributes)."""

    def __init__(
        self,
        node: Node,
        diag: Diagnostics,
        robot,
        names,
        settings,
        handle: Callable[[JointSample], None],
        qos: QoSProfile | int,
        on_rejected: Callable[[Any, str], None] | None = None,
        topic: str = STATES,
    ):
        self.node, self.diag, self.names = node, diag, tuple(names)
        self.gate = StateGate.for_joints(
            robot,
            names,
            position_slack=settings.position_slack,
            velocity_factor=settings.velocity_factor,
            max_ahead_ns=seconds_to_ns(settings.max_stamp_ahead),
        )
        self.handle, self.on_rejected = handle, on_rejected
        self.last_stamp: int | None = None
        self._behind: list[int] = []  # stamps of the states in a row before last_stamp
        self._jump = node.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1)),
            post_callback=self._on_clock_jump,
        )
        self._received = f"received {node.resolve_topic_name(topic)}"
        self.subscription = node.create_subscription(JointState, topic, self._on_message, qos)

    def _on_clock_jump(self, _jump) -> None:
        self.last_stamp = None  # the clock went back: a new timeline (e.g. a restarted sim)
        self._behind = []

    def _goes_back(self, stamp: int) -> bool:
        """Whether the state stamped ``stamp`` (before last_stamp) is dropped; the last of
        RECOVER_AFTER such states in a row, each after the one before, starts the timeline."""
        if self._behind and stamp <= self._behind[-1]:
            self._behind = []
        self._behind.append(stamp)
        if len(self._behind) < RECOVER_AFTER:
            return True
        self.diag.warn(
            "timeline_restarts",
            f"{RECOVER_AFTER} joint states in a row from "
            f"{self._behind[0]} ns on, before the stamp "
            f"{self.last_stamp} ns taken earlier: they are the "
            "timeline now",
        )
        return False

    def _reject(self, msg, key: str, problem: str) -> None:
        self.diag.warn(key, f"joint state rejected: {problem}")
        if self.on_rejected is not None:
            self.on_rejected(msg, problem)

    def _on_message(self, msg) -> None:
        self.diag.count(self._received)
        try:
            s = read_joint_state(msg, self.names)
        except Exception as exc:  # noqa: BLE001 - malformed in any way
            self._reject(msg, "rejected_state", describe(exc))
            return
        clock = self.node.get_clock()
        try:
            sim_time = isinstance(clock, ROSClock) and clock.ros_time_is_active  # a node's is
            self.gate.check(s, None if sim_time else clock.now().nanoseconds)
        except ValueError as exc:
            self._reject(msg, "implausible_state", describe(exc))
            return
        if self.last_stamp is not None and s.stamp_ns == self.last_stamp:
            self.diag.count("repeated_state")  # the same state re-sent (lockstep start)
            return
        if (
            self.last_stamp is not None
            and s.stamp_ns < self.last_stamp
            and self._goes_back(s.stamp_ns)
        ):
            self.diag.warn(
                "stamp_backwards",
                f"joint state stamp {s.stamp_ns} ns is before {self.last_stamp} ns: dropped",
            )
            return
        self.last_stamp, self._behind = s.stamp_ns, []
        try:
            self.handle(s)
        except Exception as exc:  # noqa: BLE001 - a fault of this node, reported, not fatal
            self.diag.fault(
                f"handling joint state {s.stamp_ns} ns failed: {describe(exc)}",
                traceback.format_exc(),
            )
