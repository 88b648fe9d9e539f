"""Bags as rosbag2's MCAP plugin writes them, read with the independent ``mcap`` reader and its
ROS 2 decoder (``mcap_ros2``, which decodes the CDR from the definitions stored in the file):
``topic_type_hash`` in every channel's metadata, the sender's publish time beside the log time,
definitions of types installed on the machine but not in rosbags' store, the ROS distro of the
environment in metadata.yaml; repair keeps hashes and publish times."""

import json

import numpy as np
import pytest
import yaml
from data_testing import T0, TYPES, lockstep_messages
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rclpy.serialization import serialize_message
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from std_msgs.msg import String

from mbrl_ros.data.bags import BagError, BagWriter, known_type, repair_bag
from mbrl_ros.data.recording import EpisodeRecording
from mbrl_ros.data.topics import EVENTS, STATES, resolve

KILTED = get_typestore(Stores.ROS2_KILTED)  # an independent source of the standard types' hashes
SEND_LEAD_NS = 1_234_567  # the sender published this long before the recorder received


def decoded(path):
    """(channel topic, channel metadata, log time, publish time, decoded message) per message of
    the MCAP file ``path``, in file order."""
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        return [
            (channel.topic, dict(channel.metadata), message.log_time, message.publish_time, msg)
            for _, channel, message, msg in reader.iter_decoded_messages(log_time_order=False)
        ]


def record(path, messages, types=TYPES):
    """Write (topic, rclpy message or CDR bytes) pairs at log times T0 + i us, each published
    SEND_LEAD_NS before."""
    writer = BagWriter(path)
    for i, (topic, msg) in enumerate(messages):
        if not writer.has_topic(topic):
            writer.add_topic(topic, types[topic])
        data = msg if isinstance(msg, bytes) else serialize_message(msg)
        writer.write(topic, T0 + i * 1000, data, T0 + i * 1000 - SEND_LEAD_NS)
    writer.close()


def test_mcap_ros2_decodes_a_bag_with_type_hashes_and_publish_times(tmp_path, monkeypatch):
    monkeypatch.delenv("ROS_DISTRO", raising=False)
    msgs = lockstep_messages(20, resets=(0,))
    record(tmp_path / "bag", msgs)
    got = decoded(tmp_path / "bag" / "bag_0.mcap")
    assert len(got) == len(msgs)
    for i, ((topic, msg), (t, meta, log, publish, m)) in enumerate(zip(msgs, got)):
        assert t == resolve(topic)
        assert meta["topic_type_hash"] == KILTED.hash_rihs01(TYPES[topic])
        assert "offered_qos_profiles" in meta
        assert (log, publish) == (T0 + i * 1000, T0 + i * 1000 - SEND_LEAD_NS)
        if topic == STATES:
            np.testing.assert_array_equal(m.position, msg.position)
            assert list(m.name) == list(msg.name)
            assert (m.header.stamp.sec, m.header.stamp.nanosec) == (
                msg.header.stamp.sec,
                msg.header.stamp.nanosec,
            )
        elif topic == EVENTS:
            assert m.data == msg.data
        else:
            np.testing.assert_array_equal(m.data, msg.data)
    info = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())
    info = info["rosbag2_bagfile_information"]
    assert info["ros_distro"] == "kilted"
    assert {
        t["topic_metadata"]["name"]: t["topic_metadata"]["type_description_hash"]
        for t in info["topics_with_message_count"]
    } == {resolve(topic): KILTED.hash_rihs01(msgtype) for topic, msgtype in TYPES.items()}


def test_ros_distro_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_DISTRO", "jazzy")
    record(tmp_path / "bag", [(EVENTS, String(data="x"))])
    info = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())
    assert info["rosbag2_bagfile_information"]["ros_distro"] == "jazzy"


GAINS_MSG = """# feedback gains of one joint
std_msgs/Header header
Pair[] pairs
float64[3] pid
"""
PAIR_MSG = "string joint\nint32 index\n"
GAINS_HASH = "RIHS01_" + "5a" * 32  # what the (made-up) installation states


@pytest.fixture(name="installed_prefix")
def installed_prefix_fixture(tmp_path, monkeypatch):
    """An install prefix (on AMENT_PREFIX_PATH) with the interface files of a package that no
    type store knows: mbrl_test_msgs/msg/Gains nests std_msgs/Header and mbrl_test_msgs/Pair."""
    share = tmp_path / "prefix" / "share" / "mbrl_test_msgs" / "msg"
    share.mkdir(parents=True)
    (share / "Gains.msg").write_text(GAINS_MSG)
    (share / "Pair.msg").write_text(PAIR_MSG)
    (share / "Gains.json").write_text(
        json.dumps(
            {"type_hashes": [{"type_name": "mbrl_test_msgs/msg/Gains", "hash_string": GAINS_HASH}]}
        )
    )
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "prefix"))
    return tmp_path / "prefix"


def test_a_type_installed_on_the_machine_is_recorded(tmp_path, installed_prefix):
    assert known_type("mbrl_test_msgs/msg/Gains")
    assert not known_type("mbrl_test_msgs/msg/Missing")
    store = get_typestore(Stores.ROS2_KILTED)  # rosbags serialises the CDR independently
    store.register(get_types_from_msg(PAIR_MSG, "mbrl_test_msgs/msg/Pair"))
    store.register(get_types_from_msg(GAINS_MSG, "mbrl_test_msgs/msg/Gains"))
    Gains, Pair = store.types["mbrl_test_msgs/msg/Gains"], store.types["mbrl_test_msgs/msg/Pair"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    msg = Gains(
        header=Header(stamp=Time(sec=5, nanosec=7), frame_id="base_link"),
        pairs=[Pair(joint="joint1", index=0), Pair(joint="joint2", index=1)],
        pid=np.array([1.0, 0.5, 0.25]),
    )
    data = bytes(store.serialize_cdr(msg, "mbrl_test_msgs/msg/Gains"))
    record(tmp_path / "bag", [("/gains", data)], {"/gains": "mbrl_test_msgs/msg/Gains"})
    [(topic, meta, _, _, m)] = decoded(tmp_path / "bag" / "bag_0.mcap")
    assert topic == "/gains" and meta["topic_type_hash"] == GAINS_HASH
    assert (m.header.stamp.sec, m.header.frame_id) == (5, "base_link")
    assert [(p.joint, p.index) for p in m.pairs] == [("joint1", 0), ("joint2", 1)]
    assert list(m.pid) == [1.0, 0.5, 0.25]


def test_a_type_nowhere_to_be_found_is_named(tmp_path):
    writer = BagWriter(tmp_path / "bag")
    with pytest.raises(BagError, match="topic /x: nope_msgs/msg/Thing is neither installed"):
        writer.add_topic("/x", "nope_msgs/msg/Thing")


def test_repair_keeps_type_hashes_and_publish_times(tmp_path):
    msgs = lockstep_messages(300)
    writer = BagWriter(tmp_path / "bag")
    for i, (topic, msg) in enumerate(msgs):
        if not writer.has_topic(topic):
            writer.add_topic(topic, TYPES[topic])
        writer.write(topic, T0 + i * 1000, serialize_message(msg), T0 + i * 1000 - SEND_LEAD_NS)
    path = writer.files[0]
    writer.checkpoint()
    data = (tmp_path / "bag" / path).read_bytes()  # a crash: no summary written
    writer.close()
    (tmp_path / "bag" / path).write_bytes(data)
    (tmp_path / "bag" / "metadata.yaml").unlink()
    [report] = repair_bag(tmp_path / "bag")
    assert report.status == "repaired" and report.messages == len(msgs)
    got = decoded(tmp_path / "bag" / path)
    assert [(log - publish) for _, _, log, publish, _ in got] == [SEND_LEAD_NS] * len(msgs)
    assert {t: meta["topic_type_hash"] for t, meta, *_ in got} == {
        resolve(t): KILTED.hash_rihs01(m) for t, m in TYPES.items() if t != EVENTS
    }


def test_episode_recording_keeps_the_publish_time(tmp_path):
    rec = EpisodeRecording(1, states=STATES, required=(), streams=(STATES,))
    writer = BagWriter(tmp_path / "bag")
    writer.add_topic(EVENTS, TYPES[EVENTS])
    start = String(data=json.dumps({"event": "start", "episode": 1, "stamp_ns": 5}))
    kept = rec.offer(EVENTS, T0, serialize_message(start), 5, "start", publish_ns=T0 - 99)
    assert [m[3] for m in kept] == [T0 - 99]
    for m in kept:
        writer.write(*m)
    writer.close()
    [(_, _, log, publish, m)] = decoded(tmp_path / "bag" / "bag_0.mcap")
    assert (log, publish, m.data) == (T0, T0 - 99, start.data)
