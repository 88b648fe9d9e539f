"""Node ``base_policy``: answers each joint state with a random torque command (π0).

Each command is tagged with the stamp of the joint state it answers, so a lockstep simulator pairs
them exactly. States that do not advance in time are dropped with a warning.
"""
from __future__ import annotations

import sys

from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_ros.msgconv import MessageError, read_joint_state
from mbrl_ros.nodes.diagnostics import OK, Diagnostics
from mbrl_ros.nodes.messages import COMMAND_QOS, STATE_QOS, command_msg
from mbrl_ros.nodes.params import Param, declare_params, select_joints
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.policy.random_torque import RandomTorquePolicy
from mbrl_ros.robot import load_robot

PARAMS = [
    Param("robot", "arm7", "robot description: a name in urdf/ or a URDF path"),
    Param("joint_names", [], "joints to command, in command order; [] = all, robot order"),
    Param("scale", 0.3, "torque amplitude as a fraction of each joint's effort limit", (0.0, 1.0)),
    Param("hold_steps", 5, "control periods each random torque is held", (1, 100000)),
    Param("seed", 0, "random seed", (0, 2**31 - 1)),
    Param("command_topic", "/effort_controller/commands", "topic of the torque commands"),
]


class BasePolicyNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("base_policy", **node_kwargs)
        p = declare_params(self, PARAMS)
        robot = load_robot(p.robot)
        self.joint_names, idx = select_joints(robot, p.joint_names)
        self.policy = RandomTorquePolicy(robot.limits.effort[idx], p.scale, p.hold_steps, p.seed)
        self.last_stamp = -1
        self.pub = self.create_publisher(Float64MultiArray, p.command_topic, COMMAND_QOS)
        self.create_subscription(JointState, "/joint_states", self._on_state, STATE_QOS)
        self.diag = Diagnostics(self, "base policy", lambda: (OK, "random torques", {}))

    def _on_state(self, msg: JointState) -> None:
        try:
            state = read_joint_state(msg, self.joint_names)
        except MessageError as exc:
            self.diag.warn("rejected_state", f"joint state rejected: {exc}")
            return
        if state.stamp_ns == self.last_stamp:
            return  # the same state re-sent
        if state.stamp_ns < self.last_stamp:
            self.diag.warn("stale_state", f"joint state stamp {state.stamp_ns} ns goes back "
                                          f"before {self.last_stamp} ns: dropped")
            return
        self.last_stamp = state.stamp_ns
        self.pub.publish(command_msg(self.policy.act(), state.stamp_ns))
        self.diag.count("commands")


def main(args=None) -> int:
    return run_node(lambda: BasePolicyNode(), "base_policy", args)


if __name__ == "__main__":
    sys.exit(main())
