"""Task costs for the planners: torch functions cost(states (..., T+1, dx), actions (..., T, du))
→ (...), sums of per-step terms, built on the batched forward kinematics of
``mbrl_ros.robot.description``.

``ReachCost`` (reach.py): end-effector reach as in guided policy search; ``TrackingCost``
(tracking.py): following an end-effector path as in Nagabandi et al.; the shared action and
joint-limit penalties are in terms.py.
"""

from mbrl_ros.tasks.reach import ReachCost
from mbrl_ros.tasks.terms import TaskError
from mbrl_ros.tasks.tracking import TrackingCost

__all__ = ["ReachCost", "TaskError", "TrackingCost"]
