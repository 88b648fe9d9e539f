"""Turns a graph from ``mbrl_ros.graphs.description`` into a ``launch`` LaunchDescription.

Used by ``launch/*.launch.py`` on a ROS 2 install (``ros2 launch mbrl_ros <name>.launch.py``); the
``launch`` and ``launch_ros`` packages are imported only here, so the rest of the package works
without them. ``namespace:=/robot1`` puts every node in that namespace; without it the nodes take
the namespace of an including launch file's PushRosNamespace, if any.

As with ``mbrl-ros launch``, the graph ends when a required node finishes, and any node's failure
(a non-zero exit) stops the whole graph and makes ``ros2 launch`` return non-zero: the launch
service returns 1 after an error in its event loop (an exception it caught, or one reported to the
loop's exception handler, which it installs for that), so a failure is reported there.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, Shutdown
from launch.events import Shutdown as ShutdownEvent
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from mbrl_ros.common.paths import share_path
from mbrl_ros.graphs.description import GRAPHS, NodeSpec, graph


def launch_description(name: str) -> LaunchDescription:
    """Launch arguments of graph ``name`` plus its nodes, resolved when the launch runs."""
    g = GRAPHS[name]

    def nodes(context):
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in g.args}
        return [
            Node(
                package="mbrl_ros",
                executable=spec.executable,
                name=spec.name,
                namespace=None if spec.namespace == "/" else spec.namespace,
                output="screen",
                emulate_tty=True,
                parameters=[str(share_path("config", c)) for c in spec.config] + [spec.parameters],
                remappings=list(spec.remappings),
                on_exit=_on_exit(spec),
            )
            for spec in graph(name, **values)
        ]

    return LaunchDescription(
        [
            DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
            for a in g.args
        ]
        + [OpaqueFunction(function=nodes)]
    )


def _on_exit(spec: NodeSpec):
    """The exit handler of ``spec``'s process: a failure stops the graph with an error; a
    required node's clean exit ends the graph."""

    def on_exit(event, context):
        if event.returncode != 0:
            message = (
                f"node '{spec.name}' failed (exit status {event.returncode}): stopping the graph"
            )
            context.asyncio_loop.call_exception_handler({"message": message})
            return EmitEvent(event=ShutdownEvent(reason=message))
        if spec.required:
            return Shutdown(reason=f"required node '{spec.name}' finished")
        return None

    return on_exit
