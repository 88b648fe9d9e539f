"""Peg insertion (tasks.insertion*, sim/insertion.xml + sim/peg.xml) on arm7: the scene's geometry
against MuJoCo's own ray casts and site positions, contact stability of the inserted peg over 10 s,
the cost against explicit formulas, closed forms and finite differences, the insertion depth, bad
input, and GPS's local-model loop learning to insert from two hole positions."""

import mujoco
import numpy as np
import pytest
import torch

from mbrl_ros.robot.description import RobotDescriptionError, load_robot
from mbrl_ros.robot.gravity import GravityModel
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import SimConfig
from mbrl_ros.tasks.checks import TaskError
from mbrl_ros.tasks.insertion import InsertionCost, insertion_depth, peg_pose, ramp_weights, targets
from mbrl_ros.tasks.insertion_scene import Hole, InsertionSimulator

GUESS = (0.0, -0.6, 0.0, -1.7, 0.0, -0.8, 0.0)


@pytest.fixture(scope="module")
def arm7():
    return load_robot("arm7")


@pytest.fixture(scope="module")
def sim(arm7):
    return InsertionSimulator(arm7, (-0.44, 0.02, 0.21))


def test_scene_geometry_matches_the_hole_site(sim):
    hole = sim.hole
    np.testing.assert_allclose(hole.top, [-0.44, 0.02, 0.21], atol=1e-12)
    np.testing.assert_allclose(hole.axis, [0, 0, 1], atol=1e-12)
    assert (hole.half_width, hole.depth) == pytest.approx((0.012, 0.04))
    np.testing.assert_allclose(sim.peg_points["peg_tip"], [0, 0, 0.12])
    # Rays from the middle of the hole hit the walls at the half-width and the floor at the
    # depth (group 3 holds the arm's collision geoms; the block is in group 0).
    centre = hole.top - 0.5 * hole.depth * hole.axis
    groups = np.array([1, 0, 0, 0, 0, 0], dtype=np.uint8)
    geom = np.zeros(1, dtype=np.int32)
    for direction, expected in [
        ((1, 0, 0), 0.012),
        ((-1, 0, 0), 0.012),
        ((0, 1, 0), 0.012),
        ((0, -1, 0), 0.012),
        ((0, 0, -1), 0.02),
    ]:
        dist = mujoco.mj_ray(
            sim.model, sim.data, centre, np.array(direction, float), groups, 1, -1, geom
        )
        assert dist == pytest.approx(expected, abs=1e-9)
        assert sim.model.geom(geom[0]).name in (
            "wall_px",
            "wall_nx",
            "wall_py",
            "wall_ny",
            "bottom",
        )
    # Straight up the hole is open.
    assert (
        mujoco.mj_ray(sim.model, sim.data, centre, np.array([0, 0, 1.0]), groups, 1, -1, geom) == -1
    )


def test_peg_points_are_where_mujoco_puts_the_sites(arm7, sim):
    rng = np.random.default_rng(3)
    fk = ForwardKinematics(arm7, {k: (arm7.ee_link, v) for k, v in sim.peg_points.items()})
    for _ in range(3):
        q = rng.uniform(arm7.limits.lower, arm7.limits.upper)
        sim.set_state(q, np.zeros(7))
        mine = fk.positions(torch.as_tensor(q)).numpy()
        for i, name in enumerate(sim.peg_points):
            site = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_SITE, name)
            np.testing.assert_allclose(mine[i], sim.data.site_xpos[site], atol=1e-12)
    np.testing.assert_allclose(
        sim.peg_tip(), mine[list(sim.peg_points).index("peg_tip")], atol=1e-12
    )


def test_inserted_peg_pressed_into_floor_and_wall_holds_still_for_ten_seconds(arm7, sim):
    """PD about a pose 5 mm below the floor and 5 mm into the +x wall (the peg pushes on both
    with the gains' force) plus the URDF's gravity torque, 1000 control periods of 10 ms."""
    hole = sim.hole
    q_in = peg_pose(arm7, sim.peg_points, hole, GUESS)
    q_push = peg_pose(arm7, sim.peg_points, hole, q_in, height=-0.005, offset=(0.005, 0, 0))
    sim.initial_position = q_in
    sim.reset(randomize=False)
    gravity = GravityModel(arm7)
    kp, kd = 0.2 * arm7.limits.effort, 0.02 * arm7.limits.effort
    tips, speeds = [], []
    for _ in range(1000):
        s = sim.measure()
        sim.step(gravity.torque(s.position) + kp * (q_push - s.position) - kd * s.velocity)
        tips.append(sim.peg_tip())
        speeds.append(np.abs(sim.measure().velocity).max())
    tips, speeds = np.array(tips), np.array(speeds)
    assert np.all(np.isfinite(tips))
    local = (tips - hole.top) @ hole.rotation
    # In contact with floor and wall: the tip sits on the floor (within 2 mm of penetration) and
    # the peg's side against the +x wall (radius 10 mm, half-width 12 mm).
    assert np.all(local[:, 2] >= -hole.depth - 0.002)
    assert np.all(local[-500:, 2] <= -hole.depth + 0.002)
    assert np.all(np.abs(local[:, 0]) <= hole.half_width - 0.01 + 0.002)
    assert np.all(insertion_depth(tips, hole) >= hole.depth - 0.002)
    # Settled: over the last 5 s the tip moves less than 0.1 mm, the joints slower than 1 mrad/s.
    assert np.ptp(tips[-500:], axis=0).max() < 1e-4
    assert speeds[-500:].max() < 1e-3


def test_set_hole_moves_the_block(arm7):
    sim = InsertionSimulator(arm7)
    np.testing.assert_allclose(sim.hole.top, [-0.45, 0.0, 0.2])  # the scene file's
    sim.set_hole((-0.5, 0.1, 0.25))
    np.testing.assert_allclose(sim.hole.top, [-0.5, 0.1, 0.25], atol=1e-12)
    wall = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_GEOM, "wall_px")
    np.testing.assert_allclose(sim.data.geom_xpos[wall], [-0.5 + 0.031, 0.1, 0.23], atol=1e-12)
    with pytest.raises(TaskError, match="hole_position"):
        sim.set_hole((0.0, np.nan, 0.0))


def test_insertion_depth_closed_form():
    hole = Hole(np.array([0.1, 0.2, 0.3]), np.eye(3), 0.012, 0.04)
    tips = np.array(
        [
            [0.1, 0.2, 0.31],  # above the opening
            [0.1, 0.2, 0.28],  # 2 cm in
            [0.111, 0.189, 0.27],  # 3 cm in, near a corner
            [0.1, 0.2, 0.25],  # below the floor (clipped to the depth)
            [0.113, 0.2, 0.28],  # beside the hole, in the wall
            [0.3, 0.2, 0.1],
        ]
    )  # beside the block
    np.testing.assert_allclose(insertion_depth(tips, hole), [0, 0.02, 0.03, 0.04, 0, 0], atol=1e-12)
    # A hole tilted 90° about x opens towards −y: depth is measured along its own axis.
    c, s = 0.0, 1.0
    tilted = Hole(np.zeros(3), np.array([[1, 0, 0], [0, c, -s], [0, s, c]], float), 0.01, 0.05)
    assert float(insertion_depth(np.array([0.0, 0.03, 0.0]), tilted)) == pytest.approx(0.03)
    assert float(insertion_depth(np.array([0.0, -0.03, 0.0]), tilted)) == 0.0


def test_ramps_are_gps_options():
    np.testing.assert_allclose(ramp_weights("constant", 4), [1, 1, 1, 1])
    np.testing.assert_allclose(ramp_weights("linear", 4), [0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(ramp_weights("quadratic", 4), [1 / 16, 0.25, 9 / 16, 1])
    np.testing.assert_allclose(ramp_weights("final", 4), [0, 0, 0, 1])


def trajectory(arm7, rng, T=4):
    q = arm7.limits.lower + (arm7.limits.upper - arm7.limits.lower) * rng.uniform(
        0.1, 0.9, (T + 1, 7)
    )
    states = np.concatenate([q, rng.normal(0, 0.5, (T + 1, 7))], 1)
    return torch.as_tensor(states), torch.as_tensor(rng.uniform(-5, 5, (T, 7)))


@pytest.mark.parametrize("ramp", ["constant", "quadratic"])
def test_cost_is_the_gps_formula_on_mujocos_peg_sites(arm7, sim, ramp):
    w = dict(
        w_l2=3.0,
        w_log=0.7,
        alpha=1e-4,
        ramp=ramp,
        terminal_weight=5.0,
        w_velocity=0.2,
        w_action=0.01,
        w_limit=0.0,
    )
    cost = InsertionCost(arm7, sim.peg_points, sim.hole, **w)
    states, actions = trajectory(arm7, np.random.default_rng(4))
    goal = {"peg_tip": sim.hole.bottom, "peg_base": sim.hole.bottom + 0.12 * sim.hole.axis}
    ramp_w = ramp_weights(ramp, 4)
    expected = 0.0
    for t in range(1, 5):
        sim.set_state(states[t, :7].numpy(), np.zeros(7))
        d2 = sum(
            float(
                np.sum(
                    (
                        sim.data.site_xpos[
                            mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_SITE, name)
                        ]
                        - g
                    )
                    ** 2
                )
            )
            for name, g in goal.items()
        )
        ell = 0.5 * w["w_l2"] * d2 + w["w_log"] * np.log(d2 + w["alpha"])
        expected += ell * ramp_w[t - 1] * (w["terminal_weight"] if t == 4 else 1.0)
    expected += w["w_velocity"] * float((states[4, 7:] ** 2).sum())
    expected += w["w_action"] * float(((actions / torch.tensor(arm7.limits.effort)) ** 2).sum())
    assert float(cost(states, actions)) == pytest.approx(expected, rel=1e-10)


def test_cost_gradient_matches_finite_differences(arm7, sim):
    cost = InsertionCost(
        arm7, sim.peg_points, sim.hole, ramp="linear", w_velocity=0.1, limit_margin=0.3
    )
    states, actions = trajectory(arm7, np.random.default_rng(5), T=3)
    assert torch.autograd.gradcheck(
        cost, (states.clone().requires_grad_(), actions.clone().requires_grad_())
    )
    assert torch.autograd.gradgradcheck(
        cost, (states.clone().requires_grad_(), actions.clone().requires_grad_())
    )


def test_cost_is_lowest_when_inserted_and_depth_is_full(arm7, sim):
    """At the fully inserted pose every point is on its target: d = 0, so each step costs
    w_log·log α (closed form); the depth is the hole's depth. Moving the hole moves the optimum."""
    cost = InsertionCost(
        arm7,
        sim.peg_points,
        sim.hole,
        w_l2=100.0,
        w_log=1.0,
        alpha=1e-5,
        terminal_weight=10.0,
        w_action=0.0,
        w_limit=0.0,
    )
    q_in = peg_pose(arm7, sim.peg_points, sim.hole, GUESS, tolerance=1e-6)
    q_up = peg_pose(arm7, sim.peg_points, sim.hole, q_in, height=0.08, tolerance=1e-6)
    at, above = (torch.as_tensor(np.r_[q, np.zeros(7)]).expand(4, 14) for q in (q_in, q_up))
    u = torch.zeros(3, 7, dtype=torch.float64)
    assert float(cost(at, u)) == pytest.approx(12.0 * np.log(1e-5), rel=1e-6)
    assert float(cost(above, u)) > float(cost(at, u)) + 100 * 0.5 * 12 * 2 * 0.08**2 * 0.9
    assert float(cost.insertion_depth(at[0])) == pytest.approx(0.04, abs=1e-6)
    assert float(cost.insertion_depth(above[0])) == 0.0
    moved = Hole(sim.hole.top + [0.02, 0, 0], sim.hole.rotation, 0.012, 0.04)
    np.testing.assert_allclose(targets(cost.points, moved)[0], moved.bottom)
    cost.set_hole(moved)
    assert float(cost(at, u)) > 12.0 * np.log(1e-5) + 1.0
    cost.set_hole(sim.hole)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda r, s: InsertionCost(r, {"peg_tip": (0.01, 0, 0.1)}, s.hole), "off the peg's axis"),
        (lambda r, s: InsertionCost(r, {"peg_base": (0, 0, 0)}, s.hole), "need the tip"),
        (lambda r, s: InsertionCost(r, s.peg_points, s.hole, ramp="cubic"), "ramp must be"),
        (lambda r, s: InsertionCost(r, s.peg_points, s.hole, alpha=0.0), "alpha must be > 0"),
        (lambda r, s: InsertionCost(r, s.peg_points, s.hole, w_log=-1.0), "w_log"),
        (lambda r, s: InsertionCost(r, {"peg_tip": (0, np.inf, 0.1)}, s.hole), "peg point peg_tip"),
        (
            lambda r, s: peg_pose(
                r, s.peg_points, Hole(np.array([3.0, 0, 0]), np.eye(3), 0.01, 0.04), GUESS
            ),
            "no joint angles put the peg",
        ),
    ],
)
def test_bad_settings_are_named(arm7, sim, make, message):
    with pytest.raises(TaskError, match=message):
        make(arm7, sim)


def test_bad_scene_files_are_named(arm7, tmp_path):
    bare = tmp_path / "bare.xml"
    bare.write_text("<mujoco><worldbody/></mujoco>")
    with pytest.raises(RobotDescriptionError, match="no body 'hole'"):
        InsertionSimulator(arm7, config=SimConfig(scene=str(bare)))
    with pytest.raises(RobotDescriptionError, match="needs a body named 'peg'"):
        InsertionSimulator(arm7, tool=str(bare))
    with pytest.raises(ValueError, match="gravity compensation"):
        InsertionSimulator(arm7, config=SimConfig(scene="insertion", gravity_compensation=True))


@pytest.mark.slow
def test_gps_learns_to_insert_from_two_hole_positions(arm7):
    """The local-model loop with the GMM prior on a short variant: two holes 2.8 cm apart, the
    peg starting 3 cm above the opening, 0.8 s per sample, 5 samples per condition and
    iteration. The hold controller never inserts; after 8 iterations (80 samples) every
    condition's samples have gone in to full depth (within 5 mm of the floor) at least 80 % of
    the time for three iterations running (seed 1: 100 % from iteration 6)."""
    from mbrl_ros.experiments.insertion_gps import InsertionConditions, InsertionSetup
    from mbrl_ros.trajopt.gps import GPSConfig

    setup = InsertionSetup(
        [(-0.45, 0.0, 0.2), (-0.43, 0.02, 0.2)],
        start_height=0.07,
        T=80,
        cost=dict(w_l2=100.0, w_log=1.0, alpha=1e-5, terminal_weight=10.0, w_velocity=0.5),
    )
    conditions = InsertionConditions(arm7, setup, GPSConfig(kl_step=0.3, max_step_mult=3.0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same sums in the same order on any machine
    try:
        records = conditions.run(iterations=8, samples=5, seed=1)
    finally:
        torch.set_num_threads(threads)
    assert [r.samples_used for r in records][-1] == 8 * 2 * 5
    assert [(r.iteration, r.condition) for r in records[:3]] == [(0, 0), (0, 1), (1, 0)]
    success = np.array(conditions.success())  # (iterations, conditions)
    assert success.shape == (8, 2)
    assert np.all(success[0] == 0.0)
    assert np.all(success[-3:] >= 0.8), success
    depth = np.array([[np.mean(d[it]) for d in conditions.depths] for it in range(8)])
    assert np.all(depth[0] == 0.0) and np.all(depth[-1] >= 0.035), depth
    assert np.all(conditions.mean_success()[-1])  # the noise-free controllers too
