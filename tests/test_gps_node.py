"""The ``gps_trainer`` node over real DDS: the whole 'gps' graph on the 2-link sim arm in lockstep,
a failing update that publishes nothing, and bad parameters that stop the node at start-up."""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

TARGET = "0.0546,0.2167,0.07"
# A private network namespace (where allowed) keeps other DDS graphs on this machine out.
ISOLATED = [str(Path(__file__).parents[1] / "tools" / "isolated")]
START = [0.3, 0.5]


def test_gps_graph_learns_and_writes_its_summary(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        ISOLATED + [sys.executable, "-m", "mbrl_ros.cli", "launch", "gps", "robot:=arm2",
                    f"target:={TARGET}", "initial_position:=0.3,0.5", "iterations:=2",
                    "samples:=2", f"output_dir:={out}", "status_period:=0"],
        capture_output=True, text=True, timeout=240)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "iteration 1/2: cost" in log and "iteration 2/2: cost" in log
    assert "lockstep_timeouts" not in log and "start_mismatch" not in log
    rows = (out / "summary.txt").read_text().splitlines()[1:]
    assert [r.split()[:2] for r in rows] == [["1", "2"], ["2", "4"]]
    distances = [float(r.split()[3]) for r in rows]          # mean final distance, cm
    assert distances[1] < distances[0]
    assert (out / "learning_curve.png").stat().st_size > 1000


def test_failed_update_publishes_nothing_and_is_reported(node_process, tmp_path):
    sim = node_process("arm_sim", {"robot": "arm2", "initial_position": START,
                                   "lockstep_timeout": 60.0})
    node_process("lg_executor", {"robot": "arm2", "stochastic": True, "use_sim_time": True})
    trainer = node_process("gps_trainer", {
        "robot": "arm2", "initial_position": START, "target": [0.0546, 0.2167, 0.07],
        "iterations": 1, "samples": 2, "horizon": 20, "prior": "none", "eta_max": 1e-3,
        "output_dir": str(tmp_path / "run"), "use_sim_time": True})
    assert trainer.wait(timeout=120) == 1
    log = trainer.output()
    assert "iteration 1: update failed, no controller published: η reached its bound" in log
    assert "no iteration succeeded" in log
    assert not (tmp_path / "run").exists()
    assert sim.proc.poll() is None


@pytest.mark.parametrize("params, message", [
    (["samples:=1"], "parameter 'samples' = 1 is out of range"),
    (["initial_position:=[9.0, 0.0]", "robot:=arm2"], "'initial_position'"),
    (["target:=[0.1, 0.2]"], "parameter 'target'"),
    (["prior:=gp"], "parameter 'prior' = 'gp' must be one of"),
])
def test_bad_parameters_stop_the_node(params, message):
    args = [a for p in params for a in ("-p", p)]
    result = subprocess.run([sys.executable, "-m", "mbrl_ros.nodes.gps_trainer", "--ros-args",
                             *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr
