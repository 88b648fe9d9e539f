"""The lecture's versions run offline (``mbrl_ros.experiments.versions``): each spends exactly its
data budget, plans as its version prescribes, and v1.5 learns to reach on the 2-link arm; the
real-time emulation (executor rate, plan latency) runs the executor and the plans on the
schedule the graph would."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.dynamics.catalog import FitterSettings
from mbrl_ros.experiments.versions import (
    Setup,
    VersionResult,
    _Arm,
    _controller,
    check,
    run_version,
    table,
)
from mbrl_ros.planning.mpc import PlannerSettings
from mbrl_ros.robot.description import load_robot
from mbrl_ros.simulator.simulation import SimConfig
from mbrl_ros.tasks.episodes import EpisodeSettings

torch.set_num_threads(1)


def setup(steps=20):
    planner = PlannerSettings(
        planner="ilqr", horizon=10, iterations=3, control_period=0.05, w_l2=1.0, random_scale=0.5
    )
    return Setup(
        robot=load_robot("arm2"),
        sim=SimConfig(control_period=0.05, initial_position_noise=0.3),
        planner=planner,
        fitter=FitterSettings(model="ensemble", members=2, hidden=32, layers=2, max_epochs=100),
        episodes=EpisodeSettings(
            target_box_min=[-0.27, -0.27, 0.0],
            target_box_max=[0.27, 0.27, 0.15],
            episode_steps=steps,
        ),
    )


@pytest.mark.parametrize(
    "version, plans_per_episode, fits",
    [
        ("v0.5", 1, 1),
        ("v1.0", 1, 3),
        ("v1.5", 20, 3),
        ("v1.5+open", 4, 3),
        ("v1.5+ilqr", 4, 3),
        ("v1.5+tracking", 4, 3),
    ],
)
def test_budget_and_planning_schedule(version, plans_per_episode, fits):
    """6 s of data in 1 s episodes: v0.5 all π0; the others 4 s π0 + 2 aggregated episodes."""
    r = run_version(version, setup(), budget_seconds=6.0, seed_seconds=4.0, eval_episodes=1)
    train_episodes = 0 if version == "v0.5" else 2
    assert r.data_seconds == pytest.approx(6.0) and r.fits == fits
    assert r.plans == plans_per_episode * (train_episodes + 1) and len(r.episodes) == 1
    assert version in table([r], 0.02)


def test_mpc_learns_to_reach_the_2_link_arm():
    r = run_version("v1.5", setup(40), budget_seconds=14.0, seed_seconds=6.0, eval_episodes=4)
    assert r.within(0.05) >= 0.75, [e.final_distance for e in r.episodes]


def test_unknown_version_and_short_seed_data_are_named():
    with pytest.raises(ValueError, match="version must be one of"):
        run_version("v3", setup(), 6.0, 4.0, 1)
    with pytest.raises(ValueError, match="shorter than one episode"):
        run_version("v1.5", setup(), 6.0, 0.5, 1)


@pytest.mark.parametrize("rate, latency", [(1, 0), (5, 1)])
def test_open_loop_replanning_every_period_is_v1_5(rate, latency):
    """With ``feedback_every`` 1, v1.5+open runs v1.5's schedule and plans: the same episodes, at
    any executor rate (a plan without gains holds its action over the period)."""
    s = replace(setup(), feedback_every=1, executor_rate=rate, plan_latency=latency)
    a, b = (run_version(v, s, 5.0, 4.0, 2) for v in ("v1.5", "v1.5+open"))
    assert a.plans == b.plans == 20 * 3
    assert [e.final_distance for e in a.episodes] == [e.final_distance for e in b.episodes]


def test_the_executor_acts_at_its_rate_and_the_data_keep_the_control_period():
    """Executor rate 5 on a 50 ms period: act is asked at every 10 ms from the state then; the
    transitions stay on the 50 ms grid with the mean torque of each period, and a torque held
    over the period moves the arm exactly as one command per period does."""
    steps = 6
    calls = []

    def varying(x, t, j):
        calls.append((t, j, x.copy()))
        return np.array([0.2 * j, -0.1 * j])

    fast = _Arm(replace(setup(steps), executor_rate=5))
    data, _ = fast.run(varying, None)
    assert [(t, j) for t, j, _ in calls] == [(t, j) for t in range(steps) for j in range(5)]
    assert not np.allclose(calls[1][2], calls[2][2])  # a fresh state at each executor step
    assert data.dt == pytest.approx(0.05) and len(data.actions) == steps
    np.testing.assert_allclose(data.actions, np.tile([0.4, -0.2], (steps, 1)), atol=1e-12)
    torque = np.array([0.5, -0.3])
    arms = (_Arm(replace(setup(steps), executor_rate=5)), _Arm(setup(steps)))  # same reset
    held = [arm.run(lambda x, t, j: torque, None)[0] for arm in arms]
    np.testing.assert_allclose(held[0].next_states, held[1].next_states, atol=1e-9)
    np.testing.assert_allclose(held[0].actions, held[1].actions, atol=1e-12)


class _RecordingMPC:
    """Stands in for ``MPC`` in the episode schedule: each plan's torque is its number, constant
    over its steps, so the command says which plan acts."""

    dt_ns = 50_000_000

    def __init__(self):
        self.requests = []

    def reset(self):
        self.requests.clear()

    def act(self, q, qd, stamp_ns, target, lead_ns=0):
        self.requests.append((stamp_ns, lead_ns))
        start = stamp_ns + lead_ns
        u = np.full((10, 2), float(len(self.requests)))
        return SimpleNamespace(
            controller=LinearGaussianController.open_loop(u, 4, dt_ns=self.dt_ns, start_ns=start)
        )


@pytest.mark.parametrize("latency", [0, 1, 3])
def test_a_plan_acts_plan_latency_periods_after_its_state(latency):
    """Replanning every 3 periods with latency D: plan k+1 (asked at 3k from the model's
    prediction D periods ahead) acts from period 3k + D, plan k meanwhile; the episode's first
    plan is made at rest and acts from the start."""
    s = replace(setup(), feedback_every=3, plan_latency=latency, executor_rate=5)
    check(s, "v1.5+open")
    mpc = _RecordingMPC()
    act = _controller("v1.5+open", s, VersionResult("v1.5+open", 0.0))(mpc, np.zeros(3))
    x = np.zeros(4)
    acting = [act(x, t, j)[0] for t in range(10) for j in range(5)]
    expected = [1 + sum(t >= 3 * k + latency for k in range(1, 4)) for t in range(10)]
    assert acting == [float(p) for p in expected for _ in range(5)]
    assert mpc.requests == [(0, 0)] + [(3 * k * mpc.dt_ns, latency * mpc.dt_ns) for k in (1, 2, 3)]


def test_settings_that_cannot_be_emulated_are_named():
    with pytest.raises(ValueError, match="executor_rate 3 does not divide"):
        check(replace(setup(), executor_rate=3), "v1.5")
    with pytest.raises(ValueError, match="plan_latency 2 control periods: v1.5 replans every 1"):
        check(replace(setup(), plan_latency=2), "v1.5")
    with pytest.raises(ValueError, match="plan_latency 6 .* v1.5\\+ilqr replans every 5"):
        check(replace(setup(), plan_latency=6), "v1.5+ilqr")
    with pytest.raises(ValueError, match="feedback_every must be a positive integer"):
        check(replace(setup(), feedback_every=0), "v1.5+tracking")
    check(replace(setup(), plan_latency=9), "v1.0")  # plans once, at rest: no latency applies


@pytest.mark.slow
def test_the_comparison_script_runs_with_the_graph_settings():
    """``benchmarks/compare_versions.py`` builds its set-up from the mpc graph's config files and
    prints the table (a tiny budget: this checks the wiring, not the figures)."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "compare_versions.py"
    args = ["--robot", "arm2", "--budget", "12", "--eval", "1", "--versions", "v1.5"]
    result = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| v1.5 | 1 | 12 |" in result.stdout, result.stdout[-2000:]
