"""The peg-in-hole scene: an arm holding a peg (``sim/peg.xml`` at its end-effector link) above a
block with a hole (``sim/insertion.xml``), simulated by ``ArmSimulator``.

The scene files are the one source of the geometry: the peg's measurement points are its sites
``peg_*`` (offsets in the end-effector frame), the hole is the box site ``hole`` (its free volume)
in body ``hole``, whose frame is the hole's top centre with +z out of the hole. The conditions of
the insertion task are hole positions: ``InsertionSimulator.set_hole`` moves the block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import mujoco
import numpy as np

from mbrl_ros.common.paths import resolve_resource
from mbrl_ros.common.settings import ConfigError
from mbrl_ros.robot.description import (
    RobotDescription,
    RobotDescriptionError,
    build_mujoco_spec,
    mujoco_joint_indices,
)
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.checks import point3

PEG_PREFIX = "tool:"


@dataclass(frozen=True)
class Hole:
    """A straight hole: ``top`` (3,) m, the centre of its opening in the base frame;
    ``rotation`` (3, 3) its frame's axes as columns (x, y along the square cross-section's sides,
    z out of the hole); cross-section half-width ``half_width`` m; ``depth`` m."""

    top: np.ndarray
    rotation: np.ndarray
    half_width: float
    depth: float

    @property
    def axis(self) -> np.ndarray:
        """Unit vector (3,) out of the hole."""
        return self.rotation[:, 2]

    @property
    def bottom(self) -> np.ndarray:
        """Centre (3,) m of the hole's floor."""
        return self.top - self.depth * self.axis


def _site(model: mujoco.MjModel, name: str, what: str) -> int:
    i = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name)
    if i < 0:
        raise RobotDescriptionError(f"the insertion scene has no site '{name}' ({what})")
    return i


def insertion_model(
    robot: RobotDescription,
    scene: str = "insertion",
    tool: str = "peg",
    timestep: float | None = None,
) -> mujoco.MjModel:
    """``scene`` (a path or a name in sim/) with the robot at the world origin and ``tool``'s body
    'peg' fixed to ``robot.ee_link`` (the tool's frame = the end-effector frame)."""
    spec = build_mujoco_spec(robot, scene, timestep)
    path = resolve_resource(tool, "sim", ".xml")
    try:
        tool_spec = mujoco.MjSpec.from_file(str(path))
    except ValueError as e:
        raise RobotDescriptionError(f"{path}: MuJoCo cannot load the tool ({e})") from None
    peg = tool_spec.body("peg")
    if peg is None:
        raise RobotDescriptionError(f"{path}: the tool file needs a body named 'peg'")
    body = spec.body(robot.ee_link).add_frame().attach_body(peg, PEG_PREFIX, "")
    for element in [body] + [
        e
        for kind in (mujoco.mjtObj.mjOBJ_GEOM, mujoco.mjtObj.mjOBJ_SITE)
        for e in body.find_all(kind)
    ]:
        element.name = element.name.removeprefix(PEG_PREFIX)
    try:
        model = spec.compile()
    except ValueError as e:
        raise RobotDescriptionError(
            f"{robot.urdf_path} with {scene} and {tool}: MuJoCo cannot compile the scene ({e})"
        ) from None
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "hole") < 0:
        raise RobotDescriptionError(
            f"scene {scene!r} has no body 'hole' (a scene for a tool: e.g. 'insertion')"
        )
    return model


def peg_points(model: mujoco.MjModel) -> dict[str, np.ndarray]:
    """Offsets (3,) m in the end-effector frame of the peg's sites ``peg_*``, by site name."""
    peg = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "peg")
    if peg < 0:
        raise RobotDescriptionError("the model holds no body 'peg'")
    flat = np.empty(9)
    mujoco.mju_quat2Mat(flat, model.body_quat[peg])
    rot = flat.reshape(3, 3)
    return {
        model.site(i).name: model.body_pos[peg] + rot @ model.site_pos[i]
        for i in range(model.nsite)
        if model.site_bodyid[i] == peg and model.site(i).name.startswith("peg_")
    }


class InsertionSimulator(ArmSimulator):
    """``ArmSimulator`` of the insertion scene (``config.scene`` names the world, default
    'insertion'; the peg from ``tool``). ``hole_position`` (3,) m: the hole's top centre, None
    keeps the scene file's. Everything else (stepping, noise, reset) is ArmSimulator's."""

    def __init__(
        self,
        robot: RobotDescription,
        hole_position=None,
        config: SimConfig = SimConfig(scene="insertion"),
        tool: str = "peg",
    ):
        if config.gravity_compensation:
            raise ValueError(
                "the insertion scene simulates robots without gravity compensation "
                "(its peg is not part of the URDF the compensation would use)"
            )
        super().__init__(robot, replace(config, scene=None))
        self.model = insertion_model(
            robot, config.scene or "insertion", tool, config.physics_timestep
        )
        self.data = mujoco.MjData(self.model)
        self.qpos_idx, self.dof_idx = mujoco_joint_indices(self.model, robot)
        self._hole_body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "hole")
        self._hole_site = _site(self.model, "hole", "the hole's free volume")
        if self.model.site_type[self._hole_site] != mujoco.mjtGeom.mjGEOM_BOX:
            raise RobotDescriptionError("site 'hole' must be a box (the hole's free volume)")
        self.peg_points = peg_points(self.model)
        if "peg_tip" not in self.peg_points:
            raise RobotDescriptionError(f"the tool {tool} has no site 'peg_tip'")
        if hole_position is not None:
            self.set_hole(hole_position)
        self.reset(randomize=False)

    def set_hole(self, position) -> None:
        """Move the block so that the hole's top centre is at ``position`` (3,) m."""
        self.model.body_pos[self._hole_body] = point3("hole_position", position)
        mujoco.mj_forward(self.model, self.data)

    @property
    def hole(self) -> Hole:
        """The hole as now placed (its frame's z axis points out of the hole)."""
        mujoco.mj_kinematics(self.model, self.data)
        half = self.model.site_size[self._hole_site]
        rot = self.data.site_xmat[self._hole_site].reshape(3, 3).copy()
        top = self.data.site_xpos[self._hole_site] + half[2] * rot[:, 2]
        if abs(half[0] - half[1]) > 1e-9:
            raise RobotDescriptionError(f"site 'hole' must be square, got half-sizes {half[:2]}")
        return Hole(top, rot, float(half[0]), float(2 * half[2]))

    def peg_tip(self) -> np.ndarray:
        """Simulated position (3,) m of the peg's tip (site 'peg_tip') in the current state."""
        i = _site(self.model, "peg_tip", "the peg's tip")
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[i].copy()


def tool_scene(
    robot: RobotDescription, scene: str, tool: str, config: SimConfig | None = None
) -> InsertionSimulator:
    """``InsertionSimulator`` of ``scene`` with ``tool`` (``config``: its settings; None: only
    its geometry is wanted); ConfigError naming the parameters 'scene' and 'tool' (as the nodes
    call them) when they do not make one."""
    try:
        return InsertionSimulator(robot, None, replace(config or SimConfig(), scene=scene), tool)
    except (ValueError, RobotDescriptionError, FileNotFoundError) as exc:
        raise ConfigError(f"parameters 'scene' = {scene!r}, 'tool' = {tool!r}: {exc}") from None
