"""Test fixtures. DDS stays on this machine: discovery is limited to localhost and every pytest run
gets its own ROS_DOMAIN_ID (``make test`` also runs the suite in a private network namespace)."""
from __future__ import annotations

import os
import random

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))

import pytest  # noqa: E402

from ros_harness import NodeProcess, RosHarness  # noqa: E402


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

    def start(executable: str, params: dict | None = None, name: str | None = None,
              remappings: dict | None = None) -> NodeProcess:
        proc = NodeProcess(executable, params or {}, tmp_path, name, remappings)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
