"""Checked task values (no torch: the simulator uses them): TaskError names the bad value."""

from __future__ import annotations

import numpy as np


class TaskError(ValueError):
    """A task was configured with bad values; the message names the value."""


def nonnegative(name: str, value) -> float:
    value = float(value)
    if not (np.isfinite(value) and value >= 0.0):
        raise TaskError(f"{name} must be a finite number ≥ 0, got {value}")
    return value


def point3(name: str, value) -> np.ndarray:
    p = np.asarray(value, dtype=np.float64)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise TaskError(
            f"{name} must be 3 finite coordinates (m), got {np.asarray(value).tolist()}"
        )
    return p
