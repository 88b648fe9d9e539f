"""The fast test tier (``make test-fast``: ``-m "not ros and not slow"``) collects without
importing rclpy or the node modules, and still collects tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FAST_TIER = "not ros and not slow"
_PLUGIN = """
import sys

def pytest_collection_finish(session):
    loaded = sorted(m for m in sys.modules
                    if m.split(".")[0] == "rclpy" or m.startswith("mbrl_ros.nodes"))
    print("ROS-MODULES:", ",".join(loaded) or "none")
"""


def _collect(tmp_path: Path, markexpr: str) -> str:
    (tmp_path / "tier_probe.py").write_text(_PLUGIN)
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    cmd += ["-p", "tier_probe", "-m", markexpr, "tests"]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_fast_tier_collects_without_rclpy(tmp_path):
    out = _collect(tmp_path, FAST_TIER)
    assert "ROS-MODULES: none" in out, out[-3000:]
    assert "tests/test_robot.py::" in out  # a core file is in the tier
    assert "tests/test_sim_node.py::" not in out  # a node file is not


def test_ros_tier_still_imports_ros_files(tmp_path):
    """The probe can fail: selecting ``ros`` collects node files and so imports rclpy."""
    out = _collect(tmp_path, "ros and not slow")
    assert "ROS-MODULES: none" not in out
    assert "tests/test_sim_node.py::" in out
