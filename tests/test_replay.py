"""Replay over real DDS: every message, in order, with the bag's timing (scaled by the rate) within
a stated tolerance; /clock from the bag's time; looping; bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
from data_testing import DT_NS, T0, lockstep_messages, write_bag
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import wait_for
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_ros.common.msgconv import command_tag, stamp_to_ns
from mbrl_ros.data.topics import CLOCK, COMMANDS, STATES

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]
# Transient local: every message replayed reaches the test even if DDS matches it late.
LATCHED = QoSProfile(
    depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
# Stated tolerance: each message is received within this much wall time of its scheduled time
# (bag time offset / rate, after removing the common delay); measured medians are < 1 ms.
TOLERANCE_S = 0.25
LOG_STEP_NS = DT_NS  # one message every 10 ms of bag time: states and commands alternate


class Receiver:
    """Records (topic, bag stamp or tag, receive time in ns) of everything replayed."""

    def __init__(self, ros):
        self.got: list[tuple[str, int, int]] = []
        self.node = node = ros.node("receiver")
        node.create_subscription(JointState, STATES, partial(self._on, STATES), LATCHED)
        node.create_subscription(Float64MultiArray, COMMANDS, partial(self._on, COMMANDS), LATCHED)
        node.create_subscription(Clock, CLOCK, partial(self._on, CLOCK), LATCHED)

    def _on(self, topic, msg, info) -> None:
        key = {
            STATES: lambda m: stamp_to_ns(m.header.stamp),
            COMMANDS: command_tag,
            CLOCK: lambda m: stamp_to_ns(m.clock),
        }[topic](msg)
        self.got.append((topic, key, info["received_timestamp"]))

    def of(self, *topics) -> list[tuple[str, int, int]]:
        return sorted((g for g in self.got if g[0] in topics), key=lambda g: g[2])


def make_bag(tmp_path, n=100):
    bag = tmp_path / "bag"
    msgs = lockstep_messages(n)
    write_bag(bag, msgs, log_step_ns=LOG_STEP_NS)
    # expected (topic, key) in bag order; log time of message i is T0 + i·LOG_STEP_NS
    keys = [(t, stamp_to_ns(m.header.stamp) if t == STATES else command_tag(m)) for t, m in msgs]
    return bag, keys


def test_every_message_in_order_with_the_bag_timing(ros, node_process, tmp_path):
    bag, keys = make_bag(tmp_path)
    rx = Receiver(ros)
    rate = 2.0
    replay = node_process("replay", {"bag": str(bag), "rate": rate, "wait_for_subscribers": 20.0})
    assert replay.wait(timeout=60) == 0
    assert "replayed 200 messages" in replay.output()
    wait_for(lambda: len(rx.of(STATES, COMMANDS)) >= len(keys), 10, "every replayed message")
    got = rx.of(STATES, COMMANDS)
    assert [(t, k) for t, k, _ in got] == keys  # all, once, in the bag's order
    recv = np.array([r for _, _, r in got], dtype=np.int64)
    scheduled = np.arange(len(keys)) * LOG_STEP_NS / rate
    error = (recv - recv[0]) - scheduled
    error = (error - np.median(error)) / 1e9
    assert np.max(np.abs(error)) < TOLERANCE_S, np.max(np.abs(error))
    # Without the rate the schedule would be off by up to a full second: the check has teeth.
    assert (recv[-1] - recv[0]) / 1e9 == pytest.approx(scheduled[-1] / 1e9, abs=TOLERANCE_S)
    # /clock (the bag has none): the bag's time, 100 Hz of bag time, never going back.
    clock = [k for _, k, _ in rx.of(CLOCK)]
    assert clock[0] == T0 and np.all(np.diff(clock) == 10_000_000)
    assert clock[-1] >= T0 + (len(keys) - 1) * LOG_STEP_NS - 10_000_000


def test_loop_plays_the_bag_again(ros, node_process, tmp_path):
    bag, keys = make_bag(tmp_path, n=20)
    rx = Receiver(ros)
    replay = node_process(
        "replay",
        {
            "bag": str(bag),
            "rate": 4.0,
            "loop": True,
            "wait_for_subscribers": 20.0,
            "clock_rate": 0.0,
            "topics": [STATES],
        },
    )
    wait_for(lambda: len(rx.of(STATES)) >= 50, 30, "two and a half passes")
    assert replay.stop() == 0, replay.log_path.read_text()
    got = [k for _, k, _ in rx.of(STATES)]
    states = [k for t, k in keys if t == STATES]
    assert got[:40] == states + states and not rx.of(COMMANDS, CLOCK)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"bag": "/nonexistent/bag"}, "bag /nonexistent/bag does not exist"),
        ({"bag": ""}, "parameter 'bag' is empty"),
        ({"topics": ["/nope"]}, r"has no topic\(s\) \['/nope'\]"),
        ({"rate": 0.0}, "'rate' = 0.0 is out of range"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(node_process, tmp_path, params, match):
    bag, _ = make_bag(tmp_path, n=3)
    proc = node_process("replay", {"bag": str(bag), **params})
    assert proc.wait(timeout=30) == 2
    assert re.search(match, proc.output()), proc.output()


def test_truncated_bag_is_refused_naming_the_file(node_process, tmp_path):
    bag, _ = make_bag(tmp_path, n=50)
    f = bag / "bag_0.mcap"
    f.write_bytes(f.read_bytes()[:-200])
    proc = node_process("replay", {"bag": str(bag)})
    assert proc.wait(timeout=30) == 2
    assert "(file bag_0.mcap)" in proc.output() and "bag repair" in proc.output()


def test_cli_entry_point_plays_a_bag(ros, tmp_path):
    bag, keys = make_bag(tmp_path, n=10)
    rx = Receiver(ros)
    code = (
        "import sys; from mbrl_ros.nodes import replay; import argparse; "
        "p = argparse.ArgumentParser(); replay.add_arguments(p, 'replay'); "
        "sys.exit(replay.run(p.parse_args(sys.argv[1:])))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(bag), "--rate", "5", "--wait-for-subscribers", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    wait_for(lambda: len(rx.of(STATES, COMMANDS)) == len(keys), 10, "all messages")
