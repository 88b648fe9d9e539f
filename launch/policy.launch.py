"""ros2 launch mbrl_ros policy.launch.py policy_file:=<policy.safetensors> [episodes:=10] ...

The nodes and parameters are described once in mbrl_ros.graphs.description ('policy'); `mbrl-ros
launch policy` starts the same graph without a ROS install.
"""

from mbrl_ros.graphs.launch_support import launch_description


def generate_launch_description():
    return launch_description("policy")
