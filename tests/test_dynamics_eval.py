"""Evaluation against closed forms (an exact linear-Gaussian model of linear data), windows over
episodes and gaps, the train/validation split, the PNG, and the ``fit`` / ``eval-model`` commands
(dataset files and bags)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from data_testing import write_bag
from dynamics_systems import LINEAR_A, LINEAR_B, linear_dataset
from scipy.stats import norm

from mbrl_ros.cli import dynamics as cli
from mbrl_ros.common.artifacts import read_file
from mbrl_ros.data.dataset import Dataset, joint_state_names
from mbrl_ros.data.topics import COMMANDS, STATES
from mbrl_ros.dynamics.base import DynamicsModel, ModelError, ModelSignature
from mbrl_ros.dynamics.catalog import available_kinds, load_model, model_class
from mbrl_ros.dynamics.evaluation import evaluate, holdout_split, plot_rollouts, window_starts
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.nodes.messages import command_msg, joint_state_msg
from mbrl_ros.robot.description import load_robot

torch.set_num_threads(1)

A, B = LINEAR_A, LINEAR_B
SIGMA = 0.05


class ExactLinear(DynamicsModel):
    """The true model of ``linear_data``: s' ~ N(A s + B a, SIGMA² I)."""

    kind = "exact-linear"

    def fit(self, train, val=None, progress=None):
        raise AssertionError("not used")

    def predict(self, s, a):
        mean = s @ torch.as_tensor(A.T) + a @ torch.as_tensor(B.T)
        return mean, torch.full_like(mean, SIGMA**2)

    def to_bytes(self):
        raise AssertionError("not used")

    @classmethod
    def from_bytes(cls, data, device=None):
        raise AssertionError("not used")


@pytest.fixture(scope="module")
def data():
    """40 episodes of 200 transitions of s' = A s + B a + w, w ~ N(0, SIGMA² I)."""
    return linear_dataset(episodes=40, steps=200, noise=SIGMA)


def test_k_step_error_and_calibration_match_the_closed_form(data):
    """For the exact model, the k-step mean-rollout error is Σ_j A^j w, so its RMSE is
    sqrt(tr(Σ_{j<k} A^j σ²I A^jᵀ) / dx); the 1-step z-scores are standard normal, so the ±1σ/±2σ
    coverage is 0.683/0.954 and mean z² is 1 (8000 transitions, 16000 values)."""
    model = ExactLinear(ModelSignature.of(data), data.stats(), "cpu")
    ev = evaluate(model, data, (1, 5, 20), max_windows=20000)
    for h in ev.horizons:
        cov = (
            sum(
                np.linalg.matrix_power(A, j) @ np.linalg.matrix_power(A, j).T
                for j in range(h.horizon)
            )
            * SIGMA**2
        )
        expected = np.sqrt(np.trace(cov) / 2)
        assert h.windows == 40 * (200 - h.horizon + 1)
        assert h.rmse == pytest.approx(expected, rel=0.03)
        assert set(h.group_rmse) == {"position", "velocity"}
        ends = window_starts(data, h.horizon) + h.horizon - 1
        starts = window_starts(data, h.horizon)
        const = np.sqrt(np.mean((data.next_states[ends] - data.states[starts]) ** 2))
        assert h.constant_ratio == pytest.approx(h.rmse / const, rel=1e-9)
    c = ev.calibration
    assert c.within_1sigma == pytest.approx(norm.cdf(1) - norm.cdf(-1), abs=0.01)
    assert c.within_2sigma == pytest.approx(norm.cdf(2) - norm.cdf(-2), abs=0.01)
    assert c.mean_standardised_sq_error == pytest.approx(1.0, abs=0.03)
    table = ev.table()
    assert table.startswith("exact-linear model on 8000 transitions in 40 episode(s)")
    assert [line.split()[0] for line in table.splitlines()[3:6]] == ["1", "5", "20"]
    assert "position (rad)" in table and "velocity (rad/s)" in table and "±2σ" in table


def test_windows_respect_episodes_and_gaps():
    names = ("j",)
    stamps = np.array([0, 1, 2, 3, 5, 6, 7, 0, 1]) * 10_000_000  # gap after row 3
    episodes = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1])
    n = len(stamps)
    d = Dataset(
        np.arange(2 * n, dtype=float).reshape(n, 2),
        np.ones((n, 1)),
        np.zeros((n, 2)),
        episodes,
        stamps,
        names,
        0.01,
        joint_state_names(names),
    )
    assert window_starts(d, 1).tolist() == list(range(9))
    assert window_starts(d, 2).tolist() == [0, 1, 2, 4, 5, 7]
    assert window_starts(d, 3).tolist() == [0, 1, 4]
    assert window_starts(d, 4).tolist() == [0]
    assert window_starts(d, 5).tolist() == []
    model = ExactLinear(ModelSignature.of(d), d.stats(), "cpu")
    with pytest.raises(ModelError, match="no 5-step window"):
        evaluate(model, d, (5,))


def test_holdout_split_by_episode_or_tail(data):
    train, val = holdout_split(data, 0.25, 0)
    assert val.n_episodes == 10 and not set(val.episode_ids) & set(train.episode_ids)
    one = data.select(data.episodes == 3)
    train, val = holdout_split(one, 0.25)
    assert len(val) == 50 and np.all(val.stamps > train.stamps.max())


def test_rollout_png(data, tmp_path):
    model = ExactLinear(ModelSignature.of(data), data.stats(), "cpu")
    k = plot_rollouts(model, data, tmp_path / "r.png", horizon=30)
    assert k == 30 and (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def parse(command: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser, command)
    args = parser.parse_args(argv)
    args.command = command
    return args


NET = ["--hidden", "32", "--layers", "2", "--epochs", "40"]


def test_fit_and_eval_model_commands(tmp_path, capsys):
    data = random_torque_dataset(load_robot("arm2"), 6, 80, seed=2)
    data.save(tmp_path / "d.safetensors")
    out = tmp_path / "m.safetensors"
    assert (
        cli.run(
            parse(
                "fit",
                ["--dataset", str(tmp_path / "d.safetensors"), "--model", "mlp", "-o", str(out)]
                + NET,
            )
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "mlp model on 80 transitions in 1 episode(s)" in text and "calibration" in text
    model = load_model(read_file(out))
    assert model.kind == "mlp" and model.info["transitions"] == 400
    assert set(model.info["val_rmse"]) == {"1", "10"}
    with pytest.raises(ValueError, match="exists; use --force"):
        cli.run(
            parse(
                "fit",
                ["--dataset", str(tmp_path / "d.safetensors"), "--model", "mlp", "-o", str(out)],
            )
        )
    png = tmp_path / "r.png"
    assert (
        cli.run(
            parse(
                "eval-model",
                [
                    str(out),
                    "--dataset",
                    str(tmp_path / "d.safetensors"),
                    "--png",
                    str(png),
                    "--horizons",
                    "1",
                    "5",
                ],
            )
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "mlp model on 480 transitions in 6 episode(s)" in text and png.exists()


def test_fit_from_a_bag(tmp_path, capsys):
    """Bags go through the data package's extraction: lockstep states and tagged commands."""
    data = random_torque_dataset(load_robot("arm2"), 1, 300, seed=3)
    names, n = data.joint_names, len(data.joint_names)
    messages = []
    for k in range(len(data) + 1):
        x = data.states[k] if k < len(data) else data.next_states[-1]
        stamp = k * 10_000_000
        messages.append((STATES, joint_state_msg(stamp, names, x[:n], x[n:], np.zeros(n))))
        if k < len(data):
            messages.append((COMMANDS, command_msg(data.actions[k], stamp)))
    write_bag(tmp_path / "bag", messages)
    out = tmp_path / "m.safetensors"
    assert (
        cli.run(
            parse(
                "fit",
                [
                    "--bag",
                    str(tmp_path / "bag"),
                    "--model",
                    "ensemble",
                    "--members",
                    "2",
                    "-o",
                    str(out),
                ]
                + NET,
            )
        )
        == 0
    )
    assert "ensemble model on 60 transitions in 1 episode(s)" in capsys.readouterr().out
    assert load_model(read_file(out)).info["transitions"] == 240


def test_unavailable_kinds_name_what_exists():
    assert {"ensemble", "mlp"} <= set(available_kinds())
    with pytest.raises(
        ModelError, match="model kind 'nope' is not available.*available: ensemble, mlp"
    ):
        model_class("nope")
