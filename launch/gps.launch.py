"""ros2 launch mbrl_ros gps.launch.py [robot:=arm7] [target:=0.4,0.0,0.6] [iterations:=10] ...

Several conditions and the network policy: initial_position:=0.3,0.5;-0.5,1.0 (';' between the
conditions' poses), target:=x,y,z (shared) or one x,y,z per condition, algorithm:=mdgps (the
policy is published on /mbrl/policy and written to output_dir/policy.safetensors; run it with
`ros2 launch mbrl_ros policy.launch.py policy_file:=...`). Peg insertion on the lockstep sim:
task:=insertion (target:= the holes' top centres; config/gps_insertion.yaml), its policy with
`ros2 launch mbrl_ros policy.launch.py task:=insertion policy_file:=... episode_length:=0.8`.

The nodes and parameters are described once in mbrl_ros.graphs.description ('gps'); `mbrl-ros launch
gps` starts the same graph without a ROS install.
"""

from mbrl_ros.graphs.launch_support import launch_description


def generate_launch_description():
    return launch_description("gps")
