"""ros2 launch mbrl_ros mpc.launch.py [robot:=arm7] [train_episodes:=20] [final_eval_episodes:=10]
...

The nodes and parameters are described once in mbrl_ros.graphs.description ('mpc'); `mbrl-ros launch
mpc` starts the same graph without a ROS install.
"""

from mbrl_ros.graphs.launch_support import launch_description


def generate_launch_description():
    return launch_description("mpc")
