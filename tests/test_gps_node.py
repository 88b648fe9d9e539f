"""The ``gps_trainer`` node over real DDS: the whole 'gps' graph on the 2-link sim arm in lockstep
(one condition with resets; two conditions with homing and mirror-descent GPS, its policy
published and run by the policy runner), a failing update that publishes nothing, and bad
parameters that stop the node at start-up."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_harness import launch_graph, wait_for
from std_msgs.msg import UInt8MultiArray

from mbrl_ros.common.artifacts import read_file
from mbrl_ros.data.topics import POLICY
from mbrl_ros.nodes.messages import LATCHED_QOS
from mbrl_ros.policy.network import GoalPolicy
from mbrl_ros.robot.description import load_robot

pytestmark = pytest.mark.ros

TARGET = "0.0546,0.2167,0.07"
# A private network namespace (where allowed) keeps other DDS graphs on this machine out.
ISOLATED = [str(Path(__file__).parents[1] / "tools" / "isolated")]
START = [0.3, 0.5]


def test_gps_graph_learns_and_writes_its_summary(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        ISOLATED
        + [
            sys.executable,
            "-m",
            "mbrl_ros.cli",
            "launch",
            "gps",
            "robot:=arm2",
            f"target:={TARGET}",
            "initial_position:=0.3,0.5",
            "iterations:=2",
            "samples:=2",
            f"output_dir:={out}",
            "status_period:=0",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "iteration 1/2: cost" in log and "iteration 2/2: cost" in log
    assert "lockstep_timeouts" not in log and "start_mismatch" not in log
    rows = (out / "summary.txt").read_text().splitlines()[1:]
    assert [r.split()[:2] for r in rows] == [["1", "2"], ["2", "4"]]
    distances = [float(r.split()[3]) for r in rows]  # mean final distance, cm
    assert distances[1] < distances[0]
    assert (out / "learning_curve.png").stat().st_size > 1000


TARGETS = [[0.0546, 0.2167, 0.07], [0.1, 0.25, 0.07]]
STARTS = [[0.3, 0.5], [-0.5, 1.0]]
PROGRESS = re.compile(r"iteration (\d)/2, condition (\d): cost \S+, KL ([\d.]+) nats, ε ([\d.]+)")


def run_two_conditions(out):
    """The 'gps' graph on arm2: 2 conditions × 2 samples × 2 iterations with MDGPS; its log."""
    starts = ";".join(",".join(map(str, q)) for q in STARTS)
    goals = ";".join(",".join(map(str, g)) for g in TARGETS)
    result = launch_graph(
        [
            "gps",
            "robot:=arm2",
            f"initial_position:={starts}",
            f"target:={goals}",
            "iterations:=2",
            "samples:=2",
            "algorithm:=mdgps",
            f"output_dir:={out}",
            "status_period:=0",
        ],
        90,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    return result.stdout


@pytest.mark.timeout(200)
def test_two_conditions_with_mdgps_learn_per_condition_and_the_policy_runs(ros, tmp_path):
    """2 conditions × 2 samples × 2 iterations, samples started by homing the lockstep arm: a
    progress line per condition and iteration whose KL meets its ε, a summary with a column per
    condition in which both conditions' final distances shrink, the same summary and policy
    from a second run (lockstep homing is exact); the trained policy is published on
    /mbrl/policy (the bytes written to output_dir), and the 'policy' graph's runner loads the
    file and commands the arm with it."""
    received = []
    probe = ros.node("probe")
    probe.create_subscription(
        UInt8MultiArray, "/" + POLICY, lambda m: received.append(bytes(m.data)), LATCHED_QOS
    )
    out = tmp_path / "run"
    log = run_two_conditions(out)
    assert "2 conditions × 2 samples" in log and "samples start by homing" in log
    progress = [(int(i), int(m), float(kl), float(eps)) for i, m, kl, eps in PROGRESS.findall(log)]
    assert sorted((i, m) for i, m, _, _ in progress) == [(1, 0), (1, 1), (2, 0), (2, 1)], log
    for _, _, kl, eps in progress:  # the dual's search met each condition's trust region
        assert abs(kl - eps) <= 0.1 * eps
    assert log.count("policy trained on 4 samples") == 2
    rows = (out / "summary.txt").read_text().splitlines()
    assert rows[0].split()[8:10] == ["c0", "c1"]
    assert [r.split()[:2] for r in rows[1:3]] == [["1", "4"], ["2", "8"]]
    finals = np.array([[float(v) for v in np.array(r.split())[[3, 5, 6]]] for r in rows[1:3]])
    np.testing.assert_allclose(finals[:, 0], finals[:, 1:].mean(1), atol=0.01)  # mean, c0, c1
    assert np.all(finals[1, 1:] < finals[0, 1:]), finals  # each condition closer (cm)
    assert (out / "learning_curve.png").stat().st_size > 1000
    data = read_file(out / "policy.safetensors")
    wait_for(lambda: received, 10.0, "the policy on /mbrl/policy")
    assert received[-1] == data
    policy = GoalPolicy.from_bytes(data)
    policy.signature.check("arm2", list(load_robot("arm2").joint_names), 0.01)
    np.testing.assert_allclose(policy.info["targets"], TARGETS)
    assert policy.info["starts"] == STARTS and policy.info["samples"] == 8
    again = tmp_path / "again"
    run_two_conditions(again)
    assert (again / "summary.txt").read_text() == (out / "summary.txt").read_text()
    assert read_file(again / "policy.safetensors") == data

    # the policy graph in lockstep: its runner is the only command publisher and the sim steps
    # only on a command for the state's stamp (a safe hold after 600 s), so an episode that
    # ends within the time-out was commanded by the policy at every step
    run = tmp_path / "policy"
    result = launch_graph(
        [
            "policy",
            f"policy_file:={out / 'policy.safetensors'}",
            "episodes:=1",
            "episode_length:=0.5",
            f"output_dir:={run}",
            "status_period:=0",
        ],
        60,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    assert f"policy from {out / 'policy.safetensors'}" in result.stdout
    assert "lockstep_timeouts" not in result.stdout and "non_finite" not in result.stdout
    (episode,) = json.loads((run / "results.json").read_text())
    assert np.isfinite(episode["final_distance"])


def test_failed_update_publishes_nothing_and_is_reported(node_process, tmp_path):
    sim = node_process(
        "arm_sim", {"robot": "arm2", "initial_position": START, "lockstep_timeout": 60.0}
    )
    node_process("lg_executor", {"robot": "arm2", "stochastic": True, "use_sim_time": True})
    trainer = node_process(
        "gps_trainer",
        {
            "robot": "arm2",
            "initial_position": START,
            "target": [0.0546, 0.2167, 0.07],
            "iterations": 1,
            "samples": 2,
            "horizon": 20,
            "prior": "none",
            "eta_max": 1e-3,
            "output_dir": str(tmp_path / "run"),
            "use_sim_time": True,
        },
    )
    assert trainer.wait(timeout=120) == 1
    log = trainer.output()
    assert "iteration 1: update failed, no controller published: η reached its bound" in log
    assert "no iteration succeeded" in log
    assert not (tmp_path / "run").exists()
    assert sim.proc.poll() is None


@pytest.mark.parametrize(
    "params, message",
    [
        (["samples:=1"], "parameter 'samples' = 1 is out of range"),
        (["initial_position:=[9.0, 0.0]", "robot:=arm2"], "'initial_position'"),
        (["target:=[0.1, 0.2]"], "parameter 'target'"),
        (["prior:=gp"], "parameter 'prior' = 'gp' must be one of"),
        (
            ["robot:=arm2", "episode_source:=homing", "initial_position:=[0.3, 0.5, 0.1]"],
            "parameter 'initial_position' has 3 values: it must be 2 angles per condition",
        ),
        (
            ["robot:=arm2", "initial_position:=[0.3, 0.5, -0.5, 1.0]"],
            "parameter 'initial_position' gives 2 conditions: several conditions need "
            "episode_source 'homing'",
        ),
        (
            [
                "robot:=arm2",
                "episode_source:=homing",
                "initial_position:=[0.3, 0.5, -0.5, 1.0]",
                "target:=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]",
            ],
            "parameter 'target' = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9] must be 3 "
            "numbers (m), 3 per condition (6 for 2)",
        ),
        (
            ["robot:=arm2", "episode_source:=homing", "initial_position:=[0.3, 0.5, -0.5, 9.0]"],
            "parameter 'initial_position' = [0.3, 0.5, -0.5, 9.0]: pose [-0.5, 9.0] rad is outside",
        ),
        (["algorithm:=ppo"], "parameter 'algorithm' = 'ppo' must be one of"),
        (
            ["task:=insertion", "episode_source:=homing"],
            "parameter 'task' = insertion needs episode_source reset",
        ),
        (
            ["task:=insertion", "tool:=nosuch"],
            "parameters 'scene' = 'insertion', 'tool' = 'nosuch': no file 'nosuch'",
        ),
        (
            ["algorithm:=mdgps", "policy_hidden:=[64.5]"],
            "parameter 'policy_hidden' = [64.5] must be",
        ),
    ],
)
def test_bad_parameters_stop_the_node(params, message):
    args = [a for p in params for a in ("-p", p)]
    result = subprocess.run(
        [sys.executable, "-m", "mbrl_ros.nodes.gps_trainer", "--ros-args", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
