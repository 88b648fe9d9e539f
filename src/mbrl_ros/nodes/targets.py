"""End-effector targets that hold from a stamp on (``/mbrl/target``, geometry_msgs/PointStamped):
the episode manager sends each episode's target ahead of time with ``header.stamp`` = the stamp
of the episode's first state, so a node acting on a state uses the newest target whose stamp is
not after the state's."""
from __future__ import annotations

import numpy as np

from mbrl_ros.msgconv import MessageError, stamp_to_ns


class TargetSchedule:
    """The newest ``keep`` targets (3,) m with the stamps (ns) from which they hold."""

    def __init__(self, keep: int = 16):
        self.keep = keep
        self._targets: list[tuple[int, np.ndarray]] = []

    def add_msg(self, msg) -> np.ndarray:
        """Add a PointStamped; MessageError if its point is not finite."""
        target = np.array([msg.point.x, msg.point.y, msg.point.z], dtype=np.float64)
        if not np.all(np.isfinite(target)):
            raise MessageError(f"target {target.tolist()} has non-finite coordinates")
        self._targets.append((stamp_to_ns(msg.header.stamp), target))
        self._targets.sort(key=lambda st: st[0])
        del self._targets[:-self.keep]
        return target

    def at(self, stamp_ns: int) -> np.ndarray | None:
        """The target that holds at ``stamp_ns``, or None."""
        valid = [t for s, t in self._targets if s <= stamp_ns]
        return valid[-1] if valid else None
