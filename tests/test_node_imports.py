"""The nodes that need neither kinematics nor learning start without torch: importing the
simulator, the executor, the base policy or the recorder does not load it (torch is most of a
node's start-up time and memory; the executor is what runs beside a real robot)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros  # imports the node modules (rclpy) in a subprocess

TORCH_FREE = ("arm_sim", "lg_executor", "base_policy", "recorder")
PROBE = """
import importlib, sys
importlib.import_module("mbrl_ros.nodes." + sys.argv[1])
print("torch" in sys.modules)
"""


@pytest.mark.parametrize("node", TORCH_FREE)
def test_node_module_does_not_import_torch(node):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, node], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False"], f"mbrl_ros.nodes.{node} imports torch"


def test_the_probe_sees_torch_where_a_node_needs_it():
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "mpc_planner"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True"]
