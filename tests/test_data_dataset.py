"""Dataset: episode split, normalisation statistics, safetensors files, end-effector features."""

import json

import mujoco
import numpy as np
import pytest

from mbrl_ros.data.dataset import Dataset, NormStats, joint_state_names
from mbrl_ros.data.errors import DataError
from mbrl_ros.data.features import add_ee_features
from mbrl_ros.robot.description import build_mujoco_model, load_robot, mujoco_joint_indices

NAMES = ("j1", "j2", "j3")


def make(n=120, episodes=6, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, 6))
    return Dataset(
        s,
        rng.normal(size=(n, 3)),
        s + rng.normal(scale=0.1, size=(n, 6)),
        np.repeat(np.arange(episodes), n // episodes),
        np.arange(n) * 10_000_000,
        NAMES,
        0.01,
        joint_state_names(NAMES),
        ("bag_a",),
    )


def test_split_keeps_whole_episodes_and_is_seeded():
    ds = make()
    train, val = ds.split(0.34, seed=3)
    assert set(train.episode_ids).isdisjoint(val.episode_ids)
    assert train.n_episodes + val.n_episodes == 6 and val.n_episodes == 2
    assert len(train) + len(val) == len(ds)
    again = ds.split(0.34, seed=3)[1]
    np.testing.assert_array_equal(val.episodes, again.episodes)
    other = {tuple(ds.split(0.34, seed=s)[1].episode_ids) for s in range(10)}
    assert len(other) > 1  # the seed matters
    assert ds.split(0.0)[1].n_episodes == 0
    assert ds.split(0.01)[1].n_episodes == 1 and ds.split(0.99)[0].n_episodes == 1


def test_split_of_one_episode_is_a_clear_error():
    ds = make(episodes=1)
    with pytest.raises(DataError, match="1 episode"):
        ds.split(0.2)


def test_stats_match_numpy_and_floor_constant_columns():
    ds = make()
    states = ds.states.copy()
    states[:, 2] = 4.0  # constant column
    ds = Dataset(
        states, ds.actions, ds.next_states, ds.episodes, ds.stamps, NAMES, 0.01, ds.state_names
    )
    st = ds.stats(floor=1e-3)
    np.testing.assert_allclose(st.state_mean, states.mean(0))
    np.testing.assert_allclose(st.action_std, ds.actions.std(0))
    np.testing.assert_allclose(st.delta_mean, (ds.next_states - states).mean(0))
    np.testing.assert_allclose(st.delta_std, (ds.next_states - states).std(0))
    assert st.state_std[2] == 1e-3
    assert np.all(((states - st.state_mean) / st.state_std)[:, 2] == 0)
    back = NormStats.from_tensors(st.tensors())
    np.testing.assert_array_equal(back.delta_std, st.delta_std)
    with pytest.raises(DataError, match="empty"):
        ds.select(np.zeros(len(ds), bool)).stats()


def test_save_and_load_round_trip_exactly_without_pickle(tmp_path):
    ds = make()
    path = tmp_path / "d.safetensors"
    ds.save(path)
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"]["mbrl_ros"])
    assert meta["schema"] == "mbrl_ros.dataset" and meta["version"] == 1
    assert meta["joint_names"] == list(NAMES) and meta["dt"] == 0.01
    back = Dataset.load(path)
    for name in ("states", "actions", "next_states", "episodes", "stamps"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    assert (back.joint_names, back.dt, back.state_names, back.sources) == (
        ds.joint_names,
        ds.dt,
        ds.state_names,
        ds.sources,
    )


def test_corrupt_or_foreign_file_is_rejected_naming_the_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04\x95pickle")
    with pytest.raises(DataError, match="bad.safetensors"):
        Dataset.load(bad)
    ds = make()
    data = bytearray(ds.to_bytes())
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(bytes(data[:-100]))
    with pytest.raises(DataError, match="cut.safetensors"):
        Dataset.load(cut)


def test_inconsistent_arrays_are_rejected():
    ds = make()
    with pytest.raises(DataError, match="actions has shape"):
        Dataset(
            ds.states,
            ds.actions[:, :2],
            ds.next_states,
            ds.episodes,
            ds.stamps,
            NAMES,
            0.01,
            ds.state_names,
        )
    states = ds.states.copy()
    states[0, 0] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        Dataset(
            states, ds.actions, ds.next_states, ds.episodes, ds.stamps, NAMES, 0.01, ds.state_names
        )


def test_concat_renumbers_episodes_of_different_sources_and_checks_layout():
    a, b = make(seed=1), make(seed=2)
    both = Dataset.concat([a, b], renumber=True)
    assert both.n_episodes == 12 and len(both) == 240
    assert Dataset.concat([a, b]).n_episodes == 6  # pieces of one stream keep their ids
    other = Dataset(
        b.states,
        b.actions,
        b.next_states,
        b.episodes,
        b.stamps,
        ("x", "y", "z"),
        0.01,
        b.state_names,
    )
    with pytest.raises(DataError, match="joint names"):
        Dataset.concat([a, other])


@pytest.mark.parametrize("name", ["arm2", "arm7"])
def test_ee_features_equal_mujoco_site_positions(name):
    robot = load_robot(name)
    n = robot.n_joints
    rng = np.random.default_rng(5)
    q = rng.uniform(robot.limits.lower, robot.limits.upper, (20, n))
    q_next = rng.uniform(robot.limits.lower, robot.limits.upper, (20, n))
    zeros = np.zeros((20, n))
    ds = Dataset(
        np.hstack([q, zeros]),
        zeros,
        np.hstack([q_next, zeros]),
        np.zeros(20),
        np.arange(20),
        robot.joint_names,
        0.01,
        joint_state_names(robot.joint_names),
    )
    out = add_ee_features(ds, robot)
    assert out.state_names[-3:] == ("ee/x", "ee/y", "ee/z")
    model = build_mujoco_model(robot)
    data = mujoco.MjData(model)
    qi, _ = mujoco_joint_indices(model, robot)
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "ee")
    for rows, x in ((q, out.states), (q_next, out.next_states)):
        for row, got in zip(rows, x[:, -3:]):
            data.qpos[qi] = row
            mujoco.mj_kinematics(model, data)
            np.testing.assert_allclose(got, data.site_xpos[site], atol=1e-9)
    with pytest.raises(DataError, match="every joint"):
        add_ee_features(make(), robot)
