"""RViz markers of a planner (``/mbrl/markers``, visualization_msgs/MarkerArray, in the robot's base
frame): the target (a green sphere), the predicted end-effector path (a blue line) and its
uncertainty tube (per step an orange ellipsoid, axis-aligned, ±1 σ of the end effector's position
under the model's predictive variance propagated along the plan: ``planning.tube``).

Nothing is computed while no one subscribes, and at most once per ``min_period`` (wall s).
"""

from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import Point
from visualization_msgs.msg import Marker, MarkerArray

from mbrl_ros.data.topics import MARKERS
from mbrl_ros.nodes.messages import time_msg
from mbrl_ros.planning.tube import ee_tube, state_tube

NAMESPACE = "mbrl"
TARGET, PATH, TUBE = 0, 1, 2  # marker ids; the tube's are TUBE + step
MIN_SIZE = 1e-3  # m: the smallest ellipsoid axis drawn


def _marker(kind: int, marker_id: int, frame: str, stamp_ns: int, rgba) -> Marker:
    m = Marker(type=kind, id=marker_id, ns=NAMESPACE, action=Marker.ADD)
    m.header.frame_id, m.header.stamp = frame, time_msg(stamp_ns)
    m.pose.orientation.w = 1.0
    m.color.r, m.color.g, m.color.b, m.color.a = rgba
    return m


def plan_markers(
    frame: str,
    stamp_ns: int,
    period_ns: int,
    ee: np.ndarray | None,
    ee_cov: np.ndarray | None,
    target: np.ndarray | None,
) -> MarkerArray:
    """The markers for end-effector positions ``ee`` (T+1, 3) m of a plan starting at
    ``stamp_ns`` (one step per ``period_ns``), their covariances ``ee_cov`` (T+1, 3, 3) m² and the
    target (3,) m; the previous markers are deleted first."""
    clear = Marker(ns=NAMESPACE, action=Marker.DELETEALL)
    clear.header.frame_id, clear.header.stamp = frame, time_msg(stamp_ns)
    out = [clear]
    if target is not None:
        m = _marker(Marker.SPHERE, TARGET, frame, stamp_ns, (0.1, 0.9, 0.2, 0.9))
        m.pose.position = Point(x=float(target[0]), y=float(target[1]), z=float(target[2]))
        m.scale.x = m.scale.y = m.scale.z = 0.04
        out.append(m)
    if ee is not None:
        m = _marker(Marker.LINE_STRIP, PATH, frame, stamp_ns, (0.2, 0.45, 0.95, 1.0))
        m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in ee]
        m.scale.x = 0.005
        out.append(m)
    if ee is not None and ee_cov is not None:
        sigma = np.sqrt(np.clip(np.diagonal(ee_cov, axis1=1, axis2=2), 0.0, None))
        for t, (p, s) in enumerate(zip(ee, sigma)):
            if not np.all(np.isfinite(s)):
                continue  # a model's infinite or NaN variance: no ellipsoid for that step
            m = _marker(
                Marker.SPHERE, TUBE + t, frame, stamp_ns + t * period_ns, (0.95, 0.5, 0.1, 0.25)
            )
            m.pose.position = Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
            m.scale.x, m.scale.y, m.scale.z = (float(max(2 * v, MIN_SIZE)) for v in s)
            out.append(m)
    return MarkerArray(markers=out)


class PlanMarkers:
    """Publishes a planner's markers on ``/mbrl/markers`` (see the module docstring)."""

    def __init__(self, node, fk, frame: str, n: int, period_ns: int, min_period: float = 0.2):
        self.pub = node.create_publisher(MarkerArray, MARKERS, 10)
        self.fk, self.frame, self.n, self.period_ns = fk, frame, n, period_ns
        self.min_period = min_period
        self.logger = node.get_logger()
        self._last = -np.inf
        self._failed = False

    def publish(self, plan, model, target: np.ndarray | None, stamp_ns: int) -> None:
        """Markers of ``plan`` (a PlanResult: states (T+1, dx) and its controller) through
        ``model`` (None: no tube) toward ``target``."""
        now = time.monotonic()
        if self.pub.get_subscription_count() == 0 or now - self._last < self.min_period:
            return
        self._last = now
        P = None
        if model is not None and not self._failed:
            try:
                P = state_tube(model, plan.states, plan.controller)
            except (RuntimeError, ValueError, TypeError) as exc:  # e.g. no gradients
                self.logger.warning(f"no uncertainty tube on {MARKERS}: {exc}")
                self._failed = True
        zero = np.zeros(plan.states.shape + plan.states.shape[-1:])
        ee, cov = ee_tube(self.fk, plan.states, zero if P is None else P, self.n)
        self.pub.publish(
            plan_markers(
                self.frame, stamp_ns, self.period_ns, ee, None if P is None else cov, target
            )
        )
