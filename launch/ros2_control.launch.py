"""ros2 launch mbrl_ros ros2_control.launch.py [robot:=arm7] [headless:=true] [use_sim_time:=false]
[controllers:=FILE]

On a ROS install with mujoco_ros2_control (``apt install ros-$ROS_DISTRO-mujoco-ros2-control
ros-$ROS_DISTRO-ros2-controllers``): the arm under controller_manager, simulated by MuJoCo, with
joint_state_broadcaster (/joint_states) and the effort ForwardCommandController 'effort_controller'
(/effort_controller/commands), as a ros2_control robot would be. Drive it with
``ros2 launch mbrl_ros mpc.launch.py robot:=arm7 sim:=false robot_compensates_gravity:=false``
(MuJoCo's arm feels gravity). robot_state_publisher publishes /robot_description and TF.

use_sim_time:=false (the default) stamps the joint states with the wall clock, as a robot does and
as the 'mpc' graph with sim:=false expects; MuJoCo then runs at real-time speed.
"""

import os
import tempfile

from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

ARGUMENTS = {
    "robot": ("arm7", "URDF path or a package arm (arm2, arm6, arm7)"),
    "headless": ("true", "run MuJoCo without its window"),
    "use_sim_time": ("false", "stamp with MuJoCo's /clock instead of the wall clock"),
    "controllers": ("ros2_controllers.yaml", "controllers file (path or a name in config/)"),
}


def _flag(context, name: str) -> bool:
    value = LaunchConfiguration(name).perform(context)
    if value not in ("true", "false"):
        raise ValueError(f"{name}:={value} must be true or false")
    return value == "true"


def _nodes(context):
    from mbrl_ros.robot.ros2_control import EFFORT_CONTROLLER, mujoco_setup

    setup = mujoco_setup(
        LaunchConfiguration("robot").perform(context),
        tempfile.mkdtemp(prefix="mbrl_ros2_control-"),
        headless=_flag(context, "headless"),
        controllers=LaunchConfiguration("controllers").perform(context),
    )
    sim_time = {"use_sim_time": _flag(context, "use_sim_time")}
    description = {"robot_description": ParameterValue(setup.description, value_type=str)}
    # Humble's controller_manager reads the description from its own topic.
    humble = os.environ.get("ROS_DISTRO") == "humble"
    spawners = [
        Node(
            package="controller_manager",
            executable="spawner",
            output="both",
            arguments=[name, "--param-file", str(setup.controllers)],
        )
        for name in ("joint_state_broadcaster", EFFORT_CONTROLLER)
    ]
    return [
        Node(
            package="robot_state_publisher",
            executable="robot_state_publisher",
            output="both",
            parameters=[description, sim_time],
        ),
        # mujoco_ros2_control's build of ros2_control_node (same parameters as the upstream one)
        Node(
            package="mujoco_ros2_control",
            executable="ros2_control_node",
            output="both",
            parameters=[sim_time, str(setup.controllers)],
            remappings=[("~/robot_description", "/robot_description")] if humble else [],
            on_exit=Shutdown(),
        ),
    ] + spawners


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=default, description=text)
            for name, (default, text) in ARGUMENTS.items()
        ]
        + [OpaqueFunction(function=_nodes)]
    )
