"""Episode scoring (pure core) and the episode_manager node in a lockstep graph."""

import json
from dataclasses import replace

import mujoco
import numpy as np
import pytest

from mbrl_ros.common.paths import share_path
from mbrl_ros.robot.config import derive_robot_config
from mbrl_ros.robot.description import build_mujoco_model, load_robot
from mbrl_ros.tasks.episodes import (
    StartPoseSampler,
    Summary,
    TargetSampler,
    progress_line,
    score,
)

ARM2_BOX = (np.array([-0.3, -0.3, -1.0]), np.array([0.3, 0.3, 1.0]))


def test_targets_are_reachable_inside_the_box_and_seeded():
    robot = load_robot("arm7")
    box = (np.array([0.2, -0.5, 0.2]), np.array([0.7, 0.5, 0.8]))
    a = [TargetSampler(robot, box, seed=4).sample() for _ in range(1)]
    s1, s2 = TargetSampler(robot, box, seed=4), TargetSampler(robot, box, seed=5)
    t1 = np.array([s1.sample() for _ in range(20)])
    t2 = np.array([s2.sample() for _ in range(20)])
    np.testing.assert_array_equal(t1[0], a[0])
    assert np.all((t1 >= box[0]) & (t1 <= box[1]))
    assert not np.allclose(t1, t2)
    # reachable by construction (FK of in-limit configurations): within the arm's 0.867 m reach
    # of the shoulder (joint2 axis at z = 0.333 m)
    assert np.all(np.linalg.norm(t1 - [0.0, 0.0, 0.333], axis=1) <= 0.8675)


def test_empty_or_unreachable_box_is_refused():
    robot = load_robot("arm2")
    with pytest.raises(ValueError, match="empty"):
        TargetSampler(robot, (np.zeros(3), np.zeros(3)), 0)
    with pytest.raises(ValueError, match="no reachable"):
        TargetSampler(
            robot, (np.array([2.0, 2, -1]), np.array([3.0, 3, 1])), 0, max_tries=1000
        ).sample()


ROBOTS = sorted(p.stem for p in share_path("urdf").glob("*.urdf"))


def mujoco_ee(robot, q: np.ndarray) -> np.ndarray:
    """End-effector positions (P, 3) of poses q (P, n) from MuJoCo's 'ee' site: an FK
    independent of ForwardKinematics."""
    model = build_mujoco_model(robot, scene=None)
    data = mujoco.MjData(model)
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "ee")
    out = []
    for pose in q:
        data.qpos[:] = pose
        mujoco.mj_kinematics(model, data)
        out.append(data.site_xpos[site].copy())
    return np.array(out)


def home_config(name: str, seed: int = 0):
    """The derived config of a package robot with a random home inside its limits."""
    robot = load_robot(name)
    lower = np.where(np.isfinite(robot.limits.lower), robot.limits.lower, -np.pi)
    upper = np.where(np.isfinite(robot.limits.upper), robot.limits.upper, np.pi)
    home = np.random.default_rng(seed).uniform(lower, upper)
    return robot, derive_robot_config(robot, home, name=name)


@pytest.mark.parametrize("name", ROBOTS)
def test_targets_around_home_are_reached_inside_the_limits_above_the_base(name):
    robot, config = home_config(name)
    sampler = TargetSampler.around_home(robot, config, seed=3)
    pairs = [sampler.sample_with_pose() for _ in range(30)]
    targets, poses = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    np.testing.assert_allclose(mujoco_ee(robot, poses), targets, atol=1e-9)
    margin = config.limit_margin
    assert np.all(poses >= robot.limits.lower + margin - 1e-12)
    assert np.all(poses <= robot.limits.upper - margin + 1e-12)
    assert np.all(np.abs(poses - config.home) <= config.target_radius + 1e-12)
    assert np.all(targets[:, 2] >= config.target_min_height)
    again = TargetSampler.around(
        robot,
        config.home,
        config.target_radius,
        config.target_min_height,
        config.limit_margin,
        seed=3,
    )
    other = TargetSampler.around_home(robot, config, seed=4)
    np.testing.assert_array_equal([again.sample() for _ in range(30)], targets)
    assert not np.allclose([other.sample() for _ in range(30)], targets)


def test_an_empty_target_region_is_a_clear_error():
    robot, config = home_config("arm2")
    sampler = TargetSampler.around_home(
        robot, replace(config, target_min_height=1.0), seed=0, max_tries=500
    )
    with pytest.raises(ValueError, match=r"no reachable end-effector point .*1\.0\]"):
        sampler.sample()


@pytest.mark.parametrize("name", ROBOTS)
def test_start_poses_around_home_inside_the_margins_seeded_per_episode(name):
    robot, config = home_config(name, seed=1)
    sampler = StartPoseSampler.from_config(robot, config, seed=5)
    poses = np.array([sampler.pose(e) for e in range(50)])
    assert np.all(np.abs(poses - config.home) <= config.start_radius + 1e-12)
    assert np.all(poses >= robot.limits.lower + config.limit_margin - 1e-12)
    assert np.all(poses <= robot.limits.upper - config.limit_margin + 1e-12)
    assert len(np.unique(poses[:, 0])) == 50
    again = StartPoseSampler(robot, config.home, config.start_radius, config.limit_margin, 5)
    np.testing.assert_array_equal(again.pose(7), poses[7])
    assert not np.allclose(StartPoseSampler.from_config(robot, config, seed=6).pose(7), poses[7])


def test_start_pose_of_a_home_beyond_the_margin_is_pulled_inside():
    robot = load_robot("arm2")
    config = derive_robot_config(robot).with_home([2.99, 0.0])  # limit 3, margin 0.1
    config = replace(config, start_radius=0.05)
    sampler = StartPoseSampler.from_config(robot, config, seed=0)
    poses = np.array([sampler.pose(e) for e in range(5)])
    np.testing.assert_allclose(poses[:, 0], 3.0 - config.limit_margin)


def test_continuous_joints_are_sampled_within_one_turn(tmp_path):
    text = (
        load_robot("arm2")
        .urdf_path.read_text()
        .replace('<joint name="joint1" type="revolute">', '<joint name="joint1" type="continuous">')
    )
    (tmp_path / "c.urdf").write_text(text)
    robot = load_robot(tmp_path / "c.urdf")
    box = TargetSampler(robot, ARM2_BOX, seed=0)
    assert np.all(np.isfinite([box.lower, box.upper])) and box.upper[0] - box.lower[0] < 2 * np.pi
    config = derive_robot_config(robot).with_home([10.0, 0.0])
    pose = StartPoseSampler.from_config(robot, config, seed=0).pose(0)
    assert abs(pose[0] - 10.0) <= config.start_radius
    assert np.all(np.isfinite(TargetSampler.around_home(robot, config, 0).sample()))


def test_score_and_summary(tmp_path):
    r1 = score(0, False, np.zeros(3), np.array([0.5, 0.2, 0.01]), 0.02, 1.0)
    r2 = score(1, True, np.zeros(3), np.array([0.5, 0.3]), 0.02, 2.0)
    assert r1.success and r1.final_distance == 0.01 and r1.mean_distance == pytest.approx(0.71 / 3)
    assert not r2.success
    s = Summary([r1, r2])
    table = s.table(0.02)
    assert "held-out success: 0 % of 1" in table and "| 0 | train |" in table
    png = s.plot(tmp_path / "curve.png", 0.02, "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no states"):
        score(2, True, np.zeros(3), np.array([]), 0.02, 3.0)


def test_progress_line_shows_model_and_plan_rate_only_where_the_graph_has_them():
    first = score(0, False, np.zeros(3), np.array([0.5, 0.3]), 0.02, 1.0)
    assert progress_line(first, 0.02) == (
        "episode   0 train    | data    1.0 s | no model yet (π0) | final  30.0 cm, mean  40.0 cm"
        " | miss (tol 2 cm)"
    )
    later = replace(first, model_version=3, data_size=500, val_error=0.012, plan_rate_hz=21.5)
    assert "| model v3 (500 tr, val 0.012) | plan  21.5 Hz |" in progress_line(later, 0.02)
    fixed = progress_line(later, 0.02, learner=False)
    assert "model" not in fixed and "plan" not in fixed and "nan" not in fixed
    assert fixed.startswith("episode   0 train    | data    1.0 s | final  30.0 cm")


@pytest.mark.ros
def test_episode_manager_runs_scores_and_writes_the_summary(node_process, pi0, tmp_path):
    steps, period = 20, 0.01
    node_process(
        "arm_sim",
        {
            "robot": "arm2",
            "mode": "lockstep",
            "episode_steps": steps,
            "control_period": period,
            "lockstep_timeout": 60.0,
            "min_state_subscribers": 3,
        },
    )
    pi0("arm2", seed=3)
    manager = node_process(
        "episode_manager",
        {
            "robot": "arm2",
            "episode_steps": steps,
            "control_period": period,
            "train_episodes": 3,
            "eval_every": 2,
            "final_eval_episodes": 1,
            "success_tolerance": 0.02,
            "target_box_min": ARM2_BOX[0].tolist(),
            "target_box_max": ARM2_BOX[1].tolist(),
            "output_dir": str(tmp_path / "run"),
        },
    )
    assert manager.wait(120) == 0, manager.output()
    out = manager.output()
    assert out.count("episode ") >= 5 and "held-out success" in out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["held_out"] for r in results] == [False, False, True, False, True]
    assert [r["robot_seconds"] for r in results] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(0 < r["final_distance"] < 1 for r in results)
    assert (tmp_path / "run" / "learning_curve.png").is_file()
