"""Reading ROS messages into arrays, duck-typed (works on rclpy messages and on messages that the
``rosbags`` library deserialised from a bag). No rclpy import: this is shared by nodes and by the
offline data tools.

Command tagging: a command on ``/effort_controller/commands`` (std_msgs/Float64MultiArray) may name
the joint-state stamp it answers in its first layout dimension's label, ``"stamp=<ns>"`` (integer
nanoseconds). ros2_control's ForwardCommandController ignores the layout, so tagged commands stay
valid for a real arm; the simulator uses the tag in lockstep to match commands to steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STAMP_LABEL_PREFIX = "stamp="


class MessageError(ValueError):
    """A received message is malformed; the text says what is wrong."""


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (``sec``, ``nanosec``) → integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def seconds_to_ns(seconds: float) -> int:
    """Seconds → integer nanoseconds, rounded to the nearest nanosecond."""
    return int(round(float(seconds) * 1e9))


def ns_to_sec_nanosec(ns: int) -> tuple[int, int]:
    """Integer nanoseconds (≥ 0) → (sec, nanosec) for builtin_interfaces/Time."""
    if ns < 0:
        raise ValueError(f"negative time {ns} ns")
    return int(ns // 1_000_000_000), int(ns % 1_000_000_000)


@dataclass(frozen=True)
class JointSample:
    """One joint state in a fixed joint order: stamp (ns) and (n,) position (rad), velocity
    (rad/s), effort (N·m; NaN where the message carried none)."""

    stamp_ns: int
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


def read_joint_state(msg, joint_names: Sequence[str]) -> JointSample:
    """sensor_msgs/JointState → JointSample ordered as ``joint_names``.

    The message may carry more joints than asked for, in any order. Raises MessageError when a joint
    is missing, names are duplicated, array lengths disagree with ``name``, position or velocity is
    absent, any used value is not finite, or the stamp is negative.
    """
    names = list(msg.name)
    if len(set(names)) != len(names):
        raise MessageError(f"JointState has duplicate joint names {names}")
    n_msg = len(names)
    pos, vel, eff = (
        np.asarray(msg.position, float),
        np.asarray(msg.velocity, float),
        np.asarray(msg.effort, float),
    )
    if len(pos) != n_msg or len(vel) != n_msg:
        raise MessageError(
            f"JointState has {n_msg} names but {len(pos)} positions and {len(vel)} velocities"
        )
    if len(eff) not in (0, n_msg):
        raise MessageError(f"JointState has {n_msg} names but {len(eff)} efforts")
    index = {name: i for i, name in enumerate(names)}
    missing = [j for j in joint_names if j not in index]
    if missing:
        raise MessageError(f"JointState lacks joints {missing} (has {names})")
    order = np.array([index[j] for j in joint_names], dtype=int)
    q, qd = pos[order], vel[order]
    tau = eff[order] if len(eff) else np.full(len(order), np.nan)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
        raise MessageError("JointState has non-finite position or velocity")
    stamp = stamp_to_ns(msg.header.stamp)
    if stamp < 0:
        raise MessageError(f"JointState stamp {stamp} ns is before the epoch")
    return JointSample(stamp, q, qd, tau)


def command_stamp_label(stamp_ns: int) -> str:
    """Layout label that tags a command with the joint-state stamp it answers."""
    return f"{STAMP_LABEL_PREFIX}{int(stamp_ns)}"


def command_tag(msg) -> int | None:
    """The joint-state stamp (ns) a Float64MultiArray command is tagged with, or None.

    Raises MessageError for a tag that is not a non-negative integer.
    """
    dims = list(msg.layout.dim)
    if not dims or not dims[0].label.startswith(STAMP_LABEL_PREFIX):
        return None
    text = dims[0].label[len(STAMP_LABEL_PREFIX) :]
    try:
        stamp = int(text)
    except ValueError:
        raise MessageError(f"command stamp tag {dims[0].label!r} is not an integer") from None
    if stamp < 0:
        raise MessageError(f"command stamp tag {stamp} is negative")
    return stamp


def read_command(msg, n_joints: int) -> tuple[np.ndarray, int | None]:
    """std_msgs/Float64MultiArray → ((n,) torques in N·m, tagged stamp in ns or None).

    Raises MessageError for a wrong length, non-finite values or an unreadable stamp tag.
    """
    stamp = command_tag(msg)
    data = np.asarray(msg.data, dtype=float)
    if data.shape != (n_joints,):
        raise MessageError(f"command has {data.size} values, expected {n_joints}")
    if not np.all(np.isfinite(data)):
        raise MessageError("command has non-finite values")
    return data, stamp


IMAGE_CHANNELS = {
    "rgb8": (3, [0, 1, 2]),
    "bgr8": (3, [2, 1, 0]),
    "rgba8": (4, [0, 1, 2]),
    "bgra8": (4, [2, 1, 0]),
}  # encoding → (bytes per pixel, rgb channel order)


def read_image(msg) -> np.ndarray:
    """sensor_msgs/Image (8-bit rgb8, bgr8, rgba8 or bgra8; rows may be padded to ``step``) →
    a new uint8 array (height, width, 3), rgb, row 0 at the top. MessageError if the encoding is
    another one or the sizes disagree with the data."""
    encoding = str(msg.encoding).lower()
    if encoding not in IMAGE_CHANNELS:
        raise MessageError(
            f"Image encoding {msg.encoding!r} is not one of {sorted(IMAGE_CHANNELS)}"
        )
    channels, order = IMAGE_CHANNELS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = msg.data
    buf = (
        np.asarray(data, np.uint8).ravel()
        if isinstance(data, (np.ndarray, list))
        else np.frombuffer(data, np.uint8)
    )
    if height < 1 or width < 1 or step < width * channels or buf.size != height * step:
        raise MessageError(
            f"Image {width} × {height} {encoding} with step {step} does not fit "
            f"its {buf.size} bytes of data"
        )
    rows = buf.reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    return np.ascontiguousarray(rows[..., order])
