"""What a node that homes the arm between episodes or samples publishes (``episode_manager``,
``gps_trainer``): on ``/mbrl/homing_controller`` (transient local) the homing controller from a
state to a goal pose (``mbrl_ros.control.homing``: the min-jerk move, then the hold), and, when the
arm has settled, the same controller valid only until a stamp: the hand-over to the controllers
that follow (the executor prefers a valid homing controller)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rclpy.node import Node
from std_msgs.msg import UInt8MultiArray

from mbrl_ros.common.msgconv import JointSample, seconds_to_ns
from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.control.homing import HomingSettings, homing_controller, homing_gains
from mbrl_ros.data.topics import HOMING_CONTROLLER
from mbrl_ros.nodes.messages import LATCHED_QOS
from mbrl_ros.robot.description import RobotDescription


class HomingSender:
    """Homing controllers for ``joint_names`` of ``robot`` (``settings``): steps of
    ``homing_period`` s, PD gains stable at it, the move at ``homing_speed`` of the velocity
    limits, then a hold of ``homing_timeout`` s (the longest wait for settling)."""

    def __init__(
        self,
        node: Node,
        robot: RobotDescription,
        joint_names: Sequence[str],
        settings: HomingSettings,
    ):
        self.robot, self.names = robot, list(joint_names)
        self.dt_ns = seconds_to_ns(settings.homing_period)
        self.gains = homing_gains(robot, self.names, settings.homing_period)
        self.speed_fraction, self.hold = settings.homing_speed, settings.homing_timeout
        self.controller: LinearGaussianController | None = None
        self.pub = node.create_publisher(UInt8MultiArray, HOMING_CONTROLLER, LATCHED_QOS)

    def home(self, s: JointSample, goal: np.ndarray, valid_until_ns: int | None = None) -> None:
        """Publish the homing controller from state ``s`` (its stamp) to ``goal`` (n,) rad
        (valid until ``valid_until_ns`` if given: see ``release``)."""
        self.controller = homing_controller(
            s.position,
            goal,
            s.stamp_ns,
            self.dt_ns,
            robot=self.robot,
            joint_names=self.names,
            speed_fraction=self.speed_fraction,
            hold=self.hold,
            gains=self.gains,
        )
        if valid_until_ns is None:
            self.pub.publish(UInt8MultiArray(data=self.controller.to_bytes()))
        else:
            self.release(valid_until_ns)

    def release(self, valid_until_ns: int) -> None:
        """Republish the current homing controller valid until ``valid_until_ns`` (nothing
        without one). On a lockstep arm, released in steps, it lets the sender decide at a state
        whether homing or what follows it answers that state."""
        if self.controller is not None:
            self.pub.publish(
                UInt8MultiArray(data=self.controller.with_validity(valid_until_ns).to_bytes())
            )

    def hand_over(self, stamp_ns: int) -> None:
        """Republish the current homing controller valid only before ``stamp_ns`` (nothing
        without one)."""
        if self.controller is not None:
            self.pub.publish(
                UInt8MultiArray(data=self.controller.with_validity(stamp_ns).to_bytes())
            )
            self.controller = None
