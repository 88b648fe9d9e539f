"""Test fixtures. DDS stays on this machine: discovery is limited to localhost and every test
gets its own ROS_DOMAIN_ID (``make test`` also runs the suite in a private network namespace), so
a process an earlier test left behind cannot talk to a later test's nodes."""

from __future__ import annotations

import itertools
import os
import random

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))

import re  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

_FIRST_DOMAIN = int(os.environ["ROS_DOMAIN_ID"])

# A test file needs ROS (and is marked ``ros`` as a whole) when it, or a tests/ helper it
# imports, imports rclpy, ROS messages, launch, the node modules or the ROS test harness, or
# uses one of the ROS fixtures. The fast tier (``-m "not ros and not slow"``) then does not even
# import such files, so collecting it never imports rclpy (tests/test_test_tiers.py checks).
_ROS_SOURCE = re.compile(
    r"^\s*(?:from|import)\s+(?:rclpy|launch(?:_ros|_pytest|_testing)?|ros_harness|"
    r"mbrl_ros\.nodes|\w+_msgs|\w+_srvs|rosbag\w*)\b|\b(?:ros|node_process|pi0)\s*[,)]",
    re.MULTILINE,
)
_needs_ros: dict[Path, bool] = {}


def _file_needs_ros(path: Path) -> bool:
    """Whether the test file (or a tests/ helper module it imports) needs ROS; see _ROS_SOURCE."""
    if path not in _needs_ros:
        _needs_ros[path] = False  # guards import cycles
        text = path.read_text()
        helpers = re.findall(r"^\s*(?:from|import)\s+(\w+)", text, re.MULTILINE)
        _needs_ros[path] = bool(_ROS_SOURCE.search(text)) or any(
            _file_needs_ros(path.parent / f"{name}.py")
            for name in helpers
            if (path.parent / f"{name}.py").is_file()
        )
    return _needs_ros[path]


def _tier_skips_ros(config) -> bool:
    """True when the -m expression deselects every test marked ``ros``, whatever its other
    markers (every assignment of the expression's other names is tried)."""
    markexpr = config.getoption("markexpr", "")
    if not markexpr:
        return False
    from _pytest.mark.expression import Expression

    expression = Expression.compile(markexpr)
    names = sorted(set(re.findall(r"\w+", markexpr)) - {"and", "or", "not", "ros"})
    for bits in itertools.product((False, True), repeat=len(names)):
        marked = {"ros"} | {n for n, b in zip(names, bits) if b}
        if expression.evaluate(lambda name, **kw: name in marked):
            return False
    return True


def pytest_ignore_collect(collection_path: Path, config):
    """The fast tier does not import test files that need ROS (their tests are all ``ros``)."""
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        if _tier_skips_ros(config) and _file_needs_ros(collection_path):
            return True
    return None


def pytest_collection_modifyitems(config, items):
    """Mark ``ros`` every test in a file that needs ROS (see _ROS_SOURCE)."""
    for item in items:
        if _file_needs_ros(Path(item.path)):
            item.add_marker(pytest.mark.ros)


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
    from ros_harness import RosHarness

    harness = RosHarness()
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def node_process(tmp_path):
    """Start node executables as subprocesses: ``node_process('arm_sim', {'seed': 1})``;
    all are stopped (SIGINT, then SIGKILL) at the end of the test."""
    from ros_harness import NodeProcess

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
