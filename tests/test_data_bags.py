"""Bags: writing (split, metadata v9), reading back with rosbags and with the independent ``mcap``
reader, datasets from bags, repair after a crash, and every kind of bad input."""
import argparse
import re
from collections import Counter

import numpy as np
import pytest
import yaml
from rclpy.serialization import serialize_message

from data_testing import DT_NS, T0, lockstep_messages, mcap_counts, small_filesystem, write_bag
from mbrl_ros.data import cli
from mbrl_ros.data.bags import BagReader, BagWriter, repair_bag
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.data.errors import BagError
from mbrl_ros.data.extract import dataset_from_bag, dataset_from_bags
from mbrl_ros.data.topics import COMMANDS, EVENTS, STATES
from mbrl_ros.data.transitions import TransitionBuilder
from mbrl_ros.nodes.messages import joint_state_msg




def rosbags_counts(bag) -> Counter:
    with BagReader(bag) as r:
        return Counter(topic for topic, _, _ in r.messages(raw=True))


def test_split_bag_reads_back_identically_with_rosbags_and_mcap(tmp_path):
    msgs = lockstep_messages(400, resets=(100, 250))
    bag = tmp_path / "bag"
    written = write_bag(bag, msgs, split_bytes=20_000)
    files = sorted(p.name for p in bag.glob("*.mcap"))
    assert len(files) > 3 and files[0] == "bag_0.mcap"
    expected = Counter(topic for topic, _ in msgs)
    assert rosbags_counts(bag) == expected == mcap_counts(bag)
    with BagReader(bag) as r:
        got = [(t, log, data) for t, log, data in r.messages(raw=True)]
        assert r.message_count == len(msgs) and r.start_ns == T0
        assert [f.name for f in r.files] == [f"bag_{i}.mcap" for i in range(len(files))]
    assert [(t, d) for t, _, d in got] == written
    assert [log for _, log, _ in got] == sorted(log for _, log, _ in got)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap"
    assert meta["relative_file_paths"] == files and meta["message_count"] == len(msgs)
    assert sum(f["message_count"] for f in meta["files"]) == len(msgs)
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    assert topics[STATES]["message_count"] == 400
    assert topics[STATES]["topic_metadata"]["type_description_hash"].startswith("RIHS01_")


def test_split_by_duration(tmp_path):
    msgs = lockstep_messages(300)
    bag = tmp_path / "bag"
    write_bag(bag, msgs, log_step_ns=1_000_000, split_ns=100_000_000)
    with BagReader(bag) as r:
        assert len(r.files) == 6  # 600 messages 1 ms apart, 100 ms per file
        assert all(f.end_ns - f.start_ns < 100_000_000 for f in r.files)
    assert mcap_counts(bag) == Counter(t for t, _ in msgs)


def test_dataset_from_bag_equals_the_builder_on_the_original_messages(tmp_path):
    msgs = lockstep_messages(300, resets=(120,))
    bag = tmp_path / "bag"
    write_bag(bag, msgs)
    live = TransitionBuilder(("a", "b"), DT_NS / 1e9)
    for topic, msg in msgs:
        live.feed(topic, msg)
    live.finish()
    expected = live.take()
    ex = dataset_from_bag(bag)
    assert len(ex.dataset) == 298 and ex.counts["boundary"] == 1  # 299 pairs, 1 across the reset
    for name in ("states", "actions", "next_states", "episodes", "stamps"):
        np.testing.assert_array_equal(getattr(ex.dataset, name), getattr(expected, name))
    assert ex.dataset.joint_names == ("a", "b") and ex.dataset.dt == 0.01
    assert ex.dataset.sources == ("bag",)


def test_datasets_of_several_bags_keep_episodes_apart(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_bag(a, lockstep_messages(50, resets=(20,)))
    write_bag(b, lockstep_messages(50, seed=1))
    ex = dataset_from_bags([a, b])
    assert ex.dataset.n_episodes == 3 and len(ex.dataset) == 48 + 49
    assert ex.dataset.sources == ("a", "b")


def test_truncated_bag_names_the_file_and_repair_keeps_the_intact_prefix(tmp_path):
    msgs = lockstep_messages(400)
    bag = tmp_path / "bag"
    written = write_bag(bag, msgs, split_bytes=30_000)
    last = sorted(bag.glob("*.mcap"))[-1]
    data = last.read_bytes()
    last.write_bytes(data[:len(data) * 2 // 3])  # a crash: summary, footer, part of the data gone
    with pytest.raises(BagError, match=f"file {last.name}.*bag repair"):
        with BagReader(bag) as r:
            list(r.messages())
    report = {r.name: r for r in repair_bag(bag)}
    assert report[last.name].status == "repaired" and report[last.name].dropped_bytes > 0
    assert all(r.status == "intact" for n, r in report.items() if n != last.name)
    counts = rosbags_counts(bag)
    assert counts == mcap_counts(bag)
    kept = sum(counts.values())
    assert len(msgs) * 0.6 < kept < len(msgs)
    with BagReader(bag) as r:  # the kept messages are exactly the first ones written
        got = [(t, d) for t, _, d in r.messages(raw=True)]
    assert got == written[:kept]


def test_missing_metadata_is_explained_and_rebuilt(tmp_path):
    bag = tmp_path / "bag"
    write_bag(bag, lockstep_messages(100), split_bytes=10_000)
    before = yaml.safe_load((bag / "metadata.yaml").read_text())
    (bag / "metadata.yaml").unlink()
    with pytest.raises(BagError, match="no metadata.yaml.*bag repair"):
        BagReader(bag)
    assert all(r.status == "intact" for r in repair_bag(bag))
    after = yaml.safe_load((bag / "metadata.yaml").read_text())
    for key in ("message_count", "relative_file_paths", "files", "duration", "starting_time"):
        assert after["rosbag2_bagfile_information"][key] == \
            before["rosbag2_bagfile_information"][key]
    assert rosbags_counts(bag) == mcap_counts(bag)


def test_garbage_file_is_reported_and_left_out(tmp_path):
    bag = tmp_path / "bag"
    write_bag(bag, lockstep_messages(50))
    junk = bag / "bag_1.mcap"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    meta["rosbag2_bagfile_information"]["relative_file_paths"].append("bag_1.mcap")
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(BagError, match="damaged or incomplete"):
        BagReader(bag)
    report = {r.name: r for r in repair_bag(bag)}
    assert report["bag_1.mcap"].status == "unreadable" and "magic" in report["bag_1.mcap"].problem
    assert sum(rosbags_counts(bag).values()) == 100
    assert junk.read_bytes()[:4] != b"\x89MCA"  # left untouched


def test_not_a_bag(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        BagReader(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        BagReader(tmp_path / "file")
    with pytest.raises(BagError, match="no .mcap files"):
        repair_bag(tmp_path)


def test_bag_without_the_needed_topics(tmp_path):
    msgs = [(t, m) for t, m in lockstep_messages(20) if t != COMMANDS]
    bag = tmp_path / "bag"
    write_bag(bag, msgs)
    with pytest.raises(BagError, match=f"bag .*bag has no topic {COMMANDS}"):
        dataset_from_bag(bag)


def test_different_joint_names_across_bags(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_bag(a, lockstep_messages(20, names=("a", "b")))
    write_bag(b, lockstep_messages(20, names=("a", "c")))
    with pytest.raises(BagError, match=r"bag .*b has joints \['a', 'c'\] but bag .*a has"):
        dataset_from_bags([a, b])
    with pytest.raises(BagError, match="lacks joints"):  # explicit names missing in bag b
        dataset_from_bags([a, b], joint_names=("a", "b"))


def test_stamps_going_backwards_in_a_bag(tmp_path):
    msgs = lockstep_messages(30)
    msgs.insert(40, (STATES, joint_state_msg(5 * DT_NS, ("a", "b"), np.zeros(2), np.zeros(2),
                                             np.zeros(2))))
    bag = tmp_path / "bag"
    write_bag(bag, msgs)
    with pytest.raises(BagError, match=f"topic {STATES}, message 40 .*goes backwards"):
        dataset_from_bag(bag)


def test_full_disk_stops_cleanly_keeping_what_was_flushed(tmp_path):
    with small_filesystem(tmp_path / "small", "256k") as disk:
        if disk is None:
            pytest.skip("cannot mount a tmpfs here (not root); the recorder test covers a full "
                        "disk with a file size limit")
        writer = BagWriter(disk / "bag")
        msgs = lockstep_messages(20000)
        written = 0
        with pytest.raises(BagError, match="No space left on device.*bag keeps (\\d+) messages"
                           ) as err:
            for i, (topic, msg) in enumerate(msgs):
                if not writer.has_topic(topic):
                    writer.add_topic(topic, {STATES: "sensor_msgs/msg/JointState",
                                             COMMANDS: "std_msgs/msg/Float64MultiArray",
                                             EVENTS: "std_msgs/msg/String"}[topic])
                writer.write(topic, T0 + i, serialize_message(msg))
                written += 1
                if i % 200 == 199:
                    writer.checkpoint()
        kept = int(re.search(r"keeps (\d+) messages", str(err.value)).group(1))
        assert "complete and readable" in str(err.value)
        assert 0 < kept <= written and kept % 200 == 0
        assert sum(rosbags_counts(disk / "bag").values()) == kept == sum(mcap_counts(
            disk / "bag").values())


def parse(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    for name in ("bag", "dataset"):
        cli.add_arguments(sub.add_parser(name), name)
    return parser.parse_args(argv)


def test_cli_info_dataset_and_repair(tmp_path, capsys):
    bag = tmp_path / "bag"
    write_bag(bag, lockstep_messages(200, resets=(50, 120)))
    assert cli.run(parse(["bag", "info", str(bag)])) == 0
    out = capsys.readouterr().out
    assert "transitions:  197 extractable" in out and "2 reset" in out
    assert "episodes:     3" in out and "control period: 10 ms" in out
    out_file = tmp_path / "d.safetensors"
    assert cli.run(parse(["dataset", str(bag), str(bag), "-o", str(out_file)])) == 0
    ds = Dataset.load(out_file)
    assert len(ds) == 2 * 197 and ds.n_episodes == 6
    with pytest.raises(ValueError, match="exists"):
        cli.run(parse(["dataset", str(bag), "-o", str(out_file)]))
    assert cli.run(parse(["bag", "repair", str(bag)])) == 0
    assert "bag_0.mcap: intact, 402 messages" in capsys.readouterr().out
    no_cmd = tmp_path / "nocmd"
    write_bag(no_cmd, [(t, m) for t, m in lockstep_messages(5) if t == STATES])
    assert cli.run(parse(["bag", "info", str(no_cmd)])) == 0
    assert f"transitions:  none: bag {no_cmd} has no topic {COMMANDS}" in capsys.readouterr().out
