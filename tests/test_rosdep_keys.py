"""package.xml for ``rosdep install``: every dependency is a ROS 2 Kilted package or a rosdep key
(checked by hand against ros/rosdistro: kilted/distribution.yaml, rosdep/base.yaml and
rosdep/python.yaml at commit 8468e88c of 2026-08-22; keep these lists current), every third-party
module the package imports is declared or installed by pip as the README says, and nothing
declared is unused."""

import ast
import sys
import xml.etree.ElementTree as ET

from launch_kit import ROOT

# Packages released in Kilted (kilted/distribution.yaml).
ROS_PACKAGES = {
    "rclpy",
    "rcl_interfaces",
    "builtin_interfaces",
    "std_msgs",
    "sensor_msgs",
    "geometry_msgs",
    "nav_msgs",
    "visualization_msgs",
    "diagnostic_msgs",
    "std_srvs",
    "rosgraph_msgs",
    "launch",
    "launch_ros",
    "ament_index_python",
    "launch_pytest",
}
# rosdep keys (rosdep/python.yaml).
ROSDEP_KEYS = {
    "python3-numpy",
    "python3-scipy",
    "python3-yaml",
    "python3-matplotlib",
    "python3-mujoco-pip",
    "python3-rosbags-pip",
    "python3-pytest",
    "python3-pytest-timeout",
    "python3-psutil",
}
# Not keys there (the issue found python3-torch-pip and python3-safetensors-pip refused).
NOT_KEYS = {"python3-torch-pip", "python3-safetensors-pip", "python3-mcap-pip"}
# Imported modules -> the dependency that installs them.
MODULE_KEYS = {
    "numpy": "python3-numpy",
    "scipy": "python3-scipy",
    "yaml": "python3-yaml",
    "matplotlib": "python3-matplotlib",
    "mujoco": "python3-mujoco-pip",
    "rosbags": "python3-rosbags-pip",
    "lz4": "python3-rosbags-pip",
    "backports": "python3-rosbags-pip",
}  # lz4, backports.zstd: rosbags' own
PIP_ONLY = {"torch", "safetensors"}  # the README's ROS install section: pip install


def dependencies(kind: str) -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text.strip() for e in root.findall(kind)}


def imported_modules() -> set[str]:
    """Top-level modules imported by the package's code and launch files."""
    files = list((ROOT / "src").rglob("*.py")) + list((ROOT / "launch").glob("*.py"))
    out = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                out.add(node.module.split(".")[0])
    return out - set(sys.stdlib_module_names) - {"mbrl_ros", "compression"}  # 3.14's stdlib


def test_every_dependency_is_a_kilted_package_or_a_rosdep_key():
    declared = dependencies("exec_depend") | dependencies("test_depend")
    assert not declared & NOT_KEYS
    assert declared <= ROS_PACKAGES | ROSDEP_KEYS, declared - ROS_PACKAGES - ROSDEP_KEYS


def test_every_import_is_declared_and_every_declaration_used():
    declared = dependencies("exec_depend")
    modules = imported_modules()
    needed = {MODULE_KEYS.get(m, m) for m in modules - PIP_ONLY}
    assert needed <= declared, f"imported but not declared: {needed - declared}"
    assert declared <= needed, f"declared but not imported: {declared - needed}"
    readme = (ROOT / "README.md").read_text()
    assert "pip install torch safetensors" in readme


def test_test_dependencies_are_declared():
    declared = dependencies("test_depend")
    assert {"python3-pytest", "python3-pytest-timeout", "launch_pytest"} <= declared
