"""``ros2 launch mbrl_ros <graph>.launch.py`` with ROS 2's real launch system (the kit in
``../shared``) on the package installed by colcon: every launch file with its default arguments
starts every node and the graph works (the sim graph runs to its end); Ctrl-C (SIGINT to the
process group, as a terminal sends it) then stops it with status 0 and every node exiting cleanly;
a node that fails, required or not, stops the graph and ``ros2 launch`` fails."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading

import pytest
from launch_kit import (
    kit_environment,
    requires_kit,
    ros2,
    ros_install_fixture,  # noqa: F401 - the ros_install fixture
)
from ros_harness import wait_for

from mbrl_ros.graphs.description import GRAPHS, graph

pytestmark = [pytest.mark.ros, pytest.mark.slow, requires_kit, pytest.mark.timeout(400)]

WORKING_TIMEOUT_S = 240.0  # loaded CI machine: the 7-DOF mpc graph fits twice by then
STOP_TIMEOUT_S = 30.0
# Lines showing that each graph works with its defaults (π0 + learning through every node):
# the sim graph runs to its end by itself; the others are interrupted once these are seen.
WORKING = {
    "sim": ["duration 60 s of sim time reached"],
    "record": ["episode 1/5"],
    "gps": ["iteration 1/10:"],
    "mpc": ["model v1:", "model v2:"],  # v2 comes after an episode planned through v1
    "policy": ["policy from /mbrl/policy (waiting)", "10 episodes of 3 s", "lockstep at 20 Hz"],
    "solar": [
        "model from /mbrl/solar_model, controller from /mbrl/controller",
        "5 episodes of 0.5 s",
        "lockstep at 100 Hz",
    ],  # the runner waits for a model
}
BAD_OUTPUT = ("Traceback", "terminate called", "process has died", "[ERROR]")


class Launch:
    """``ros2 launch`` of the installed package as its own process group, its output collected
    line by line."""

    def __init__(self, prefix, work, launch_file: str, *args: str):
        work.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            ros2("launch", "mbrl_ros", launch_file, *args),
            cwd=work,
            env=kit_environment(prefix, work / "log"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_lines(self, texts: list[str], timeout: float) -> None:
        """Wait until the output holds every one of ``texts`` (or ros2 launch has ended)."""
        try:
            wait_for(
                lambda: all(t in self.output() for t in texts) or self.proc.poll() is not None,
                timeout,
                f"{texts}",
            )
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; ros2 launch output ends:\n{self.output()[-3000:]}"
            ) from None

    def finish(self, timeout: float) -> int:
        """The exit status once ``ros2 launch`` ends (within ``timeout`` s) and its output is in."""
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"ros2 launch still running after {timeout} s:\n{self.output()[-3000:]}"
            ) from None
        self._reader.join(timeout=10)
        return status

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _finished_cleanly(out: str) -> list[str]:
    """The nodes that ros2 launch saw exit with status 0."""
    return sorted(re.findall(r"\[(\w+)-\d+\]: process has finished cleanly", out))


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_launch_file_with_its_defaults_works_and_stops_cleanly(name, ros_install, tmp_path):
    names = [s.name for s in graph(name)]
    launch = Launch(ros_install, tmp_path, f"{name}.launch.py")
    try:
        started = [f"[{n}-{i}]: process started" for i, n in enumerate(names, 1)]
        launch.wait_for_lines(started + WORKING[name], WORKING_TIMEOUT_S)
        if name != "sim":  # Ctrl-C in a terminal: SIGINT to ros2 launch and every node
            assert launch.proc.poll() is None, launch.output()[-6000:]
            os.killpg(launch.proc.pid, signal.SIGINT)
        status = launch.finish(STOP_TIMEOUT_S)
    finally:
        launch.kill()
    out = launch.output()
    assert status == 0 and all(w in out for w in WORKING[name]), out[-6000:]
    assert not [b for b in BAD_OUTPUT if b in out], out[-6000:]
    assert _finished_cleanly(out) == sorted(names), out[-6000:]


@pytest.mark.parametrize(
    "args, failing, required",
    [
        (["seed:=2147483647"], "base_policy", False),  # its seed (+1) is out of its range
        (["status_period:=-1"], "arm_sim", True),  # out of the sim's range
    ],
)
def test_a_failing_node_stops_the_graph_and_the_launch_fails(
    args, failing, required, ros_install, tmp_path
):
    """A node that exits 2 at start-up (a bad parameter) stops the whole sim graph, which would
    otherwise run for a minute, and ``ros2 launch`` returns non-zero, whether the node is required
    or not; every other node exits cleanly."""
    specs = graph("sim", **dict(a.split(":=") for a in args))
    assert [s.required for s in specs if s.name == failing] == [required]
    launch = Launch(ros_install, tmp_path, "sim.launch.py", *args)
    try:
        status = launch.finish(WORKING_TIMEOUT_S)
    finally:
        launch.kill()
    out = launch.output()
    assert status != 0, out[-6000:]
    assert f"[{failing}] cannot start: parameter" in out, out[-6000:]
    assert f"node '{failing}' failed (exit status 2): stopping the graph" in out, out[-6000:]
    assert _finished_cleanly(out) == sorted(s.name for s in specs if s.name != failing), out[-6000:]
