"""End-effector targets that hold from a stamp on (``/mbrl/target``, geometry_msgs/PointStamped):
the episode manager sends each episode's target ahead of time with ``header.stamp`` = the stamp
of the episode's first state, so a node acting on a state uses the newest target whose stamp is
not after the state's."""

from __future__ import annotations

import bisect
from collections.abc import Callable

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.node import Node

from mbrl_ros.common.msgconv import stamp_to_ns
from mbrl_ros.control.plausibility import TargetGate
from mbrl_ros.data.topics import TARGET
from mbrl_ros.nodes.diagnostics import Diagnostics
from mbrl_ros.nodes.intake import subscribe
from mbrl_ros.nodes.messages import MAX_TARGETS, TARGET_QOS


class TargetSchedule:
    """The newest ``keep`` targets (3,) m with the stamps (ns) from which they hold; ``gate``
    rejects implausible targets (beyond the arm's reach)."""

    def __init__(self, gate: TargetGate, keep: int = MAX_TARGETS):
        self.gate, self.keep = gate, keep
        self._stamps: list[int] = []
        self._targets: list[np.ndarray] = []

    def add_msg(self, msg) -> np.ndarray:
        """Add a PointStamped; MessageError if its point is not finite or out of reach."""
        target = self.gate.check([msg.point.x, msg.point.y, msg.point.z])
        stamp = stamp_to_ns(msg.header.stamp)
        i = bisect.bisect_right(self._stamps, stamp)
        self._stamps.insert(i, stamp)
        self._targets.insert(i, target)
        del self._stamps[: -self.keep], self._targets[: -self.keep]
        return target

    @property
    def newest(self) -> np.ndarray | None:
        """The target with the latest stamp, or None."""
        return self._targets[-1] if self._targets else None

    def at(self, stamp_ns: int) -> np.ndarray | None:
        """The target that holds at ``stamp_ns``, or None."""
        i = bisect.bisect_right(self._stamps, stamp_ns)
        return self._targets[i - 1] if i else None


def subscribe_targets(
    node: Node,
    diag: Diagnostics,
    schedule: TargetSchedule,
    on_target: Callable[[np.ndarray], None] = lambda _: None,
) -> None:
    """``node``'s subscription to ``/mbrl/target`` (transient local: a late node gets every
    target of the run) into ``schedule``; ``on_target`` gets each accepted target (3,) m; one
    out of reach or not finite is counted and warned on ``diag`` (``rejected_target``)."""
    subscribe(node, diag, PointStamped, TARGET, TARGET_QOS, on_target, schedule.add_msg, "target")
