"""RViz: config/mbrl.rviz parses and names only topics that nodes of the graphs publish (found in
the nodes' code); over DDS, arm_sim latches the arm's URDF on /robot_description and the planner
publishes its markers (target, predicted path, uncertainty tube) once someone subscribes."""

import ast
import importlib
import threading

import numpy as np
import pytest
import yaml
from launch_kit import ROOT
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import wait_for
from std_msgs.msg import String, UInt8MultiArray
from test_mpc_planner_node import PERIOD_NS, _model_bytes, _planner
from visualization_msgs.msg import Marker, MarkerArray

from mbrl_ros.data.topics import PLANNED_PATH, TARGET
from mbrl_ros.graphs.description import GRAPHS, graph
from mbrl_ros.nodes.arm_sim import ROBOT_DESCRIPTION, ArmSimNode
from mbrl_ros.nodes.markers import MARKERS, MIN_SIZE, TUBE, plan_markers


def rviz_topics(config: dict) -> set[str]:
    """Every topic a display of the config subscribes to."""
    out = set()
    for display in config["Visualization Manager"]["Displays"]:
        for key, value in display.items():
            if "Topic" in key and isinstance(value, dict):
                out.add(value["Value"])
    return out


def published_topics() -> dict[str, set[str]]:
    """Topic -> node executables whose code publishes it (create_publisher with a literal topic
    or a module-level constant), for the nodes the graphs start."""
    executables = {spec.executable for name in GRAPHS for spec in graph(name)}
    out: dict[str, set[str]] = {}
    for path in (ROOT / "src" / "mbrl_ros" / "nodes").glob("*.py"):
        module = importlib.import_module(f"mbrl_ros.nodes.{path.stem}")
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "create_publisher"
                and len(node.args) >= 2
            ):
                continue
            arg = node.args[1]
            topic = (
                arg.value
                if isinstance(arg, ast.Constant)
                else getattr(module, arg.id, None)
                if isinstance(arg, ast.Name)
                else None
            )
            if isinstance(topic, str):
                out.setdefault(topic, set()).add(path.stem)
    # helper modules (markers) publish for the node that uses them
    users = {"markers": {"mpc_planner"}}
    return {
        topic: {u for m in mods for u in users.get(m, {m})} & executables
        for topic, mods in out.items()
    }


def test_rviz_config_names_only_topics_the_graphs_publish():
    config = yaml.safe_load((ROOT / "config" / "mbrl.rviz").read_text())
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "base_link"
    classes = {d["Class"] for d in config["Visualization Manager"]["Displays"]}
    assert {
        "rviz_default_plugins/RobotModel",
        "rviz_default_plugins/Path",
        "rviz_default_plugins/MarkerArray",
    } <= classes
    topics = rviz_topics(config)
    assert topics == {ROBOT_DESCRIPTION, PLANNED_PATH, MARKERS, TARGET}  # relative: RViz in a
    # namespace (rviz2 --ros-args -r __ns:=/robot1) shows that graph's
    publishers = published_topics()
    for topic in topics:
        assert publishers.get(topic), f"{topic}: no node of the graphs publishes it"


def test_plan_markers():
    ee = np.array([[0.1, 0.0, 0.3], [0.2, 0.1, 0.3], [0.3, 0.1, 0.25]])
    cov = np.zeros((3, 3, 3))
    cov[1] = np.diag([1e-4, 4e-4, 9e-4])
    cov[2] = np.diag([4e-4, 1e-4, 0.0])
    msg = plan_markers("base_link", 10**9, PERIOD_NS, ee, cov, np.array([0.3, 0.1, 0.2]))
    clear, target, path, *tube = msg.markers
    assert clear.action == Marker.DELETEALL
    assert target.type == Marker.SPHERE and target.pose.position.z == 0.2
    assert path.type == Marker.LINE_STRIP and [(p.x, p.y, p.z) for p in path.points] == [
        tuple(p) for p in ee
    ]
    assert [m.id for m in tube] == [TUBE, TUBE + 1, TUBE + 2]
    np.testing.assert_allclose(
        [(m.scale.x, m.scale.y, m.scale.z) for m in tube],
        [[MIN_SIZE] * 3, [0.02, 0.04, 0.06], [0.04, 0.02, MIN_SIZE]],
    )
    assert tube[2].header.stamp.sec == 1 and tube[2].header.stamp.nanosec == 2 * PERIOD_NS
    assert all(m.header.frame_id == "base_link" for m in msg.markers)
    cov[1, 0, 0] = np.nan  # a model's NaN variance: that step has no ellipsoid
    tube = plan_markers("base_link", 0, PERIOD_NS, ee, cov, None).markers[2:]
    assert [m.id for m in tube] == [TUBE, TUBE + 2]


LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


@pytest.mark.ros
def test_arm_sim_latches_the_robot_description(ros):
    ros.add(ArmSimNode(context=ros.context, parameter_overrides=[Parameter("robot", value="arm6")]))
    got = []
    ros.node("description_probe").create_subscription(
        String, ROBOT_DESCRIPTION, lambda m: got.append(m.data), LATCHED
    )
    wait_for(lambda: got, 20, "the late subscriber's robot description")
    assert got[0] == (ROOT / "urdf" / "arm6.urdf").read_text()


@pytest.mark.ros
def test_planner_publishes_markers_of_its_plan(ros):
    node, probe = _planner(ros)
    lock, markers = threading.Lock(), []

    def on_markers(msg):
        with lock:
            markers.append(msg)

    probe.node.create_subscription(MarkerArray, MARKERS, on_markers, 10)
    wait_for(lambda: node.markers.pub.get_subscription_count() > 0, 10, "discovery")
    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes()))
    for k in range(3):
        probe.send_state(k)
        wait_for(lambda: len(probe.starts()) == k + 1, 30, f"controller {k}")
    wait_for(lambda: markers, 30, "the markers of the plan")
    clear, target, path, *tube = markers[0].markers
    assert clear.action == Marker.DELETEALL
    assert (target.pose.position.x, target.pose.position.y) == (0.1, 0.2)
    assert len(path.points) == len(tube) == node.p.horizon + 1
    sizes = np.array([[m.scale.x, m.scale.y, m.scale.z] for m in tube])
    np.testing.assert_allclose(sizes[0], MIN_SIZE)  # the measured state: no uncertainty yet
    assert np.all(np.isfinite(sizes)) and sizes[1:].max() > MIN_SIZE
