"""The recorder node over real DDS: a lockstep sim recorded and built live give the same dataset
with the values the sim produced; SIGTERM leaves a complete bag; SIGKILL loses at most the last
flush period; a full disk stops the recorder cleanly; the record graph collects episodes."""
from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from functools import partial

import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from data_testing import mcap_counts, small_filesystem
from mbrl_ros.data.bags import BagReader, repair_bag
from mbrl_ros.data.errors import BagError
from mbrl_ros.data.extract import dataset_from_bag
from mbrl_ros.data.topics import CLOCK, COMMANDS, EVENTS, STATES
from mbrl_ros.data.transitions import TransitionBuilder
from mbrl_ros.msgconv import stamp_to_ns
from mbrl_ros.nodes.messages import joint_state_msg
from mbrl_ros.nodes.params import ConfigError
from mbrl_ros.nodes.recorder import RecorderNode
from mbrl_ros.robot import load_robot
from mbrl_ros.simulation import ArmSimulator, SimConfig
from ros_harness import wait_for

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
ARM7_JOINTS = tuple(f"joint{i}" for i in range(1, 8))


class RecorderStatus:
    """The recorder's latest /diagnostics values."""

    def __init__(self, ros):
        self.values: dict[str, str] = {}
        self.level = None
        ros.node("status_watch").create_subscription(DiagnosticArray, "/diagnostics", self._on, 100)

    def _on(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name.startswith("recorder:"):
                self.values = {kv.key: kv.value for kv in s.values}
                self.level = s.level

    def count(self, key: str) -> int:
        return int(self.values.get(key, 0))


class LiveBuilder:
    """Builds transitions from the live topics, as a fitter node would."""

    def __init__(self, ros, joint_names, dt):
        self.builder = TransitionBuilder(joint_names, dt)
        self.counts: Counter = Counter()
        self.events: list[dict] = []
        self.last_stamp = -1
        node = ros.node("live_builder")
        for topic, cls in ((COMMANDS, Float64MultiArray), (STATES, JointState), (EVENTS, String)):
            node.create_subscription(cls, topic, partial(self._on, topic), RELIABLE)

    def _on(self, topic, msg) -> None:
        self.builder.feed(topic, msg)
        self.counts[topic] += 1
        if topic == STATES:
            self.last_stamp = stamp_to_ns(msg.header.stamp)
        if topic == EVENTS:
            self.events.append(json.loads(msg.data))




def rosbags_messages(bag, topic=None) -> list:
    with BagReader(bag) as r:
        return list(r.messages(None if topic is None else [topic]))


def settle(read, period: float = 1.2, timeout: float = 30.0) -> None:
    """Wait until ``read()`` stays the same for ``period`` s."""
    deadline, last, since = time.monotonic() + timeout, read(), time.monotonic()
    while time.monotonic() - since < period:
        assert time.monotonic() < deadline, "value did not settle"
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()


def test_lockstep_run_live_and_bag_give_the_same_exact_transitions(ros, node_process, pi0,
                                                                    tmp_path):
    robot = load_robot("arm2")
    bag, steps, dt_ns = tmp_path / "bag", 300, 10_000_000
    recorder = node_process("recorder", {"bag_path": str(bag)})
    status = RecorderStatus(ros)
    live = LiveBuilder(ros, robot.joint_names, 0.01)
    sim_params = {"robot": "arm2", "seed": 3, "lockstep_timeout": 60.0,
                  "initial_position_noise": 0.2}
    sim = node_process("arm_sim", sim_params)
    pi0("arm2", seed=4, use_sim_time=True)
    # Data flows to both subscribers before the episode starts (DDS matching takes a moment).
    wait_for(lambda: all(status.count(f"messages {t}") for t in (STATES, COMMANDS, CLOCK))
             and live.counts[STATES] and live.counts[COMMANDS], 30, "data at both subscribers")
    helper = ros.node("test_client")
    graph_hash = str(helper.get_publishers_info_by_topic(STATES)[0].topic_type_hash)
    client = helper.create_client(Trigger, "/arm_sim/reset")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    wait_for(future.done, 10, "reset response")
    wait_for(lambda: live.events, 10, "reset event")
    reset_ns = live.events[0]["stamp_ns"]
    # Run `steps` control periods past the reset, then stop the sim and, once it has everything
    # the sim published, the recorder.
    end_ns = reset_ns + steps * dt_ns
    wait_for(lambda: live.last_stamp >= end_ns, 60, f"{steps} steps after the reset")
    assert sim.stop() == 0, sim.log_path.read_text()
    settle(lambda: status.count(f"messages {STATES}"))
    assert recorder.stop() == 0, recorder.log_path.read_text()
    window = lambda ds: ds.select((ds.stamps >= reset_ns) & (ds.stamps < end_ns))  # noqa: E731
    live.builder.finish()
    live_ds = window(live.builder.take())
    bag_ds = window(dataset_from_bag(bag).dataset)

    # Exactly the expected transitions: one per step from the reset on, each paired.
    assert len(bag_ds) == steps
    np.testing.assert_array_equal(bag_ds.stamps, reset_ns + dt_ns * np.arange(steps))
    for name in ("states", "actions", "next_states", "episodes", "stamps"):
        np.testing.assert_array_equal(getattr(bag_ds, name), getattr(live_ds, name))
    # The values the sim produced: replay the recorded actions through the same simulator.
    sim_core = ArmSimulator(robot, SimConfig(initial_position_noise=0.2, seed=3))
    sim_core.reset(randomize=True)
    for s, a, s_next in zip(bag_ds.states, bag_ds.actions, bag_ds.next_states):
        m = sim_core.measure()
        np.testing.assert_array_equal(s, np.concatenate([m.position, m.velocity]))
        sim_core.step(a)
        m = sim_core.measure()
        np.testing.assert_array_equal(s_next, np.concatenate([m.position, m.velocity]))
    # rosbags and the independent mcap reader agree; the type hash is the graph's.
    assert Counter(t for t, _, _ in rosbags_messages(bag)) == mcap_counts(bag)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    hashes = {t["topic_metadata"]["name"]: t["topic_metadata"]["type_description_hash"]
              for t in meta["topics_with_message_count"]}
    assert hashes[STATES] == graph_hash


WARM_UP = "warm-up"


def state_msg(i: int) -> JointState:
    """A JointState of 7 joints whose frame_id is its sequence number."""
    msg = joint_state_msg(i * 1_000_000, ARM7_JOINTS, np.full(7, i * 0.1), np.zeros(7),
                          np.zeros(7))
    msg.header.frame_id = str(i)
    return msg


def publish_states(pub, n: int, start: int = 0, period: float = 0.001) -> None:
    for i in range(start, start + n):
        pub.publish(state_msg(i))
        time.sleep(period)


def prime(status: RecorderStatus, pubs: dict) -> int:
    """Publish warm-up messages (frame_id 'warm-up') on every topic of ``pubs`` (topic →
    (publisher, message)) until the recorder has received one on each: DDS can take seconds to
    match a new publisher, and the test's own messages must not race that. Returns the recorder's
    message count once it has settled."""
    def warm():
        for pub, msg in pubs.values():
            msg.header.frame_id = WARM_UP
            pub.publish(msg)
        return all(status.count(f"messages {t}") for t in pubs)

    wait_for(lambda: warm() or time.sleep(0.05), 30, "the recorder to receive warm-up messages")
    settle(lambda: status.count("messages"))
    return status.count("messages")


def sequence(bag, topic: str = STATES) -> list[int]:
    return [int(m.header.frame_id) for _, _, m in rosbags_messages(bag, topic)
            if m.header.frame_id != WARM_UP]


def test_sigterm_leaves_a_complete_split_bag(ros, node_process, tmp_path):
    bag = tmp_path / "bag"
    recorder = node_process("recorder", {"bag_path": str(bag), "split_size": 0.05,
                                         "topics": [STATES, "/mbrl/target"]})
    status = RecorderStatus(ros)
    node = ros.node("publisher")
    states = node.create_publisher(JointState, STATES, RELIABLE)
    targets = node.create_publisher(PointStamped, "/mbrl/target", RELIABLE)
    base = prime(status, {STATES: (states, state_msg(0)), "/mbrl/target": (targets,
                                                                            PointStamped())})
    publish_states(states, 600)
    for i in range(20):
        target = PointStamped()
        target.header.frame_id = str(i)
        targets.publish(target)
    wait_for(lambda: status.count("messages") == base + 620, 30, "620 messages at the recorder")
    recorder.proc.send_signal(signal.SIGTERM)
    assert recorder.wait(timeout=20) == 0, recorder.output()
    assert f"closed: {base + 620} messages" in recorder.output()
    # Readable without repair, complete, in order; rosbags and mcap agree.
    assert sequence(bag) == list(range(600))
    assert sequence(bag, "/mbrl/target") == list(range(20))
    assert Counter(t for t, _, _ in rosbags_messages(bag)) == mcap_counts(bag)
    assert sum(mcap_counts(bag).values()) == base + 620
    assert len(list(bag.glob("*.mcap"))) >= 3  # split at 0.05 MiB
    assert all(r.status == "intact" for r in repair_bag(bag))


def test_sigkill_loses_at_most_the_last_flush_period(ros, node_process, tmp_path):
    bag = tmp_path / "bag"
    recorder = node_process("recorder", {"bag_path": str(bag), "flush_period": 0.2,
                                         "topics": [STATES]})
    status = RecorderStatus(ros)
    states = ros.node("publisher").create_publisher(JointState, STATES, RELIABLE)
    base = prime(status, {STATES: (states, state_msg(0))})
    publish_states(states, 400)
    # Flushed: everything received more than one flush period ago is on disk.
    wait_for(lambda: status.count("durable_messages") == base + 400, 30, "400 messages flushed")
    publish_states(states, 300, start=400, period=0.0005)
    recorder.proc.send_signal(signal.SIGKILL)
    recorder.wait(timeout=10)
    with pytest.raises(BagError, match="bag repair"):
        rosbags_messages(bag)
    report = repair_bag(bag)
    assert [r.status for r in report] == ["repaired"]
    got = sequence(bag)
    assert 400 <= len(got) <= 700 and got == list(range(len(got)))
    assert mcap_counts(bag) == Counter({STATES: base + len(got)})


def test_full_disk_is_reported_and_the_bag_stays_readable(ros, tmp_path):
    with small_filesystem(tmp_path / "small", "256k") as disk:
        folder = disk or tmp_path
        bag = folder / "bag"
        limit = None if disk else 256 * 1024  # no tmpfs (not root): a file size limit instead

        def limit_file_size():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        log = tmp_path / "recorder.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mbrl_ros.nodes.recorder", "--ros-args", "-p",
                 f"bag_path:={bag}", "-p", "flush_period:=0.05", "-p", f"topics:=[{STATES}]"],
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=limit_file_size if limit else None)
            try:
                status = RecorderStatus(ros)
                states = ros.node("publisher").create_publisher(JointState, STATES, RELIABLE)
                base = prime(status, {STATES: (states, state_msg(0))})
                sent = 0
                while proc.poll() is None and sent < 20000:
                    publish_states(states, 50, start=sent)
                    sent += 50
                assert proc.wait(timeout=30) == 1
            finally:
                if proc.poll() is None:
                    proc.kill()
        text = log.read_text()
        assert ("No space left on device" if disk else "File too large") in text, text
        kept = int(re.search(r"keeps (\d+) messages", text).group(1))
        assert "complete and readable" in text
        got = sequence(bag)
        assert 100 < len(got) == kept - base and got == list(range(len(got)))
        assert mcap_counts(bag) == Counter({STATES: kept})


def test_best_effort_publisher_is_recorded_after_resubscribing(ros, node_process, tmp_path):
    bag = tmp_path / "bag"
    recorder = node_process("recorder", {"bag_path": str(bag), "topics": ["/mbrl/target"]})
    status = RecorderStatus(ros)
    node = ros.node("publisher")
    wait_for(lambda: node.count_subscribers("/mbrl/target"), 20, "the recorder's subscription")
    pub = node.create_publisher(PointStamped, "/mbrl/target",
                                QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
    stop = threading.Event()

    def spam():
        while not stop.is_set():
            pub.publish(PointStamped())
            time.sleep(0.01)

    thread = threading.Thread(target=spam)
    thread.start()
    try:
        wait_for(lambda: status.count("messages") >= 20, 30, "best-effort messages recorded")
    finally:
        stop.set()
        thread.join()
    assert recorder.stop() == 0, recorder.log_path.read_text()
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    qos = meta["topics_with_message_count"][0]["topic_metadata"]["offered_qos_profiles"]
    assert qos[0]["reliability"] == "best_effort"


@pytest.mark.parametrize("params,match", [
    ({"episodes": 2}, "'episodes' = 2 needs use_sim_time"),
    ({"flush_period": 0.0}, "'flush_period' = 0.0 is out of range"),
])
def test_bad_parameters_stop_the_recorder_with_a_clear_message(node_process, tmp_path, params,
                                                               match):
    proc = node_process("recorder", {"bag_path": str(tmp_path / "bag"), **params})
    assert proc.wait(timeout=30) == 2
    assert re.search(match, proc.output()), proc.output()


def test_empty_topic_list_is_refused(ros, tmp_path):
    empty = Parameter("topics", Parameter.Type.STRING_ARRAY, [])
    with pytest.raises(ConfigError, match="'topics' is empty"):
        RecorderNode(context=ros.context, parameter_overrides=[
            empty, Parameter("bag_path", value=str(tmp_path / "bag"))])


def test_existing_bag_path_is_refused(node_process, tmp_path):
    (tmp_path / "bag").mkdir()
    proc = node_process("recorder", {"bag_path": str(tmp_path / "bag")})
    assert proc.wait(timeout=30) == 2
    assert "exists already" in proc.output()


def test_record_graph_collects_episodes(tmp_path):
    bag = tmp_path / "bag"
    result = subprocess.run(
        [sys.executable, "-m", "mbrl_ros.cli", "launch", "record", "robot:=arm2", "episodes:=3",
         "episode_length:=0.5", f"bag:={bag}", "status_period:=0"],
        capture_output=True, text=True, timeout=100, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 episodes recorded" in result.stdout + result.stderr
    ex = dataset_from_bag(bag)
    assert ex.counts["event_reset"] == 3 and ex.counts["boundary"] == 3
    ds = ex.dataset
    episodes = ds.episode_ids[-3:]  # a short segment before the first reset may come first
    lengths = [int(np.sum(ds.episodes == e)) for e in episodes]
    # At least 0.5 s of sim time at 100 Hz each (a reset goes out once the time is up; under load
    # it lands some steps later; the last episode may lose the state in flight at the stop).
    assert all(n >= 48 for n in lengths), lengths
