"""The ``mpc_planner`` node over real DDS: π0 controllers during the warm-up, then (with
``wait_for_model``) the answer to a joint state is held back until the first model arrives, and
the controller for that very state is a plan; models for other joints are refused."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from geometry_msgs.msg import PointStamped
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import UInt8MultiArray

from mbrl_ros.controller import LinearGaussianController
from mbrl_ros.dynamics.base import ModelSignature
from mbrl_ros.dynamics.catalog import new_model
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.msgconv import ns_to_sec_nanosec
from mbrl_ros.nodes.messages import LATCHED_QOS, STATE_QOS, TARGET_QOS
from mbrl_ros.nodes.mpc_planner import MPCPlannerNode
from mbrl_ros.robot import load_robot

from ros_harness import wait_for

pytestmark = pytest.mark.ros
torch.set_num_threads(1)

PERIOD_NS = 50_000_000
ARM2 = load_robot("arm2")


def _model_bytes(joint_names=ARM2.joint_names) -> bytes:
    data = random_torque_dataset(ARM2, 3, 40, control_period=0.05, hold_steps=2)
    if tuple(joint_names) != ARM2.joint_names:  # the same numbers, labelled for other joints
        data = type(data)(data.states, data.actions, data.next_states, data.episodes,
                          data.stamps, tuple(joint_names), data.dt,
                          tuple(f"{k}/{j}" for k in ("position", "velocity")
                                for j in joint_names))
    model = new_model("mlp", ModelSignature.of(data), "cpu", hidden=16, layers=1, max_epochs=3)
    model.fit(data, None)
    return model.to_bytes()


class Probe:
    def __init__(self, ros):
        self.node = ros.node("planner_probe")
        self.lock = threading.Lock()
        self.controllers: list[LinearGaussianController] = []
        self.state_pub = self.node.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.target_pub = self.node.create_publisher(PointStamped, "/mbrl/target", TARGET_QOS)
        self.model_pub = self.node.create_publisher(UInt8MultiArray, "/mbrl/dynamics_model",
                                                    LATCHED_QOS)
        self.node.create_subscription(UInt8MultiArray, "/mbrl/controller", self._on_ctrl,
                                      LATCHED_QOS)

    def _on_ctrl(self, msg):
        with self.lock:
            self.controllers.append(LinearGaussianController.from_bytes(bytes(msg.data)))

    def send_state(self, k: int) -> None:
        msg = JointState(name=list(ARM2.joint_names), position=[0.3, 0.4],
                         velocity=[0.0, 0.0], effort=[0.0, 0.0])
        msg.header.stamp.sec, msg.header.stamp.nanosec = ns_to_sec_nanosec(k * PERIOD_NS)
        self.state_pub.publish(msg)

    def starts(self) -> list[int]:
        with self.lock:
            return [c.start_ns for c in self.controllers]


@pytest.fixture
def planner(ros):
    node = MPCPlannerNode(context=ros.context, parameter_overrides=[
        Parameter(k, value=v) for k, v in dict(
            robot="arm2", control_period=0.05, planner="ilqr", horizon=5, iterations=1,
            random_seconds=0.1, wait_for_model=True).items()])
    ros.add(node)
    probe = Probe(ros)
    wait_for(lambda: probe.state_pub.get_subscription_count() > 0
             and probe.node.count_publishers("/mbrl/controller") > 0, 10, "discovery")
    target = PointStamped()
    target.point.x, target.point.y, target.point.z = 0.1, 0.2, 0.07
    probe.target_pub.publish(target)
    wait_for(lambda: node.targets.at(0) is not None, 10, "the target")
    return node, probe


def test_waits_for_the_first_model_then_plans_for_the_held_state(planner):
    node, probe = planner
    for k in range(2):
        probe.send_state(k)
        wait_for(lambda: len(probe.starts()) == k + 1, 10, f"π0 controller {k}")
    assert probe.starts() == [0, PERIOD_NS] and node.diag.counters["controllers_pi0"] == 2
    probe.send_state(2)
    wait_for(lambda: node.pending is not None, 10, "the held state")
    assert len(probe.starts()) == 2  # state 2 is held: no answer yet

    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes()))
    wait_for(lambda: len(probe.starts()) == 3, 30, "the plan for the held state")
    assert probe.starts()[2] == 2 * PERIOD_NS and node.pending is None
    assert node.diag.counters["controllers_plan"] == 1
    probe.send_state(3)
    wait_for(lambda: len(probe.starts()) == 4, 30, "the next plan")


def test_a_model_for_other_joints_is_refused_and_the_state_stays_held(planner):
    node, probe = planner
    for k in range(3):
        probe.send_state(k)
        wait_for(lambda: node.last_stamp == k * PERIOD_NS, 10, f"state {k}")
    wait_for(lambda: node.pending is not None, 10, "the held state")
    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes(["shoulder", "elbow"])))
    wait_for(lambda: node.diag.counters["refused_models"] == 1, 10, "the refusal")
    assert node.pending is not None and node.diag.counters["controllers_pi0"] == 2
    assert np.isnan(node.last_cost)
