"""The package as a ROS 2 ament_python package: package.xml, setup.py, graphs, launch files, a real
colcon build whose installed tree has the ROS layout, and ROS 2's launch system (the kit) loading
the installed launch files."""

import ast
import os
import subprocess
import xml.etree.ElementTree as ET

import pytest
from launch_kit import (
    ROOT,
    kit_environment,
    requires_kit,
    ros2,
    ros_install_fixture,  # noqa: F401 - the ros_install fixture
)

from mbrl_ros.common.paths import share_path
from mbrl_ros.graphs.description import GRAPHS, NodeSpec, graph
from mbrl_ros.graphs.launcher import node_command, parse_graph_args


def setup_nodes() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODES":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no NODES table")


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "mbrl_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs", "launch_ros"} <= deps
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}


def test_every_node_module_has_main_and_every_graph_node_is_installed():
    nodes = setup_nodes()
    for name, target in nodes.items():
        module, func = target.split(":")
        assert module == f"mbrl_ros.nodes.{name}" and func == "main"
        assert (ROOT / "src" / (module.replace(".", "/") + ".py")).is_file()
    for gname in GRAPHS:
        for spec in graph(gname):
            assert spec.executable in nodes, f"graph {gname} uses uninstalled {spec.executable}"
            for cfg in spec.config:
                assert share_path("config", cfg).is_file()


def test_each_graph_has_a_launch_file_that_uses_the_shared_description():
    for gname in GRAPHS:
        text = (ROOT / "launch" / f"{gname}.launch.py").read_text()
        tree = ast.parse(text)
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "launch_description"
        ]
        assert [c.args[0].value for c in calls] == [gname]


def test_launcher_command_line_matches_the_spec(tmp_path):
    spec = graph("sim", robot="arm2", duration="3")[0]
    cmd = node_command(spec, tmp_path)
    assert cmd[1:3] == ["-m", "mbrl_ros.nodes.arm_sim"]
    assert "__node:=arm_sim" in cmd and str(share_path("config", "sim.yaml")) in cmd
    assert "robot: arm2" in (tmp_path / "arm_sim.yaml").read_text()


def test_graph_arguments_are_checked():
    with pytest.raises(ValueError, match="unknown graph 'nope'"):
        graph("nope")
    with pytest.raises(ValueError, match=r"no argument\(s\) \['speed'\]"):
        graph("sim", speed="2")
    with pytest.raises(ValueError, match="bad argument value"):
        graph("sim", duration="soon")
    with pytest.raises(ValueError, match="name:=value"):
        parse_graph_args(["robot=arm2"])


def test_no_graph_passes_an_empty_list():
    """launch_ros rejects an empty list as a parameter value (a parameter file cannot type one):
    graphs leave such parameters out (gps: initial_position '' = the home pose, the nodes'
    default) and a NodeSpec refuses one."""
    for gname in GRAPHS:
        for spec in graph(gname):
            assert [] not in spec.parameters.values(), (gname, spec.name)
    sim, trainer = graph("gps")[0], graph("gps")[-1]
    assert "initial_position" not in sim.parameters | trainer.parameters
    assert graph("gps", initial_position="0.1,0.2")[0].parameters["initial_position"] == [0.1, 0.2]
    with pytest.raises(ValueError, match=r"parameter\(s\) \['target'\] are empty lists"):
        NodeSpec("gps_trainer", "gps_trainer", parameters={"target": []})


@pytest.mark.slow
def test_colcon_build_installs_the_ros_layout(ros_install):
    prefix = ros_install
    share = prefix / "share" / "mbrl_ros"
    for folder in ("launch", "config", "urdf", "sim"):
        repo_files = sorted(p.name for p in (ROOT / folder).iterdir() if p.is_file())
        assert sorted(p.name for p in (share / folder).iterdir()) == repo_files
    assert (share / "package.xml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "mbrl_ros").is_file()
    for name in setup_nodes():
        exe = prefix / "lib" / "mbrl_ros" / name
        assert exe.is_file() and os.access(exe, os.X_OK), name
        assert f"'console_scripts', '{name}'" in exe.read_text()
    site = list((prefix / "lib").glob("python3*/site-packages"))
    assert (site[0] / "mbrl_ros" / "nodes" / "arm_sim.py").is_file()
    entry_points = next(site[0].glob("mbrl_ros*.egg-info/entry_points.txt")).read_text()
    for name, target in setup_nodes().items():
        assert f"{name} = {target}" in entry_points


@pytest.mark.slow
@requires_kit
def test_installed_launch_files_load_in_ros2_launch(ros_install, tmp_path):
    """ROS 2's launch system (the kit) finds the installed package through the ament index and
    loads each of its launch files: ``--show-args`` lists every graph argument with its default.
    (tests/test_ros2_launch.py runs them.)"""
    env = kit_environment(ros_install, tmp_path)
    prefix = subprocess.run(
        ros2("pkg", "prefix", "mbrl_ros"), env=env, capture_output=True, text=True, timeout=60
    )
    assert prefix.stdout.strip() == str(ros_install), prefix.stdout + prefix.stderr
    for gname, g in GRAPHS.items():
        result = subprocess.run(
            ros2("launch", "mbrl_ros", f"{gname}.launch.py", "--show-args"),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        for a in g.args:
            assert f"'{a.name}':" in result.stdout, (a.name, result.stdout)
            assert f"(default: '{a.default}')" in result.stdout, (a.name, result.stdout)
