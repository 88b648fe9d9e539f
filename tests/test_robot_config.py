"""Per-robot settings (pure core): derivation invariants on every URDF of the package, the
acceleration rule against an integrated joint, the gravity cap, YAML round trip, each bad input
named, and ``mbrl-ros robot-config`` writing a file that loads back."""

from __future__ import annotations

import contextlib
import io
import re
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.integrate import solve_ivp

from mbrl_ros import cli
from mbrl_ros.common.paths import share_path
from mbrl_ros.robot.config import (
    RobotConfig,
    RobotConfigError,
    accel_torque,
    derive_robot_config,
    load_robot_config,
)
from mbrl_ros.robot.description import RobotDescriptionError, load_robot
from mbrl_ros.robot.gravity import GravityModel
from mbrl_ros.robot.kinematics import ForwardKinematics

ROBOTS = sorted(p.stem for p in share_path("urdf").glob("*.urdf"))
ARM7_HOME = (0.0, -0.3, 0.0, -2.0, 0.0, 1.7, 0.0)


@pytest.fixture(scope="module")
def derived() -> dict[tuple[str, bool], RobotConfig]:
    """The derived config of every package robot, with and without gravity compensation."""
    return {
        (name, comp): derive_robot_config(load_robot(name), compensates_gravity=comp, name=name)
        for name in ROBOTS
        for comp in (True, False)
    }


def test_the_package_has_robots_to_check():
    assert {"arm2", "arm7"} <= set(ROBOTS)


@pytest.mark.parametrize("name", ROBOTS)
def test_derivation_invariants(name, derived):
    robot = load_robot(name)
    config = derived[name, True]
    config.check(robot)
    assert config.joint_names == robot.joint_names and config.ee_link == robot.ee_link
    assert config.home is None and config.robot == name
    ranges = robot.limits.upper - robot.limits.lower
    finite = np.isfinite(ranges)
    assert 0 < config.limit_margin <= 0.1 + 1e-12
    assert np.all(2 * config.limit_margin < ranges[finite])
    assert 0 < config.velocity_margin < robot.limits.velocity.min()
    assert 0 < config.start_radius < config.target_radius <= 0.5 + 1e-12
    assert 0 < config.target_min_height < robot.reach()
    fraction = np.array(config.effort_fraction)
    assert fraction.shape == (robot.n_joints,) and np.all((fraction > 0) & (fraction <= 1))


@pytest.mark.parametrize("name", [n for n in ROBOTS if n != "arm2"])  # arm2 moves no weight
def test_without_compensation_torque_plus_gravity_stays_within_the_effort(name, derived):
    """Over poses the derivation did not use (another seed), fraction·effort + |g(q)| ≤ effort
    up to the 4-digit rounding of the fraction and the poses' coverage (2 %)."""
    robot = load_robot(name)
    config = derived[name, False]
    gravity = GravityModel(robot)
    rng = np.random.default_rng(7)
    poses = rng.uniform(robot.limits.lower + 0.1, robot.limits.upper - 0.1, (300, robot.n_joints))
    worst = np.max(np.abs([gravity.torque(q) for q in poses]), axis=0)
    assert np.all(config.torque_limit(robot) + worst <= 1.02 * robot.limits.effort)
    assert np.all(
        np.array(config.effort_fraction) <= np.array(derived[name, True].effort_fraction) + 1e-12
    )


def test_gravity_that_reaches_the_effort_limit_is_refused_by_joint(tmp_path):
    text = load_robot("arm7").urdf_path.read_text()
    weak = re.sub(r'(<joint name="joint2".*?effort=")87(")', r"\g<1>5\2", text, flags=re.S)
    (tmp_path / "weak.urdf").write_text(weak)
    robot = load_robot(tmp_path / "weak.urdf")
    with pytest.raises(RobotDescriptionError, match=r"joint2 \(\|g\| up to .* effort limit 5 "):
        derive_robot_config(robot, compensates_gravity=False)
    assert derive_robot_config(robot, compensates_gravity=True).effort_fraction[1] <= 1.0


@pytest.mark.parametrize(
    "inertia,damping,friction",
    [(0.26, 1.0, 0.0), (1e-3, 0.15, 0.01), (0.1, 0.0, 0.05), (2.0, 0.5, 0.3)],
)
def test_accel_torque_brings_a_joint_from_rest_to_the_speed(inertia, damping, friction):
    """Integrated I·v' = τ − d·v − f (moving forward, so friction opposes): v(t) = speed."""
    speed, seconds = 0.7, 0.1
    tau = float(accel_torque([inertia], [damping], [friction], [speed], seconds)[0])
    sol = solve_ivp(
        lambda t, v: [(tau - damping * v[0] - friction) / inertia],
        (0, seconds),
        [0.0],
        rtol=1e-10,
        atol=1e-12,
    )
    assert sol.y[0, -1] == pytest.approx(speed, rel=1e-6)


def test_arm7_with_its_home_sets_the_height_and_matches_the_hand_tuned_scale():
    robot = load_robot("arm7")
    config = derive_robot_config(robot, ARM7_HOME, name="arm7")
    assert config.home == ARM7_HOME and config.target_min_height == pytest.approx(0.12)
    # config/mpc.yaml's hand-tuned effort_fraction 0.05 lies within the derived per-joint range
    assert min(config.effort_fraction) < 0.05 < max(config.effort_fraction)
    reaching_down = (0.0, -1.7, 0.0, -1.5, 0.0, 0.3, 0.0)  # end effector 18 cm below the base
    z = ForwardKinematics(robot).ee_position(np.array([reaching_down])).numpy()[0, 2]
    low = derive_robot_config(robot, reaching_down)
    assert z < 0 and low.target_min_height == pytest.approx(z, rel=1e-3)


# -- YAML ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ROBOTS)
@pytest.mark.parametrize("with_home", [False, True])
def test_yaml_round_trip(name, with_home, derived, tmp_path):
    robot = load_robot(name)
    config = derived[name, False]
    if with_home:
        config = config.with_home(np.clip(0.3, robot.limits.lower, robot.limits.upper))
    text = config.to_yaml()
    assert all(len(line) <= 100 for line in text.splitlines())
    assert text.count("\n# ") >= len(asdict(config))  # every key has its comment
    loaded, loaded_robot = load_robot_config(config.write(tmp_path / "r.yaml"))
    assert loaded == config and loaded_robot.joint_names == robot.joint_names


def test_scalar_effort_fraction_and_a_path_relative_to_the_file(tmp_path):
    urdf = load_robot("arm2").urdf_path
    (tmp_path / "robots").mkdir()
    (tmp_path / "robots" / "mine.urdf").write_text(urdf.read_text())
    data = asdict(derive_robot_config(load_robot("arm2")))
    data.update(robot="robots/mine.urdf", effort_fraction=0.3)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    config, robot = load_robot_config(tmp_path / "r.yaml")
    assert config.effort_fraction == (0.3, 0.3)
    assert Path(config.robot) == (tmp_path / "robots" / "mine.urdf").resolve()
    assert robot.urdf_path == Path(config.robot)


def _edit(**changes):
    def apply(data):
        data.update(changes)

    return apply


def _drop(key):
    def apply(data):
        del data[key]

    return apply


BAD = {
    "unknown key": (_edit(random_scale=0.5), ["unknown key(s) ['random_scale']"]),
    "missing key": (_drop("target_radius"), ["missing key(s) ['target_radius']"]),
    "radius is a string": (_edit(start_radius="0.2"), ["start_radius must be a number", "'0.2'"]),
    "negative radius": (_edit(start_radius=-0.1), ["start_radius must be ≥ 0", "-0.1"]),
    "zero target radius": (_edit(target_radius=0), ["target_radius must be > 0"]),
    "height nan": (_edit(target_min_height=float("nan")), ["target_min_height must be finite"]),
    "height is a bool": (_edit(target_min_height=True), ["target_min_height must be a number"]),
    "gravity is a string": (
        _edit(compensates_gravity="no"),
        ["compensates_gravity must be true or false", "'no'"],
    ),
    "fraction 0": (
        _edit(effort_fraction=[0.1, 0.0]),
        ["effort_fraction must be in (0, 1]", "joint2: 0"],
    ),
    "fraction above 1": (_edit(effort_fraction=1.5), ["effort_fraction", "joint1: 1.5"]),
    "fraction count": (
        _edit(effort_fraction=[0.1, 0.1, 0.1]),
        ["effort_fraction needs 2 values", "got 3"],
    ),
    "fraction text": (_edit(effort_fraction=["a", 0.1]), ["effort_fraction[0] must be a number"]),
    "home count": (_edit(home=[0.0]), ["home needs 2 values", "got 1"]),
    "home outside": (
        _edit(home=[0.0, 2.7]),
        ["home is outside the position limits", "joint2: 2.7 not in [-2.6, 2.6]"],
    ),
    "home not a list": (_edit(home="up"), ["home must be a list of numbers"]),
    "unknown joint": (
        _edit(joint_names=["joint1", "elbow"]),
        ["joint_names", "unknown ['elbow']", "missing ['joint2']"],
    ),
    "joints reordered": (_edit(joint_names=["joint2", "joint1"]), ["not in chain order"]),
    "duplicate joint": (_edit(joint_names=["joint1", "joint1"]), ["joint_names has duplicates"]),
    "no joints": (_edit(joint_names=[]), ["joint_names must be a non-empty list"]),
    "margin too large": (
        _edit(limit_margin=2.7),
        ["limit_margin 2.7 rad leaves no room", "joint2: range 5.2 rad"],
    ),
    "velocity margin too large": (
        _edit(velocity_margin=10.0),
        ["velocity_margin 10 rad/s must be below", "10 rad/s"],
    ),
    "robot missing": (_edit(robot="arm9"), ["robot 'arm9'", "no 'arm9.urdf'"]),
    "robot empty": (_edit(robot=""), ["robot must be a non-empty string"]),
    "ee_link unknown": (_edit(ee_link="hand"), ["robot 'arm2'", "ee_link 'hand' is not a link"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_file_is_refused_naming_the_file_and_field(case, tmp_path):
    data = asdict(derive_robot_config(load_robot("arm2"), name="arm2"))
    edit, fragments = BAD[case]
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RobotConfigError) as info:
        load_robot_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("- 1\n- 2\n", "expected a mapping"),
        ("robot: [unclosed\n", "not YAML"),
        ("", "got NoneType"),
    ],
)
def test_a_file_that_is_not_a_config_is_refused(text, fragment, tmp_path):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(RobotConfigError, match=re.escape(fragment)):
        load_robot_config(tmp_path / "bad.yaml")


def test_constructor_checks_and_normalises():
    base = derive_robot_config(load_robot("arm2"), name="arm2")
    assert replace(base, effort_fraction=np.array([0.5, 0.25])).effort_fraction == (0.5, 0.25)
    assert replace(base, home=np.zeros(2)).home == (0.0, 0.0)
    with pytest.raises(RobotConfigError, match="limit_margin must be ≥ 0"):
        replace(base, limit_margin=-1.0)
    with pytest.raises(RobotConfigError, match="home is not set"):
        base.joint_box(load_robot("arm2"), 0.1)


# -- the command --------------------------------------------------------------------------------
def run_main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_command_writes_a_file_that_loads_back(tmp_path):
    out = tmp_path / "arm7.yaml"
    code, stdout, err = run_main(
        "robot-config",
        "arm7",
        "-o",
        str(out),
        "--home",
        ",".join(map(str, ARM7_HOME)),
        "--compensates-gravity",
        "false",
    )
    assert code == 0 and err == "", err
    assert f"wrote {out}" in stdout and "targets around home" in stdout
    config, robot = load_robot_config(out)
    assert config == derive_robot_config(robot, ARM7_HOME, compensates_gravity=False, name="arm7")
    code, _, err = run_main("robot-config", "arm7", "-o", str(out))
    assert code == 2 and "exists; use --force" in err
    code, _, _ = run_main("robot-config", str(robot.urdf_path), "-o", str(out), "--force")
    config, _ = load_robot_config(out)
    assert code == 0 and config.home is None and config.compensates_gravity
    assert config.robot == str(robot.urdf_path)


def test_command_warns_about_a_urdf_without_inertials(tmp_path):
    text = re.sub(
        r"<inertial>.*?</inertial>", "", load_robot("arm2").urdf_path.read_text(), flags=re.S
    )
    (tmp_path / "light.urdf").write_text(text)
    code, _, err = run_main(
        "robot-config", str(tmp_path / "light.urdf"), "-o", str(tmp_path / "r.yaml")
    )
    assert (
        code == 0 and "warning: joints ['joint1', 'joint2'] move no link with an <inertial>" in err
    )
    assert load_robot_config(tmp_path / "r.yaml")[0].compensates_gravity
    code, _, err = run_main(
        "robot-config",
        str(tmp_path / "light.urdf"),
        "-o",
        str(tmp_path / "s.yaml"),
        "--compensates-gravity",
        "false",
    )
    assert code == 2 and "gravity torque is unknown" in err and not (tmp_path / "s.yaml").exists()
