"""``mbrl-ros launch`` runs a whole graph as processes; bad arguments give clear errors; a failing
node stops the graph with its status; SIGINT (as from a terminal, to every process of the group)
and SIGTERM stop the graph with every node exiting cleanly."""

import inspect
import os
import signal
import subprocess
import sys
import time

import pytest

from mbrl_ros.graphs.description import GRAPHS, graph

pytestmark = pytest.mark.ros


def mbrl_ros(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "mbrl_ros.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_sim_graph_runs_to_its_duration_and_prints_status():
    result = mbrl_ros("launch", "sim", "robot:=arm2", "duration:=2.0", "status_period:=0.5")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "graph 'sim': arm_sim, lg_executor, base_policy" in out
    assert "steps/s" in out and "q range (deg)" in out
    assert "duration 2 s of sim time reached" in out


def test_graph_arguments_are_described_once():
    """Each builder takes exactly its graph's arguments, keyword-only and without defaults of its
    own (the GraphArg defaults are the only ones; ``namespace`` is applied by ``graph``)."""
    for name, g in GRAPHS.items():
        params = inspect.signature(g.build).parameters.values()
        assert all(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params), name
        assert {p.name for p in params} == {a.name for a in g.args} - {"namespace"}, name


def test_bad_graph_argument_is_named():
    result = mbrl_ros("launch", "sim", "speed:=3")
    assert result.returncode == 2 and "no argument(s) ['speed']" in result.stderr


def test_node_failure_stops_the_graph_with_its_status():
    """base_policy (not required) gets seed + 1 = 2^31, out of its range: it exits 2 at start-up,
    the graph stops with that status and every other node exits cleanly."""
    result = mbrl_ros("launch", "sim", "seed:=2147483647", "duration:=0")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "[base_policy] cannot start: parameter 'seed'" in result.stderr
    assert "node 'base_policy' exited with status 2; stopping the graph" in result.stderr
    assert "while the graph stopped" not in result.stderr and "Traceback" not in result.stderr


def test_list_prints_graph_arguments():
    result = mbrl_ros("launch", "sim", "--list")
    assert result.returncode == 0 and "robot:=arm7" in result.stdout


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_stops_the_graph_cleanly(sig, status):
    """Once the sim runs, SIGINT to the whole process group (as Ctrl-C in a terminal: every node
    gets it twice, from the terminal and from the launcher) or SIGTERM to the launcher: the
    launcher returns 128 + the signal, every node exits 0, no traceback."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mbrl_ros.cli",
            "launch",
            "sim",
            "robot:=arm2",
            "duration:=0",
            "status_period:=0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        for line in proc.stdout:
            if "steps/s" in line:  # the sim's status line: the graph runs
                break
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        out = line + proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == status, out
    assert f"{signal.Signals(sig).name}: stopping the graph" in out
    assert "while the graph stopped" not in out and "Traceback" not in out, out


def test_nodes_do_not_outlive_a_killed_launcher():
    """SIGKILL of `mbrl-ros launch` (e.g. a timeout) still takes its nodes down."""
    nodes = len(graph("sim"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mbrl_ros.cli", "launch", "sim", "robot:=arm2", "duration:=0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children = []
    deadline = time.monotonic() + 60
    while len(children) < nodes and time.monotonic() < deadline:
        time.sleep(0.2)
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        children = [int(p) for p in out.stdout.split()]
    assert len(children) == nodes
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
