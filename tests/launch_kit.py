"""ROS 2's launch system (``launch``, ``launch_ros``, ``ros2 launch``) for the tests, from
``../shared/ros2_launch_kit`` (pure Python; no wheels exist): the package installed in a ROS
layout by ``colcon build``, and ``ros2`` commands run against that install. Tests that need it
skip with a clear reason where the kit or colcon is absent (colcon must be there in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The kit beside the project, or where MBRL_ROS_LAUNCH_KIT says (a git worktree elsewhere).
KIT = Path(os.environ.get("MBRL_ROS_LAUNCH_KIT") or ROOT.parent / "shared" / "ros2_launch_kit")

requires_kit = pytest.mark.skipif(
    not KIT.is_dir(),
    reason=f"ROS 2's launch system is not on this machine ({KIT} is absent; "
    "launch and launch_ros have no wheels)",
)


def colcon_build(base: Path) -> Path:
    """``colcon build`` of this package into ``base``; returns the install prefix of mbrl_ros.
    The node executables run this interpreter (a distutils ``build_scripts`` setting in a HOME of
    the build's own): on a ROS install that is the system python, which has rclpy; here the
    project's venv has it."""
    if shutil.which("colcon") is None:
        if os.environ.get("CI"):
            pytest.fail("colcon is missing in CI (make test installs colcon + python3-colcon-ros)")
        pytest.skip("colcon not installed (apt-get install colcon python3-colcon-ros)")
    home = base / "home"
    home.mkdir(parents=True)
    (home / ".pydistutils.cfg").write_text(f"[build_scripts]\nexecutable = {sys.executable}\n")
    result = subprocess.run(
        [
            "colcon",
            "build",
            "--base-paths",
            str(ROOT),
            "--packages-select",
            "mbrl_ros",
            "--build-base",
            str(base / "build"),
            "--install-base",
            str(base / "install"),
        ],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"HOME": str(home)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return base / "install" / "mbrl_ros"


@pytest.fixture(scope="session", name="ros_install")
def ros_install_fixture(tmp_path_factory) -> Path:
    """The package installed by colcon (its prefix), once per test session."""
    return colcon_build(tmp_path_factory.mktemp("colcon"))


def kit_environment(prefix: Path, log_dir: Path) -> dict[str, str]:
    """This process's environment plus what ``ros2`` needs for the install at ``prefix``: the kit
    and the install's site-packages on PYTHONPATH, the install in the ament index, this
    interpreter, and the ROS log files in ``log_dir``."""
    site = next((prefix / "lib").glob("python3*/site-packages"))
    paths = [KIT / "site", KIT / "stubs", site]
    ament = os.environ.get("AMENT_PREFIX_PATH")
    return os.environ | {
        "PYTHONPATH": os.pathsep.join(map(str, paths)),
        "AMENT_PREFIX_PATH": str(prefix) + (os.pathsep + ament if ament else ""),
        "PYTHON": sys.executable,
        "ROS_LOG_DIR": str(log_dir),
        "PYTHONUNBUFFERED": "1",
    }


def ros2(*args: str) -> list[str]:
    """The command line of ``ros2 ARGS`` (the kit's ros2cli)."""
    return [str(KIT / "bin" / "ros2"), *args]
