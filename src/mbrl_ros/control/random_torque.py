"""The lecture's base policy π0: random torques, to collect the first data set D.

On the arm π0 runs like every plan: as an open-loop linear-Gaussian controller (``controller``)
that the executor runs behind the safety layer, never as torques sent straight to the motors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mbrl_ros.control.controller import LinearGaussianController


class RandomTorquePolicy:
    """Uniform random torques in ±``scale``·effort_limit (N·m), each drawn value held for
    ``hold_steps`` control periods (piecewise constant, so the arm moves rather than jitters).
    ``scale``: one fraction for all joints or one per joint. Seeded: the same seed gives the
    same torque sequence."""

    def __init__(self, effort_limit: np.ndarray, scale=0.3, hold_steps: int = 5, seed: int = 0):
        scale = np.asarray(scale, dtype=float)
        effort = np.asarray(effort_limit, dtype=float)
        if (
            scale.ndim > 1
            or (scale.ndim == 1 and scale.shape != effort.shape)
            or not np.all((scale >= 0.0) & (scale <= 1.0))
        ):
            raise ValueError(
                f"scale {scale.tolist()} must be in [0, 1], one value or one per "
                f"joint ({effort.size})"
            )
        if hold_steps < 1:
            raise ValueError(f"hold_steps {hold_steps} must be ≥ 1")
        self.bound = scale * effort
        self.hold_steps = hold_steps
        self.rng = np.random.default_rng(seed)
        self._steps = 0
        self._torque = np.zeros_like(self.bound)

    def act(self) -> np.ndarray:
        """The torque (n,) N·m for the next control period."""
        if self._steps % self.hold_steps == 0:
            self._torque = self.rng.uniform(-self.bound, self.bound)
        self._steps += 1
        return self._torque.copy()

    def controller(
        self, steps: int, dt_ns: int, start_ns: int, joint_names: Sequence[str]
    ) -> LinearGaussianController:
        """The next ``steps`` torques (``act``) as an open-loop controller of state [q, q̇]
        starting at ``start_ns`` with step ``dt_ns``."""
        u = np.stack([self.act() for _ in range(steps)])
        return LinearGaussianController.open_loop(
            u, 2 * len(joint_names), dt_ns=dt_ns, start_ns=start_ns, joint_names=joint_names
        )
