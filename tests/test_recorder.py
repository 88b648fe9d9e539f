"""The recorder node over real DDS: a lockstep sim recorded and built live give the same dataset
with the values the sim produced; SIGTERM leaves a complete bag; SIGKILL loses at most the last
flush period; a full disk stops the recorder cleanly; the record graph collects episodes."""

from __future__ import annotations

import json
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
from data_testing import mcap_counts, small_filesystem
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from mcap.reader import make_reader
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import launch_graph, wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from mbrl_ros.common.msgconv import command_tag, stamp_to_ns
from mbrl_ros.data import topics
from mbrl_ros.data.bags import BagReader, repair_bag
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.data.extract import dataset_from_bag
from mbrl_ros.data.transitions import TransitionBuilder
from mbrl_ros.nodes.messages import command_msg, joint_state_msg
from mbrl_ros.nodes.params import ConfigError
from mbrl_ros.nodes.recorder import RecorderNode
from mbrl_ros.robot.description import load_robot
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig

# The graph's topics as the recorder (in the root namespace) names them in its bag and status.
CLOCK, COMMANDS, EVENTS, STATES = (
    topics.resolve(t) for t in (topics.CLOCK, topics.COMMANDS, topics.EVENTS, topics.STATES)
)

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
        self.builder = TransitionBuilder(
            joint_names, dt, topics=topics.TopicNames(STATES, COMMANDS, EVENTS)
        )
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


def test_lockstep_run_live_and_bag_give_the_same_exact_transitions(
    ros, node_process, pi0, tmp_path
):
    robot = load_robot("arm2")
    bag, steps, dt_ns = tmp_path / "bag", 300, 10_000_000
    recorder = node_process("recorder", {"bag_path": str(bag)})
    status = RecorderStatus(ros)
    live = LiveBuilder(ros, robot.joint_names, 0.01)
    sim_params = {
        "robot": "arm2",
        "seed": 3,
        "lockstep_timeout": 60.0,
        "initial_position_noise": 0.2,
    }
    sim = node_process("arm_sim", sim_params)
    pi0("arm2", seed=4, use_sim_time=True)
    # Data flows to both subscribers before the episode starts (DDS matching takes a moment).
    wait_for(
        lambda: (
            all(status.count(f"messages {t}") for t in (STATES, COMMANDS, CLOCK))
            and live.counts[STATES]
            and live.counts[COMMANDS]
        ),
        30,
        "data at both subscribers",
    )
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
    hashes = {
        t["topic_metadata"]["name"]: t["topic_metadata"]["type_description_hash"]
        for t in meta["topics_with_message_count"]
    }
    assert hashes[STATES] == graph_hash


WARM_UP = "warm-up"


def state_msg(i: int) -> JointState:
    """A JointState of 7 joints whose frame_id is its sequence number."""
    msg = joint_state_msg(i * 1_000_000, ARM7_JOINTS, np.full(7, i * 0.1), np.zeros(7), np.zeros(7))
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
    return [
        int(m.header.frame_id)
        for _, _, m in rosbags_messages(bag, topic)
        if m.header.frame_id != WARM_UP
    ]


def test_sigterm_leaves_a_complete_split_bag(ros, node_process, tmp_path):
    bag = tmp_path / "bag"
    recorder = node_process(
        "recorder", {"bag_path": str(bag), "split_size": 0.05, "topics": [STATES, "/mbrl/target"]}
    )
    status = RecorderStatus(ros)
    node = ros.node("publisher")
    states = node.create_publisher(JointState, STATES, RELIABLE)
    targets = node.create_publisher(PointStamped, "/mbrl/target", RELIABLE)
    base = prime(
        status, {STATES: (states, state_msg(0)), "/mbrl/target": (targets, PointStamped())}
    )
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
    # publish time: the publisher's send time (DDS source timestamp), before the receipt
    times = [
        (m.publish_time, m.log_time)
        for f in sorted(bag.glob("*.mcap"))
        for _, _, m in make_reader(f.open("rb")).iter_messages()
    ]
    assert all(0 < pub <= log for pub, log in times)
    assert sum(pub < log for pub, log in times) > len(times) // 2


def test_sigkill_then_repair_and_dataset_lose_at_most_the_last_flush_period(
    ros, node_process, tmp_path
):
    """Joint states k and commands tagged k (1 ms apart, from k = 1000): 400 pairs flushed, 300
    more sent at once, the recorder killed. ``mbrl-ros bag repair`` and ``mbrl-ros dataset`` then
    keep everything the recorder reported on disk before the kill (at least the 400 flushed
    pairs), as a gap-free prefix whose transitions are the ones sent."""
    bag, out = tmp_path / "bag", tmp_path / "data.safetensors"
    recorder = node_process(
        "recorder", {"bag_path": str(bag), "flush_period": 0.2, "topics": [STATES, COMMANDS]}
    )
    status = RecorderStatus(ros)
    node = ros.node("publisher")
    states = node.create_publisher(JointState, STATES, RELIABLE)
    commands = node.create_publisher(Float64MultiArray, COMMANDS, RELIABLE)
    warm_up = command_msg(np.zeros(7), 0)  # answers the warm-up state (stamp 0)
    prime(status, {STATES: (states, state_msg(0))})
    wait_for(
        lambda: (
            commands.publish(warm_up) or time.sleep(0.05) or status.count(f"messages {COMMANDS}")
        ),
        30,
        "a warm-up command at the recorder",
    )
    settle(lambda: status.count("messages"))
    base = status.count("messages")

    def send(first: int, n: int) -> None:
        for k in range(first, first + n):
            states.publish(state_msg(1000 + k))
            commands.publish(command_msg(np.full(7, float(k)), (1000 + k) * 1_000_000))
            time.sleep(0.0005)

    send(0, 400)
    wait_for(lambda: status.count("durable_messages") == base + 800, 30, "400 pairs flushed")
    send(400, 300)
    durable = status.count("durable_messages")  # the recorder's latest report: on disk
    recorder.proc.send_signal(signal.SIGKILL)
    recorder.wait(timeout=10)
    cli = [sys.executable, "-m", "mbrl_ros.cli"]
    repair = subprocess.run(
        cli + ["bag", "repair", str(bag)], capture_output=True, text=True, timeout=60
    )
    assert repair.returncode == 0 and "repaired" in repair.stdout, repair.stdout + repair.stderr
    kept = sum(mcap_counts(bag).values())
    assert base + 800 <= durable <= kept <= base + 1400
    dataset = subprocess.run(
        cli + ["dataset", str(bag), "-o", str(out)], capture_output=True, text=True, timeout=60
    )
    assert dataset.returncode == 0, dataset.stdout + dataset.stderr
    # The kept messages are a prefix of those received: the first states and commands sent, and
    # every transition k → k+1 among them is in the dataset, with its command.
    got = [k - 1000 for k in sequence(bag)]
    tags = [
        command_tag(m) // 1_000_000 - 1000
        for _, _, m in rosbags_messages(bag, COMMANDS)
        if command_tag(m)
    ]  # not the warm-ups (tag 0)
    assert got == list(range(len(got))) and tags == list(range(len(tags)))
    ds = Dataset.load(out)
    n = len(ds)
    assert n == min(len(got) - 1, len(tags)) >= 399
    np.testing.assert_array_equal(ds.stamps, (1000 + np.arange(n)) * 1_000_000)
    np.testing.assert_array_equal(ds.actions[:, 0], np.arange(n, dtype=float))
    np.testing.assert_array_equal(ds.states[:, 0], (1000 + np.arange(n)) * 0.1)
    np.testing.assert_array_equal(ds.next_states[:, 0], (1001 + np.arange(n)) * 0.1)


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
                [
                    sys.executable,
                    "-m",
                    "mbrl_ros.nodes.recorder",
                    "--ros-args",
                    "-p",
                    f"bag_path:={bag}",
                    "-p",
                    "flush_period:=0.05",
                    "-p",
                    f"topics:=[{STATES}]",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=limit_file_size if limit else None,
            )
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
    pub = node.create_publisher(
        PointStamped,
        "/mbrl/target",
        QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT),
    )
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


@pytest.mark.parametrize(
    "params,match",
    [
        ({"episodes": 2, "topics": [STATES]}, r"'episodes' = 2 needs \['/mbrl/episode_events'\]"),
        ({"episodes": 2, "episode_source": "service"}, "'episode_length' = 0.0 must be positive"),
        ({"episode_source": "timer"}, "'episode_source' = 'timer'"),
        ({"flush_period": 0.0}, "'flush_period' = 0.0 is out of range"),
    ],
)
def test_bad_parameters_stop_the_recorder_with_a_clear_message(
    node_process, tmp_path, params, match
):
    proc = node_process("recorder", {"bag_path": str(tmp_path / "bag"), **params})
    assert proc.wait(timeout=30) == 2
    assert re.search(match, proc.output()), proc.output()


def test_empty_topic_list_is_refused(ros, tmp_path):
    empty = Parameter("topics", Parameter.Type.STRING_ARRAY, [])
    with pytest.raises(ConfigError, match="'topics' is empty"):
        RecorderNode(
            context=ros.context,
            parameter_overrides=[empty, Parameter("bag_path", value=str(tmp_path / "bag"))],
        )


def test_existing_bag_path_is_refused(node_process, tmp_path):
    (tmp_path / "bag").mkdir()
    proc = node_process("recorder", {"bag_path": str(tmp_path / "bag")})
    assert proc.wait(timeout=30) == 2
    assert "exists already" in proc.output()


def bag_stamps(bag) -> tuple[list[int], list[int]]:
    """(episode-event stamps, joint-state stamps) of a bag, in ns."""
    with BagReader(bag) as r:
        events = [json.loads(m.data)["stamp_ns"] for _, _, m in r.messages([EVENTS])]
        states = [stamp_to_ns(m.header.stamp) for _, _, m in r.messages([STATES])]
    return events, states


def test_record_graph_records_exactly_the_requested_whole_episodes(tmp_path):
    """The sim resets itself every 50 steps (episode e starts at stamp e·51·10 ms); the bag holds
    3 of its episodes, whole, with a command for every step, and nothing else."""
    bag = tmp_path / "bag"
    result = launch_graph(
        [
            "record",
            "robot:=arm2",
            "episodes:=3",
            "episode_length:=0.5",
            f"bag:={bag}",
            "status_period:=0",
        ],
        timeout=100,
    )
    assert result.returncode == 0, result.stdout
    assert "3 episodes recorded" in result.stdout
    ex = dataset_from_bag(bag)
    ds = ex.dataset
    assert ex.counts["event_reset"] == 3 and ex.counts["no_command"] == 0 and not ex.skipped
    assert [int(np.sum(ds.episodes == e)) for e in ds.episode_ids] == [50, 50, 50]
    events, states = bag_stamps(bag)
    first = events[0]
    assert first > 0 and first % 510_000_000 == 0  # a reset of the sim (not its first episode)
    assert events == [first + e * 510_000_000 for e in range(3)]
    assert states == [b + k * 10_000_000 for b in events for k in range(51)]
    with BagReader(bag) as r:
        assert r.topics[COMMANDS].count == 3 * 51


def test_service_episodes_end_with_the_first_state_at_their_length(
    ros, node_process, pi0, tmp_path
):
    """episode_source 'service': the recorder resets the lockstep sim itself; the sim runs on
    while a reset is in flight, but each recorded episode is exactly 0.3 s."""
    bag = tmp_path / "bag"
    recorder = node_process(
        "recorder",
        {"bag_path": str(bag), "episodes": 2, "episode_source": "service", "episode_length": 0.3},
    )
    node_process("arm_sim", {"robot": "arm2", "seed": 1, "min_state_subscribers": 3})
    pi0("arm2", seed=2, use_sim_time=True)
    assert recorder.wait(timeout=90) == 0, recorder.output()
    assert "2 episodes recorded" in recorder.output()
    with BagReader(bag) as r:
        topics = {name: info.count for name, info in r.topics.items()}
    # Rarely failed under load with a bag that lacked commands; say everything when it does.
    assert COMMANDS in topics, f"topics {topics}; recorder:\n{recorder.output()[-3000:]}"
    ex = dataset_from_bag(bag)
    ds = ex.dataset
    events, states = bag_stamps(bag)
    seen = (
        f"topics {topics}, counts {dict(ex.counts)}, skipped {ex.skipped}, events {events}, "
        f"{len(states)} states from {states[:1]} to {states[-1:]}; recorder:\n"
        + recorder.output()[-3000:]
    )
    assert ex.counts["event_reset"] == 2 and ex.counts["no_command"] == 0, seen
    assert not ex.skipped, seen
    assert [int(np.sum(ds.episodes == e)) for e in ds.episode_ids] == [30, 30], seen
    assert len(events) == 2, seen
    assert states == [b + k * 10_000_000 for b in events for k in range(31)], seen


def test_a_recorder_stopped_before_its_first_message_leaves_no_bag(node_process, tmp_path):
    """A graph that fails at start-up stops its recorder before anything was recorded."""
    bag = tmp_path / "bag"
    recorder = node_process("recorder", {"bag_path": str(bag), "episodes": 1})
    wait_for(lambda: "recording" in recorder.output(), 30, "the recorder to start")
    assert recorder.stop() == 0
    assert "no messages recorded: no bag written" in recorder.log_path.read_text()
    assert not bag.exists()
