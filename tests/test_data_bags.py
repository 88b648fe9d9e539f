"""Bags: writing (split, metadata v9), reading back with rosbags and with the independent ``mcap``
reader, datasets from bags, repair after a crash, and every kind of bad input."""

import argparse
import re
import shutil
import struct
from collections import Counter

import numpy as np
import pytest
import yaml
from data_testing import (
    DT_NS,
    T0,
    TYPES,
    lockstep_messages,
    mcap_counts,
    small_filesystem,
    write_bag,
)
from mcap.reader import make_reader
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from std_msgs.msg import String, UInt8MultiArray

from mbrl_ros.cli import data as cli
from mbrl_ros.data.bags import BagReader, BagWriter, repair_bag, typestore
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.data.errors import BagError
from mbrl_ros.data.extract import dataset_from_bag, dataset_from_bags
from mbrl_ros.data.topics import COMMANDS, EVENTS, STATES, resolve
from mbrl_ros.data.transitions import TransitionBuilder
from mbrl_ros.nodes.messages import command_msg, joint_state_msg


def rosbags_counts(bag) -> Counter:
    with BagReader(bag) as r:
        return Counter(topic for topic, _, _ in r.messages(raw=True))


def test_split_bag_reads_back_identically_with_rosbags_and_mcap(tmp_path):
    msgs = lockstep_messages(400, resets=(100, 250))
    bag = tmp_path / "bag"
    written = write_bag(bag, msgs, split_bytes=20_000)
    files = sorted(p.name for p in bag.glob("*.mcap"))
    assert len(files) > 3 and files[0] == "bag_0.mcap"
    expected = Counter(resolve(topic) for topic, _ in msgs)
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
    assert topics[resolve(STATES)]["message_count"] == 400
    assert topics[resolve(STATES)]["topic_metadata"]["type_description_hash"].startswith("RIHS01_")


def test_split_by_duration(tmp_path):
    msgs = lockstep_messages(300)
    bag = tmp_path / "bag"
    write_bag(bag, msgs, log_step_ns=1_000_000, split_ns=100_000_000)
    with BagReader(bag) as r:
        assert len(r.files) == 6  # 600 messages 1 ms apart, 100 ms per file
        assert all(f.end_ns - f.start_ns < 100_000_000 for f in r.files)
    assert mcap_counts(bag) == Counter(resolve(t) for t, _ in msgs)


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


def late_events(msgs, by: int):
    """``msgs`` with each event moved ``by`` messages later (as a recorder that took it after
    the next states and commands writes it)."""
    out = list(msgs)
    for i in [i for i, (topic, _) in enumerate(msgs) if topic == EVENTS]:
        j = out.index(msgs[i])
        out.insert(min(j + by, len(out) - 1), out.pop(j))
    return out


@pytest.mark.parametrize("by", [3, 40])
def test_events_recorded_after_later_states_bound_their_episodes(tmp_path, by):
    """Each reset event written ``by`` messages late (states stamped after it before it): the
    dataset equals that of the bag in stamp order; read in recorded order the transition across
    the reset would count and the episodes would merge."""
    msgs = lockstep_messages(300, resets=(100, 200))
    timely, late = tmp_path / "timely", tmp_path / "late"
    write_bag(timely, msgs)
    write_bag(late, late_events(msgs, by))
    expected, ex = dataset_from_bag(timely), dataset_from_bag(late)
    assert expected.counts["boundary"] == 2 and expected.counts["late_event"] == 0
    assert ex.counts == expected.counts
    for name in ("states", "actions", "next_states", "episodes", "stamps"):
        np.testing.assert_array_equal(getattr(ex.dataset, name), getattr(expected.dataset, name))
    builder = TransitionBuilder(("a", "b"), DT_NS / 1e9)  # the recorded order, fed as is
    for topic, msg in late_events(msgs, by):
        builder.feed(topic, msg)
    builder.finish()
    assert builder.counts["late_event"] == 2 and builder.counts["boundary"] < 2


def test_a_late_event_is_not_moved_into_the_segment_before_a_clock_restart(tmp_path):
    """A segment restarts its clock (stamps from 0 again) and its reset event is written
    before its states: the event stays in the new segment, not among the earlier, later-stamped
    states of the old one."""
    old = lockstep_messages(100, stamp0=50 * DT_NS)
    new = lockstep_messages(100, resets=(0,), seed=1)
    ex = dataset_from_bag(write_bag(tmp_path / "bag", old + new) and tmp_path / "bag")
    assert ex.counts["stamp_backwards"] == 1 and ex.counts["late_event"] == 0
    assert [int(np.sum(ex.dataset.episodes == e)) for e in ex.dataset.episode_ids] == [99, 99]


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
    last.write_bytes(data[: len(data) * 2 // 3])  # a crash: summary, footer, part of the data gone
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


def message_ends(data: bytes) -> list[int]:
    """Offsets where each message record of an MCAP file with uncompressed chunks ends, in file
    order (read independently of the package's salvage code)."""
    ends, pos = [], 8
    while pos < len(data):
        op, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
        body = pos + 9
        if op == 0x0F:  # data end: the summary follows
            break
        if op == 0x06:  # chunk: times, sizes, CRC, compression, records
            assert struct.unpack_from("<I", data, body + 28)[0] == 0  # uncompressed
            inner, end = body + 40, body + 40 + struct.unpack_from("<Q", data, body + 32)[0]
            while inner < end:
                inner_op = data[inner]
                inner += 9 + struct.unpack_from("<Q", data, inner + 1)[0]
                if inner_op == 0x05:
                    ends.append(inner)
        elif op == 0x05:
            ends.append(body + length)
        pos = body + length
    return ends


def repaired_copy(src, name: str, tmp_path, cut: int):
    """A copy of bag ``src`` whose file ``name`` is cut to ``cut`` bytes, repaired; returns (the
    copy, the FileRepair of that file, its bytes before the repair)."""
    bag = tmp_path / f"cut_{cut}"
    shutil.copytree(src, bag)
    data = (bag / name).read_bytes()[:cut]
    (bag / name).write_bytes(data)
    report = {r.name: r for r in repair_bag(bag)}
    return bag, report[name], data


def test_repair_of_a_file_cut_anywhere_keeps_every_whole_message_and_a_backup(tmp_path):
    src = tmp_path / "src"
    written = write_bag(src, lockstep_messages(250), checkpoint_every=70)  # 8 chunks
    full = (src / "src_0.mcap").read_bytes()
    ends = message_ends(full)
    assert len(ends) == len(written)
    with open(src / "src_0.mcap", "rb") as f:
        chunks = make_reader(f).get_summary().chunk_indexes
    assert len(chunks) == 8
    # Cuts: a stride through the file, around message ends, at and in chunk headers and ends,
    # inside the summary.
    cuts = sorted(
        set(range(0, len(full), len(full) // 90))
        | {len(full) - 1, len(full) - 30}
        | {e + d for e in ends[::37] for d in (-1, 0, 1)}
        | {c.chunk_start_offset + d for c in chunks for d in (0, 1, 9, 40)}
        | {c.chunk_start_offset + c.chunk_length + d for c in chunks for d in (-1, 0)}
    )
    for cut in cuts:
        bag, r, before = repaired_copy(src, "src_0.mcap", tmp_path, cut)
        if cut < 8:  # not even the magic bytes: left as it is
            assert r.status == "unreadable" and (bag / "src_0.mcap").read_bytes() == before
            continue
        assert r.status == "repaired", (cut, r)
        assert (bag / r.backup).read_bytes() == before, cut  # the backup is the input
        whole = sum(1 for e in ends if e <= cut)
        with BagReader(bag) as reader:
            got = [(t, d) for t, _, d in reader.messages(raw=True)]
        assert len(got) >= whole and got == written[: len(got)], (cut, len(got), whole)
        assert r.messages == len(got) == sum(mcap_counts(bag).values())
        shutil.rmtree(bag)


def test_repair_salvages_a_cut_zstd_chunk_of_a_bag_from_elsewhere(tmp_path):
    """A bag written as ``ros2 bag record`` does (zstd-compressed 1 MiB chunks), cut inside its
    last chunk: the stream decoder recovers the messages of the chunk's complete blocks."""
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    payloads = [bytes(rng.integers(0, 256, 4000, dtype=np.uint8)) for _ in range(700)]
    writer = Writer(src, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        conn = writer.add_connection("/blob", "std_msgs/msg/UInt8MultiArray", typestore=typestore())
        written = [serialize_message(UInt8MultiArray(data=p)) for p in payloads]
        for i, data in enumerate(written):
            writer.write(conn, T0 + i, data)
    name = next(src.glob("*.mcap")).name
    with open(src / name, "rb") as f:
        chunks = make_reader(f).get_summary().chunk_indexes
    assert len(chunks) == 3 and {c.compression for c in chunks} == {"zstd"}
    last = chunks[-1]
    in_whole_chunks = chunks[-2].message_end_time - T0 + 1
    bag, r, before = repaired_copy(
        src, name, tmp_path, last.chunk_start_offset + last.chunk_length * 3 // 4
    )
    assert r.status == "repaired" and "zstd" in r.problem
    assert (bag / r.backup).read_bytes() == before
    with BagReader(bag) as reader:
        got = [d for _, _, d in reader.messages(raw=True)]
    assert in_whole_chunks < len(got) < len(written) and got == written[: len(got)]


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
        assert (
            after["rosbag2_bagfile_information"][key] == before["rosbag2_bagfile_information"][key]
        )
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
    with pytest.raises(BagError, match=f"bag .*bag has no topic {resolve(COMMANDS)}"):
        dataset_from_bag(bag)


def test_different_joint_names_across_bags(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_bag(a, lockstep_messages(20, names=("a", "b")))
    write_bag(b, lockstep_messages(20, names=("a", "c")))
    with pytest.raises(BagError, match=r"bag .*b has joints \['a', 'c'\] but bag .*a has"):
        dataset_from_bags([a, b])
    with pytest.raises(BagError, match="lacks joints"):  # explicit names missing in bag b
        dataset_from_bags([a, b], joint_names=("a", "b"))


def bad_messages():
    """A lockstep run of 100 steps with one of each bad message: a NaN joint state (k = 30), a
    command of the wrong size (for k = 50), an episode event that is not JSON, a joint state
    stamped back in time (after k = 70) and a joint state whose CDR is cut short (k = 85)."""
    msgs = lockstep_messages(100)
    nan = joint_state_msg(30 * DT_NS, ("a", "b"), np.array([np.nan, 0.0]), np.zeros(2), np.zeros(2))
    msgs[2 * 30] = (STATES, nan)
    msgs[2 * 50 + 1] = (COMMANDS, command_msg(np.zeros(3), 50 * DT_NS))
    back = joint_state_msg(5 * DT_NS, ("a", "b"), np.zeros(2), np.zeros(2), np.zeros(2))
    msgs.insert(2 * 71, (STATES, back))
    msgs.insert(10, (EVENTS, String(data="{not json")))
    return msgs


def test_bad_messages_are_skipped_counted_and_reported_not_the_whole_bag(tmp_path, capsys):
    bag = tmp_path / "bag"
    written = write_bag(bag, bad_messages())
    # Damage one message's CDR in the file (state k = 85: cut its arrays short).
    cut = [i for i, (t, _) in enumerate(written) if t == resolve(STATES)][85 + 1]
    data = bytearray((bag / "bag_0.mcap").read_bytes())
    at = data.index(written[cut][1])
    data[at + 20 : at + 24] = (10**6).to_bytes(4, "little")  # frame_id length far past the end
    (bag / "bag_0.mcap").write_bytes(bytes(data))
    ex = dataset_from_bag(bag)
    c = ex.counts
    assert (
        c["malformed_state"],
        c["malformed_command"],
        c["malformed_event"],
        c["stamp_backwards"],
    ) == (2, 1, 1, 1)
    # 99 pairs; lost: 2 around each bad state, 1 without its command, 1 after the stamp that
    # went back (the new segment's first state has no successor one step later).
    assert len(ex.dataset) == 99 - 2 - 1 - 1 - 2
    assert c["gap"] == 3 and c["no_command"] == 1
    assert ex.dataset.n_episodes == 2  # the backwards stamp starts a new segment
    first = ex.skipped["malformed_state"]
    assert first.bag == "bag" and first.at_s == pytest.approx((2 * 30 + 1) * DT_NS / 3 / 1e9)
    assert "NaN" in first.detail or "finite" in first.detail
    assert "not JSON" in ex.skipped["malformed_event"].detail
    assert "goes backwards" in ex.skipped["stamp_backwards"].detail
    # The command line prints one line per reason, for bag info and dataset.
    assert cli.run(parse(["bag", "info", str(bag)])) == 0
    out = capsys.readouterr().out
    assert f"transitions:  {len(ex.dataset)} extractable" in out
    lines = [line for line in out.splitlines() if line.startswith("skipped: ")]
    assert [line.split(":")[1] for line in lines] == [
        " malformed command",
        " malformed event",
        " malformed state",
        " stamp backwards",
    ]
    assert lines[2].startswith(
        f"skipped: malformed state: 2 message(s), the first in bag at "
        f"{first.at_s:.3f} s: {resolve(STATES)}: "
    )
    assert cli.run(parse(["dataset", str(bag), "-o", str(tmp_path / "d.safetensors")])) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("skipped: ")] == lines


def test_log_times_going_backwards(tmp_path):
    """The writer makes log times monotone; a bag from elsewhere whose log times go backwards
    (per topic) is read in recorded order and extracts exactly."""
    msgs = lockstep_messages(200, resets=(80,))
    backwards = [T0 + i * 1000 - (50_000 if i % 7 == 3 else 0) for i in range(len(msgs))]
    live = TransitionBuilder(("a", "b"), DT_NS / 1e9)
    for topic, msg in msgs:
        live.feed(topic, msg)
    live.finish()
    expected = live.take()
    ours, other = tmp_path / "ours", tmp_path / "other"
    writer = BagWriter(ours)
    with Writer(other, version=9, storage_plugin=StoragePlugin.MCAP) as rosbags_writer:
        conns = {}
        for (topic, msg), log_ns in zip(msgs, backwards):
            if topic not in conns:
                writer.add_topic(topic, TYPES[topic])
                conns[topic] = rosbags_writer.add_connection(
                    resolve(topic), TYPES[topic], typestore=typestore()
                )
            writer.write(topic, log_ns, serialize_message(msg))
            rosbags_writer.write(conns[topic], log_ns, serialize_message(msg))
    writer.close()
    assert writer.clamped_log_times == sum(1 for i in range(len(msgs)) if i % 7 == 3)
    with BagReader(ours) as r:
        logs = [log for _, log, _ in r.messages(raw=True)]
        assert logs == sorted(logs)
        assert [t for t, _, _ in r.messages()] == [resolve(t) for t, _ in msgs]
    with BagReader(other) as r:  # rosbags reads it in log-time order: joint states reordered
        assert [t for t, _, _ in r.messages(raw=True)] != [t for t, _ in msgs]
    for bag in (ours, other):
        ex = dataset_from_bag(bag)
        assert not ex.skipped and len(ex.dataset) == 198
        for name in ("states", "actions", "next_states", "episodes", "stamps"):
            np.testing.assert_array_equal(getattr(ex.dataset, name), getattr(expected, name))


def test_a_writer_that_writes_nothing_leaves_no_folder(tmp_path):
    writer = BagWriter(tmp_path / "bag")
    writer.add_topic(STATES, TYPES[STATES])
    writer.checkpoint()
    writer.close()
    assert not (tmp_path / "bag").exists() and not writer.exists
    (tmp_path / "file").write_text("x")
    with pytest.raises(BagError, match="not a writable folder"):
        BagWriter(tmp_path / "file" / "bag")


def test_full_disk_stops_cleanly_keeping_what_was_flushed(tmp_path):
    with small_filesystem(tmp_path / "small", "256k") as disk:
        if disk is None:
            pytest.skip(
                "cannot mount a tmpfs here (not root); the recorder test covers a full "
                "disk with a file size limit"
            )
        writer = BagWriter(disk / "bag")
        msgs = lockstep_messages(20000)
        written = 0
        with pytest.raises(
            BagError, match="No space left on device.*bag keeps (\\d+) messages"
        ) as err:
            for i, (topic, msg) in enumerate(msgs):
                if not writer.has_topic(topic):
                    writer.add_topic(
                        topic,
                        {
                            STATES: "sensor_msgs/msg/JointState",
                            COMMANDS: "std_msgs/msg/Float64MultiArray",
                            EVENTS: "std_msgs/msg/String",
                        }[topic],
                    )
                writer.write(topic, T0 + i, serialize_message(msg))
                written += 1
                if i % 200 == 199:
                    writer.checkpoint()
        kept = int(re.search(r"keeps (\d+) messages", str(err.value)).group(1))
        assert "complete and readable" in str(err.value)
        assert 0 < kept <= written and kept % 200 == 0
        assert (
            sum(rosbags_counts(disk / "bag").values())
            == kept
            == sum(mcap_counts(disk / "bag").values())
        )


def test_a_write_error_before_the_first_flush_leaves_no_bag(tmp_path):
    with small_filesystem(tmp_path / "small", "48k") as disk:
        if disk is None:
            pytest.skip("cannot mount a tmpfs here (not root)")
        writer = BagWriter(disk / "bag")
        writer.add_topic(STATES, TYPES[STATES])
        state = joint_state_msg(0, ("a", "b"), np.zeros(2), np.zeros(2), np.zeros(2))
        with pytest.raises(
            BagError,
            match="No space left.*The bag is empty: nothing had been "
            "flushed, so no bag is left behind",
        ):
            writer.write(STATES, T0, serialize_message(state))
        assert not (disk / "bag").exists() and not writer.exists


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
    assert (
        f"transitions:  none: bag {no_cmd} has no topic {resolve(COMMANDS)}"
        in capsys.readouterr().out
    )


def test_bags_of_a_real_robot_resampled_by_the_command_line(tmp_path, capsys):
    """A bag of a real robot (jittered 500 Hz wall-clock states, commands tagged with their send
    time, an arm that does not compensate gravity): ``mbrl-ros dataset --resample`` and
    ``mbrl-ros fit --bag --resample`` give what the fitter's Resampler gives on the messages."""
    from test_data_resample import messages, robot_stream

    from mbrl_ros import cli as main_cli
    from mbrl_ros.data.resample import Resampler
    from mbrl_ros.robot.description import load_robot
    from mbrl_ros.robot.gravity import GravityModel

    robot = load_robot("arm7")
    stream = robot_stream(11, seconds=1.0, names=robot.joint_names, b=np.full(7, 0.1), v0=0.0)
    msgs = messages(stream)
    write_bag(tmp_path / "bag", msgs)
    gravity = GravityModel(robot)
    for extra, resampler in (
        ([], Resampler(robot.joint_names, 0.01)),
        (
            [
                "--robot-compensates-gravity",
                "false",
                "--robot",
                "arm7",
                "--command-timeout",
                "0.02",
            ],
            Resampler(robot.joint_names, 0.01, gravity=gravity, command_timeout=0.02),
        ),
    ):
        for topic, msg in msgs:
            resampler.feed(topic, msg)
        resampler.finish()
        expected = resampler.take()
        out = tmp_path / f"d{len(extra)}.safetensors"
        assert (
            cli.run(
                parse(
                    ["dataset", str(tmp_path / "bag"), "-o", str(out), "--resample", "0.01", *extra]
                )
            )
            == 0
        )
        got = Dataset.load(out)
        assert len(got) == len(expected) > 80
        for field in ("states", "actions", "next_states", "stamps"):
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
        printed = capsys.readouterr().out
        if resampler.resample_counts["state_gap"]:
            assert f"interval state gap {resampler.resample_counts['state_gap']}" in printed
    assert not np.array_equal(got.actions, Dataset.load(tmp_path / "d0.safetensors").actions)
    # without resampling the 2 ms steps are all gaps against the median step: no 10 ms data
    assert len(dataset_from_bag(tmp_path / "bag", dt=0.01).dataset) == 0
    model = tmp_path / "m.safetensors"
    assert (
        main_cli.main(
            [
                "fit",
                "--bag",
                str(tmp_path / "bag"),
                "--resample",
                "0.01",
                "--robot-compensates-gravity",
                "false",
                "--robot",
                "arm7",
                "--model",
                "mlp",
                "--members",
                "1",
                "--epochs",
                "2",
                "--hidden",
                "8",
                "--horizons",
                "1",
                "-o",
                str(model),
            ]
        )
        == 0
    )
    assert model.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--resample", "0.01", "--dt", "0.01"], "--dt and --resample"),
        (["--robot-compensates-gravity", "false"], "needs --robot"),
        (["--command-timeout", "0.1"], "--command-timeout needs --resample"),
        (["--robot", "arm7"], "--robot is only used with"),
    ],
)
def test_bad_stream_options(tmp_path, argv, message):
    write_bag(tmp_path / "bag", lockstep_messages(20))
    with pytest.raises(ValueError, match=message):
        cli.run(
            parse(["dataset", str(tmp_path / "bag"), "-o", str(tmp_path / "d.safetensors"), *argv])
        )
