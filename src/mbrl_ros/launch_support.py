"""Turns a graph from ``mbrl_ros.graphs`` into a ``launch`` LaunchDescription.

Used by ``launch/*.launch.py`` on a ROS 2 install (``ros2 launch mbrl_ros <name>.launch.py``); the
``launch`` and ``launch_ros`` packages are imported only here, so the rest of the package works
without them.
"""
from __future__ import annotations

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mbrl_ros.graphs import GRAPHS, graph
from mbrl_ros.paths import share_path


def launch_description(name: str) -> LaunchDescription:
    """Launch arguments of graph ``name`` plus its nodes, resolved when the launch runs."""
    g = GRAPHS[name]

    def nodes(context):
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in g.args}
        return [
            Node(package="mbrl_ros", executable=spec.executable, name=spec.name,
                 output="screen", emulate_tty=True,
                 parameters=[str(share_path("config", c)) for c in spec.config] + [spec.parameters],
                 remappings=list(spec.remappings),
                 on_exit=Shutdown() if spec.required else None)
            for spec in graph(name, **values)
        ]

    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
         for a in g.args] + [OpaqueFunction(function=nodes)])
