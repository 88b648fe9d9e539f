"""The runnable graphs, described once.

``graph(name, **args)`` returns the node specs of a graph. ``launch/<name>.launch.py`` turns them
into ``launch_ros`` Node actions (via ``mbrl_ros.launch_support``) and ``mbrl-ros launch <name>``
turns them into processes (via ``mbrl_ros.launcher``); neither repeats a node, parameter or
remapping. Per-node defaults live in ``config/<file>.yaml``; graph arguments override them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph: the console script / module ``mbrl_ros.nodes.<executable>``, its node
    name, config files (names in config/), parameter overrides, remappings, and whether the graph
    ends when it exits."""

    executable: str
    name: str
    config: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    required: bool = False

    @property
    def module(self) -> str:
        return f"mbrl_ros.nodes.{self.executable}"


@dataclass(frozen=True)
class GraphArg:
    """A graph argument (``name:=value`` on both launchers): default and description."""

    name: str
    default: str
    description: str


@dataclass(frozen=True)
class Graph:
    name: str
    description: str
    args: tuple[GraphArg, ...]
    build: Callable[..., list[NodeSpec]]


def _sim_nodes(robot: str, mode: str, duration: float, seed: int, status_period: float,
               config: str) -> list[NodeSpec]:
    return [NodeSpec("arm_sim", "arm_sim", (config,), {
        "robot": robot, "mode": mode, "duration": duration, "seed": seed,
        "status_period": status_period, "use_sim_time": False}, required=duration > 0)]


def sim_graph(robot: str = "arm7", mode: str = "lockstep", duration: str = "60.0",
              seed: str = "0", status_period: str = "2.0") -> list[NodeSpec]:
    """MuJoCo arm driven by the random-torque base policy π0 over ROS 2 topics."""
    seed_i = int(seed)
    return _sim_nodes(robot, mode, float(duration), seed_i, float(status_period), "sim.yaml") + [
        NodeSpec("base_policy", "base_policy", ("sim.yaml",),
                 {"robot": robot, "seed": seed_i + 1, "use_sim_time": True}),
    ]


GRAPHS: dict[str, Graph] = {
    "sim": Graph("sim", "simulated arm driven by random torques (the lecture's π0)", (
        GraphArg("robot", "arm7", "robot: arm7, arm2 or a URDF path"),
        GraphArg("mode", "lockstep", "lockstep (deterministic) or realtime"),
        GraphArg("duration", "60.0", "sim seconds to run; 0 = until stopped"),
        GraphArg("seed", "0", "random seed of the sim (the policy uses seed+1)"),
        GraphArg("status_period", "2.0", "wall seconds between the sim's status lines"),
    ), sim_graph),
}


def graph(name: str, **args: str) -> list[NodeSpec]:
    """Node specs of graph ``name`` with ``args`` (strings, as given on a command line)."""
    if name not in GRAPHS:
        raise ValueError(f"unknown graph '{name}'; graphs: {', '.join(sorted(GRAPHS))}")
    g = GRAPHS[name]
    known = {a.name for a in g.args}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"graph '{name}' has no argument(s) {unknown}; it takes "
                         f"{sorted(known)}")
    values = {a.name: a.default for a in g.args} | args
    try:
        return g.build(**values)
    except ValueError as exc:
        raise ValueError(f"graph '{name}': bad argument value: {exc}") from None
