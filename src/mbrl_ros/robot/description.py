"""The robot: its URDF description and its MuJoCo model (forward kinematics: ``robot.kinematics``).

Pure core (numpy, mujoco, xml; no torch, so that the simulator, the executor and the other nodes
that need no kinematics start without it). The URDF is the single source of truth: joint names,
order, limits, damping, friction and motor inertia come from it, and the MuJoCo model is built from
the same file.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from mbrl_ros.common.paths import resolve_resource

__all__ = [
    "RobotDescriptionError",
    "JointLimits",
    "ChainJoint",
    "RobotDescription",
    "load_robot",
    "build_mujoco_spec",
    "build_mujoco_model",
    "mujoco_joint_indices",
]

ACTUATED_TYPES = ("revolute", "continuous")
SUPPORTED_TYPES = ACTUATED_TYPES + ("fixed",)
DRAKE = "{http://drake.mit.edu}"  # Drake's URDF extensions: drake:rotor_inertia, drake:gear_ratio


class RobotDescriptionError(ValueError):
    """A URDF or scene file that does not describe a supported robot; the message names the file."""


def _readonly(values, dtype=float) -> np.ndarray:
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class JointLimits:
    """Per-joint limits, each of shape (n,): positions in rad (±inf for continuous joints),
    velocity in rad/s, effort in N·m."""

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


@dataclass(frozen=True, eq=False)
class ChainJoint:
    """One URDF joint on the chain root link → ee_link.

    ``origin`` (4, 4) is the pose of the joint frame (= child link frame at q = 0) in the parent
    link frame; ``axis`` (3,) is the unit rotation axis in the joint frame (zeros for fixed
    joints)."""

    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray
    axis: np.ndarray


@dataclass(frozen=True, eq=False)
class RobotDescription:
    """A serial arm read from a URDF. Arrays have shape (n,) in ``joint_names`` order.

    ``armature`` (kg·m²) is the motor inertia reflected to the joint, rotor_inertia · gear_ratio²,
    from Drake's URDF extension ``<transmission><actuator><drake:rotor_inertia
    value/><drake:gear_ratio value/>`` (zero where absent); ``chain`` lists every joint from the
    root link to ``ee_link``, fixed ones included.
    """

    name: str
    urdf_path: Path
    joint_names: tuple[str, ...]
    limits: JointLimits
    damping: np.ndarray
    friction: np.ndarray
    ee_link: str
    chain: tuple[ChainJoint, ...]
    armature: np.ndarray

    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def link_names(self) -> tuple[str, ...]:
        """Links of the chain in order, root link first, ``ee_link`` last."""
        return (self.chain[0].parent,) + tuple(j.child for j in self.chain)

    def reach(self) -> float:
        """An upper bound (m) on the end effector's distance from the root link's origin: the
        summed lengths of the chain's joint offsets."""
        return float(sum(np.linalg.norm(j.origin[:3, 3]) for j in self.chain))

    def index_of(self, names: Sequence[str]) -> np.ndarray:
        """Positions of ``names`` in ``joint_names``; ValueError naming any unknown joint."""
        unknown = [n for n in names if n not in self.joint_names]
        if unknown:
            raise ValueError(
                f"unknown joint(s) {unknown} for robot '{self.name}'; "
                f"joints: {list(self.joint_names)}"
            )
        return np.array([self.joint_names.index(n) for n in names], dtype=np.int64)


def _rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF rpy (fixed axes x, y, z) → rotation matrix Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = (
        math.cos(roll),
        math.sin(roll),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(yaw),
        math.sin(yaw),
    )
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def load_robot(urdf: str | Path, ee_link: str | None = None) -> RobotDescription:
    """Read a URDF (a path, or a bare name such as 'arm7' looked up in the package's urdf/ folder).

    ``ee_link`` defaults to 'ee_link' if the URDF has it, else the chain's single leaf link. Raises
    FileNotFoundError for a missing file and RobotDescriptionError (a ValueError naming the file)
    for anything that is not a single serial chain of revolute/continuous/fixed joints with complete
    limits.
    """
    path = resolve_resource(str(urdf), "urdf", ".urdf").resolve()

    def fail(problem: str):
        return RobotDescriptionError(f"{path}: {problem}")

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise fail(f"malformed XML ({e})") from None
    if root.tag != "robot":
        raise fail(f"root element is <{root.tag}>, expected <robot>")

    def floats(elem, attr: str, default: str | None, size: int, what: str) -> np.ndarray:
        text = elem.get(attr, default) if elem is not None else default
        if text is None:
            raise fail(f"{what} has no '{attr}'")
        try:
            values = np.array([float(v) for v in text.split()])
        except ValueError:
            raise fail(f"{what}: '{attr}=\"{text}\"' is not a list of numbers") from None
        if values.shape != (size,):
            raise fail(f"{what}: '{attr}' needs {size} numbers, got '{text}'")
        return values

    def name_of(elem: ET.Element, what: str) -> str:
        name = elem.get("name")
        if name is None:
            raise fail(f"{what} has no 'name'")
        return name

    links = [name_of(link, "a <link>") for link in root.findall("link")]
    joints: dict[str, dict] = {}
    parent_joint: dict[str, str] = {}  # child link -> joint name
    for elem in root.findall("joint"):
        name, jtype = name_of(elem, "a <joint>"), elem.get("type")
        what = f"joint '{name}'"
        if jtype not in SUPPORTED_TYPES:
            raise fail(f"{what} has type '{jtype}'; supported: {', '.join(SUPPORTED_TYPES)}")
        ends = []
        for role in ("parent", "child"):
            tag = elem.find(role)
            link = None if tag is None else tag.get("link")
            if link is None or link not in links:
                raise fail(f"{what} has {role} link '{link}', which is not a <link> of the file")
            ends.append(link)
        parent, child = ends
        if child in parent_joint:
            raise fail(
                f"link '{child}' is the child of joints '{parent_joint[child]}' and '{name}'"
            )
        parent_joint[child] = name
        origin = np.eye(4)
        origin[:3, :3] = _rpy_matrix(*floats(elem.find("origin"), "rpy", "0 0 0", 3, what))
        origin[:3, 3] = floats(elem.find("origin"), "xyz", "0 0 0", 3, what)
        axis = np.zeros(3)
        info = {"type": jtype, "parent": parent, "child": child, "origin": origin}
        if jtype in ACTUATED_TYPES:
            axis = floats(elem.find("axis"), "xyz", "1 0 0", 3, what)
            if np.linalg.norm(axis) < 1e-9:
                raise fail(f"{what} has a zero axis")
            axis = axis / np.linalg.norm(axis)
            limit = elem.find("limit")
            if limit is None:
                raise fail(f"{what} has no <limit> (effort and velocity limits are required)")
            effort, velocity = (floats(limit, a, None, 1, what)[0] for a in ("effort", "velocity"))
            if not (effort > 0 and velocity > 0):
                raise fail(
                    f"{what} needs positive effort and velocity limits, "
                    f"got effort={effort}, velocity={velocity}"
                )
            if jtype == "revolute":
                lower, upper = (floats(limit, a, None, 1, what)[0] for a in ("lower", "upper"))
                if not lower < upper:
                    raise fail(f"{what} has lower limit {lower} >= upper limit {upper}")
            else:
                lower, upper = -math.inf, math.inf
            dynamics = elem.find("dynamics")
            damping, friction = (
                floats(dynamics, a, "0", 1, what)[0] for a in ("damping", "friction")
            )
            info.update(
                lower=lower,
                upper=upper,
                velocity=velocity,
                effort=effort,
                damping=damping,
                friction=friction,
            )
        joints[name] = dict(info, axis=axis, armature=0.0)

    roots = [link for link in links if link not in parent_joint]
    if len(roots) != 1:
        raise fail(f"expected one root link, found {roots}")
    if ee_link is None:
        leaves = sorted(set(links) - {j["parent"] for j in joints.values()})
        if "ee_link" in links:
            ee_link = "ee_link"
        elif len(leaves) == 1:
            ee_link = leaves[0]
        else:
            raise fail(f"several leaf links {leaves}; pass ee_link to choose the end effector")
    elif ee_link not in links:
        raise fail(f"ee_link '{ee_link}' is not a link of the file; links: {links}")

    chain_names = []
    link = ee_link
    while link in parent_joint:
        chain_names.append(parent_joint[link])
        link = joints[parent_joint[link]]["parent"]
    chain_names.reverse()
    off_chain = [
        n for n, j in joints.items() if j["type"] in ACTUATED_TYPES and n not in chain_names
    ]
    if off_chain:
        raise fail(
            f"actuated joint(s) {off_chain} are not on the chain {roots[0]} → {ee_link}; "
            "only a single serial chain is supported"
        )
    joint_names = tuple(n for n in chain_names if joints[n]["type"] in ACTUATED_TYPES)
    if not joint_names:
        raise fail(f"no revolute or continuous joint between {roots[0]} and {ee_link}")

    # Reflected motor inertia (Drake's rotor_inertia), in ros2_control's transmissions (gear: the
    # joint's <mechanical_reduction>) or in ROS 1's (gear: Drake's gear_ratio).
    for transmission in root.findall("ros2_control/transmission") + root.findall("transmission"):
        what = f"transmission '{transmission.get('name')}'"
        names = [name_of(j, f"a <joint> of {what}") for j in transmission.findall("joint")]
        unknown = [n for n in names if n not in joint_names]
        if unknown:
            raise fail(f"{what} drives {unknown}, which are not actuated joints of the chain")
        rotor = floats(transmission.find(f"actuator/{DRAKE}rotor_inertia"), "value", "0", 1, what)[
            0
        ]
        reduction = transmission.find("joint/mechanical_reduction")
        gear = (
            floats(transmission.find(f"actuator/{DRAKE}gear_ratio"), "value", "1", 1, what)[0]
            if reduction is None
            else floats({"v": reduction.text}, "v", None, 1, what)[0]
        )
        if rotor < 0:
            raise fail(f"{what} has a negative rotor inertia {rotor}")
        for n in names:
            joints[n]["armature"] = rotor * gear**2

    def column(key: str) -> np.ndarray:
        return _readonly([joints[n][key] for n in joint_names])

    chain = tuple(
        ChainJoint(
            name=n,
            type=joints[n]["type"],
            parent=joints[n]["parent"],
            child=joints[n]["child"],
            origin=_readonly(joints[n]["origin"]),
            axis=_readonly(joints[n]["axis"]),
        )
        for n in chain_names
    )
    return RobotDescription(
        name=root.get("name", path.stem),
        urdf_path=path,
        joint_names=joint_names,
        limits=JointLimits(
            lower=column("lower"),
            upper=column("upper"),
            velocity=column("velocity"),
            effort=column("effort"),
        ),
        damping=column("damping"),
        friction=column("friction"),
        ee_link=ee_link,
        chain=chain,
        armature=column("armature"),
    )


def _urdf_spec(robot: RobotDescription) -> mujoco.MjSpec:
    """The URDF as an MjSpec: static links kept as bodies, visual geoms kept, radians."""
    root = ET.parse(robot.urdf_path).getroot()
    block = root.find("mujoco")
    if block is None:
        block = ET.SubElement(root, "mujoco")
    compiler = block.find("compiler")
    if compiler is None:
        compiler = ET.SubElement(block, "compiler")
    compiler.attrib.update(discardvisual="false", fusestatic="false", angle="radian")
    compiler.attrib.setdefault("meshdir", str(robot.urdf_path.parent))
    try:
        return mujoco.MjSpec.from_string(ET.tostring(root, encoding="unicode"))
    except ValueError as e:
        raise RobotDescriptionError(f"{robot.urdf_path}: MuJoCo cannot import it ({e})") from None


def build_mujoco_spec(
    robot: RobotDescription, scene: str | Path | None = "scene", timestep: float | None = None
) -> mujoco.MjSpec:
    """MuJoCo spec of the robot, attached at the world origin of ``scene`` (a path or a bare name in
    the package's sim/ folder; None: the bare robot), with one motor per joint (named like the
    joint, gear 1, ctrlrange ±effort limit in N·m), the URDF limits, damping, friction and armature
    on the joints, the collision geoms in group 3 (hidden by default) and a site 'ee' at
    ``robot.ee_link``."""
    spec = _urdf_spec(robot)
    if scene is not None:
        scene_path = resolve_resource(str(scene), "sim", ".xml")
        try:
            scene_spec = mujoco.MjSpec.from_file(str(scene_path))
        except ValueError as e:
            raise RobotDescriptionError(
                f"{scene_path}: MuJoCo cannot load the scene ({e})"
            ) from None
        # Attach under a temporary prefix, then restore the URDF names (an empty prefix makes MuJoCo
        # warn on every compile that the model may not save correctly).
        prefix = "urdf:"
        base = scene_spec.worldbody.add_frame().attach_body(
            spec.body(robot.link_names[0]), prefix, ""
        )
        for element in [base] + [
            e
            for kind in (
                mujoco.mjtObj.mjOBJ_BODY,
                mujoco.mjtObj.mjOBJ_JOINT,
                mujoco.mjtObj.mjOBJ_GEOM,
                mujoco.mjtObj.mjOBJ_SITE,
            )
            for e in base.find_all(kind)
        ]:
            element.name = element.name.removeprefix(prefix)
        spec = scene_spec
    if timestep is not None:
        if not timestep > 0:
            raise ValueError(f"timestep must be positive, got {timestep}")
        spec.option.timestep = timestep
    for link in robot.link_names:
        for geom in spec.body(link).geoms:
            if geom.contype or geom.conaffinity:
                geom.group = 3
    for i, name in enumerate(robot.joint_names):
        joint = spec.joint(name)
        continuous = math.isinf(robot.limits.lower[i])
        joint.limited = (
            mujoco.mjtLimited.mjLIMITED_FALSE if continuous else mujoco.mjtLimited.mjLIMITED_TRUE
        )
        if not continuous:
            joint.range = [robot.limits.lower[i], robot.limits.upper[i]]
        joint.damping = [robot.damping[i], 0.0, 0.0]  # (linear, quadratic, cubic) damping
        joint.frictionloss = robot.friction[i]
        joint.armature = robot.armature[i]
        motor = spec.add_actuator(name=name, target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        motor.set_to_motor()
        motor.gear[0] = 1.0
        motor.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        motor.ctrlrange = [-robot.limits.effort[i], robot.limits.effort[i]]
    spec.body(robot.ee_link).add_site(name="ee", size=[0.01, 0, 0], rgba=[1, 0.2, 0.2, 0.8])
    return spec


def build_mujoco_model(
    robot: RobotDescription,
    scene: str | Path | None = "scene",
    timestep: float | None = None,
    gravity_compensation: bool = False,
) -> mujoco.MjModel:
    """Compiled ``build_mujoco_spec``; qpos, qvel and ctrl are in ``robot.joint_names`` order.

    ``gravity_compensation``: the arm's own weight is cancelled by a passive force on every body
    (MuJoCo ``gravcomp``), so commanded torques act on a weightless arm, as on torque interfaces
    that add gravity compensation in the robot controller (e.g. Franka's FCI)."""
    spec = build_mujoco_spec(robot, scene, timestep)
    if gravity_compensation:  # before compiling: MuJoCo counts gravcomp bodies at compile time
        for body in spec.bodies[1:]:  # every body but the world
            body.gravcomp = 1.0
    try:
        model = spec.compile()
    except ValueError as e:
        raise RobotDescriptionError(
            f"{robot.urdf_path} (scene {scene}): MuJoCo cannot compile the model ({e})"
        ) from None
    qpos, dof = mujoco_joint_indices(model, robot)
    n = robot.n_joints
    actuators = tuple(model.actuator(i).name for i in range(model.nu))
    in_order = np.array_equal(qpos, np.arange(n)) and np.array_equal(dof, np.arange(n))
    if not (in_order and actuators == robot.joint_names):
        raise RobotDescriptionError(
            f"{robot.urdf_path} (scene {scene}): MuJoCo order differs from the URDF joint order "
            f"(qpos addresses {qpos.tolist()}, dof addresses {dof.tolist()}, "
            f"actuators {list(actuators)})"
        )
    return model


def mujoco_joint_indices(
    model: mujoco.MjModel, robot: RobotDescription
) -> tuple[np.ndarray, np.ndarray]:
    """qpos addresses and dof (qvel) addresses, each (n,), of ``robot.joint_names`` in ``model``."""
    ids = np.array(
        [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name) for name in robot.joint_names]
    )
    missing = [name for name, i in zip(robot.joint_names, ids) if i < 0]
    if missing:
        raise ValueError(f"joints {missing} of robot '{robot.name}' are not in the MuJoCo model")
    return model.jnt_qposadr[ids].astype(np.int64), model.jnt_dofadr[ids].astype(np.int64)


def home_position(robot: RobotDescription) -> np.ndarray:
    """Default start pose (n,) rad: zero, or the middle of the range where zero is outside it."""
    lower, upper = robot.limits.lower, robot.limits.upper
    inside = (lower <= 0.0) & (upper >= 0.0)
    return np.where(inside, 0.0, 0.5 * (lower + upper))
