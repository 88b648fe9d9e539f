"""ros2 launch mbrl_ros solar.launch.py model_file:=<model> controller_file:=<controller> ...

The nodes and parameters are described once in mbrl_ros.graphs.description ('solar'); `mbrl-ros
launch solar` starts the same graph without a ROS install.
"""

from mbrl_ros.graphs.launch_support import launch_description


def generate_launch_description():
    return launch_description("solar")
