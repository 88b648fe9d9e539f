"""ros2_control set-up of the package's arms for a ROS install (launch/ros2_control.launch.py):
the URDF's ``<ros2_control>`` block read and checked against its chain, the controllers file for an
arm's joints, and the files that run the arm under MuJoCo's ros2_control hardware
(mujoco_ros2_control) with joint_state_broadcaster and the effort controller the graphs command.

Pure Python (no rclpy, no ROS install): the launch file calls ``mujoco_setup``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import yaml

from mbrl_ros.common.paths import resolve_resource
from mbrl_ros.robot.description import RobotDescription, build_mujoco_spec, load_robot

CONTROLLERS_FILE = "ros2_controllers.yaml"
EFFORT_CONTROLLER = "effort_controller"  # its topic, /effort_controller/commands, is the graphs'
MUJOCO_PLUGIN = "mujoco_ros2_control/MujocoSystemInterface"
STATE_INTERFACES = ("position", "velocity", "effort")


class Ros2ControlError(ValueError):
    """A <ros2_control> block or a controllers file that cannot drive the arm (says what)."""


@dataclass(frozen=True)
class HardwareJoint:
    """One <joint> of a <ros2_control> block: its command and state interface names."""

    name: str
    command_interfaces: tuple[str, ...]
    state_interfaces: tuple[str, ...]


def hardware_joints(robot: RobotDescription) -> tuple[HardwareJoint, ...]:
    """The joints of the URDF's single <ros2_control> block, checked for what the graphs need: the
    chain's actuated joints (no other, none missing), each with an effort command interface and
    position, velocity and effort state interfaces."""
    blocks = ET.parse(robot.urdf_path).getroot().findall("ros2_control")
    if len(blocks) != 1:
        raise Ros2ControlError(f"{robot.urdf_path}: {len(blocks)} <ros2_control> blocks, need one")
    joints = tuple(
        HardwareJoint(  # (a missing name reads as '', which no check accepts)
            j.get("name", ""),
            tuple(c.get("name", "") for c in j.findall("command_interface")),
            tuple(s.get("name", "") for s in j.findall("state_interface")),
        )
        for j in blocks[0].findall("joint")
    )
    names = [j.name for j in joints]
    if sorted(names) != sorted(robot.joint_names):
        raise Ros2ControlError(
            f"{robot.urdf_path}: <ros2_control> joints {names} are not the "
            f"chain's actuated joints {list(robot.joint_names)}"
        )
    for j in joints:
        missing = [i for i in STATE_INTERFACES if i not in j.state_interfaces]
        if "effort" not in j.command_interfaces or missing:
            raise Ros2ControlError(
                f"{robot.urdf_path}: <ros2_control> joint '{j.name}' needs an effort command "
                f"interface and position, velocity and effort state interfaces (has commands "
                f"{list(j.command_interfaces)}, states {list(j.state_interfaces)})"
            )
    return joints


def controllers_config(robot: RobotDescription, source: str | Path = CONTROLLERS_FILE) -> dict:
    """The controllers file ``source`` (a path or a name in config/) with the effort controller on
    ``robot``'s joints, in chain order (the order of the executor's commands)."""
    path = resolve_resource(str(source), "config", ".yaml")
    config = yaml.safe_load(path.read_text())
    try:
        params = config[EFFORT_CONTROLLER]["ros__parameters"]
    except (KeyError, TypeError):
        raise Ros2ControlError(f"{path}: no {EFFORT_CONTROLLER}: ros__parameters") from None
    params["joints"] = list(robot.joint_names)
    return config


def mujoco_description(robot: RobotDescription, mjcf: Path, headless: bool) -> str:
    """The URDF's text for mujoco_ros2_control: its hardware given the MuJoCo model file ``mjcf``
    and ``headless``, and no transmissions (the MJCF's joints already carry the reflected motor
    inertia, and its motors act on the joints)."""
    hardware_joints(robot)
    root = ET.parse(robot.urdf_path).getroot()
    block = root.find("ros2_control")
    assert block is not None  # hardware_joints checked that there is one
    hardware = block.find("hardware")
    if hardware is None or (hardware.findtext("plugin") or "").strip() != MUJOCO_PLUGIN:
        raise Ros2ControlError(
            f"{robot.urdf_path}: the <ros2_control> hardware plugin is not {MUJOCO_PLUGIN}"
        )
    for transmission in block.findall("transmission"):
        block.remove(transmission)
    params = {"mujoco_model": str(mjcf), "headless": str(headless).lower()}
    for param in hardware.findall("param"):
        if param.get("name") in params:
            hardware.remove(param)
    for name, value in params.items():
        ET.SubElement(hardware, "param", name=name).text = value
    return ET.tostring(root, encoding="unicode")


@dataclass(frozen=True)
class MujocoSetup:
    """What launch/ros2_control.launch.py starts an arm with: the robot description (URDF text),
    the MuJoCo model file and the controllers file (with the arm's joints)."""

    description: str
    mjcf: Path
    controllers: Path


def mujoco_setup(
    robot: str, folder: Path, headless: bool = True, controllers: str | Path = CONTROLLERS_FILE
) -> MujocoSetup:
    """Write the MuJoCo model of ``robot`` (a URDF path or a package arm's name) in the package's
    scene (one motor per joint, named like it) and its controllers file into ``folder``."""
    description = load_robot(robot)
    folder = Path(folder)
    mjcf = folder / f"{description.name}.xml"
    mjcf.write_text(build_mujoco_spec(description).to_xml())
    config = folder / CONTROLLERS_FILE
    config.write_text(yaml.safe_dump(controllers_config(description, controllers), sort_keys=False))
    return MujocoSetup(mujoco_description(description, mjcf, headless), mjcf, config)
