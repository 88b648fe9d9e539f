"""ament_python package mbrl_ros (src layout); also a plain pip package with extras."""
from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = "mbrl_ros"

# One console script per node (ROS executables land in lib/mbrl_ros via setup.cfg).
NODES = {
    "arm_sim": "mbrl_ros.nodes.arm_sim:main",
    "base_policy": "mbrl_ros.nodes.base_policy:main",
    "dynamics_fitter": "mbrl_ros.nodes.dynamics_fitter:main",
    "episode_manager": "mbrl_ros.nodes.episode_manager:main",
    "gps_trainer": "mbrl_ros.nodes.gps_trainer:main",
    "lg_executor": "mbrl_ros.nodes.lg_executor:main",
    "mpc_planner": "mbrl_ros.nodes.mpc_planner:main",
    "policy_runner": "mbrl_ros.nodes.policy_runner:main",
    "recorder": "mbrl_ros.nodes.recorder:main",
    "replay": "mbrl_ros.nodes.replay:main",
    "solar_runner": "mbrl_ros.nodes.solar_runner:main",
}

ROS_WHEELS = [
    "ros-kilted-rclpy[fastrtps]",
    "ros-kilted-std-msgs",
    "ros-kilted-sensor-msgs",
    "ros-kilted-geometry-msgs",
    "ros-kilted-nav-msgs",
    "ros-kilted-visualization-msgs",
    "ros-kilted-diagnostic-msgs",
    "ros-kilted-std-srvs",
    "ros-kilted-rosgraph-msgs",
]


def share(folder, pattern="*"):
    """data_files entry installing repo folder `folder` under share/mbrl_ros/`folder`."""
    files = sorted(p for p in glob(os.path.join(folder, pattern)) if os.path.isfile(p))
    return (os.path.join("share", PACKAGE, folder), files)


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Model-based RL for torque-controlled arms on ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        (os.path.join("share", PACKAGE), ["package.xml"]),
        share("launch"),
        share("config"),
        share("urdf"),
        share("sim"),
    ],
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "torch>=2.2",
        "mujoco>=3.10",  # MjSpec.body and the other spec calls of robot.py; 3.2.7 lacks them
        "rosbags>=0.11,<0.12",  # the MCAP writer builds on rosbags internals
        "safetensors>=0.4",
        "pyyaml>=6",
        "matplotlib>=3.7",
    ],
    extras_require={
        "ros": ROS_WHEELS,
        # osrf-pycommon, argcomplete, psutil: for ROS 2's launch system in ../shared (tests);
        # ruff and mypy pinned, so `make lint` gives the same verdict everywhere
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "mcap>=1.1", "mcap-ros2-support>=0.5",
                "osrf-pycommon", "argcomplete", "psutil", "ruff==0.17.6", "mypy==2.4.1",
                "types-PyYAML"],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [f"{name}={target}" for name, target in NODES.items()]
        + ["mbrl-ros=mbrl_ros.cli:main"],
    },
)
