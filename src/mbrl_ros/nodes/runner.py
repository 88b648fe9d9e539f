"""Common ``main()`` for the nodes: init, construct, spin, clean shutdown on SIGINT/SIGTERM.

A node that cannot start (bad parameter, missing file) prints one clear line naming the problem
and exits with status 2 instead of a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from mbrl_ros.nodes.params import ConfigError

STARTUP_ERRORS = (ConfigError, FileNotFoundError, ValueError)
EXIT_CONFIG = 2


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """Run the node built by ``make_node`` until shutdown; returns the process exit status."""
    rclpy.init(args=args)
    try:
        node = make_node()
    except STARTUP_ERRORS as exc:
        print(f"[{name}] cannot start: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return EXIT_CONFIG
    except (KeyboardInterrupt, ExternalShutdownException, RCLError):
        if rclpy.ok():  # not a signal arriving during construction
            raise
        return 0
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:  # RCLError, or a failed take_message: a signal can invalidate the
        if rclpy.ok():    # context under a spinning executor
            raise
    finally:
        close = getattr(node, "close", None)
        if close is not None:
            close()
        node.destroy_node()
        rclpy.try_shutdown()
    return getattr(node, "exit_status", 0)
