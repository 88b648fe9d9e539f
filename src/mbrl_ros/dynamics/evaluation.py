"""Offline evaluation of any ``DynamicsModel`` on recorded (held-out) episodes.

* k-step error: from every real state s_t whose next k transitions are consecutive (same episode,
  stamps one control period apart), roll the model out open-loop with the recorded actions
  (mean propagation) and compare its s_{t+k} with the recorded one. Reported as RMSE over all
  state columns and per state group (``position`` in rad, ``velocity`` in rad/s, ``ee`` in m),
  and as a ratio to the RMSE of the constant prediction s_{t+k} = s_t (below 1 = better than
  predicting no motion).
* calibration of the predicted variance (1 step): the fraction of true values inside the
  predicted ±1σ and ±2σ (0.683 and 0.954 for a calibrated Gaussian) and the mean standardised
  squared error (err² / var, 1 when calibrated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mbrl_ros.data.dataset import Dataset
from mbrl_ros.dynamics.base import DynamicsModel, ModelError, ModelSignature

GAP_TOLERANCE = 0.1  # a stamp step within dt·(1 ± this) links two transitions


@dataclass(frozen=True)
class HorizonError:
    """Errors of the k-step predictions from ``windows`` start states."""

    horizon: int
    windows: int
    rmse: float
    group_rmse: dict[str, float]
    constant_ratio: float


@dataclass(frozen=True)
class Calibration:
    """1-step coverage of the predicted ±1σ / ±2σ intervals and mean of err²/var."""

    within_1sigma: float
    within_2sigma: float
    mean_standardised_sq_error: float


@dataclass(frozen=True)
class Evaluation:
    kind: str
    transitions: int
    episodes: int
    horizons: list[HorizonError] = field(default_factory=list)
    calibration: Calibration | None = None

    def rmse(self, horizon: int) -> float:
        return next(h.rmse for h in self.horizons if h.horizon == horizon)

    def table(self) -> str:
        """A printable table: one row per horizon, calibration below."""
        groups = sorted({g for h in self.horizons for g in h.group_rmse})
        units = {"position": "rad", "velocity": "rad/s", "ee": "m"}
        head = (
            ["horizon", "windows", "RMSE"]
            + [f"{g} ({units.get(g, '')})" for g in groups]
            + ["vs constant"]
        )
        rows = [
            [f"{h.horizon}", f"{h.windows}", f"{h.rmse:.4g}"]
            + [f"{h.group_rmse.get(g, float('nan')):.4g}" for g in groups]
            + [f"{h.constant_ratio:.3f}"]
            for h in self.horizons
        ]
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        fmt = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
        lines = [
            f"{self.kind} model on {self.transitions} transitions in {self.episodes} "
            "episode(s); open-loop k-step prediction error (mean propagation):",
            fmt(head),
            fmt(["-" * w for w in widths]),
        ] + [fmt(r) for r in rows]
        if self.calibration is not None:
            c = self.calibration
            lines.append(
                f"calibration (1 step): {c.within_1sigma:.3f} within ±1σ (0.683 ideal), "
                f"{c.within_2sigma:.3f} within ±2σ (0.954), mean err²/var "
                f"{c.mean_standardised_sq_error:.3g} (1)"
            )
        return "\n".join(lines)


def chained(dataset: Dataset, tolerance: float = GAP_TOLERANCE) -> np.ndarray:
    """(N,) bool: transition i is followed by transition i + 1 of the same episode, one control
    period later (so s'_i is s_{i+1})."""
    link = np.zeros(len(dataset), bool)
    if len(dataset) > 1:
        step = np.diff(dataset.stamps) / 1e9
        link[:-1] = (dataset.episodes[1:] == dataset.episodes[:-1]) & (
            np.abs(step - dataset.dt) <= tolerance * dataset.dt
        )
    return link


def window_starts(dataset: Dataset, horizon: int) -> np.ndarray:
    """Indices i whose transitions i .. i + horizon − 1 are chained."""
    if horizon < 1:
        raise ModelError(f"horizon {horizon} must be ≥ 1")
    n = len(dataset)
    if n < horizon:
        return np.zeros(0, np.int64)
    links = np.concatenate([[0], np.cumsum(chained(dataset)[:-1])])  # links before row i
    starts = np.arange(n - horizon + 1)
    return starts[links[starts + horizon - 1] - links[starts] == horizon - 1]


def _windows(dataset: Dataset, horizon: int, max_windows: int, seed: int) -> np.ndarray:
    starts = window_starts(dataset, horizon)
    if len(starts) > max_windows:
        starts = np.sort(np.random.default_rng(seed).choice(starts, max_windows, replace=False))
    return starts


@torch.no_grad()
def rollout_windows(
    model: DynamicsModel, dataset: Dataset, starts: np.ndarray, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (W, horizon + 1, dx) mean rollouts from states[starts] with the recorded
    actions, and the recorded states (W, horizon + 1, dx)."""
    steps = starts[:, None] + np.arange(horizon)
    true = np.concatenate([dataset.states[starts][:, None], dataset.next_states[steps]], axis=1)
    s0 = torch.as_tensor(dataset.states[starts], device=model.device)
    actions = torch.as_tensor(dataset.actions[steps], device=model.device)
    pred = model.rollout(s0, actions, "mean").cpu().numpy()
    return pred, true


def state_groups(state_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Column indices per group: the part of each state name before '/'."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(state_names):
        groups.setdefault(name.split("/")[0], []).append(i)
    return {g: np.array(idx) for g, idx in groups.items()}


def evaluate(
    model: DynamicsModel,
    dataset: Dataset,
    horizons: Sequence[int] = (1, 10),
    max_windows: int = 2000,
    seed: int = 0,
) -> Evaluation:
    """k-step errors for each horizon (at most ``max_windows`` start states, drawn with
    ``seed``) and 1-step calibration; ModelError if the model's joints / layout / dt differ
    from the data's or no window of a horizon exists."""
    model.signature.check(ModelSignature.of(dataset))
    if len(dataset) == 0:
        raise ModelError("cannot evaluate on an empty dataset")
    groups = state_groups(dataset.state_names)
    results = []
    for k in horizons:
        starts = _windows(dataset, int(k), max_windows, seed)
        if len(starts) == 0:
            raise ModelError(
                f"no {k}-step window of consecutive transitions in the data "
                f"(longest episodes are too short or have gaps)"
            )
        pred, true = rollout_windows(model, dataset, starts, int(k))
        err = pred[:, -1] - true[:, -1]
        base = true[:, 0] - true[:, -1]
        rmse = float(np.sqrt(np.mean(err**2)))
        results.append(
            HorizonError(
                int(k),
                len(starts),
                rmse,
                {g: float(np.sqrt(np.mean(err[:, idx] ** 2))) for g, idx in groups.items()},
                rmse / max(float(np.sqrt(np.mean(base**2))), 1e-300),
            )
        )
    return Evaluation(
        model.kind, len(dataset), dataset.n_episodes, results, calibration(model, dataset)
    )


@torch.no_grad()
def calibration(model: DynamicsModel, dataset: Dataset, chunk: int = 8192) -> Calibration:
    """Coverage of the 1-step predictive intervals on every transition of ``dataset``."""
    inside1 = inside2 = z2 = 0.0
    for i in range(0, len(dataset), chunk):
        s = torch.as_tensor(dataset.states[i : i + chunk], device=model.device)
        a = torch.as_tensor(dataset.actions[i : i + chunk], device=model.device)
        mean, var = model.predict(s, a)
        err = mean.double().cpu().numpy() - dataset.next_states[i : i + chunk]
        z = np.abs(err) / np.sqrt(np.maximum(var.double().cpu().numpy(), 1e-300))
        inside1 += float(np.sum(z <= 1.0))
        inside2 += float(np.sum(z <= 2.0))
        z2 += float(np.sum(z**2))
    total = len(dataset) * model.dx
    return Calibration(inside1 / total, inside2 / total, z2 / total)


def holdout_split(
    dataset: Dataset, val_fraction: float = 0.2, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """(train, validation): whole episodes (``Dataset.split``) when there are two or more;
    otherwise the last ``val_fraction`` of the single episode's transitions."""
    if dataset.n_episodes >= 2 or val_fraction == 0.0:
        return dataset.split(val_fraction, seed)
    cut = int(round(len(dataset) * (1.0 - val_fraction)))
    order = np.arange(len(dataset))
    return dataset.select(order[:cut]), dataset.select(order[cut:])


def plot_rollouts(
    model: DynamicsModel, dataset: Dataset, path, horizon: int = 50, windows: int = 3, seed: int = 0
) -> int:
    """PNG at ``path``: predicted (mean) against recorded k-step rollouts of every state column
    from ``windows`` start states (the longest available horizon ≤ ``horizon``); returns the
    horizon plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.signature.check(ModelSignature.of(dataset))
    k = horizon
    while k > 1 and len(window_starts(dataset, k)) == 0:
        k //= 2
    starts = _windows(dataset, k, windows, seed)
    if len(starts) == 0:
        raise ModelError("no transitions to plot")
    pred, true = rollout_windows(model, dataset, starts, k)
    dx = len(dataset.state_names)
    cols = min(dx, 4 if dx > 6 else 2)
    rows = -(-dx // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.2 * rows), squeeze=False, sharex=True)
    t = np.arange(k + 1) * dataset.dt
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, name in enumerate(dataset.state_names):
        ax = axes[j // cols][j % cols]
        for w in range(len(starts)):
            c = colours[w % len(colours)]
            ax.plot(t, true[w, :, j], color=c, lw=1.5, label="recorded" if w == 0 else None)
            ax.plot(
                t, pred[w, :, j], color=c, lw=1.0, ls="--", label="predicted" if w == 0 else None
            )
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    for j in range(dx, rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.supxlabel("time from start state (s)", fontsize=8)
    fig.suptitle(
        f"{model.kind} model: {k}-step open-loop rollouts (mean), recorded actions", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return k
