"""Namespaces: the graph's topic names are relative (one module of defaults, data/topics.py) and
its parameter files are keyed ``/**/<node>``, so a graph started with ``namespace:=/robot1`` keeps
all its traffic under /robot1 (except /clock and /diagnostics, absolute by ROS convention) and its
config files still apply; over DDS with ``mbrl-ros launch``."""

from __future__ import annotations

import argparse
import ast
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from data_testing import lockstep_messages, write_bag
from diagnostic_msgs.msg import DiagnosticArray
from launch_kit import ROOT
from ros_harness import get_parameters, wait_for

from mbrl_ros.cli import data as cli
from mbrl_ros.common.param_files import node_key, node_parameters
from mbrl_ros.data.errors import BagError
from mbrl_ros.data.extract import dataset_from_bag
from mbrl_ros.data.topics import TopicNames, check_namespace, resolve
from mbrl_ros.graphs.description import GRAPHS, graph
from mbrl_ros.graphs.launcher import node_command

CONFIGS = sorted(p for p in (ROOT / "config").glob("*.yaml") if p.name != "ros2_controllers.yaml")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "/"),
        ("/", "/"),
        ("robot1", "/robot1"),
        ("/robot1", "/robot1"),
        ("/lab/robot_1", "/lab/robot_1"),
    ],
)
def test_a_namespace_is_made_absolute(text, expected):
    assert check_namespace(text) == expected


@pytest.mark.parametrize(
    "text, part",
    [("/1robot", "'1robot'"), ("/a//b", "''"), ("/robot-1", "'robot-1'"), ("/robot1/", "ends")],
)
def test_a_bad_namespace_is_named(text, part):
    with pytest.raises(ValueError, match=re.escape(part)):
        check_namespace(text)
    with pytest.raises(ValueError, match=r"namespace = .* must be a ROS namespace"):
        graph("sim", namespace=text)


def test_relative_names_resolve_in_the_namespace_and_absolute_ones_stay():
    assert resolve("joint_states", "/robot1") == "/robot1/joint_states"
    assert resolve("mbrl/target", "/") == "/mbrl/target"
    assert resolve("/clock", "/robot1") == "/clock"
    assert TopicNames().resolved("/a/b") == TopicNames(
        "/a/b/joint_states",
        "/a/b/effort_controller/commands",
        "/a/b/mbrl/episode_events",
        "/a/b/camera/image_raw",
    )


def test_node_parameters_read_the_sections_that_apply_to_a_node():
    doc = {
        "/**": {"ros__parameters": {"a": 1, "b": 1}},
        "/**/planner": {"ros__parameters": {"b": 2}},
        "/**/executor": {"ros__parameters": {"b": 3}},
    }
    assert node_parameters(doc, "planner") == {"a": 1, "b": 2}
    assert node_parameters(doc, "sim") == {"a": 1, "b": 1}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_keys_its_nodes_for_any_namespace(path):
    """A bare ``planner:`` key would apply to /planner only: under a namespace, silently not."""
    doc = yaml.safe_load(path.read_text())
    bare = [key for key in doc if not key.startswith("/**")]
    assert not bare, f"{path.name}: sections {bare} apply in the root namespace only"


def test_no_node_names_an_absolute_graph_topic():
    """Every topic and service of the graph comes from data/topics.py as a relative name; only
    /clock and /diagnostics are absolute (and named only there)."""
    allowed = {"/clock", "/diagnostics"}
    found = []
    for path in sorted((ROOT / "src" / "mbrl_ros").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(
                    r"/(mbrl|joint_states|effort_controller|robot_description|"
                    r"arm_sim|clock|diagnostics|tf)(/\w+)*",
                    node.value,
                )
            ):
                if node.value not in allowed or path.name != "topics.py":
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
    assert not found, found


def test_the_namespace_argument_reaches_every_node_of_every_graph(tmp_path):
    for name in GRAPHS:
        specs = graph(name, namespace="robot1")
        assert {s.namespace for s in specs} == {"/robot1"}, name
        assert {s.namespace for s in graph(name)} == {"/"}, name
    spec = graph("sim", namespace="/robot1")[0]
    cmd = node_command(spec, tmp_path)
    assert cmd[cmd.index("__ns:=/robot1") - 1] == "-r"
    override = yaml.safe_load((tmp_path / "arm_sim.yaml").read_text())
    assert node_parameters(override, "arm_sim") == spec.parameters
    assert list(override) == [node_key("arm_sim")]


@pytest.mark.ros
def test_a_graph_in_a_namespace_keeps_its_topics_there_and_its_parameters_apply(ros):
    """``mbrl-ros launch sim namespace:=/robot1``: the nodes, topics and services are under
    /robot1 (nothing of the graph's in the root but /clock and /diagnostics); the config file
    (sim.yaml) and the graph's overrides apply to the namespaced nodes; the sim runs (lockstep
    states and commands flow) and SIGINT stops every node cleanly."""
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
            "seed:=4",
            "namespace:=/robot1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=os.environ,
    )
    try:
        probe = ros.node("probe")
        statuses: set[str] = set()
        probe.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: statuses.update(st.name for st in m.status),
            10,
        )
        expected = {
            "/robot1/joint_states",
            "/robot1/effort_controller/commands",
            "/robot1/mbrl/controller",
            "/clock",
            "/diagnostics",
        }
        nodes = {("arm_sim", "/robot1"), ("lg_executor", "/robot1"), ("base_policy", "/robot1")}
        wait_for(
            lambda: (
                expected <= set(dict(probe.get_topic_names_and_types()))
                and nodes <= set(probe.get_node_names_and_namespaces())
                and probe.count_publishers("/robot1/joint_states") == 1
                and "/robot1/arm_sim/reset" in dict(probe.get_service_names_and_types())
            ),
            60.0,
            f"nodes {sorted(nodes)}, topics {sorted(expected)}, the sim's reset service",
        )
        assert probe.count_subscribers("/robot1/effort_controller/commands") >= 1
        services = dict(probe.get_service_names_and_types())
        graph_names = {t for t, _ in probe.get_topic_names_and_types()} | set(services)
        root = sorted(
            t
            for t in graph_names
            if re.match(r"/(mbrl|joint_states|effort_controller|robot_description|arm_sim)\b", t)
        )
        assert not root, root
        # sim.yaml (arm_sim: hold_damping 2.0, base_policy: hold_steps 10; node defaults 1.0 and
        # 5) and the graph's overrides (robot, seed + 1) in the namespace
        assert get_parameters(probe, "/robot1/arm_sim", ["hold_damping", "robot", "seed"]) == {
            "hold_damping": 2.0,
            "robot": "arm2",
            "seed": 4,
        }
        assert get_parameters(probe, "/robot1/base_policy", ["hold_steps", "seed"]) == {
            "hold_steps": 10,
            "seed": 5,
        }
        # on the absolute /diagnostics, each status named with its node's namespace
        wait_for(
            lambda: (
                {n.split(":")[0] for n in statuses}
                >= {"robot1/arm_sim", "robot1/lg_executor", "robot1/base_policy"}
            ),
            30.0,
            "the nodes' diagnostics",
        )
        deadline = time.monotonic() + 60.0
        out = ""
        while "steps/s" not in out and time.monotonic() < deadline:  # the sim is stepping
            out += proc.stdout.readline()
        assert "steps/s" in out, out
        os.killpg(proc.pid, signal.SIGINT)
        out += proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "exited with status" not in out, out


def test_a_bag_recorded_in_a_namespace_is_read_in_that_namespace(tmp_path, capsys):
    """The bag holds /robot1/joint_states etc.: the same transitions as from a bag of the root
    namespace, once the relative names are resolved in /robot1 (``--namespace`` on the CLI)."""
    msgs = lockstep_messages(30, resets=(0,))
    write_bag(tmp_path / "root", msgs)
    write_bag(tmp_path / "ns", [(resolve(t, "/robot1"), m) for t, m in msgs])
    expected = dataset_from_bag(tmp_path / "root").dataset
    got = dataset_from_bag(tmp_path / "ns", topics=TopicNames().resolved("/robot1")).dataset
    assert len(got) == len(expected) > 0
    np.testing.assert_array_equal(got.states, expected.states)
    np.testing.assert_array_equal(got.actions, expected.actions)
    with pytest.raises(BagError, match="has no topic /joint_states"):
        dataset_from_bag(tmp_path / "ns")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser.add_subparsers(dest="command").add_parser("bag"), "bag")
    args = parser.parse_args(["bag", "info", "--namespace", "robot1", str(tmp_path / "ns")])
    assert args.namespace == "/robot1" and cli.run(args) == 0
    assert f"transitions:  {len(expected)} extractable" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["bag", "info", "--namespace", "/1robot", str(tmp_path / "ns")])
    assert "'1robot' must be letters" in capsys.readouterr().err
