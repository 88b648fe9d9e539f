"""Foundations every other part uses (no robot, no ROS): typed settings, resource paths, the
artifact codec (safetensors), duck-typed message conversion and the DDS environment of a run."""
