"""Dataset extraction rate: (s, a, s') transitions per second from a bag.

Writes a bag like the recorder's (7-joint JointState, stamp-tagged commands and /clock at each
step, one reset event per 1000 steps; rclpy CDR bytes), then times, in the same run: reading the
bag's raw bytes (rosbags), reading and deserialising the messages, and the full extraction
(``dataset_from_bag``: reading, deserialising, the transition builder, the dataset arrays).
Each figure is the best of a few repeats.

    python benchmarks/bench_dataset.py [--steps N]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from rclpy.serialization import serialize_message
from std_msgs.msg import String

from mbrl_ros.data.bags import BagReader, BagWriter
from mbrl_ros.data.extract import dataset_from_bag
from mbrl_ros.data.topics import CLOCK, COMMANDS, EVENTS, STATES, episode_event_json
from mbrl_ros.nodes.messages import clock_msg, command_msg, joint_state_msg

JOINTS = tuple(f"joint{i}" for i in range(1, 8))
DT_NS = 2_000_000  # 500 Hz
TYPES = {STATES: "sensor_msgs/msg/JointState", COMMANDS: "std_msgs/msg/Float64MultiArray",
         CLOCK: "rosgraph_msgs/msg/Clock", EVENTS: "std_msgs/msg/String"}


def write_bag(path: Path, steps: int) -> int:
    rng = np.random.default_rng(0)
    writer = BagWriter(path)
    for topic, msgtype in TYPES.items():
        writer.add_topic(topic, msgtype)
    log = 1_700_000_000_000_000_000
    for k in range(steps):
        stamp = k * DT_NS
        if k and k % 1000 == 0:
            writer.write(EVENTS, log, serialize_message(String(data=episode_event_json(
                "reset", k // 1000, stamp))))
        q, qd = rng.normal(size=7), rng.normal(size=7)
        for topic, msg in ((CLOCK, clock_msg(stamp)),
                           (STATES, joint_state_msg(stamp, JOINTS, q, qd, np.zeros(7))),
                           (COMMANDS, command_msg(rng.normal(size=7), stamp))):
            log += 100_000
            writer.write(topic, log, serialize_message(msg))
    writer.close()
    return writer.message_count


def best(fn, repeats: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="control steps in the bag")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "bag"
        t_write, n_msgs = best(lambda: write_bag(bag, args.steps), repeats=1)
        wanted = [STATES, COMMANDS, EVENTS]

        def read(raw: bool) -> int:
            with BagReader(bag) as r:
                return sum(1 for _ in r.messages(wanted, raw=raw))

        t_raw, n_read = best(lambda: read(True))
        t_deser, _ = best(lambda: read(False))
        t_extract, ex = best(lambda: dataset_from_bag(bag))
        n = len(ex.dataset)
        size = sum(p.stat().st_size for p in bag.glob("*.mcap")) / 2**20
    print(f"bag: {args.steps} steps of a 7-joint arm at 500 Hz, {n_msgs} messages, {size:.1f} MiB "
          f"(written in {t_write:.2f} s: {n_msgs / t_write:,.0f} msg/s)")
    print(f"read raw bytes:        {n_read / t_raw:12,.0f} msg/s")
    print(f"read + deserialise:    {n_read / t_deser:12,.0f} msg/s")
    print(f"extract dataset:       {n / t_extract:12,.0f} transitions/s "
          f"({n} transitions, {ex.dataset.n_episodes} episodes, {t_extract:.2f} s)")
    print(f"ratios (same run): extraction takes {t_extract / t_raw:.1f}x the raw read, "
          f"{t_extract / t_deser:.2f}x read + deserialise")


if __name__ == "__main__":
    main()
