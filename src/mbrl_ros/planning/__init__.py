"""Planners through a learned dynamics model; each returns a linear-Gaussian controller.

``RandomShooting``, ``CEM``, ``ICEM`` (shooting.py), ``MPPI`` (mppi.py): open loop;
``ILQR`` (ilqr.py): feedback gains from the shared LQR backward pass (lqr.py).
"""

from mbrl_ros.planning.base import PlanError, Planner, PlanResult, predict_ahead
from mbrl_ros.planning.ilqr import ILQR
from mbrl_ros.planning.lqr import LQRSolution, NotPositiveDefinite, backward_pass, lqr_backward
from mbrl_ros.planning.mppi import MPPI
from mbrl_ros.planning.shooting import CEM, ICEM, RandomShooting, rollout_costs

PLANNERS = {cls.name: cls for cls in (RandomShooting, CEM, ICEM, MPPI, ILQR)}

__all__ = [
    "CEM",
    "ICEM",
    "ILQR",
    "LQRSolution",
    "MPPI",
    "NotPositiveDefinite",
    "PLANNERS",
    "PlanError",
    "PlanResult",
    "Planner",
    "RandomShooting",
    "backward_pass",
    "lqr_backward",
    "predict_ahead",
    "rollout_costs",
]
