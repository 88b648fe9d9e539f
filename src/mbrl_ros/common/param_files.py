"""ROS 2 parameter files of the package (config/), written so they apply in any namespace, and
which of them the lockstep 'mpc' graph uses for a robot.

A node's section is keyed ``/**/<node name>``: rcl matches ``/**`` against any namespace, so the
section applies to ``/planner`` and to ``/robot1/planner`` alike, while sections stay per node
(a bare ``planner:`` key means ``/planner`` only and silently misses a namespaced node). ``/**``
alone applies to every node.
"""

from __future__ import annotations

from typing import Any

ANY_NODE = "/**"
# Control period (s) of each robot in the 'mpc' graph; other robots (URDF paths) use arm7's.
MPC_CONTROL_PERIOD = {"arm2": 0.05, "arm7": 0.05}


def lockstep_mpc_config(robot: str) -> str:
    """config/ file of the lockstep 'mpc' graph for ``robot`` (other robots: arm7's)."""
    return "mpc.yaml" if robot not in MPC_CONTROL_PERIOD or robot == "arm7" else f"mpc_{robot}.yaml"


def node_key(name: str) -> str:
    """The section key of node ``name`` in any namespace: ``planner`` → ``/**/planner``."""
    return f"{ANY_NODE}/{name}"


def parameter_file(name: str, parameters: dict[str, Any]) -> dict:
    """The contents of a parameter file that sets ``parameters`` on node ``name``."""
    return {node_key(name): {"ros__parameters": parameters}}


def node_parameters(document: dict, name: str) -> dict[str, Any]:
    """The parameters a parsed parameter file gives node ``name`` in the root namespace: the
    sections ``/**``, ``/**/name``, ``/name`` and ``name``, later ones in the file winning."""
    keys = {ANY_NODE, node_key(name), f"/{name}", name}
    out: dict[str, Any] = {}
    for key, section in document.items():
        if key in keys:
            out.update((section or {}).get("ros__parameters", {}))
    return out
