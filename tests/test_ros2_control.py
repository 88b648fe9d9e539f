"""ros2_control descriptions, checked structurally (ros2_control has no wheels): the arms' URDFs
with their <ros2_control> blocks (as ros2_control's parser reads them), config/ros2_controllers.yaml
against the controllers' parameter schema, the MuJoCo set-up the launch file starts, and the launch
file under ROS 2's launch system (the kit)."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pytest
import yaml
from launch_kit import KIT, ROOT, requires_kit

from mbrl_ros.data.topics import COMMANDS
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.ros2_control import (
    EFFORT_CONTROLLER,
    Ros2ControlError,
    controllers_config,
    hardware_joints,
    mujoco_description,
    mujoco_setup,
)

ARMS = ("arm2", "arm6", "arm7")
# Reflected motor inertia rotor_inertia * gear^2 (kg m^2) as the URDFs' comments state them.
ARMATURE = {
    "arm2": [0.0] * 2,
    "arm6": [1.2e-5 * 101**2] * 3 + [3e-6 * 101**2] * 3,
    "arm7": [1e-5 * 100**2] * 7,
}

# The parameters the controllers declare (generate_parameter_library files of ros2_controllers:
# forward_command_controller_parameters.yaml, joint_state_broadcaster_parameters.yaml) and
# controller_manager's (controller_manager_parameters.yaml), name -> (type, must not be empty).
PLUGINS = {
    "forward_command_controller/ForwardCommandController": {
        "joints": (list, True),
        "interface_name": (str, True),
    },
    "joint_state_broadcaster/JointStateBroadcaster": {
        "use_local_topics": (bool, False),
        "joints": (list, False),
        "extra_joints": (list, False),
        "interfaces": (list, False),
        "map_interface_to_joint_state": (dict, False),
        "use_urdf_to_filter": (bool, False),
        "frame_id": (str, False),
    },
}
MANAGER = {"update_rate": int, "enforce_command_limits": bool, "handle_exceptions": bool}


@pytest.mark.parametrize("arm", ARMS)
def test_urdf_ros2_control_block_names_the_chain_joints(arm):
    robot = load_robot(arm)
    joints = hardware_joints(robot)
    assert [j.name for j in joints] == list(robot.joint_names)
    for j in joints:
        assert j.command_interfaces == ("effort",)
        assert j.state_interfaces == ("position", "velocity", "effort")
    np.testing.assert_allclose(robot.armature, ARMATURE[arm], rtol=1e-12)


@pytest.mark.parametrize("arm", ARMS)
def test_urdf_is_in_ros2_control_form(arm):
    """ros2_control's component parser: a hardware <plugin>; transmissions with a <plugin> and
    name and role on every joint and actuator; no ROS 1 transmissions left."""
    root = ET.parse(ROOT / "urdf" / f"{arm}.urdf").getroot()
    assert root.findall("transmission") == [] and not root.findall(".//hardwareInterface")
    block = root.find("ros2_control")
    assert block.get("type") == "system" and block.get("name")
    assert block.findtext("hardware/plugin").strip() == "mujoco_ros2_control/MujocoSystemInterface"
    for transmission in block.findall("transmission"):
        assert (
            transmission.findtext("plugin").strip() == "transmission_interface/SimpleTransmission"
        )
        parts = transmission.findall("joint") + transmission.findall("actuator")
        assert len(parts) == 2 and all(p.get("name") and p.get("role") for p in parts)
        assert float(transmission.findtext("joint/mechanical_reduction")) > 0


def test_ros1_transmissions_still_read(tmp_path):
    """A URDF with ROS 1 transmissions (Drake's gear_ratio) gives the same reflected inertia."""
    text = (ROOT / "urdf" / "arm7.urdf").read_text()
    root = ET.fromstring(text)
    block = root.find("ros2_control")
    drake = "{http://drake.mit.edu}"
    for t in block.findall("transmission"):
        gear = t.findtext("joint/mechanical_reduction")
        joint = ET.Element("joint", name=t.find("joint").get("name"))
        actuator = t.find("actuator")
        ET.SubElement(actuator, f"{drake}gear_ratio", value=gear)
        old = ET.SubElement(root, "transmission", name=t.get("name"))
        old.extend([joint, actuator])
    root.remove(block)
    path = tmp_path / "arm7_ros1.urdf"
    path.write_text(ET.tostring(root, encoding="unicode"))
    np.testing.assert_allclose(load_robot(path).armature, ARMATURE["arm7"], rtol=1e-12)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda b: b.find("joint/command_interface").set("name", "position"),
            "joint 'joint1' needs an effort command interface",
        ),
        (lambda b: b.remove(b.find("joint")), r"joints \['joint2'\] are not the chain's"),
        (lambda b: b.find("joint").set("name", "wrist"), "are not the chain's actuated joints"),
        (lambda b: b.find("joint").attrib.pop("name"), r"joints \['', 'joint2'\] are not the"),
    ],
)
def test_bad_ros2_control_block_is_named(tmp_path, change, message):
    root = ET.parse(ROOT / "urdf" / "arm2.urdf").getroot()
    change(root.find("ros2_control"))
    path = tmp_path / "bad.urdf"
    path.write_text(ET.tostring(root, encoding="unicode"))
    with pytest.raises(Ros2ControlError, match=message):
        hardware_joints(load_robot(path))


def test_controllers_file_matches_the_controllers_schema():
    config = yaml.safe_load((ROOT / "config" / "ros2_controllers.yaml").read_text())
    manager = config.pop("controller_manager")["ros__parameters"]
    types = {
        name: manager.pop(name)["type"] for name in list(manager) if isinstance(manager[name], dict)
    }
    assert set(manager) <= set(MANAGER)
    for name, value in manager.items():
        assert type(value) is MANAGER[name], name
    assert manager["update_rate"] > 0
    assert types == {
        "joint_state_broadcaster": "joint_state_broadcaster/JointStateBroadcaster",
        EFFORT_CONTROLLER: "forward_command_controller/ForwardCommandController",
    }
    assert set(config) <= set(types), "parameters for a controller the manager does not load"
    for name, section in config.items():
        params, schema = section["ros__parameters"], PLUGINS[types[name]]
        assert set(params) <= set(schema), name
        for key, value in params.items():
            kind, required = schema[key]
            assert isinstance(value, kind) and (value or not required), (name, key)
        for key, (_, required) in schema.items():
            assert key in params or not required, (name, key)
    effort = config[EFFORT_CONTROLLER]["ros__parameters"]
    assert effort["interface_name"] == "effort"
    assert effort["joints"] == list(load_robot("arm7").joint_names)
    assert f"{EFFORT_CONTROLLER}/commands" == COMMANDS  # its ~/commands, namespaced alike


def test_controllers_config_takes_the_arms_joints():
    robot = load_robot("arm6")
    config = controllers_config(robot)
    assert config[EFFORT_CONTROLLER]["ros__parameters"]["joints"] == list(robot.joint_names)
    assert config["controller_manager"]["ros__parameters"]["update_rate"] == 500


@pytest.mark.parametrize("arm", ["arm2", "arm6"])
def test_mujoco_setup(tmp_path, arm):
    """The MJCF compiles with a motor on each joint named like it; the description names it, has
    no transmissions (MuJoCo's joints carry the motor inertia) and still describes the arm."""
    setup = mujoco_setup(arm, tmp_path, headless=True)
    robot = load_robot(arm)
    model = mujoco.MjModel.from_xml_path(str(setup.mjcf))
    assert [model.actuator(i).name for i in range(model.nu)] == list(robot.joint_names)
    for i, name in enumerate(robot.joint_names):
        assert model.actuator(i).trnid[0] == model.joint(name).id
        np.testing.assert_allclose(model.actuator(i).gear[0], 1.0)
        np.testing.assert_allclose(
            model.actuator(i).ctrlrange, [-robot.limits.effort[i], robot.limits.effort[i]]
        )
        np.testing.assert_allclose(
            model.dof_armature[model.joint(name).dofadr[0]], ARMATURE[arm][i], rtol=1e-12
        )
    root = ET.fromstring(setup.description)
    hardware = root.find("ros2_control/hardware")
    params = {p.get("name"): p.text for p in hardware.findall("param")}
    assert params == {"mujoco_model": str(setup.mjcf), "headless": "true"}
    assert root.findall(".//transmission") == []
    described = tmp_path / "described.urdf"
    described.write_text(setup.description)
    assert [j.name for j in hardware_joints(load_robot(described))] == list(robot.joint_names)
    written = yaml.safe_load(setup.controllers.read_text())
    assert written == controllers_config(robot)


def test_mujoco_description_refuses_another_plugin(tmp_path):
    root = ET.parse(ROOT / "urdf" / "arm2.urdf").getroot()
    root.find("ros2_control/hardware/plugin").text = "my_robot_driver/MyArm"
    path = tmp_path / "mine.urdf"
    path.write_text(ET.tostring(root, encoding="unicode"))
    with pytest.raises(Ros2ControlError, match="plugin is not mujoco_ros2_control"):
        mujoco_description(load_robot(path), tmp_path / "x.xml", True)


LOAD_LAUNCH = """
import json, runpy, sys
from launch import LaunchContext
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.utilities import perform_substitutions
ld = runpy.run_path(sys.argv[1])["generate_launch_description"]()
context = LaunchContext()
args = {e.name: perform_substitutions(context, e.default_value) for e in ld.entities
        if isinstance(e, DeclareLaunchArgument)}
context.launch_configurations.update(args, robot="arm6")
nodes = [[node.node_package, node.node_executable,
          [str(a) for a in node._Node__arguments or []]]
         for e in ld.entities if isinstance(e, OpaqueFunction) for node in e.execute(context)]
print(json.dumps({"args": args, "nodes": nodes}))
"""


@requires_kit
def test_launch_file_loads_with_ros2_launch():
    """The launch file imports with ROS 2's launch system, declares its arguments and, for arm6,
    starts robot_state_publisher, mujoco_ros2_control's ros2_control_node and the two spawners."""
    env_path = f"{KIT / 'site'}:{KIT / 'stubs'}"
    result = subprocess.run(
        [sys.executable, "-c", LOAD_LAUNCH, str(ROOT / "launch" / "ros2_control.launch.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["args"] == {
        "robot": "arm7",
        "headless": "true",
        "use_sim_time": "false",
        "controllers": "ros2_controllers.yaml",
    }
    started = [(package, executable) for package, executable, *_ in out["nodes"]]
    assert started == [
        ("robot_state_publisher", "robot_state_publisher"),
        ("mujoco_ros2_control", "ros2_control_node"),
        ("controller_manager", "spawner"),
        ("controller_manager", "spawner"),
    ]
    assert [n[2][:2] for n in out["nodes"][2:]] == [
        ["joint_state_broadcaster", "--param-file"],
        [EFFORT_CONTROLLER, "--param-file"],
    ]
    written = yaml.safe_load(open(out["nodes"][2][2][2]).read())
    assert written[EFFORT_CONTROLLER]["ros__parameters"]["joints"] == list(
        load_robot("arm6").joint_names
    )
