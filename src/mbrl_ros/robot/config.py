"""Per-robot settings of the reaching task (pure core): one typed object, ``RobotConfig``, that
offline code and nodes share, derived from the URDF (``derive_robot_config``), written for review
as commented YAML (``RobotConfig.to_yaml``) and read back with every field checked
(``load_robot_config``).

Derivation rules (grounded in the URDF, no constants tuned to one arm; n joints, ranges of
continuous joints taken as 2π):

* ``limit_margin`` = 5 % of the smallest joint range, at most 0.1 rad.
* ``velocity_margin`` = 20 % of the smallest velocity limit.
* ``target_radius`` = a quarter of the smallest range left inside the margins, at most 0.5 rad
  (≈ 29°: the end effector moves by up to about half the arm's reach per joint).
* ``start_radius`` = half the target radius: start poses lie in the inner half of the region
  the targets come from, so π0's data covers the states that reaching them passes through.
* ``target_min_height`` = 10 % of the arm's reach (``RobotDescription.reach``) above the base
  link origin, clear of the base and the surface it stands on; at most the height of the home
  pose's end effector, so the region around home is never empty.
* ``effort_fraction`` (per joint): the torque that, held from rest for ``accel_time`` (π0's
  hold: 2 control steps of 0.05 s), brings the joint to a quarter of its velocity limit v_max on
  its effective inertia I (median of 1/(M⁻¹)_ii over seeded poses within the limits, coupling and
  armature included; ``gains.effective_inertia``), viscous damping d and Coulomb friction f of
  the URDF: τ = f + d·v / (1 − exp(−d·t/I)) (→ f + I·v/t for d → 0), as a fraction of the effort
  limit, at most 1; on a robot that does not compensate gravity at most 1 − max|g(q)|/effort
  over those poses, so that the torque plus the gravity torque the stack adds stays within the
  effort limit.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from mbrl_ros.common.paths import resolve_resource, share_path
from mbrl_ros.robot.description import (
    RobotDescription,
    RobotDescriptionError,
    build_mujoco_model,
    load_robot,
)
from mbrl_ros.robot.gains import effective_inertia
from mbrl_ros.robot.gravity import GravityModel
from mbrl_ros.robot.kinematics import ForwardKinematics

LIMIT_MARGIN_FRACTION = 0.05  # of the smallest joint range
LIMIT_MARGIN_CAP = 0.1  # rad
VELOCITY_MARGIN_FRACTION = 0.2  # of the smallest velocity limit
TARGET_RANGE_FRACTION = 0.25  # of the smallest range inside the margins
TARGET_RADIUS_CAP = 0.5  # rad
START_TO_TARGET = 0.5  # start_radius / target_radius
CLEARANCE_FRACTION = 0.1  # target_min_height / reach
SPEED_FRACTION = 0.25  # π0's speed after accel_time, fraction of the velocity limit
ACCEL_TIME = 0.1  # s: π0's hold, 2 control steps of 0.05 s
POSES = 256  # seeded poses for the inertia and gravity over the limits


class RobotConfigError(ValueError):
    """A robot config (object, YAML file or its values) that is not valid; names the field."""


def _number(name: str, value, allow_zero: bool = True, signed: bool = False) -> float:
    """``value`` as a finite float (≥ 0, or > 0 without ``allow_zero``; any sign with
    ``signed``); RobotConfigError naming ``name`` otherwise (strings and booleans included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise RobotConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise RobotConfigError(f"{name} must be finite, got {value}")
    if not signed and not (value >= 0.0 if allow_zero else value > 0.0):
        raise RobotConfigError(f"{name} must be {'≥' if allow_zero else '>'} 0, got {value:g}")
    return value


def _numbers(name: str, values, n: int | None = None) -> tuple[float, ...]:
    """A list of finite numbers (of length ``n`` when given) as a tuple of floats."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise RobotConfigError(f"{name} must be a list of numbers, got {values!r}")
    if n is not None and len(values) != n:
        raise RobotConfigError(f"{name} needs {n} values (one per joint), got {len(values)}")
    return tuple(_number(f"{name}[{i}]", v, signed=True) for i, v in enumerate(values))


@dataclass(frozen=True)
class RobotConfig:
    """Per-robot settings of the reaching task; the module docstring says how each is derived.

    robot: the URDF (a file path, or a robot name of the package's urdf/ folder).
    ee_link: the end-effector link of the URDF.
    joint_names: the actuated joints, n, in the URDF's chain order.
    compensates_gravity: whether the robot's effort interface cancels the arm's weight; if not,
        the stack adds the URDF's gravity torque g(q) to every command it sends.
    home: (n,) rad, the pose episodes start around; None = the pose at start-up
        (``with_home``).
    start_radius: rad ≥ 0; episode start poses are uniform within ± this of home per joint.
    target_radius: rad > 0; targets are end-effector points of joint configurations uniform
        within ± this of home per joint.
    target_min_height: m, any sign; targets lie at least this far above the base link origin.
    effort_fraction: (n,) in (0, 1]; π0's and the planner's torques stay within this fraction
        of each joint's effort limit (gravity torque added on top when not compensated).
    limit_margin: rad ≥ 0; start poses, target configurations and plans stay this far inside
        the position limits.
    velocity_margin: rad/s ≥ 0; plans stay this far below the velocity limits.
    """

    robot: str
    ee_link: str
    joint_names: tuple[str, ...]
    compensates_gravity: bool
    home: tuple[float, ...] | None
    start_radius: float
    target_radius: float
    target_min_height: float
    effort_fraction: tuple[float, ...]
    limit_margin: float
    velocity_margin: float

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("robot", "ee_link"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise RobotConfigError(f"{name} must be a non-empty string, got {value!r}")
        names = self.joint_names
        if (
            isinstance(names, str)
            or not hasattr(names, "__len__")
            or not names
            or not all(isinstance(j, str) and j for j in names)
        ):
            raise RobotConfigError(
                f"joint_names must be a non-empty list of joint names, got {names!r}"
            )
        if len(set(names)) != len(names):
            raise RobotConfigError(f"joint_names has duplicates: {list(names)}")
        put("joint_names", tuple(names))
        n = len(names)
        if not isinstance(self.compensates_gravity, (bool, np.bool_)):
            raise RobotConfigError(
                f"compensates_gravity must be true or false, got {self.compensates_gravity!r}"
            )
        put("compensates_gravity", bool(self.compensates_gravity))
        if self.home is not None:
            put("home", _numbers("home", self.home, n))
        put("start_radius", _number("start_radius", self.start_radius))
        put("target_radius", _number("target_radius", self.target_radius, allow_zero=False))
        put("target_min_height", _number("target_min_height", self.target_min_height, signed=True))
        fraction = self.effort_fraction
        if isinstance(fraction, (int, float, np.integer, np.floating)) and not isinstance(
            fraction, bool
        ):
            fraction = (fraction,) * n
        fraction = _numbers("effort_fraction", fraction, n)
        bad = [f"{j}: {f:g}" for j, f in zip(names, fraction) if not 0.0 < f <= 1.0]
        if bad:
            raise RobotConfigError(
                f"effort_fraction must be in (0, 1] for every joint, got {', '.join(bad)}"
            )
        put("effort_fraction", fraction)
        put("limit_margin", _number("limit_margin", self.limit_margin))
        put("velocity_margin", _number("velocity_margin", self.velocity_margin))

    # -- against the robot ----------------------------------------------------------------------
    def load_robot(self) -> RobotDescription:
        """The RobotDescription this config is for, checked with ``check``."""
        robot = load_robot(self.robot, self.ee_link)
        self.check(robot)
        return robot

    def check(self, robot: RobotDescription) -> None:
        """RobotConfigError naming the field that does not fit ``robot``: joint names (same
        joints in the URDF's chain order), end-effector link, home within the position limits,
        margins that leave room inside the limits."""
        names, urdf = list(self.joint_names), list(robot.joint_names)
        if names != urdf:
            missing = [j for j in urdf if j not in names]
            unknown = [j for j in names if j not in urdf]
            what = (
                (f"unknown {unknown}" if unknown else "")
                + ("; " if unknown and missing else "")
                + (f"missing {missing}" if missing else "")
            )
            raise RobotConfigError(
                f"joint_names {names} do not match the URDF's joints "
                f"{urdf} ({what or 'not in chain order'})"
            )
        if self.ee_link != robot.ee_link:
            raise RobotConfigError(
                f"ee_link {self.ee_link!r} is not the robot's end effector {robot.ee_link!r}"
            )
        lower, upper = robot.limits.lower, robot.limits.upper
        if self.home is not None:
            home = np.array(self.home)
            out = [
                f"{j}: {q:g} not in [{lo:g}, {hi:g}]"
                for j, q, lo, hi in zip(names, home, lower, upper)
                if not lo <= q <= hi
            ]
            if out:
                raise RobotConfigError(f"home is outside the position limits ({'; '.join(out)})")
        ranges = upper - lower
        tight = [
            f"{j}: range {r:g} rad"
            for j, r in zip(names, ranges)
            if math.isfinite(r) and not 2 * self.limit_margin < r
        ]
        if tight:
            raise RobotConfigError(
                f"limit_margin {self.limit_margin:g} rad leaves no room inside "
                f"the limits of {', '.join(tight)}"
            )
        slowest = float(np.min(robot.limits.velocity))
        if not self.velocity_margin < slowest:
            raise RobotConfigError(
                f"velocity_margin {self.velocity_margin:g} rad/s must be below "
                f"the smallest velocity limit {slowest:g} rad/s"
            )

    def with_home(self, q) -> RobotConfig:
        """This config with ``home`` set to ``q`` (n,) rad (e.g. the pose at start-up when home
        is None); the other fields are kept."""
        return replace(self, home=tuple(np.asarray(q, dtype=float).tolist()))

    def torque_limit(self, robot: RobotDescription) -> np.ndarray:
        """(n,) N·m: π0's and the planner's torque bound, effort_fraction × effort limit."""
        return np.array(self.effort_fraction) * robot.limits.effort

    def home_pose(self) -> np.ndarray:
        """home (n,) rad; RobotConfigError if it is not set."""
        if self.home is None:
            raise RobotConfigError(
                "home is not set: give it in the robot config, or set it to "
                "the pose at start-up (with_home)"
            )
        return np.array(self.home)

    def joint_box(self, robot: RobotDescription, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """``joint_box`` around this config's home (``home_pose``) with its limit_margin."""
        return joint_box(robot, self.home_pose(), radius, self.limit_margin)

    # -- YAML -----------------------------------------------------------------------------------
    def to_yaml(self) -> str:
        """The config as commented YAML that ``load_robot_config`` reads back exactly."""

        def flow(values):  # a YAML flow list; long ones continue on indented lines
            rows = [""]
            for item in (json.dumps(v) if isinstance(v, str) else repr(float(v)) for v in values):
                if rows[-1] and len(rows[-1]) + len(item) > 80:
                    rows.append("  ")
                rows[-1] += item + ", "
            return "[" + ",\n".join(row.rstrip(", ") for row in rows) + "]"

        home = "null" if self.home is None else flow(self.home)
        entries = [
            (
                "URDF file, or a robot name of the package's urdf/ folder",
                "robot",
                json.dumps(self.robot),
            ),
            ("end-effector link of the URDF", "ee_link", json.dumps(self.ee_link)),
            (
                "actuated joints in the URDF's chain order (the lists below follow it)",
                "joint_names",
                flow(self.joint_names),
            ),
            (
                "does the robot's effort interface cancel the arm's weight? false: the stack adds "
                "the URDF's gravity torque to every command it sends",
                "compensates_gravity",
                "true" if self.compensates_gravity else "false",
            ),
            (
                "rad per joint: the pose episodes start around; null = the pose at start-up",
                "home",
                home,
            ),
            (
                "rad: episode start poses are uniform within ± this of home (inside the limits "
                "minus limit_margin)",
                "start_radius",
                repr(self.start_radius),
            ),
            (
                "rad: targets are the end effector of joint configurations uniform within ± this "
                "of home (inside the limits minus limit_margin)",
                "target_radius",
                repr(self.target_radius),
            ),
            (
                "m: targets lie at least this far above the base link origin",
                "target_min_height",
                repr(self.target_min_height),
            ),
            (
                "fraction of each joint's effort limit: the torque range of π0 and the planner "
                "(the gravity torque comes on top where the robot does not cancel it)",
                "effort_fraction",
                flow(self.effort_fraction),
            ),
            (
                "rad: start poses, targets and plans stay this far inside the position limits",
                "limit_margin",
                repr(self.limit_margin),
            ),
            (
                "rad/s: plans stay this far below the velocity limits",
                "velocity_margin",
                repr(self.velocity_margin),
            ),
        ]
        lines = [
            "# Per-robot settings of the mbrl_ros reaching task, derived from the URDF by "
            "mbrl-ros robot-config.",
            "# Review and edit, then start a graph with robot_config:=THIS_FILE.",
        ]
        for comment, key, value in entries:
            lines += [
                "",
                *textwrap.wrap(comment, 98, initial_indent="# ", subsequent_indent="# "),
                f"{key}: {value}",
            ]
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_yaml())
        return path


FIELDS = tuple(f.name for f in fields(RobotConfig))


def joint_box(
    robot: RobotDescription, home, radius: float, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), each (n,) rad: ``home`` (n,) rad ± ``radius`` rad clipped into the limits
    minus ``margin`` rad (a single point for a joint whose home lies beyond the margin by more
    than ``radius``)."""
    low, high = _inner_limits(robot, margin)
    home = np.asarray(home, dtype=float)
    if home.shape != (robot.n_joints,):
        raise RobotConfigError(
            f"home needs {robot.n_joints} values (one per joint), got shape {home.shape}"
        )
    return np.clip(home - radius, low, high), np.clip(home + radius, low, high)


def _inner_limits(robot: RobotDescription, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(lower + margin, upper − margin), continuous joints ±inf."""
    return robot.limits.lower + margin, robot.limits.upper - margin


def _ranges(robot: RobotDescription) -> np.ndarray:
    """(n,) joint ranges in rad, 2π for continuous joints."""
    ranges = robot.limits.upper - robot.limits.lower
    return np.where(np.isfinite(ranges), ranges, 2 * math.pi)


def _poses(
    robot: RobotDescription, margin: float, extra: Sequence[np.ndarray], seed: int = 0
) -> np.ndarray:
    """(POSES + len(extra), n) seeded uniform poses within the limits minus ``margin``
    (continuous joints within ±π), then ``extra``."""
    low, high = _inner_limits(robot, margin)
    low, high = (
        np.where(np.isfinite(low), low, -math.pi),
        np.where(np.isfinite(high), high, math.pi),
    )
    rng = np.random.default_rng(seed)
    return np.vstack([rng.uniform(low, high, (POSES, robot.n_joints)), *extra])


def accel_torque(inertia, damping, friction, speed, seconds: float) -> np.ndarray:
    """(n,) N·m: the constant torque that brings a joint of inertia I (kg·m²), viscous damping
    d (N·m·s/rad) and Coulomb friction f (N·m) from rest to ``speed`` v (rad/s) in ``seconds``
    t: f + d·v / (1 − exp(−d·t/I)), and f + I·v/t where d = 0."""
    inertia, damping, friction, speed = (
        np.asarray(a, dtype=float) for a in (inertia, damping, friction, speed)
    )
    rate = damping * seconds / inertia
    with np.errstate(invalid="ignore", divide="ignore"):
        viscous = np.where(rate > 0, damping * speed / -np.expm1(-rate), inertia * speed / seconds)
    return friction + viscous


def derive_robot_config(
    robot: RobotDescription,
    home=None,
    compensates_gravity: bool = True,
    name: str | None = None,
    accel_time: float = ACCEL_TIME,
) -> RobotConfig:
    """The RobotConfig of ``robot`` by the rules of the module docstring. ``home`` (n,) rad or
    None (the pose at start-up); ``name``: how the config names the robot (default: the URDF's
    absolute path). RobotDescriptionError when the URDF cannot say what its joints weigh (no
    MuJoCo model) or, on a robot that does not compensate gravity, when the gravity torque alone
    reaches a joint's effort limit."""
    accel_time = _number("accel_time", accel_time, allow_zero=False)
    ranges = _ranges(robot)
    margin = min(LIMIT_MARGIN_FRACTION * float(ranges.min()), LIMIT_MARGIN_CAP)
    target_radius = min(
        TARGET_RANGE_FRACTION * float((ranges - 2 * margin).min()), TARGET_RADIUS_CAP
    )
    min_height = CLEARANCE_FRACTION * robot.reach()
    extra = [np.clip(0.0, robot.limits.lower, robot.limits.upper)]  # the URDF's zero pose
    if home is not None:
        home = np.asarray(_numbers("home", home, robot.n_joints))
        ee = ForwardKinematics(robot).ee_position(home[None]).numpy()[0]
        min_height = min(min_height, float(ee[2]))
        extra.append(np.clip(home, robot.limits.lower, robot.limits.upper))
    poses = _poses(robot, margin, extra)
    model = build_mujoco_model(robot, scene=None)
    inertia = np.median([effective_inertia(model, q[None]) for q in poses], axis=0)
    torque = accel_torque(
        inertia, robot.damping, robot.friction, SPEED_FRACTION * robot.limits.velocity, accel_time
    )
    fraction = np.minimum(torque / robot.limits.effort, 1.0)
    if not compensates_gravity:
        gravity = GravityModel(robot)
        worst = np.max(np.abs([gravity.torque(q) for q in poses]), axis=0)
        room = 1.0 - worst / robot.limits.effort
        full = [
            f"{j} (|g| up to {g:.3g} N·m, effort limit {e:g} N·m)"
            for j, g, e, r in zip(robot.joint_names, worst, robot.limits.effort, room)
            if r <= 0.0
        ]
        if full:
            raise RobotDescriptionError(
                f"{robot.urdf_path}: the gravity torque alone reaches the effort limit of "
                f"{', '.join(full)}: the arm cannot hold itself up without gravity compensation"
            )
        fraction = np.minimum(fraction, room)

    def r(x: float) -> float:  # 4 significant digits: a setting for people to read
        return float(f"{x:.4g}")

    return RobotConfig(
        robot=name or str(robot.urdf_path),
        ee_link=robot.ee_link,
        joint_names=robot.joint_names,
        compensates_gravity=bool(compensates_gravity),
        home=None if home is None else tuple(home.tolist()),
        start_radius=r(START_TO_TARGET * target_radius),
        target_radius=r(target_radius),
        target_min_height=r(min_height),
        effort_fraction=tuple(r(f) for f in fraction),
        limit_margin=r(margin),
        velocity_margin=r(VELOCITY_MARGIN_FRACTION * float(np.min(robot.limits.velocity))),
    )


def robot_name(value: str) -> str:
    """How a config names the robot of a user's argument ``value``: a bare name of the
    package's urdf/ folder stays a name, any other file becomes its absolute path."""
    path = resolve_resource(value, "urdf", ".urdf").resolve()
    if path.parent == share_path("urdf").resolve() and "/" not in value:
        return path.stem
    return str(path)


def load_robot_config(path: str | Path) -> tuple[RobotConfig, RobotDescription]:
    """Read a robot config YAML file and the robot it names; RobotConfigError (naming the file
    and the field) for unknown or missing keys, wrong types or ranges, joint names that do not
    match the URDF and a home outside the limits. A relative ``robot`` path is taken relative to
    the file's folder first."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RobotConfigError(f"{path}: not YAML ({' '.join(str(exc).split())})") from None
    except UnicodeDecodeError:
        raise RobotConfigError(f"{path}: not a text file") from None
    if not isinstance(data, dict):
        raise RobotConfigError(
            f"{path}: expected a mapping of the keys {list(FIELDS)}, got {type(data).__name__}"
        )
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise RobotConfigError(f"{path}: unknown key(s) {unknown}; known: {list(FIELDS)}")
    missing = [k for k in FIELDS if k not in data]
    if missing:
        raise RobotConfigError(
            f"{path}: missing key(s) {missing} (mbrl-ros robot-config writes a complete file)"
        )
    robot_value = data["robot"]
    if (
        isinstance(robot_value, str)
        and robot_value
        and not Path(robot_value).is_absolute()
        and (path.parent / robot_value).is_file()
    ):
        data["robot"] = str((path.parent / robot_value).resolve())
    try:
        config = RobotConfig(**data)
        robot = config.load_robot()
    except RobotConfigError as exc:
        raise RobotConfigError(f"{path}: {exc}") from None
    except (OSError, RobotDescriptionError) as exc:
        raise RobotConfigError(f"{path}: robot {robot_value!r}: {exc}") from None
    return config, robot
