"""Faults in real time: a planner killed (SIGKILL) while the executor runs its plans against the
simulated arm in real time. The executor holds from the first joint state stamped at or after
the last plan's stated validity (``valid_until_ns``: the next replan due + ``plan_validity``),
so within one control period of it, and not before. Asserted per state stamp, which does not
depend on the machine's load: every command is the plan's torque for a state before the
validity or the hold law for one at or after it, for a state it can answer (stamped up to three
periods before the command's send-time tag)."""

import copy
import signal
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import PointStamped
from rclpy.parameter import Parameter
from ros_harness import wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, UInt8MultiArray

from mbrl_ros.common.msgconv import read_command, read_joint_state, seconds_to_ns
from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.dynamics.base import ModelSignature
from mbrl_ros.dynamics.catalog import new_model
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.nodes.lg_executor import LGExecutorNode
from mbrl_ros.nodes.messages import LATCHED_QOS, TARGET_QOS, time_msg
from mbrl_ros.robot.description import load_robot

pytestmark = pytest.mark.ros

ROBOT = load_robot("arm2")
NAMES = list(ROBOT.joint_names)
N = len(NAMES)
DT = 0.01
DT_NS = seconds_to_ns(DT)
DEEP = 100_000
HORIZON = 50  # steps: a plan covers 0.5 s but is valid for 0.21 s (next replan + 0.2 s)


class Recorder:
    """The sim's states, the executor's commands and the planner's controllers."""

    def __init__(self, ros):
        node = self.node = ros.node("fault_probe")
        self.lock = threading.Lock()
        self.states, self.commands, self.controllers = {}, {}, []
        node.create_subscription(JointState, "/joint_states", self._on_state, DEEP)
        node.create_subscription(
            Float64MultiArray, "/effort_controller/commands", self._on_command, DEEP
        )
        node.create_subscription(
            UInt8MultiArray, "/mbrl/controller", self._on_controller, LATCHED_QOS
        )
        self.model_pub = node.create_publisher(UInt8MultiArray, "/mbrl/dynamics_model", LATCHED_QOS)
        self.target_pub = node.create_publisher(PointStamped, "/mbrl/target", TARGET_QOS)

    def _on_state(self, msg):
        s = read_joint_state(msg, NAMES)
        with self.lock:
            self.states[s.stamp_ns] = s

    def _on_command(self, msg):
        u, tag = read_command(msg, N)
        if tag is not None:
            with self.lock:
                self.commands[tag] = u

    def _on_controller(self, msg):
        c = LinearGaussianController.from_bytes(bytes(msg.data))
        with self.lock:
            self.controllers.append(c)


def _model_bytes() -> bytes:
    data = random_torque_dataset(ROBOT, 3, 40, control_period=DT)
    model = new_model("mlp", ModelSignature.of(data), "cpu", hidden=16, layers=1, max_epochs=5)
    model.fit(data, None)
    return model.to_bytes()


def test_a_killed_planner_is_held_within_one_control_period_of_its_plans_validity(
    ros, node_process
):
    probe = Recorder(ros)
    executor = LGExecutorNode(
        context=ros.context,
        parameter_overrides=[
            Parameter(k, value=v)
            for k, v in {
                "robot": "arm2",
                "mode": "realtime",
                "control_period": DT,
                "use_sim_time": True,
                "max_state_age": 0.1,
                "heartbeat_timeout": 0.0,
            }.items()
        ],
    )
    ros.add(executor)
    planner = node_process(
        "mpc_planner",
        {
            "robot": "arm2",
            "control_period": DT,
            "planner": "ilqr",
            "horizon": HORIZON,
            "iterations": 1,
            "plan_validity": 0.2,
            "use_sim_time": True,
            "torch_threads": 1,
            "mode": "realtime",
        },
    )
    node_process(
        "arm_sim",
        {"robot": "arm2", "mode": "realtime", "control_period": DT, "command_timeout": 1.0},
    )
    target = PointStamped()
    target.header.stamp = time_msg(0)
    target.point.x, target.point.y, target.point.z = 0.1, 0.15, 0.07
    probe.target_pub.publish(target)
    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes()))
    wait_for(
        lambda: sum(bool(np.any(c.K)) for c in probe.controllers) >= 5,
        60,
        f"five iLQR plans ({planner.output()[-2000:]})",
    )  # π0's controllers: K = 0
    planner.proc.send_signal(signal.SIGKILL)
    planner.proc.wait(timeout=10)
    time.sleep(0.5)  # of wall time: 50 control periods of the arm
    with probe.lock:
        last = probe.controllers[-1]
        states, commands = dict(probe.states), dict(probe.commands)
    assert last.valid_until_ns < last.end_ns  # the plan states less validity than it covers
    damping = executor.safety.gains["damping"]
    # the last answered states before the validity: the plan arrived ≥ 0.1 s before them
    before = [t for t in commands if last.valid_until_ns - 3 * DT_NS <= t < last.valid_until_ns]
    after = sorted(t for t in commands if t >= last.valid_until_ns)
    assert before and len(after) > 10, (len(before), len(after))
    safety = copy.deepcopy(executor.safety)  # the executor's guards and clamp, offline

    def expected(stamp):  # the plan's torque before the validity, the hold law from it on
        s = states[stamp]
        if stamp < last.valid_until_ns:
            u = last.act(np.concatenate([s.position, s.velocity]), last.index(stamp))
            return safety.filter(s.position, s.velocity, u)[0]
        return np.clip(-damping * s.velocity, -ROBOT.limits.effort, ROBOT.limits.effort)

    # a command is tagged with the (sim) time it was sent: it answers a state stamped at or up
    # to a few periods before its tag (under load the executor's clock runs ahead of its queue)
    for t in before + after:
        answered = [k for k in states if t - 3 * DT_NS <= k <= t]
        assert any(
            np.allclose(commands[t], expected(k), rtol=1e-7, atol=1e-12) for k in answered
        ), (t, commands[t], {k: expected(k) for k in answered})
    counters = executor.diag.counters  # stale (past its validity), then expired (past its end)
    assert counters["plan_stale"] > 0 and counters["plan_stale"] + counters["plan_expired"] >= len(
        after
    )
