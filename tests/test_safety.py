"""The safety layer (pure core): clamp, hold laws, NaN guard, e-stop latch, watchdogs, limit guards,
gain caps — and a random fuzz that its output is always finite and within the effort limits."""

import mujoco
import numpy as np
import pytest

from mbrl_ros.common.settings import ConfigError
from mbrl_ros.control.safety import SafetyConfig, SafetyLayer
from mbrl_ros.robot.description import build_mujoco_model, load_robot
from mbrl_ros.robot.gains import effective_inertia, gain_caps, robot_gain_caps
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig

LOWER, UPPER = np.array([-1.0, -2.0]), np.array([1.0, 2.0])
VEL, EFFORT = np.array([2.0, 3.0]), np.array([10.0, 5.0])
MS = 1_000_000


def layer(max_plan_age=0.0, **config):
    return SafetyLayer(LOWER, UPPER, VEL, EFFORT, SafetyConfig(**config), max_plan_age=max_plan_age)


def keys(events):
    return [e.key for e in events]


def test_clamp_to_effort_limits():
    s = layer()
    u, ev = s.filter([0.0, 0.0], [0.0, 0.0], [25.0, -7.0])
    np.testing.assert_array_equal(u, [10.0, -5.0])
    assert keys(ev) == ["effort_clamped"] and not s.holding
    u, ev = s.filter([0.0, 0.0], [0.0, 0.0], [3.0, -2.0])
    np.testing.assert_array_equal(u, [3.0, -2.0]) and ev == []


@pytest.mark.parametrize("law, expected", [("zero", [0.0, 0.0]), ("damping", [-1.0, 1.0])])
def test_hold_laws_zero_and_damping(law, expected):
    s = layer(hold_law=law, damping=2.0)
    u, ev = s.filter([0.1, 0.2], [0.5, -0.5], None, why="no_plan")
    np.testing.assert_allclose(u, expected)
    assert keys(ev) == ["no_plan"] and s.holding


def test_pd_hold_latches_the_position_where_the_hold_began():
    s = layer(hold_law="pd", hold_kp=10.0, hold_kd=1.0)
    u, _ = s.filter([0.3, -0.2], [0.0, 0.0], None)
    np.testing.assert_allclose(u, [0.0, 0.0])
    u, _ = s.filter([0.4, -0.1], [1.0, 0.0], None)  # drifted: pulled back to (0.3, −0.2)
    np.testing.assert_allclose(u, [10 * -0.1 - 1.0, 10 * -0.1])
    s.filter([0.4, -0.1], [0.0, 0.0], [1.0, 1.0])  # a command ends the hold
    u, _ = s.filter([0.5, 0.0], [0.0, 0.0], None)  # a new hold latches the new position
    np.testing.assert_allclose(u, [0.0, 0.0])


def test_non_finite_state_or_command_holds_with_finite_output():
    s = layer(hold_law="pd")
    for q, qd, u, key in [
        ([np.nan, 0.0], [0.0, 0.0], [1.0, 1.0], "non_finite_state"),
        ([0.0, 0.0], [np.inf, 0.0], [1.0, 1.0], "non_finite_state"),
        ([0.0, 0.0], [0.0, 0.0], [np.nan, 1.0], "non_finite_command"),
        ([0.0, 0.0], [0.0, 0.0], [1.0, 2.0, 3.0], "non_finite_command"),
    ]:
        out, ev = s.filter(q, qd, u)
        assert keys(ev)[0] == key and np.all(np.isfinite(out)) and s.holding


@pytest.mark.parametrize("law", ["zero", "damping", "pd"])
def test_finite_but_absurd_states_hold_at_zero_velocity_never_at_full_effort(law):
    """1e308 overflowed the brake term and sent every joint to full effort: such states are
    implausible (beyond the limits by more than the gate's slack, or faster than 100× the
    velocity limit), so the hold engages without using the implausible values."""
    s = layer(hold_law=law, damping=2.0, hold_kp=10.0)
    for q, qd in [
        ([1e308, 0.0], [0.0, 0.0]),
        ([0.0, 0.0], [-1e308, 0.0]),
        ([1e300, -1e300], [1e300, 1e300]),
        ([0.2, 0.0], [0.0, 301.0]),
    ]:
        out, ev = s.filter(q, qd, [1.0, 1.0])
        assert keys(ev)[0] == "implausible_state" and s.holding, (q, qd)
        assert np.all(np.isfinite(out)) and np.all(np.abs(out) < EFFORT), (q, qd, out)
    out, ev = s.filter([0.2, 0.0], [0.0, 299.0], [1.0, 1.0])  # fast but plausible: braked
    assert "implausible_state" not in keys(ev)


def test_estop_latches_until_released():
    s = layer(damping=1.0)
    s.set_estop(True)
    for _ in range(3):
        u, ev = s.filter([0.0, 0.0], [1.0, 1.0], [5.0, 5.0])
        np.testing.assert_allclose(u, [-1.0, -1.0])
        assert keys(ev) == ["estop"]
    s.set_estop(False)
    u, ev = s.filter([0.0, 0.0], [1.0, 1.0], [5.0, 5.0])
    np.testing.assert_allclose(u, [5.0, 5.0]) and ev == []


def test_stale_state_and_stale_plan_watchdogs():
    s = layer(max_state_age=0.02, max_plan_age=0.5, damping=1.0)
    q, qd, u = [0.0, 0.0], [1.0, 1.0], [2.0, 2.0]
    now = 10_000 * MS
    out, ev = s.filter(q, qd, u, now, state_time_ns=now - 20 * MS, plan_time_ns=now - 500 * MS)
    assert ev == [] and np.array_equal(out, u)  # exactly at the limits: still fresh
    out, ev = s.filter(q, qd, u, now, state_time_ns=now - 20 * MS - 1, plan_time_ns=now)
    assert keys(ev) == ["stale_state"]
    np.testing.assert_array_equal(out, [0.0, 0.0])  # a stale velocity is not trusted
    out, ev = s.filter(q, qd, u, now, state_time_ns=now, plan_time_ns=now - 500 * MS - 1)
    assert keys(ev) == ["stale_plan"]
    np.testing.assert_array_equal(out, [-1.0, -1.0])
    off = layer(max_state_age=0.0, max_plan_age=0.0)
    assert off.filter(q, qd, u, now, state_time_ns=0, plan_time_ns=0)[1] == []


def test_position_guard_brakes_towards_the_limit_only():
    s = layer(position_margin=0.1, brake_kp=100.0, brake_kd=2.0)
    # joint 0 at 0.95 (0.05 into the margin below its upper limit 1.0), moving up at 0.5 rad/s
    wall = -100.0 * 0.05 - 2.0 * 0.5
    u, ev = s.filter([0.95, 0.0], [0.5, 0.0], [4.0, 1.0])
    np.testing.assert_allclose(u, [wall, 1.0])
    assert keys(ev) == ["position_guard"]
    u, ev = s.filter([0.95, 0.0], [0.5, 0.0], [-8.0, 1.0])  # pushing away: untouched
    np.testing.assert_allclose(u, [-8.0, 1.0]) and ev == []
    u, ev = s.filter([0.0, -1.93], [0.0, -0.1], [0.0, -3.0])  # lower limit of joint 1
    np.testing.assert_allclose(u, [0.0, 100.0 * 0.03 + 2.0 * 0.1])
    hold = layer(position_margin=0.1, limit_response="hold", damping=1.0)
    u, ev = hold.filter([0.95, 0.0], [0.5, 0.0], [4.0, 1.0])
    np.testing.assert_allclose(u, [-0.5, 0.0])
    assert keys(ev) == ["position_guard"] and hold.holding


def test_velocity_guard_brakes_along_the_motion():
    s = layer(velocity_margin=0.5, brake_kd=2.0)
    u, ev = s.filter([0.0, 0.0], [1.8, -2.6], [3.0, -4.0])
    np.testing.assert_allclose(u, [-3.6, 5.0])  # −kd·q̇ (then clamped to ±5 on joint 1)
    assert keys(ev) == ["velocity_guard", "effort_clamped"]
    u, ev = s.filter([0.0, 0.0], [1.0, 0.0], [3.0, 0.0])  # below the margin: untouched
    assert ev == []


def test_disabled_layer_still_clamps_and_guards_nan():
    s = layer(safety_enabled=False, max_state_age=0.01, position_margin=0.1)
    u, ev = s.filter([0.99, 0.0], [2.5, 0.0], [50.0, 0.0], 10**9, state_time_ns=0)
    np.testing.assert_array_equal(u, [10.0, 0.0])
    assert keys(ev) == ["effort_clamped"]
    u, ev = s.filter([np.nan, 0.0], [0.0, 0.0], [1.0, 0.0])
    assert keys(ev) == ["non_finite_state"] and np.all(np.isfinite(u))


def test_invalid_configuration_is_rejected():
    with pytest.raises(ConfigError, match=r"'hold_law' = 'brake' must be one of \['zero'"):
        layer(hold_law="brake")
    with pytest.raises(ValueError, match="effort limits"):
        SafetyLayer(LOWER, UPPER, VEL, [10.0, np.inf])
    with pytest.raises(ConfigError, match=r"'damping' = -1.0 is out of range \[0.0, 10000.0\]"):
        layer(damping=-1.0)
    with pytest.raises(ConfigError, match="'brake_kd' = nan must be finite"):
        layer(brake_kd=float("nan"))
    with pytest.raises(
        ConfigError, match="unknown SafetyConfig setting.*'enabled'.*safety_enabled"
    ):
        SafetyConfig.from_mapping({"enabled": False})


def test_filter_fuzz_output_always_finite_and_within_limits():
    rng = np.random.default_rng(0)
    specials = np.array([np.nan, np.inf, -np.inf, 1e308, -1e308, 0.0, 1e-300])
    for law in ("zero", "damping", "pd"):
        s = layer(hold_law=law, hold_kp=1e5, brake_kp=1e5)
        for i in range(3000):
            q, qd, u = (rng.standard_normal(2) * 10 ** rng.uniform(-3, 3, 2) for _ in range(3))
            for a in (q, qd, u):
                mask = rng.random(2) < 0.1
                a[mask] = rng.choice(specials, mask.sum())
            s.set_estop(i % 97 == 0)
            out, _ = s.filter(
                q,
                qd,
                None if i % 13 == 0 else u,
                int(rng.integers(0, 10**10)),
                state_time_ns=int(rng.integers(0, 10**10)),
                plan_time_ns=0,
            )
            assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= EFFORT)


def test_effective_inertia_and_gain_caps():
    robot = load_robot("arm7")
    model = build_mujoco_model(robot, scene=None)
    q = np.array([0.1, -0.3, 0.2, -1.5, 0.0, 1.0, 0.3])
    data = mujoco.MjData(model)
    data.qpos[:] = q
    mujoco.mj_forward(model, data)
    M = np.zeros((7, 7))
    mujoco.mj_fullM(model, data, M)
    np.testing.assert_allclose(effective_inertia(model, q[None]), 1 / np.diag(np.linalg.inv(M)))
    kp, kd = gain_caps([0.5, 1e-3], 0.01)
    np.testing.assert_allclose(kp, [0.25 * 0.5 / 1e-4, 0.25 * 1e-3 / 1e-4])
    np.testing.assert_allclose(kd, [0.5 * 0.5 / 0.01, 0.5 * 1e-3 / 0.01])
    kp_caps, kd_caps = robot_gain_caps(robot, robot.joint_names[::-1], 0.01)
    assert kp_caps.shape == kd_caps.shape == (7,) and kd_caps[0] < kd_caps[-1]  # wrist first


def _elbow_swing(caps, steps=150):
    """Max |q̇| of the arm2 elbow in the second half of a damping hold from a 2 rad/s spin."""
    robot = load_robot("arm2")
    sim = ArmSimulator(robot, SimConfig(control_period=0.01))
    s = SafetyLayer(
        robot.limits.lower,
        robot.limits.upper,
        robot.limits.velocity,
        robot.limits.effort,
        SafetyConfig(hold_law="damping", damping=0.5),
        caps,
    )
    sim.data.qvel[1] = 2.0
    speeds = []
    for _ in range(steps):
        m = sim.measure()
        sim.step(s.filter(m.position, m.velocity, None)[0])
        speeds.append(abs(m.velocity[1]))
    return max(speeds[steps // 2 :])


def test_capped_damping_hold_is_stable_where_the_raw_gain_is_not():
    robot = load_robot("arm2")
    caps = robot_gain_caps(robot, robot.joint_names, 0.01)
    assert caps[1][1] < 0.5
    assert _elbow_swing(caps) < 1e-3  # the capped hold brings the elbow to rest
    assert _elbow_swing(None) > 0.5  # 0.5 N·m·s/rad on ~3e-4 kg·m² at 100 Hz: a limit cycle


# -- gravity (a robot that does not compensate its own weight) ------------------------------------
def test_gravity_is_added_to_every_output_from_the_last_plausible_state():
    """u + g(q) before the clamp for commands, hold laws and brakes; g from the last plausible
    state when the state is non-finite or implausible (a lie must not feed the model)."""
    g_of = lambda q: np.array([3.0 * q[0], -1.0 - q[1]])  # noqa: E731 - any function of q
    s = SafetyLayer(
        LOWER, UPPER, VEL, EFFORT, SafetyConfig(hold_law="damping", damping=2.0), gravity=g_of
    )
    u, _ = s.filter([np.nan, 0.0], [0.0, 0.0], None)  # no plausible state yet: no gravity term
    np.testing.assert_allclose(u, [0.0, 0.0])
    u, _ = s.filter([0.0, 0.0], [0.0, 0.0], None)  # the hold at rest + g(0)
    np.testing.assert_allclose(u, [0.0, -1.0])
    u, ev = s.filter([0.5, 0.5], [0.0, 0.0], [1.0, 1.0])  # command + g
    np.testing.assert_allclose(u, [1.0 + 1.5, 1.0 - 1.5])
    u, ev = s.filter([0.5, 0.5], [0.5, -0.5], None)  # hold law + g
    np.testing.assert_allclose(u, [-1.0 + 1.5, 1.0 - 1.5])
    u, ev = s.filter([0.5, 0.5], [0.0, 0.0], [10.0, 0.0])  # clamped after adding g
    np.testing.assert_allclose(u, [10.0, -1.5])
    assert "effort_clamped" in keys(ev)
    for q, key in [([np.nan, 0.2], "non_finite_state"), ([0.2, 900.0], "implausible_state")]:
        u, ev = s.filter(q, [0.0, 0.0], [1.0, 1.0])
        assert keys(ev)[0] == key
        np.testing.assert_allclose(u, [1.5, -1.5])  # damping at zero velocity + g(0.5, 0.5)
    u, ev = s.filter([0.96, 0.0], [0.0, 0.0], [5.0, 0.0])  # position wall, then + g
    wall = -s.gains["brake_kp"][0] * (0.96 - 0.95)
    np.testing.assert_allclose(u, [wall + 3 * 0.96, -1.0])
    assert keys(ev) == ["position_guard"]


@pytest.mark.parametrize("with_gravity", [True, False])
def test_damping_hold_with_gravity_keeps_a_weighted_arm_in_place(with_gravity):
    """arm7 in MuJoCo without gravity compensation, held by the damping hold law: with the URDF's
    g(q) added it stays where it is (g is the exact static torque of the same model); without it
    the arm falls."""
    from mbrl_ros.robot.gravity import GravityModel

    robot = load_robot("arm7")
    sim = ArmSimulator(robot, SimConfig(control_period=0.01, gravity_compensation=False))
    q0 = sim.measure().position
    model = GravityModel(robot)
    s = SafetyLayer(
        robot.limits.lower,
        robot.limits.upper,
        robot.limits.velocity,
        robot.limits.effort,
        SafetyConfig(hold_law="damping"),
        robot_gain_caps(robot, robot.joint_names, 0.01),
        model.torque if with_gravity else None,
    )
    for _ in range(200):
        m = sim.measure()
        sim.step(s.filter(m.position, m.velocity, None)[0])
    drift = np.abs(sim.measure().position - q0).max()
    assert drift < 1e-3 if with_gravity else drift > 0.1, drift
