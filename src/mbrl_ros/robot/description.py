"""The robot: its URDF description, batched differentiable forward kinematics, and its MuJoCo model.

Pure core (numpy, torch, mujoco, xml). The URDF is the single source of truth: joint names, order,
limits, damping, friction and motor inertia come from it, and the MuJoCo model is built from the
same file.

Kinematics library: pytorch-kinematics 0.10.0 was measured against the compact implementation below
(benchmarks/bench_fk.py: arm7 end-effector positions, float64, CPU, one thread, same run) and was
2.9x / 6.8x / 6.9x / 8.6x slower forward and 1.3x / 3.5x / 3.3x / 5.7x slower forward + backward at
batches of 1 / 1k / 10k / 100k, and agreed only to 2.5e-8 m because its URDF parser rounds joint
origins to float32; so it is not used.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import torch

from mbrl_ros.common.paths import resolve_resource

__all__ = [
    "RobotDescriptionError",
    "JointLimits",
    "ChainJoint",
    "RobotDescription",
    "load_robot",
    "ForwardKinematics",
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


class ForwardKinematics(torch.nn.Module):
    """Batched, differentiable forward kinematics of a RobotDescription (base frame = world frame).

    Each chain joint applies its fixed origin transform, then (if actuated) a rotation about its
    axis by Rodrigues' formula, R_origin·Rot(axis, q) = A + sin(q)·B + (1 − cos q)·C with A =
    R_origin, B = A·K, C = A·K², K = [axis]×, precomputed. Inputs q have shape (..., n) in rad; any
    batch shape. ``points`` maps a name to (link on the chain, offset (3,) in m in that link's
    frame); default ``{'ee': (robot.ee_link, (0, 0, 0))}``. Move or cast with ``.to(device,
    dtype)``; q (a tensor or array) is converted to the module's dtype and device. Rotation matrices
    map link to world frame.
    """

    _A: torch.Tensor  # buffers (see ``constants`` in __init__)
    _t: torch.Tensor
    _A9: torch.Tensor
    _BC9: torch.Tensor
    _axes: torch.Tensor
    _offsets: torch.Tensor

    def __init__(
        self,
        robot: RobotDescription,
        points: dict[str, tuple[str, Sequence[float] | np.ndarray]] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.robot = robot
        self.link_names = robot.link_names
        points = {"ee": (robot.ee_link, (0.0, 0.0, 0.0))} if points is None else dict(points)
        unknown = {name: link for name, (link, _) in points.items() if link not in self.link_names}
        if unknown:
            raise ValueError(
                f"points {unknown} are on links outside the chain {list(self.link_names)}"
            )
        self.point_names = tuple(points)
        self._point_links = [self.link_names.index(link) for link, _ in points.values()]
        self._ee_index = self.link_names.index(robot.ee_link)
        # Chain joint j moves link j + 1; _q_index[j] is its column in q, or None for a fixed joint.
        actuated = iter(range(robot.n_joints))
        self._q_index = [next(actuated) if j.type in ACTUATED_TYPES else None for j in robot.chain]
        self._joint_links = [i + 1 for i, j in enumerate(robot.chain) if j.type in ACTUATED_TYPES]
        A = np.stack([j.origin[:3, :3] for j in robot.chain])
        K = np.stack([np.cross(np.eye(3), j.axis) for j in robot.chain])  # K @ v = axis × v
        moving = [link - 1 for link in self._joint_links]
        constants = {
            # per chain joint: origin rotation (J, 3, 3) and translation (J, 3)
            "_A": A,
            "_t": np.stack([j.origin[:3, 3] for j in robot.chain]),
            # per actuated joint: flattened Rodrigues terms A (n, 1, 9), [A·K; A·K²] (n, 2, 9), axis
            # (n, 3)
            "_A9": A[moving].reshape(-1, 1, 9),
            "_BC9": np.stack([A @ K, A @ K @ K], 1)[moving].reshape(-1, 2, 9),
            "_axes": np.stack([robot.chain[j].axis for j in moving]),
            "_offsets": np.array([offset for _, offset in points.values()], float).reshape(
                -1, 3
            ),  # (P, 3)
        }
        for name, value in constants.items():
            self.register_buffer(name, torch.tensor(value, dtype=dtype, device=device))

    def _local_rotations(
        self, q: torch.Tensor, last_link: int, batch_last: bool = False
    ) -> tuple[torch.Tensor, list]:
        """q as a tensor of the module's dtype, and the rotations of chain joints
        0..last_link − 1 (link j + 1 relative to link j): (..., 3, 3) each, or with
        ``batch_last`` (3, 3, batch) for q flattened to (batch, n) (fixed joints: (3, 3, 1))."""
        q = torch.as_tensor(q, dtype=self._A.dtype, device=self._A.device)
        if q.ndim == 0 or q.shape[-1] != self.robot.n_joints:
            raise ValueError(
                f"q must have shape (..., {self.robot.n_joints}), got {tuple(q.shape)}"
            )
        # Local rotations of the n moving joints as one batched GEMM, joint first (contiguous
        # slices):
        # A + [sin q, 1 − cos q] @ [B; C], flattened 3×3 matrices.
        n = q.shape[-1]
        angle = q.reshape(-1, n).T  # (n, batch)
        if batch_last:
            sin_cos = torch.stack([torch.sin(angle), 1.0 - torch.cos(angle)], 1)  # (n, 2, batch)
            flat = torch.baddbmm(self._A9.transpose(1, 2), self._BC9.transpose(1, 2), sin_cos)
            moving = flat.view(n, 3, 3, -1).unbind(0)
            fixed = self._A.unsqueeze(-1).unbind(0)
        else:
            sin_cos = torch.stack([torch.sin(angle), 1.0 - torch.cos(angle)], -1)  # (n, batch, 2)
            flat = torch.baddbmm(self._A9, sin_cos, self._BC9)  # (n, batch, 9)
            moving = flat.view(n, *q.shape[:-1], 3, 3).unbind(0)
            fixed = self._A.unbind(0)
        return q, [
            fixed[j] if i is None else moving[i] for j, i in enumerate(self._q_index[:last_link])
        ]

    def _frames(self, q: torch.Tensor, last_link: int) -> tuple[list, list]:
        """World positions [(..., 3)] and rotations [(..., 3, 3)] of links 0..last_link."""
        q, locals_ = self._local_rotations(q, last_link)
        t = self._t.unbind(0)
        eye = torch.eye(3, dtype=q.dtype, device=q.device)
        positions = [torch.zeros(q.shape[:-1] + (3,), dtype=q.dtype, device=q.device)]
        rotations = [eye.expand(q.shape[:-1] + (3, 3))]
        for j, local in enumerate(locals_):
            if j == 0:  # the root link is the world frame: skip the identity products
                positions.append(t[j].expand_as(positions[0]))
                rotations.append(local.expand_as(rotations[0]))
            else:
                positions.append(positions[-1] + rotations[-1] @ t[j])
                rotations.append(rotations[-1] @ local)
        return positions, rotations

    def link_poses(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World positions (..., L, 3) in m and rotation matrices (..., L, 3, 3) of the L chain
        links
        (``link_names`` order, root first) for joint angles q (..., n) in rad."""
        positions, rotations = self._frames(q, len(self.link_names) - 1)
        return torch.stack(positions, -2), torch.stack(rotations, -3)

    def positions(self, q: torch.Tensor) -> torch.Tensor:
        """World positions (..., P, 3) in m of the P ``point_names`` for q (..., n) in rad."""
        positions, rotations = self._frames(q, max(self._point_links))
        return torch.stack(
            [
                positions[link] + rotations[link] @ offset
                for link, offset in zip(self._point_links, self._offsets.unbind(0))
            ],
            -2,
        )

    def ee_position(self, q: torch.Tensor) -> torch.Tensor:
        """World position (..., 3) in m of the ``ee_link`` origin (MuJoCo's 'ee' site), evaluated
        from the tip inwards, p = t₀ + R₀(t₁ + R₁(… + t_e−1)), with the batch as the last,
        contiguous dimension: matrix–vector products only (the planners' costs call this for
        every predicted state)."""
        q, locals_ = self._local_rotations(q, self._ee_index, batch_last=True)
        t = self._t.unsqueeze(-1).unbind(0)  # (3, 1) each
        p = t[self._ee_index - 1] if locals_ else torch.zeros_like(self._t[0]).unsqueeze(-1)
        for j in range(len(locals_) - 2, -1, -1):
            p = t[j] + (locals_[j] * p.unsqueeze(0)).sum(1)
        return p.expand(3, q.reshape(-1, q.shape[-1]).shape[0]).T.reshape(q.shape[:-1] + (3,))

    def _ee_columns(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """End-effector position (..., 3), the joints' world axes z_j (..., n, 3) and the
        Jacobian's columns J_j = z_j × (ee − o_j) (..., n, 3), o_j the joint's origin."""
        positions, rotations = self._frames(q, self._ee_index)
        links = self._joint_links
        axes = torch.stack(
            [rotations[link] @ axis for link, axis in zip(links, self._axes.unbind(0))], -2
        )
        ee = positions[self._ee_index]
        levers = ee[..., None, :] - torch.stack([positions[link] for link in links], -2)
        return ee, axes, torch.linalg.cross(axes, levers, dim=-1)

    def jacobian(self, q: torch.Tensor) -> torch.Tensor:
        """Position Jacobian d ee_position / dq, shape (..., 3, n) in m/rad (analytic: axis ×
        lever)."""
        return self._ee_columns(q)[2].transpose(-1, -2)

    def ee_derivatives(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """End-effector position p (..., 3) m, Jacobian (..., 3, n) m/rad and second derivatives
        (..., 3, n, n) m/rad² in closed form: ∂²p/∂q_i∂q_j = z_i × J_j for joint i at or before
        joint j in the chain (and symmetric), as joint i turns axis, origin and end effector of
        joint j alike (all joints revolute)."""
        ee, axes, cols = self._ee_columns(q)
        n = axes.shape[-2]
        z, J = torch.broadcast_tensors(axes[..., :, None, :], cols[..., None, :, :])
        pairs = torch.linalg.cross(z, J, dim=-1)  # (..., n, n, 3): [i, j] = z_i × J_j
        before = torch.ones(n, n, dtype=torch.bool, device=ee.device).triu()[..., None]
        second = torch.where(before, pairs, pairs.transpose(-2, -3))
        return ee, cols.transpose(-1, -2), second.movedim(-1, -3)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """Same as ``positions``."""
        return self.positions(q)


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
