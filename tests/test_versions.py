"""The lecture's versions run offline (``mbrl_ros.experiments.versions``): each spends exactly its
data budget, plans as its version prescribes, and v1.5 learns to reach on the 2-link arm."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mbrl_ros.dynamics.catalog import FitterSettings
from mbrl_ros.experiments.versions import Setup, run_version, table
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
