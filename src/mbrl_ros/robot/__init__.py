"""The robot from its URDF (pure core): description, forward kinematics and MuJoCo model
(``description``), gravity torque, stable gains, per-robot settings (``config``) and its
ros2_control block."""
