"""Node ``base_policy``: the lecture's base policy π0 (random torques) as controllers.

π0 goes through the safety layer like every other command source: this node publishes open-loop
controller artifacts (``RandomTorquePolicy.controller``) on ``/mbrl/controller`` and the executor
(``lg_executor``) runs them against the arm with its limit guards, watchdogs and e-stop. It never
publishes torques itself (the mpc graph's planner sends π0 the same way).

* ``sync`` (lockstep graphs): a joint state that the last controller does not cover gets a new
  one of ``horizon`` steps starting at its stamp; the executor waits for it, so the data do not
  depend on timing.
* ``realtime``: a new controller starts at the newest state's stamp whenever the last one covers
  less than half of ``horizon`` ahead, so the executor never runs out while π0 runs.
"""

from __future__ import annotations

import sys

from rclpy.node import Node
from std_msgs.msg import UInt8MultiArray

from mbrl_ros.common.msgconv import JointSample, seconds_to_ns
from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.control.random_torque import RandomTorquePolicy
from mbrl_ros.data.topics import CONTROLLER
from mbrl_ros.nodes.diagnostics import OK, Diagnostics
from mbrl_ros.nodes.intake import STATE_GATE_PARAMS, JointStateIntake
from mbrl_ros.nodes.messages import LATCHED_QOS, STATE_QOS
from mbrl_ros.nodes.params import ConfigError, Param, declare_params, select_joints
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.robot.description import load_robot

PARAMS = [
    Param("robot", "arm7", "robot description: a name in urdf/ or a URDF path"),
    Param("joint_names", [], "joints to command, in command order; [] = all, robot order"),
    Param(
        "control_period",
        0.01,
        "the executor's control period (s): the controllers' step",
        (1e-4, 1.0),
    ),
    Param(
        "mode",
        "sync",
        "sync (answer each uncovered state; lockstep) or realtime (publish ahead)",
        choices=("sync", "realtime"),
    ),
    Param("horizon", 10, "control periods per π0 controller", (1, 100_000)),
    Param("scale", 0.3, "torque amplitude as a fraction of each joint's effort limit", (0.0, 1.0)),
    Param(
        "joint_scale",
        [],
        "per joint, in joint_names order: the amplitude as a fraction of "
        "its effort limit (a robot configuration's effort_fraction); [] = scale for all",
        (0.0, 1.0),
    ),
    Param("hold_steps", 5, "control periods each random torque is held", (1, 100000)),
    Param("seed", 0, "random seed", (0, 2**31 - 1)),
    Param("controller_topic", CONTROLLER, "topic of the controller artifacts"),
] + STATE_GATE_PARAMS


class BasePolicyNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("base_policy", **node_kwargs)
        p = self.p = declare_params(self, PARAMS)
        robot = load_robot(p.robot)
        self.joint_names, idx = select_joints(robot, p.joint_names)
        if p.joint_scale and len(p.joint_scale) != len(idx):
            raise ConfigError(
                f"parameter 'joint_scale' has {len(p.joint_scale)} values for "
                f"{len(idx)} joints {self.joint_names}"
            )
        self.policy = RandomTorquePolicy(
            robot.limits.effort[idx], p.joint_scale or p.scale, p.hold_steps, p.seed
        )
        self.dt_ns = seconds_to_ns(p.control_period)
        self.lead = 0 if p.mode == "sync" else (p.horizon // 2) * self.dt_ns
        self.last: LinearGaussianController | None = None
        self.pub = self.create_publisher(UInt8MultiArray, p.controller_topic, LATCHED_QOS)
        self.diag = Diagnostics(self, "base policy", lambda: (OK, "random torques (π0)", {}))
        self.intake = JointStateIntake(
            self, self.diag, robot, self.joint_names, p, self._on_state, STATE_QOS
        )

    def _on_state(self, s: JointSample) -> None:
        if self.last is not None and self.last.covers(s.stamp_ns + self.lead):
            return
        self.last = self.policy.controller(self.p.horizon, self.dt_ns, s.stamp_ns, self.joint_names)
        self.pub.publish(UInt8MultiArray(data=self.last.to_bytes({"planner": "pi0"})))
        self.diag.count("controllers")


def main(args=None) -> int:
    return run_node(lambda: BasePolicyNode(), "base_policy", args)


if __name__ == "__main__":
    sys.exit(main())
