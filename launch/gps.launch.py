"""ros2 launch mbrl_ros gps.launch.py [robot:=arm7] [target:=0.4,0.0,0.6] [iterations:=10] ...

The nodes and parameters are described once in mbrl_ros.graphs ('gps'); `mbrl-ros launch gps`
starts the same graph without a ROS install.
"""
from mbrl_ros.launch_support import launch_description


def generate_launch_description():
    return launch_description("gps")
