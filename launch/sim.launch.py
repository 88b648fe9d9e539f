"""ros2 launch mbrl_ros sim.launch.py [robot:=arm7] [mode:=lockstep] [duration:=60.0] ...

The nodes and parameters are described once in mbrl_ros.graphs.description ('sim'); `mbrl-ros launch
sim` starts the same graph without a ROS install.
"""

from mbrl_ros.graphs.launch_support import launch_description


def generate_launch_description():
    return launch_description("sim")
