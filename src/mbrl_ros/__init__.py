"""mbrl_ros: model-based reinforcement learning for torque-controlled arms on ROS 2.

The modules directly in this package (and in its sub-packages other than ``nodes``) are the pure
core: numpy / torch / scipy / mujoco only, no rclpy. ``mbrl_ros.nodes`` holds the thin ROS 2
nodes; ``mbrl_ros.graphs`` describes which nodes make up each runnable graph.
"""

__version__ = "0.1.0"
