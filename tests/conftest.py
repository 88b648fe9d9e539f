"""Test fixtures. DDS stays on this machine: discovery is limited to localhost and every test
gets its own ROS_DOMAIN_ID (``make test`` also runs the suite in a private network namespace), so
a process an earlier test left behind cannot talk to a later test's nodes."""

from __future__ import annotations

import itertools
import os
import random

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))

import pytest  # noqa: E402
from ros_harness import NodeProcess, RosHarness  # noqa: E402

_FIRST_DOMAIN = int(os.environ["ROS_DOMAIN_ID"])
_tests = itertools.count()


@pytest.fixture(autouse=True)
def ros_domain(monkeypatch) -> int:
    """This test's ROS_DOMAIN_ID (1..100, the next one for each test); in-process contexts and the
    processes the test starts use it."""
    domain = 1 + (_FIRST_DOMAIN - 1 + next(_tests)) % 100
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    return domain


@pytest.fixture
def ros():
    """A fresh rclpy context with an executor spinning in a background thread."""
    harness = RosHarness()
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def node_process(tmp_path):
    """Start node executables as subprocesses: ``node_process('arm_sim', {'seed': 1})``;
    all are stopped (SIGINT, then SIGKILL) at the end of the test."""
    started: list[NodeProcess] = []

    def start(
        executable: str,
        params: dict | None = None,
        name: str | None = None,
        remappings: dict | None = None,
    ) -> NodeProcess:
        proc = NodeProcess(executable, params or {}, tmp_path, name, remappings)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def pi0(node_process):
    """Start the base policy π0 as it runs on the arm: ``base_policy`` publishing random-torque
    controllers and ``lg_executor`` running them (sync, for a lockstep sim) behind the safety
    layer: ``pi0('arm2', seed=1, scale=0.5)``. Returns (executor, base policy) processes."""

    def start(robot: str, seed: int = 0, use_sim_time: bool = False, **params):
        common = {"robot": robot, "use_sim_time": use_sim_time}
        executor = node_process("lg_executor", {**common, "mode": "sync"})
        policy = node_process("base_policy", {**common, "mode": "sync", "seed": seed, **params})
        return executor, policy

    return start
