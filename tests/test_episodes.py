"""Episode scoring (pure core) and the episode_manager node in a lockstep graph."""
import json

import numpy as np
import pytest
from mbrl_ros.episodes import Summary, TargetSampler, score
from mbrl_ros.robot import load_robot

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
        TargetSampler(robot, (np.array([2.0, 2, -1]), np.array([3.0, 3, 1])), 0,
                      max_tries=1000).sample()


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


@pytest.mark.ros
def test_episode_manager_runs_scores_and_writes_the_summary(node_process, pi0, tmp_path):
    steps, period = 20, 0.01
    node_process("arm_sim", {"robot": "arm2", "mode": "lockstep", "episode_steps": steps,
                             "control_period": period, "lockstep_timeout": 60.0,
                             "min_state_subscribers": 3})
    pi0("arm2", seed=3)
    manager = node_process("episode_manager", {
        "robot": "arm2", "episode_steps": steps, "control_period": period, "train_episodes": 3,
        "eval_every": 2, "final_eval_episodes": 1, "success_tolerance": 0.02,
        "target_box_min": ARM2_BOX[0].tolist(), "target_box_max": ARM2_BOX[1].tolist(),
        "output_dir": str(tmp_path / "run")})
    assert manager.wait(120) == 0, manager.output()
    out = manager.output()
    assert out.count("episode ") >= 5 and "held-out success" in out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["held_out"] for r in results] == [False, False, True, False, True]
    assert [r["robot_seconds"] for r in results] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(0 < r["final_distance"] < 1 for r in results)
    assert (tmp_path / "run" / "learning_curve.png").is_file()
