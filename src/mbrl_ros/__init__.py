"""mbrl_ros: model-based reinforcement learning for torque-controlled arms on ROS 2.

Sub-packages in data-flow order, each importing only from those before it (checked by
``tests/test_import_order.py``): ``common``, ``robot``, ``control``, ``simulator``, ``data``,
``dynamics``, ``tasks``, ``planning``, ``trajopt``, ``policy``, ``solar``, ``experiments`` (the pure
core: numpy / torch / scipy / mujoco, no rclpy), then ``cli`` (the ``mbrl-ros`` command),
``nodes`` (the thin rclpy nodes) and ``graphs`` (which nodes make up each graph, and launchers).
"""

__version__ = "0.1.0"
