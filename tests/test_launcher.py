"""``mbrl-ros launch`` runs a whole graph as processes; bad arguments give clear errors."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros


def mbrl_ros(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "mbrl_ros.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_sim_graph_runs_to_its_duration_and_prints_status():
    result = mbrl_ros("launch", "sim", "robot:=arm2", "duration:=2.0", "status_period:=0.5")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "graph 'sim': arm_sim, lg_executor, base_policy" in out
    assert "steps/s" in out and "q range (deg)" in out
    assert "duration 2 s of sim time reached" in out


def test_bad_graph_argument_is_named():
    result = mbrl_ros("launch", "sim", "speed:=3")
    assert result.returncode == 2 and "no argument(s) ['speed']" in result.stderr


def test_node_failure_stops_the_graph_with_its_status():
    result = mbrl_ros("launch", "sim", "robot:=/nonexistent.urdf")
    assert result.returncode == 2
    assert "/nonexistent.urdf" in result.stderr and "stopping the graph" in result.stderr


def test_list_prints_graph_arguments():
    result = mbrl_ros("launch", "sim", "--list")
    assert result.returncode == 0 and "robot:=arm7" in result.stdout


def test_nodes_do_not_outlive_a_killed_launcher():
    """SIGKILL of `mbrl-ros launch` (e.g. a timeout) still takes its nodes down."""
    import signal
    import time
    proc = subprocess.Popen([sys.executable, "-m", "mbrl_ros.cli", "launch", "sim",
                             "robot:=arm2", "duration:=0"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    children = []
    deadline = time.monotonic() + 60
    while len(children) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        children = [int(p) for p in out.stdout.split()]
    assert len(children) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    alive = children
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in children if _running(p)]
    assert not alive, f"node processes {alive} outlived the launcher"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
