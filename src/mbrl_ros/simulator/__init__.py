"""The simulated arm that stands in for a real one (pure core): MuJoCo stepping at the control
period with a ros2_control-like effort interface, and an offscreen camera."""
