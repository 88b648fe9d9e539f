"""Building the standard messages of the graph (DESIGN.md §4) from arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PointStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from mbrl_ros.common.msgconv import command_stamp_label, ns_to_sec_nanosec

# Reliable with a deep history: a lockstep graph runs as fast as its slowest *answering* node, and
# listeners outside the loop (fitter, recorder, trainer, episode manager) must not be overrun —
# with keep-last 10 a busy listener silently lost states. Both ends keep 1000 samples (≈ 10 s at
# 100 Hz); nodes that only want the newest state (the real-time executor) skip the backlog.
STATE_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
COMMAND_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
# Real-time consumers of joint states (executor, planner) keep only the newest: a late callback
# skips a backlog instead of acting on old states.
NEWEST_ONLY = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
MAX_TARGETS = 4096  # targets kept by publishers and subscribers of /mbrl/target
EVENT_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# Targets are sent ahead of the episodes they belong to (all of a run's at once); late subscribers
# get them all.
TARGET_QOS = QoSProfile(
    depth=MAX_TARGETS,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# Latched artifacts: a late subscriber gets the latest model / controller.
LATCHED_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def time_msg(ns: int) -> Time:
    sec, nanosec = ns_to_sec_nanosec(ns)
    return Time(sec=sec, nanosec=nanosec)


def target_msg(stamp_ns: int, frame_id: str, point) -> PointStamped:
    """A target (3,) m in ``frame_id`` that holds from ``stamp_ns`` on (``/mbrl/target``)."""
    msg = PointStamped()
    msg.header.stamp = time_msg(stamp_ns)
    msg.header.frame_id = frame_id
    msg.point.x, msg.point.y, msg.point.z = (float(v) for v in point)
    return msg


def clock_msg(ns: int) -> Clock:
    return Clock(clock=time_msg(ns))


def joint_state_msg(
    stamp_ns: int,
    names: Sequence[str],
    position: np.ndarray,
    velocity: np.ndarray,
    effort: np.ndarray,
) -> JointState:
    msg = JointState(
        name=list(names),
        position=position.tolist(),
        velocity=velocity.tolist(),
        effort=effort.tolist(),
    )
    msg.header.stamp = time_msg(stamp_ns)
    return msg


def command_msg(torque: np.ndarray, stamp_ns: int | None = None) -> Float64MultiArray:
    """Torques (n,) N·m, optionally tagged with the joint-state stamp they answer."""
    msg = Float64MultiArray(data=np.asarray(torque, dtype=float).tolist())
    if stamp_ns is not None:
        n = len(msg.data)
        msg.layout.dim = [
            MultiArrayDimension(label=command_stamp_label(stamp_ns), size=n, stride=n)
        ]
    return msg


def image_msg(stamp_ns: int, frame_id: str, rgb: np.ndarray) -> Image:
    """sensor_msgs/Image (rgb8, rows unpadded) of ``rgb`` uint8 (height, width, 3), row 0 at the
    top."""
    height, width, _ = rgb.shape
    msg = Image(
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=3 * width,
        data=np.ascontiguousarray(rgb, dtype=np.uint8).tobytes(),
    )
    msg.header.stamp, msg.header.frame_id = time_msg(stamp_ns), frame_id
    return msg


def camera_info_msg(
    stamp_ns: int,
    frame_id: str,
    width: int,
    height: int,
    intrinsics: tuple[float, float, float, float],
) -> CameraInfo:
    """sensor_msgs/CameraInfo of an ideal pinhole camera (no distortion) with ``intrinsics``
    (fx, fy, cx, cy) in pixels."""
    fx, fy, cx, cy = intrinsics
    msg = CameraInfo(
        width=width,
        height=height,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
    )
    msg.header.stamp, msg.header.frame_id = time_msg(stamp_ns), frame_id
    return msg
