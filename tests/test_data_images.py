"""Images as data: frames joined to transitions by stamp, image datasets in files, the bag tools,
and the record graph with the simulator's camera (images in the bag = the rendered frames)."""

from __future__ import annotations

import numpy as np
import pytest
from camera_testing import require_gl
from data_testing import DT_NS, lockstep_messages, write_bag
from matplotlib.image import imread
from ros_harness import launch_graph

from mbrl_ros import cli as main_cli
from mbrl_ros.common.msgconv import MessageError
from mbrl_ros.data.bags import BagReader
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.data.errors import DataError
from mbrl_ros.data.extract import dataset_from_bag, describe_bag
from mbrl_ros.data.images import ImageFrames, contact_sheet
from mbrl_ros.data.topics import IMAGES, STATES, resolve
from mbrl_ros.nodes.messages import image_msg
from mbrl_ros.robot.description import load_robot
from mbrl_ros.simulator.camera import Camera
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig


def frame_of(stamp_ns: int, shape=(6, 5)) -> np.ndarray:
    """A frame that encodes its stamp (distinct per control period)."""
    k = stamp_ns // DT_NS
    rng = np.random.default_rng(int(k))
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


def rows_dataset(stamps) -> Dataset:
    n = len(stamps)
    return Dataset(
        np.zeros((n, 2)),
        np.zeros((n, 1)),
        np.ones((n, 2)),
        np.zeros(n, np.int64),
        np.asarray(stamps),
        ("j",),
        0.01,
        ("position/j", "velocity/j"),
    )


def test_frames_join_by_nearest_stamp_and_are_stored_once():
    frames = ImageFrames()
    for k in range(10):
        if k != 6:  # frame 6 is missing: transitions 5→6 and 6→7 cannot have images
            frames.add(k * DT_NS + (1_000_000 if k == 3 else 0), frame_of(k * DT_NS))
    data, counts = frames.attach(rows_dataset([k * DT_NS for k in range(9)]))
    assert counts == {"no_image": 2}
    assert list(data.stamps // DT_NS) == [0, 1, 2, 3, 4, 7, 8]
    for k, img, nxt in zip(data.stamps // DT_NS, data.images, data.next_images):
        np.testing.assert_array_equal(img, frame_of(k * DT_NS))  # frame 3 is 1 ms late
        np.testing.assert_array_equal(nxt, frame_of((k + 1) * DT_NS))
    assert len(data.frames) == 9  # frames 0..5 and 7..9, each once
    assert np.unique(data.frames.reshape(9, -1), axis=0).shape == (9, 90)
    strict, counts = frames.attach(rows_dataset([k * DT_NS for k in range(9)]), tolerance=0.05)
    assert counts == {"no_image": 4}  # frame 3 is now too far from its state (and 2→3)
    with pytest.raises(MessageError, match="of 6 × 5 pixels; the first was 5 × 6"):
        frames.add(1, np.zeros((5, 6, 3), np.uint8))


def test_image_dataset_file_select_concat_and_rollout(tmp_path):
    images = np.stack([frame_of(k * DT_NS) for k in range(6)])
    a = Dataset.from_rollout(
        np.arange(12.0).reshape(6, 2), np.ones((5, 1)), 0, ("j",), 0.01, images=images
    )
    assert len(a.frames) == 6 and a.image_shape == (6, 5, 3)
    np.testing.assert_array_equal(a.next_images[:-1], a.images[1:])
    b = a.select(np.array([4, 1]))
    np.testing.assert_array_equal(b.images, images[[4, 1]])
    np.testing.assert_array_equal(b.next_images, images[[5, 2]])
    both = Dataset.concat([a, b], renumber=True)
    np.testing.assert_array_equal(both.images, np.concatenate([images[:5], images[[4, 1]]]))
    both.save(tmp_path / "d.safetensors")
    back = Dataset.load(tmp_path / "d.safetensors")
    assert len(back.frames) == 10  # compacted: a's 6 and the 4 of its copy that b uses
    for name in ("images", "next_images", "states", "stamps", "episodes"):
        np.testing.assert_array_equal(getattr(back, name), getattr(both, name))
    plain = Dataset.from_rollout(np.zeros((3, 2)), np.zeros((2, 1)), 0, ("j",), 0.01)
    with pytest.raises(DataError, match="images"):
        Dataset.concat([a, plain])
    with pytest.raises(DataError, match="no image observations"):
        _ = plain.images
    with pytest.raises(DataError, match="points outside the 6 frames"):
        a.with_images(a.frames, a.image_index + 3, a.next_image_index)


def test_bag_tools_with_images(tmp_path, capsys):
    msgs = lockstep_messages(30, resets=(0,))
    for i in range(len(msgs) - 1, -1, -1):  # an image just before each joint state
        topic, msg = msgs[i]
        if resolve(topic) == resolve(STATES):
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            msgs.insert(i, (IMAGES, image_msg(stamp, "cam", frame_of(stamp))))
    write_bag(tmp_path / "bag", msgs)
    ex = dataset_from_bag(tmp_path / "bag", images=True)
    ds = ex.dataset
    assert len(ds) == 29 and len(ds.frames) == 30 and not ex.skipped
    for stamp, img, nxt in zip(ds.stamps, ds.images, ds.next_images):
        np.testing.assert_array_equal(img, frame_of(stamp))
        np.testing.assert_array_equal(nxt, frame_of(stamp + DT_NS))
    assert describe_bag(tmp_path / "bag").extraction.dataset.has_images
    assert main_cli.main(["bag", "info", str(tmp_path / "bag")]) == 0
    out = capsys.readouterr().out
    assert "camera:       30 images 5×6 rgb8" in out and "images:       30 frames 5×6" in out
    assert (
        main_cli.main(
            ["dataset", str(tmp_path / "bag"), "-o", str(tmp_path / "d.safetensors"), "--images"]
        )
        == 0
    )
    saved = Dataset.load(tmp_path / "d.safetensors")
    np.testing.assert_array_equal(saved.images, ds.images)
    assert (
        main_cli.main(
            [
                "bag",
                "images",
                str(tmp_path / "bag"),
                "-o",
                str(tmp_path / "s.png"),
                "--every",
                "2",
                "--count",
                "4",
                "--columns",
                "2",
            ]
        )
        == 0
    )
    sheet = (imread(tmp_path / "s.png")[..., :3] * 255).round().astype(np.uint8)
    expected = contact_sheet(np.stack([frame_of(k * DT_NS) for k in (0, 2, 4, 6)]), 2)
    np.testing.assert_array_equal(sheet, expected)
    write_bag(tmp_path / "plain", lockstep_messages(5))
    assert (
        main_cli.main(["dataset", str(tmp_path / "plain"), "-o", str(tmp_path / "p"), "--images"])
        != 0
    )
    assert "has no topic /camera/image_raw" in capsys.readouterr().err


@pytest.mark.ros
def test_record_graph_records_the_rendered_frames(tmp_path):
    """mbrl-ros launch record camera:=true: every recorded state has its image, and each image
    is the frame the simulator renders for that state."""
    require_gl()
    bag = tmp_path / "bag"
    result = launch_graph(
        [
            "record",
            "robot:=arm2",
            "episodes:=2",
            "episode_length:=0.3",
            f"bag:={bag}",
            "status_period:=0",
            "camera:=true",
        ],
        timeout=100,
    )
    assert result.returncode == 0, result.stdout
    with BagReader(bag) as r:
        topics = {name: info.count for name, info in r.topics.items()}
    # Once (under load) the bag lacked /joint_states; say what the graph said when it does.
    assert resolve(STATES) in topics, f"topics {topics}; graph output:\n{result.stdout[-6000:]}"
    ex = dataset_from_bag(bag, images=True)
    ds = ex.dataset
    assert len(ds) == 60 and ex.counts["no_image"] == 0 and not ex.skipped
    assert len(ds.frames) == 62  # 31 states per episode, each frame once
    sim = ArmSimulator(load_robot("arm2"), SimConfig())
    with Camera(sim.model, "solar", 64, 64) as camera:
        for s, img, s_next, nxt in zip(ds.states, ds.images, ds.next_states, ds.next_images):
            for state, frame in ((s, img), (s_next, nxt)):
                sim.set_state(state[:2], state[2:])
                np.testing.assert_array_equal(sim.render(camera), frame)


def test_forget_before_bounds_the_frames_kept():
    frames = ImageFrames()
    for k in range(5):
        frames.add(k * DT_NS, frame_of(k * DT_NS))
    frames.forget_before(3 * DT_NS)
    stamps, kept = frames.arrays()
    assert list(stamps) == [3 * DT_NS, 4 * DT_NS]
    np.testing.assert_array_equal(kept[0], frame_of(3 * DT_NS))
