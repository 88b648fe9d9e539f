"""Thin ROS 2 nodes: messages ↔ core objects, parameters, scheduling. No maths here."""
