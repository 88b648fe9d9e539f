"""The whole 'mpc' graph (sim + executor + fitter + planner + episode manager) learns to reach on
the 2-link arm from zero data, run as `mbrl-ros launch mpc` in lockstep; plus its argument checks.

What the learning test asserts and why:
* the episodes run through a learned ensemble model (model_version ≥ 0) on held-out targets end
  within 2 cm of the target in at least 7 of 8 and all within 5 cm (seed 0: 8 of 8, mean 0.1 cm);
* their median final distance is below a third of the π0 episodes' (no model yet) mean of the
  same run: the learning curve improves.
The run is bit-identical under any load (the determinism test runs its first 8 training
episodes again beside three CPU hogs and compares results.json): π0 runs for whole episodes; the
fitter decides each transition only once its command and the next state are in, and fits at every
episode start once the episode before is complete, bounded by epochs, not seconds; the planner
(one torch thread) holds the graph until that model (and its target) has arrived; each controller
ends at the next replan (``cover_until_replan``), so every state is answered by the plan made for
it; and no wall-clock timeout of the graph (sim, planner) is near any fit or plan time.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from ros_harness import launch_graph

from mbrl_ros.graphs.commands import DEMO_ARGS, DEMO_GRAPH
from mbrl_ros.graphs.description import graph


def launch_mpc(tmp_path, timeout, **args):
    return launch_graph(
        ["mpc", *(f"{k}:={v}" for k, v in args.items()), f"output_dir:={tmp_path}"], timeout
    )


def test_graph_gives_every_node_the_same_control_period_and_episode_steps():
    specs = {s.name: s for s in graph("mpc", robot="arm2", episode_length="2.0", record="true")}
    assert set(specs) == {
        "arm_sim",
        "lg_executor",
        "dynamics_fitter",
        "mpc_planner",
        "episode_manager",
        "recorder",
    }
    assert {
        s.parameters["control_period"] for s in specs.values() if "control_period" in s.parameters
    } == {0.05}
    assert {
        specs[n].parameters["episode_steps"]
        for n in ("arm_sim", "episode_manager", "dynamics_fitter", "mpc_planner")
    } == {40}
    assert specs["arm_sim"].parameters["min_state_subscribers"] == 5
    assert specs["episode_manager"].required and specs["arm_sim"].config == ("mpc_arm2.yaml",)


@pytest.mark.parametrize(
    "args, words",
    [
        (dict(episode_length="0.01"), "shorter than the control period"),
        (dict(train_episodes="0", final_eval_episodes="0"), "at least one episode"),
        (dict(record="yes"), "true or false"),
    ],
)
def test_bad_graph_arguments_give_clear_errors(args, words):
    with pytest.raises(ValueError, match=words):
        graph("mpc", robot="arm2", **args)


def test_the_main_job_is_this_graph_on_the_7_dof_arm():
    assert DEMO_GRAPH == "mpc" and "robot" not in DEMO_ARGS
    specs = graph(DEMO_GRAPH, **DEMO_ARGS)
    assert {s.name for s in specs} >= {"arm_sim", "mpc_planner", "episode_manager"}
    sim = next(s for s in specs if s.name == "arm_sim")
    assert sim.parameters["robot"] == "arm7"


ARM2_RUN = dict(robot="arm2", train_episodes=14, final_eval_episodes=8, episode_length=2.0, seed=0)
TIMINGS = ("plan_rate_hz",)  # the only wall-clock figures in results.json


PREFIX = 8  # training episodes of the determinism test's loaded run


def run_arm2(out, timeout=400, **changes) -> list[dict]:
    result = launch_mpc(out, timeout, **(ARM2_RUN | changes))
    assert result.returncode == 0, result.stdout[-6000:]
    assert (out / "learning_curve.png").stat().st_size > 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def arm2_run(tmp_path_factory):
    """The arm2 learning run (shared by the learning and the determinism test)."""
    return run_arm2(tmp_path_factory.mktemp("arm2_mpc"))


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_mpc_graph_learns_to_reach_on_the_2_link_arm_from_zero_data(arm2_run):
    records = arm2_run
    assert len(records) == 22
    pi0 = [r for r in records if r["model_version"] < 0]
    learned = [r for r in records if r["model_version"] >= 0 and r["held_out"]]
    # π0 for random_seconds = 6 s rounded to whole episodes (3 × 2 s), then the graph waits for
    # the first model
    assert len(pi0) == 3, "the run should start on π0 (no data, no model)"
    assert len(learned) >= 4, (
        f"only {len(learned)} held-out episodes ran with a model: "
        f"the fitter's first model came too late"
    )
    final = np.array([r["final_distance"] for r in learned])
    # seed 0 reaches all 8 within 2 cm (mean 0.1 cm); a margin of one miss for other CPUs' rounding
    assert np.mean(final < 0.02) >= 0.85, f"held-out final distances (m) {final}"
    assert np.all(final < 0.05), f"held-out final distances (m) {final}"
    pi0_final = np.mean([r["final_distance"] for r in pi0])
    assert np.median(final) < pi0_final / 3, (np.median(final), pi0_final)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_lockstep_run_is_bit_identical_with_a_cpu_hog_beside_it(arm2_run, tmp_path):
    """The same seeded run again with both cores kept busy by other processes: every number of
    results.json but the planner's wall-clock rate is identical (data, fits, plans, distances).
    The loaded run stops after its first PREFIX training episodes (π0, the first model and its
    refits): training targets come from their own seed, so they are the full run's first ones."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        loaded = run_arm2(tmp_path, timeout=850, train_episodes=PREFIX, final_eval_episodes=0)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()

    def strip(records):
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]

    assert sum(r["model_version"] >= 1 for r in loaded) >= 3  # refitted models were used
    assert strip(loaded) == strip(arm2_run[:PREFIX])
