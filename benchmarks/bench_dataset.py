"""Dataset extraction rate: (s, a, s') transitions per second from a bag.

Writes a bag like the recorder's (7-joint JointState, stamp-tagged commands and /clock at each
step, one reset event per 1000 steps; rclpy CDR bytes), then times, in the same run: reading the
bag's raw bytes (rosbags), reading and deserialising the messages, and the full extraction
(``dataset_from_bag``: reading, deserialising, the transition builder, the dataset arrays).
Each figure is the best of a few repeats.

Then the resampler (real-robot streams, ``data.resample``) against the plain builder, in memory on
the same number of joint states (messages already built): the builder on the lockstep stream
(one state per control period, each answered by its command), the resampler on a real-robot
stream (jittered 500 Hz states, 5 % dropped, a command tagged with its send time after each
state) resampled onto 10 ms, without and with gravity subtraction (GravityModel of arm7).

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
from mbrl_ros.data.resample import Resampler
from mbrl_ros.data.topics import CLOCK, COMMANDS, EVENTS, STATES, episode_event_json
from mbrl_ros.data.transitions import TransitionBuilder
from mbrl_ros.nodes.messages import clock_msg, command_msg, joint_state_msg
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.gravity import GravityModel

JOINTS = tuple(f"joint{i}" for i in range(1, 8))
DT_NS = 2_000_000  # 500 Hz
TYPES = {
    STATES: "sensor_msgs/msg/JointState",
    COMMANDS: "std_msgs/msg/Float64MultiArray",
    CLOCK: "rosgraph_msgs/msg/Clock",
    EVENTS: "std_msgs/msg/String",
}


def write_bag(path: Path, steps: int) -> int:
    rng = np.random.default_rng(0)
    writer = BagWriter(path)
    for topic, msgtype in TYPES.items():
        writer.add_topic(topic, msgtype)
    log = 1_700_000_000_000_000_000
    for k in range(steps):
        stamp = k * DT_NS
        if k and k % 1000 == 0:
            writer.write(
                EVENTS,
                log,
                serialize_message(String(data=episode_event_json("reset", k // 1000, stamp))),
            )
        q, qd = rng.normal(size=7), rng.normal(size=7)
        for topic, msg in (
            (CLOCK, clock_msg(stamp)),
            (STATES, joint_state_msg(stamp, JOINTS, q, qd, np.zeros(7))),
            (COMMANDS, command_msg(rng.normal(size=7), stamp)),
        ):
            log += 100_000
            writer.write(topic, log, serialize_message(msg))
    writer.close()
    return writer.message_count


def streams(steps: int) -> tuple[list, list]:
    """(lockstep, real-robot) (topic, message) lists of ``steps`` joint states each."""
    rng = np.random.default_rng(1)
    lockstep, real = [], []
    t0 = 1_764_000_000_000_000_000
    for k in range(steps):
        q, qd, u = rng.uniform(-1, 1, 7), rng.normal(size=7), rng.normal(size=7)
        lockstep += [
            (STATES, joint_state_msg(k * 10_000_000, JOINTS, q, qd, np.zeros(7))),
            (COMMANDS, command_msg(u, k * 10_000_000)),
        ]
        stamp = t0 + k * DT_NS + int(rng.uniform(-3e5, 3e5))
        if rng.random() > 0.05:
            real.append((STATES, joint_state_msg(stamp, JOINTS, q, qd, np.zeros(7))))
        real.append((COMMANDS, command_msg(u, stamp + int(rng.uniform(2e5, 6e5)))))
    return lockstep, real


def feed(builder, msgs) -> int:
    for topic, msg in msgs:
        builder.feed(topic, msg)
    builder.finish()
    return len(builder.take())


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
    print(
        f"bag: {args.steps} steps of a 7-joint arm at 500 Hz, {n_msgs} messages, {size:.1f} MiB "
        f"(written in {t_write:.2f} s: {n_msgs / t_write:,.0f} msg/s)"
    )
    print(f"read raw bytes:        {n_read / t_raw:12,.0f} msg/s")
    print(f"read + deserialise:    {n_read / t_deser:12,.0f} msg/s")
    print(
        f"extract dataset:       {n / t_extract:12,.0f} transitions/s "
        f"({n} transitions, {ex.dataset.n_episodes} episodes, {t_extract:.2f} s)"
    )
    print(
        f"ratios (same run): extraction takes {t_extract / t_raw:.1f}x the raw read, "
        f"{t_extract / t_deser:.2f}x read + deserialise"
    )

    lockstep, real = streams(args.steps)
    n_real = sum(topic == STATES for topic, _ in real)
    joints = tuple(load_robot("arm7").joint_names)
    assert joints == JOINTS
    gravity = GravityModel(load_robot("arm7"))
    t_plain, n_plain = best(lambda: feed(TransitionBuilder(JOINTS, 0.01), lockstep))
    t_res, n_res = best(lambda: feed(Resampler(JOINTS, 0.01), real))
    t_grav, _ = best(lambda: feed(Resampler(JOINTS, 0.01, gravity=gravity), real))
    print(f"in memory, {args.steps} joint states (7 joints) and as many commands:")
    print(
        f"plain builder (lockstep):        {args.steps / t_plain:12,.0f} states/s "
        f"({n_plain} transitions)"
    )
    print(
        f"resampler (500 Hz -> 10 ms):     {n_real / t_res:12,.0f} states/s ({n_res} transitions)"
    )
    print(f"resampler + gravity subtraction: {n_real / t_grav:12,.0f} states/s")
    per_state = (t_res / n_real) / (t_plain / args.steps)
    print(
        f"ratios (same run): per state the resampler takes {per_state:.2f}x the plain "
        f"builder, {t_grav / t_res:.2f}x that with gravity"
    )


if __name__ == "__main__":
    main()
