"""Services that control a run, shared by the nodes: ``~/save_<what>`` (std_srvs/Trigger) writes
the node's current artifact (model, controller, policy: the safetensors bytes it publishes) to
the file its ``<what>_path`` parameter names, settable at run time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rclpy.node import Node
from std_srvs.srv import Trigger

from mbrl_ros.common.artifacts import write_file
from mbrl_ros.nodes.params import Param


def save_path_param(what: str) -> Param:
    """The runtime parameter ``<what>_path``: where ``~/save_<what>`` writes."""
    return Param(
        f"{what}_path",
        "",
        f"file that the ~/save_{what} service writes the current "
        f"{what} artifact to (safetensors; a relative path is relative to the node's "
        "working directory; an existing file is replaced)",
        runtime=True,
    )


def save_artifact(path: str, blob: bytes | None, what: str) -> tuple[bool, str]:
    """Write ``blob`` atomically to ``path``: (True, where) or (False, why not), naming the
    parameter ``<what>_path`` when the path is the problem."""
    param = f"parameter '{what}_path'"
    if not path:
        return False, f"{param} is empty: set it to a file path first (ros2 param set)"
    if blob is None:
        return False, f"no {what} to save yet"
    target = Path(path).expanduser()
    if target.is_dir():
        return False, f"{param} = {path!r} is a directory; name a file in it"
    if not target.parent.is_dir():
        return False, f"{param} = {path!r}: directory {str(target.parent)!r} does not exist"
    try:
        write_file(target, blob)
    except OSError as exc:
        return False, f"{param} = {path!r}: cannot write it ({exc.strerror or exc})"
    return True, f"{what} saved to {target.resolve()} ({len(blob)} bytes)"


def add_save_service(node: Node, what: str, blob: Callable[[], bytes | None]) -> None:
    """Serve ``~/save_<what>`` on ``node``: the bytes ``blob()`` returns (None: nothing yet) to
    the file of the node's ``<what>_path`` parameter (declared with ``save_path_param``)."""

    def serve(_request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        path = node.get_parameter(f"{what}_path").value
        response.success, response.message = save_artifact(path, blob(), what)
        if response.success:  # (rclpy: one severity per logging call site)
            node.get_logger().info(f"~/save_{what}: {response.message}")
        else:
            node.get_logger().warning(f"~/save_{what}: {response.message}")
        return response

    node.create_service(Trigger, f"~/save_{what}", serve)
