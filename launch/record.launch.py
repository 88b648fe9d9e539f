"""ros2 launch mbrl_ros record.launch.py [robot:=arm7] [episodes:=5] [episode_length:=5.0]
[bag:=...]

The nodes and parameters are described once in mbrl_ros.graphs.description ('record'); `mbrl-ros
launch record` starts the same graph without a ROS install.
"""

from mbrl_ros.graphs.launch_support import launch_description


def generate_launch_description():
    return launch_description("record")
