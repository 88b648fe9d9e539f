"""Foundations every other part uses (no robot, no ROS): typed settings, resource paths, the
artifact codec (safetensors), duck-typed message conversion, the DDS environment of a run and the
package's parameter files."""
