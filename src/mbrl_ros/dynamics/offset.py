"""Offset-free MPC with a learned model: the model's recent one-step bias, estimated from data.

A young learned model is biased where the arm spends the end of every reach, at rest near the
target, and a planner that trusts it settles a few centimetres off: each replan starts from the
measured state, but believes torques that do not hold the arm there. Offset-free MPC adds a
disturbance estimate to the model's predictions. Here it is the mean one-step residual

    r̄ = mean_i (s'_i − f̄(s_i, a_i))   (dx,), state units per control period,

of the model f̄ (mean prediction) over the n transitions of the newest episode within the last
``window`` of robot time (the transitions the fitter builds from the robot's streams, with the
actions as the robot received them), shrunk per coordinate towards 0 by its standard error
se_j = std_j / √n (positive-part James–Stein): d_j = r̄_j · max(0, 1 − se_j² / r̄_j²). At rest
the residuals are steady and d ≈ r̄; while the arm moves fast they vary along the window (the
model's error depends on the state) and d ≈ 0, since a residual of states the arm has left is no
bias of the state it is in (unshrunk, the 7-DOF arm's plans chased such residuals: 71 % of the
targets within 5 cm instead of 100 %). The planner plans with ``DynamicsModel.with_offset(d)``,
s' = f̄(s, a) + d, which leaves the model's Jacobians as they are.

``ModelOffset`` travels as std_msgs/String JSON on ``mbrl/model_offset`` (like the episode events):
``{"model_version": int, "stamp_ns": int, "transitions": int, "offset": [dx floats]}``;
``stamp_ns`` is the stamp of the newest residual's next state. It belongs to one model version:
the planner uses it only with that model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from mbrl_ros.common.msgconv import MessageError
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.dynamics.base import DynamicsModel


@dataclass(frozen=True)
class ModelOffset:
    """Model ``model_version``'s mean one-step residual ``offset`` (dx,) over ``transitions``
    transitions whose newest next state is stamped ``stamp_ns``."""

    model_version: int
    stamp_ns: int
    transitions: int
    offset: np.ndarray

    def to_json(self) -> str:
        return json.dumps(
            {
                "model_version": int(self.model_version),
                "stamp_ns": int(self.stamp_ns),
                "transitions": int(self.transitions),
                "offset": [float(v) for v in self.offset],
            }
        )

    @classmethod
    def from_msg(cls, msg) -> ModelOffset:
        """std_msgs/String (duck-typed: ``.data``) → ModelOffset; MessageError if malformed."""
        text = str(msg.data)
        try:
            obj = json.loads(text)
        except ValueError:
            raise MessageError(f"model offset {text[:80]!r} is not JSON") from None
        if not isinstance(obj, dict):
            raise MessageError(f"model offset {text[:80]!r} is not a JSON object")
        values: list[int] = []
        for key in ("model_version", "stamp_ns", "transitions"):
            v = obj.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise MessageError(f"model offset field {key!r} = {v!r} is not an integer ≥ 0")
            values.append(v)
        offset = obj.get("offset")
        try:
            d = np.asarray(offset, dtype=np.float64)
        except (TypeError, ValueError):
            d = np.array([np.nan])
        if d.ndim != 1 or not d.size or not np.all(np.isfinite(d)):
            raise MessageError(f"model offset 'offset' = {str(offset)[:80]} is not finite numbers")
        version, stamp_ns, transitions = values
        return cls(version, stamp_ns, transitions, d)


class OffsetEstimator:
    """The recent transitions of the newest episode (``add``) and a model's mean residual on them
    (``estimate``): the transitions within ``window_ns`` of the newest one's stamp."""

    def __init__(self, window_ns: int, min_transitions: int = 3):
        if window_ns <= 0 or min_transitions < 1:
            raise ValueError(
                f"offset window {window_ns} ns and min_transitions {min_transitions} must be "
                "positive"
            )
        self.window_ns, self.min_transitions = int(window_ns), int(min_transitions)
        self.recent: Dataset | None = None

    def add(self, data: Dataset) -> None:
        """Take new transitions (in stamp order); older episodes and rows outside the window of
        the newest stamp are dropped."""
        if not len(data):
            return
        joined = (
            data if self.recent is None else Dataset.concat([self.recent, data], renumber=False)
        )
        keep = (joined.episodes == joined.episodes[-1]) & (
            joined.stamps > joined.stamps[-1] - self.window_ns
        )
        self.recent = joined.select(keep)

    def estimate(self, model: DynamicsModel, model_version: int) -> ModelOffset | None:
        """``model``'s shrunk mean residual over the kept transitions (module docstring); None
        with fewer than ``min_transitions``."""
        data = self.recent
        if data is None or len(data) < self.min_transitions:
            return None
        with torch.no_grad():
            s = torch.as_tensor(data.states, dtype=torch.float64, device=model.device)
            a = torch.as_tensor(data.actions, dtype=torch.float64, device=model.device)
            predicted = model.propagate(s, a, "mean").double().cpu().numpy()
        residuals = data.next_states - predicted
        mean = residuals.mean(0)
        se2 = residuals.var(0, ddof=1) / len(data)  # squared standard error of the mean
        shrink = np.clip(1.0 - se2 / np.maximum(mean**2, 1e-300), 0.0, 1.0)
        dt_ns = int(round(data.dt * 1e9))
        return ModelOffset(model_version, int(data.stamps[-1]) + dt_ns, len(data), mean * shrink)
