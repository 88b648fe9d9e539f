"""Argument checks shared by the ``mbrl-ros`` commands, so that bad input is refused before any
work, in one line that names the argument, the value and what is allowed.

* ``number``, ``number_list``, ``boolean``, ``input_file``, ``topic_name`` and ``torch_device``
  are argparse ``type`` functions (checked while parsing);
* ``check_output``, ``check_bags`` and ``load_robot_arg`` run at the start of a command, before
  it reads or writes anything else;
* ``error_line`` is the one format of an error;
* ``confine_dds`` gives a command that talks over DDS the environment ``mbrl-ros launch`` gives
  its graphs.
"""

from __future__ import annotations

import argparse
import math
import operator
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def error_line(prog: str, message: object) -> str:
    """``<prog>: error: <message>`` on one line."""
    return f"{prog}: error: {' '.join(str(message).split())}"


_BOUNDS = (
    (">", "gt", operator.gt),
    ("≥", "ge", operator.ge),
    ("<", "lt", operator.lt),
    ("≤", "le", operator.le),
)


def number(kind: type = float, **bounds: float) -> Callable[[str], float | int]:
    """An argparse type: a finite ``kind`` (float or int) within ``bounds`` (any of gt, ge, lt,
    le), e.g. ``number(float, gt=0)``, ``number(int, ge=1)``."""
    checks = [(symbol, bounds.pop(key), op) for symbol, key, op in _BOUNDS if key in bounds]
    if bounds:
        raise TypeError(f"unknown bounds {sorted(bounds)}")
    allowed = ("an integer" if kind is int else "a finite number") + " and".join(
        f" {symbol} {limit:g}" for symbol, limit, _ in checks
    )

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if (
            value is None
            or not math.isfinite(value)
            or not all(op(value, limit) for _, limit, op in checks)
        ):
            raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}")
        return value

    return parse


def number_list(kind: type = float, **bounds: float) -> Callable[[str], list]:
    """An argparse type: comma-separated ``number(kind, **bounds)`` values, e.g. '0,-0.3,1.2'."""
    item = number(kind, **bounds)

    def parse(text: str) -> list:
        parts = text.split(",")
        if not text.strip() or any(not p.strip() for p in parts):
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers")
        return [item(p.strip()) for p in parts]

    return parse


def boolean(text: str) -> bool:
    """An argparse type: 'true' or 'false' (any case)."""
    value = {"true": True, "false": False}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return value


def input_file(text: str) -> str:
    """An argparse type: an existing, readable file (not a folder)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file {text!r}")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text!r} is not readable")
    return text


def topic_name(text: str) -> str:
    """An argparse type: a valid ROS 2 topic name."""
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_topic_name import validate_topic_name

    try:
        validate_topic_name(text)
    except InvalidTopicNameException as exc:
        reason = str(exc).splitlines()[0].removeprefix("Invalid topic name: ").rstrip(":")
        raise argparse.ArgumentTypeError(f"{text!r} is not a topic name: {reason}") from None
    return text


def namespace_name(text: str) -> str:
    """An argparse type: a ROS 2 namespace, made absolute ('' → '/')."""
    from mbrl_ros.data.topics import check_namespace

    try:
        return check_namespace(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def torch_device(text: str) -> str:
    """An argparse type: a torch device of this machine (cpu, cuda or cuda:N)."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has no CUDA device (torch {torch.__version__}); use cpu"
            )
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    return text


def check_output(
    path: str | os.PathLike, option: str, force: bool | None = None, suffix: str = ""
) -> Path:
    """``path`` as a file to write for ``option``: not a folder, in an existing writable folder,
    ending in ``suffix`` (when given) and, with ``force`` False, not existing yet (None: may be
    overwritten). ValueError naming the option otherwise."""
    out = Path(path)
    bad = f"{option} {str(path)!r}"
    if out.is_dir():
        raise ValueError(f"{bad} is a folder; give a file name")
    if suffix and out.suffix.lower() != suffix:
        raise ValueError(f"{bad} must end in {suffix}")
    folder = out.parent
    if not folder.is_dir():
        raise ValueError(f"{bad}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{bad}: folder {str(folder)!r} is not writable")
    if force is False and out.exists():
        raise ValueError(f"{bad} exists; use --force to overwrite it")
    return out


def load_robot_arg(value: str, option: str, ee_link: str | None = None):
    """The RobotDescription of ``option``'s value (a name in urdf/ or a URDF file; ``ee_link``:
    its end-effector link, default the URDF's); ValueError naming the option."""
    from mbrl_ros.robot.description import load_robot

    try:
        return load_robot(value, ee_link)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{option} {value!r}: {exc}") from None


def check_bags(paths: Iterable[str]) -> None:
    """Open and close each bag (metadata and file summaries only): BagError naming the first
    that is not a readable rosbag2 bag."""
    from mbrl_ros.data.bags import BagReader

    for path in paths:
        BagReader(path).close()


def confine_dds(command: str) -> None:
    """Before ``rclpy.init``: DDS limited to this machine and a domain id, as ``mbrl-ros launch``
    sets them for a graph (each only when the user has not); prints both, for other terminals."""
    from mbrl_ros.common.dds import ros_environment

    env = ros_environment()
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID"):
        os.environ[key] = env[key]
    print(
        f"[mbrl-ros] {command}: ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} "
        f"ROS_AUTOMATIC_DISCOVERY_RANGE={env['ROS_AUTOMATIC_DISCOVERY_RANGE']} (export these "
        f"to match a graph's)",
        flush=True,
    )
