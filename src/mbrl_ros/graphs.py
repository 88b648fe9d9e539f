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
               config: str, state_subscribers: int) -> list[NodeSpec]:
    """The simulator; in lockstep it starts once ``state_subscribers`` nodes of the graph listen
    to /joint_states, so none of them misses the first states."""
    return [NodeSpec("arm_sim", "arm_sim", (config,), {
        "robot": robot, "mode": mode, "duration": duration, "seed": seed,
        "status_period": status_period, "min_state_subscribers": state_subscribers,
        "use_sim_time": False}, required=duration > 0)]


def sim_graph(robot: str = "arm7", mode: str = "lockstep", duration: str = "60.0",
              seed: str = "0", status_period: str = "2.0") -> list[NodeSpec]:
    """MuJoCo arm driven by the random-torque base policy π0 over ROS 2 topics."""
    seed_i = int(seed)
    return _sim_nodes(robot, mode, float(duration), seed_i, float(status_period), "sim.yaml",
                      1) + [
        NodeSpec("base_policy", "base_policy", ("sim.yaml",),
                 {"robot": robot, "seed": seed_i + 1, "use_sim_time": True}),
    ]


def record_graph(robot: str = "arm7", episodes: str = "5", episode_length: str = "5.0",
                 bag: str = "", mode: str = "lockstep", seed: str = "0",
                 status_period: str = "2.0") -> list[NodeSpec]:
    """The lecture's step 1, run π0 to collect D: the sim arm under random torques, recorded to a
    bag. The recorder resets the sim before each episode and ends the graph after the last."""
    seed_i, n = int(seed), int(episodes)
    if n < 1:
        raise ValueError(f"episodes = {n} must be at least 1")
    return _sim_nodes(robot, mode, 0.0, seed_i, float(status_period), "sim.yaml", 2) + [
        NodeSpec("base_policy", "base_policy", ("sim.yaml", "record.yaml"),
                 {"robot": robot, "seed": seed_i + 1, "use_sim_time": True}),
        NodeSpec("recorder", "recorder", ("recorder.yaml", "record.yaml"),
                 {"episodes": n, "episode_length": float(episode_length), "bag_path": bag,
                  "use_sim_time": True}, required=True),
    ]


def _floats(name: str, text: str) -> list[float]:
    """'0.4,0,0.6' → [0.4, 0.0, 0.6] ('' → [])."""
    try:
        return [float(v) for v in text.split(",")] if text.strip() else []
    except ValueError:
        raise ValueError(f"{name} = {text!r} must be comma-separated numbers") from None


def gps_graph(robot: str = "arm7", target: str = "0.4,0.0,0.6", initial_position: str = "",
              iterations: str = "10", samples: str = "5", prior: str = "gmm", output_dir: str = "",
              seed: str = "0", status_period: str = "2.0") -> list[NodeSpec]:
    """Guided policy search's inner loop on the sim arm: the trainer resets the arm, the executor
    samples its linear-Gaussian controller, the trainer fits local dynamics and makes the
    KL-constrained update; it ends the graph after the last iteration."""
    seed_i = int(seed)
    start = _floats("initial_position", initial_position)
    sim = _sim_nodes(robot, "lockstep", 0.0, seed_i, float(status_period), "gps.yaml", 2)
    sim[0].parameters["initial_position"] = start
    return sim + [
        NodeSpec("lg_executor", "lg_executor", ("gps.yaml",),
                 {"robot": robot, "seed": seed_i + 1, "use_sim_time": True}),
        NodeSpec("gps_trainer", "gps_trainer", ("gps.yaml",),
                 {"robot": robot, "target": _floats("target", target),
                  "initial_position": start, "iterations": int(iterations),
                  "samples": int(samples), "prior": prior, "output_dir": output_dir,
                  "seed": seed_i, "use_sim_time": True}, required=True),
    ]


GRAPHS: dict[str, Graph] = {
    "sim": Graph("sim", "simulated arm driven by random torques (the lecture's π0)", (
        GraphArg("robot", "arm7", "robot: arm7, arm2 or a URDF path"),
        GraphArg("mode", "lockstep", "lockstep (deterministic) or realtime"),
        GraphArg("duration", "60.0", "sim seconds to run; 0 = until stopped"),
        GraphArg("seed", "0", "random seed of the sim (the policy uses seed+1)"),
        GraphArg("status_period", "2.0", "wall seconds between the sim's status lines"),
    ), sim_graph),
    "record": Graph("record", "collect random-torque episodes from the sim arm into a bag", (
        GraphArg("robot", "arm7", "robot: arm7, arm2 or a URDF path"),
        GraphArg("episodes", "5", "episodes to record (the sim is reset before each)"),
        GraphArg("episode_length", "5.0", "sim seconds per episode"),
        GraphArg("bag", "", "bag folder to create; empty = bags/mbrl_<date and time>"),
        GraphArg("mode", "lockstep", "lockstep (deterministic) or realtime"),
        GraphArg("seed", "0", "random seed of the sim (the policy uses seed+1)"),
        GraphArg("status_period", "2.0", "wall seconds between the sim's status lines"),
    ), record_graph),
    "gps": Graph("gps", "guided policy search: local models + KL-constrained LQR on the sim arm", (
        GraphArg("robot", "arm7", "robot: arm7, arm2 or a URDF path"),
        GraphArg("target", "0.4,0.0,0.6", "end-effector target x,y,z in the base frame (m)"),
        GraphArg("initial_position", "", "start pose (rad, comma-separated); '' = home pose"),
        GraphArg("iterations", "10", "GPS iterations"),
        GraphArg("samples", "5", "controller samples per iteration"),
        GraphArg("prior", "gmm", "local dynamics prior: gmm or none"),
        GraphArg("output_dir", "", "folder for summary.txt and learning_curve.png"),
        GraphArg("seed", "0", "random seed (sim; executor noise uses seed+1)"),
        GraphArg("status_period", "2.0", "wall seconds between the sim's status lines"),
    ), gps_graph),
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
