"""Periodic /diagnostics publishing and throttled warnings, on the wall clock (so they keep
running while a lockstep simulation waits)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from mbrl_ros.data.topics import DIAGNOSTICS

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class Diagnostics:
    """Publishes one DiagnosticStatus named ``<node name>: <title>`` every ``period`` seconds (on
    the absolute /diagnostics; the node name with its namespace, e.g. ``robot1/mpc_planner``, so
    graphs in different namespaces stay apart).

    ``report()`` returns (level, message, values); ``counters`` is a Counter the node increments
    (``diag.count('rejected_command')``); all counters are published as values too. After a
    ``fault`` (an exception in the node's own code) the level is ERROR and the message names it.
    """

    def __init__(
        self,
        node: Node,
        title: str,
        report: Callable[[], tuple[int, str, dict]],
        period: float = 1.0,
        topic: str = DIAGNOSTICS,
    ):
        self._node, self._report = node, report
        self.name = f"{node.get_fully_qualified_name().lstrip('/')}: {title}"
        self.counters: Counter = Counter()
        self._logged: dict[str, float] = {}
        self.last_fault = ""
        self._pub = node.create_publisher(DiagnosticArray, topic, 10)
        self._wall = Clock(clock_type=ClockType.STEADY_TIME)
        self._timer = (
            node.create_timer(period, self.publish, clock=self._wall) if period > 0 else None
        )

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += n

    def warn(self, key: str, text: str, throttle_s: float = 2.0) -> None:
        """Count event ``key`` and log ``text`` at most once per ``throttle_s`` for that key.
        (Throttled here, before the logger: rclpy inspects the caller even for suppressed lines,
        which costs about a millisecond.)"""
        self.counters[key] += 1
        now = time.monotonic()
        if now - self._logged.get(key, -np.inf) >= throttle_s:
            self._logged[key] = now
            self._node.get_logger().warning(f"{text} [{key} x{self.counters[key]}]")

    def fault(self, text: str, details: str = "", throttle_s: float = 2.0) -> None:
        """Count a fault of the node itself (``callback_errors``) and log ``text`` with
        ``details`` (a traceback) as an error, at most once per ``throttle_s``."""
        self.counters["callback_errors"] += 1
        self.last_fault = text
        now = time.monotonic()
        if now - self._logged.get("callback_errors", -np.inf) >= throttle_s:
            self._logged["callback_errors"] = now
            self._node.get_logger().error(
                f"{text} [callback_errors x{self.counters['callback_errors']}]\n{details}".rstrip()
            )

    def status(self) -> DiagnosticStatus:
        level, message, values = self._report()
        if self.last_fault:
            level, message = ERROR, f"{message}; last fault: {self.last_fault}"
        kv = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
        kv += [KeyValue(key=k, value=str(v)) for k, v in sorted(self.counters.items())]
        return DiagnosticStatus(
            level=bytes([level]) if isinstance(level, int) else level,
            name=self.name,
            message=message,
            hardware_id=self._node.get_name(),
            values=kv,
        )

    def publish(self) -> None:
        msg = DiagnosticArray(status=[self.status()])
        msg.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(msg)


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
