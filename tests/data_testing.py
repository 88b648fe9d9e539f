"""Helpers shared by the data, recorder and replay tests: synthetic bags of real CDR messages
(serialised by rclpy, as a recorder receives them) and a small file system for full-disk tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
from mcap.reader import make_reader
from rclpy.serialization import serialize_message
from std_msgs.msg import String

from mbrl_ros.data.bags import BagWriter
from mbrl_ros.data.topics import COMMANDS, EVENTS, STATES, episode_event_json, resolve
from mbrl_ros.nodes.messages import command_msg, joint_state_msg

DT_NS = 10_000_000
T0 = 1_700_000_000_000_000_000  # log time of the first message (ns since the epoch)


def lockstep_messages(n: int, names=("a", "b"), stamp0: int = 0, resets=(), seed: int = 0):
    """(topic, rclpy message) of a lockstep run: n joint states, each answered by a command
    tagged with its stamp; a reset event just before each state index in ``resets``."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        stamp = stamp0 + k * DT_NS
        if k in resets:
            out.append(
                (EVENTS, String(data=episode_event_json("reset", 1 + list(resets).index(k), stamp)))
            )
        q, qd = rng.normal(size=len(names)), rng.normal(size=len(names))
        out.append((STATES, joint_state_msg(stamp, names, q, qd, np.zeros(len(names)))))
        out.append((COMMANDS, command_msg(rng.normal(size=len(names)), stamp)))
    return out


TYPES = {
    STATES: "sensor_msgs/msg/JointState",
    COMMANDS: "std_msgs/msg/Float64MultiArray",
    EVENTS: "std_msgs/msg/String",
}


def write_bag(
    path: Path, messages, log_step_ns: int = DT_NS // 3, checkpoint_every: int = 0, **writer_kwargs
) -> list[tuple[str, bytes]]:
    """Write (topic, rclpy message) pairs at log times T0, T0 + step, ... (a checkpoint, which
    closes a chunk, every ``checkpoint_every`` messages if > 0); returns the (topic, CDR bytes)
    written (rclpy leaves padding bytes undefined: serialise once, compare bytes)."""
    writer = BagWriter(path, **writer_kwargs)
    written = []
    for i, (topic, msg) in enumerate(messages):
        if not writer.has_topic(topic):
            writer.add_topic(topic, TYPES.get(topic) or _type_name(msg))
        written.append((resolve(topic), serialize_message(msg)))  # as the bag names it
        writer.write(topic, T0 + i * log_step_ns, written[-1][1])
        if checkpoint_every and (i + 1) % checkpoint_every == 0:
            writer.checkpoint()
    writer.close()
    return written


def _type_name(msg) -> str:
    module = type(msg).__module__.split(".")[0]
    return f"{module}/msg/{type(msg).__name__}"


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "256k"):
    """A tmpfs of ``size`` mounted at ``path`` (yields the path), or None where mounting is not
    allowed (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        != 0
    ):
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def mcap_counts(bag) -> Counter:
    """Messages per topic, read with the independent mcap library (not rosbags)."""
    counts = Counter()
    for path in sorted(bag.glob("*.mcap")):
        with open(path, "rb") as f:
            for _, channel, _ in make_reader(f).iter_messages():
                counts[channel.topic] += 1
    return counts
