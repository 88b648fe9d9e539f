"""The runnable graphs, described once.

``graph(name, **args)`` returns the node specs of a graph. ``launch/<name>.launch.py`` turns them
into ``launch_ros`` Node actions (via ``mbrl_ros.graphs.launch_support``) and ``mbrl-ros launch
<name>`` turns them into processes (via ``mbrl_ros.graphs.launcher``); neither repeats a node,
parameter or remapping. Per-node defaults live in ``config/<file>.yaml``; graph arguments override
them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mbrl_ros.common.artifacts import ArtifactError, read_file, read_header
from mbrl_ros.common.param_files import (
    MPC_CONTROL_PERIOD,
    lockstep_mpc_config,
    node_parameters,
)
from mbrl_ros.common.paths import resolve_resource, share_path
from mbrl_ros.data.topics import COMMANDS, STATES, check_namespace, resolve

if TYPE_CHECKING:
    from mbrl_ros.robot.config import RobotConfig


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph: the console script / module ``mbrl_ros.nodes.<executable>``, its node
    name, config files (names in config/), parameter overrides, remappings, whether the graph
    ends when it exits, and its namespace (absolute; ``/`` = the root)."""

    executable: str
    name: str
    config: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    required: bool = False
    namespace: str = "/"

    def __post_init__(self):
        empty = sorted(
            k for k, v in self.parameters.items() if isinstance(v, (list, tuple)) and not v
        )
        if empty:  # launch_ros rejects them; a parameter file cannot type them
            raise ValueError(
                f"node '{self.name}': parameter(s) {empty} are empty lists, which "
                f"ROS parameters cannot carry; leave them out"
            )

    @property
    def module(self) -> str:
        return f"mbrl_ros.nodes.{self.executable}"


@dataclass(frozen=True)
class GraphArg:
    """A graph argument (``name:=value`` on both launchers): default and description. ``check``
    (for a value other than the default) raises a ValueError saying what is allowed."""

    name: str
    default: str
    description: str
    check: Callable[[str], None] | None = None


def node_choice(executable: str, param: str) -> Callable[[str], None]:
    """A GraphArg check: one of the choices of parameter ``param`` of node ``executable`` (its
    module is imported when a value is checked)."""

    def check(value: str) -> None:
        params = importlib.import_module(f"mbrl_ros.nodes.{executable}").PARAMS
        allowed = next(p.choices for p in params if p.name == param)
        if value not in allowed:
            raise ValueError(f"must be one of: {', '.join(allowed)}")

    return check


def robot_choice(value: str) -> None:
    """A GraphArg check: a robot name (a URDF in the package's urdf/) or a URDF file."""
    try:
        resolve_resource(value, "urdf", ".urdf")
    except FileNotFoundError:
        names = sorted(p.stem for p in share_path("urdf").glob("*.urdf"))
        raise ValueError(f"must be one of: {', '.join(names)}, or a URDF file") from None


@dataclass(frozen=True)
class Graph:
    name: str
    description: str
    args: tuple[GraphArg, ...]
    build: Callable[..., list[NodeSpec]]


ROBOT_TOPICS = {"joint_states": STATES, "commands": COMMANDS}
HARDWARE_PERIOD = 0.002  # s: the hardware-like fixture's joint states, 500 Hz as on many arms
REALTIME_SIM_PERIOD = 0.01  # s: the simulator's joint states in real time, 100 Hz (the slowest
# robot rate the executor's gains are capped for)


def _sim_nodes(
    robot: str,
    mode: str,
    duration: float,
    seed: int,
    status_period: float,
    config: str,
    state_subscribers: int,
) -> list[NodeSpec]:
    """The simulator; in lockstep it starts once ``state_subscribers`` nodes of the graph listen
    to /joint_states, so none of them misses the first states."""
    return [
        NodeSpec(
            "arm_sim",
            "arm_sim",
            (config,),
            {
                "robot": robot,
                "mode": mode,
                "duration": duration,
                "seed": seed,
                "status_period": status_period,
                "min_state_subscribers": state_subscribers,
                "use_sim_time": False,
            },
            required=duration > 0,
        )
    ]


def _pi0_nodes(
    robot: str, mode: str, seed: int, config: tuple[str, ...], command_subscribers: int = 1
) -> list[NodeSpec]:
    """The base policy π0 (random-torque controllers) and the executor that runs them behind the
    safety layer: π0 never drives the motors directly. In lockstep the executor answers once
    ``command_subscribers`` nodes (the sim, a recorder) receive its commands."""
    executor_mode = "sync" if mode == "lockstep" else "realtime"
    return [
        NodeSpec(
            "lg_executor",
            "lg_executor",
            ("executor.yaml",) + config,
            {
                "robot": robot,
                "mode": executor_mode,
                "use_sim_time": True,
                "min_command_subscribers": command_subscribers,
            },
        ),
        NodeSpec(
            "base_policy",
            "base_policy",
            config,
            {"robot": robot, "mode": executor_mode, "seed": seed, "use_sim_time": True},
        ),
    ]


def sim_graph(
    *,
    robot: str,
    mode: str,
    duration: str,
    seed: str,
    status_period: str,
) -> list[NodeSpec]:
    """MuJoCo arm driven by the random-torque base policy π0 over ROS 2 topics (through the
    executor and its safety layer)."""
    seed_i = int(seed)
    return _sim_nodes(
        robot, mode, float(duration), seed_i, float(status_period), "sim.yaml", 2
    ) + _pi0_nodes(robot, mode, seed_i + 1, ("sim.yaml",))


def record_graph(
    *,
    robot: str,
    episodes: str,
    episode_length: str,
    bag: str,
    mode: str,
    seed: str,
    status_period: str,
    sim: str,
    robot_config: str,
    robot_compensates_gravity: str,
    joint_states: str,
    commands: str,
    camera: str,
) -> list[NodeSpec]:
    """The lecture's step 1, run π0 to collect D: the arm under random torques (through the
    executor), recorded to a bag; the recorder ends the graph after ``episodes`` whole episodes.
    ``camera`` true: the simulator publishes its camera's images too, and they are recorded.

    In lockstep the sim resets itself every ``episode_length`` (exactly, in sim time); the
    recorder records ``episodes`` whole episodes from those resets (not the sim's first episode,
    which starts before the recorder is known to receive everything). In real time (a robot, the
    hardware-like fixture, the simulator in ``mode:=realtime``) there are no resets: the episode
    manager homes the arm to a start pose around home before each episode (π0 in between) and
    announces each episode's start and end on /mbrl/episode_events, from which the recorder
    records."""
    seed_i, n = int(seed), int(episodes)
    if n < 1:
        raise ValueError(f"episodes = {n} must be at least 1")
    if camera not in ("true", "false"):
        raise ValueError(f"camera = {camera!r} must be true or false")
    target = robot_target(
        robot, sim, mode, robot_config, robot_compensates_gravity, joint_states, commands
    )
    if camera == "true" and target.sim != "true":
        raise ValueError(
            f"camera:=true needs the package's simulator (sim:=true), not sim:={target.sim}"
        )
    period = _config_param("sim.yaml", "arm_sim", "control_period")
    steps = int(round(float(episode_length) / period))
    if steps < 1:
        raise ValueError(
            f"episode_length = {episode_length} s is shorter than the control period {period:g} s"
        )
    recorder = NodeSpec(
        "recorder",
        "recorder",
        ("recorder.yaml", "record.yaml"),
        {
            "episodes": n,
            "episode_length": steps * period,
            "bag_path": bag,
            "use_sim_time": target.use_sim_time,
        },
        required=True,
    )
    if target.realtime:
        nodes = _record_realtime_nodes(
            robot, target, n, steps, period, seed_i, float(status_period), recorder
        )
        if camera == "true":
            nodes[0].parameters["camera"] = True  # the simulator (sim:=true)
        return nodes
    sim_nodes = _sim_nodes(robot, mode, 0.0, seed_i, float(status_period), "sim.yaml", 3)
    sim_nodes[0].parameters.update(episode_steps=steps, camera=camera == "true")
    return (
        sim_nodes + _pi0_nodes(robot, mode, seed_i + 1, ("sim.yaml", "record.yaml"), 2) + [recorder]
    )


def _record_realtime_nodes(
    robot: str,
    target: Target,
    n: int,
    steps: int,
    period: float,
    seed: int,
    status_period: float,
    recorder: NodeSpec,
) -> list[NodeSpec]:
    """The 'record' graph in real time: π0 through the executor, episodes by homing (the episode
    manager runs more episodes than recorded, so an episode that began before the recorder
    received everything does not leave it one short; the recorder ends the graph)."""
    from mbrl_ros.nodes.messages import MAX_TARGETS  # the episode manager's limit

    cfg = target.robot_settings
    config = ("sim.yaml", "record.yaml", "record_realtime.yaml")
    common = {"robot": robot, "use_sim_time": target.use_sim_time}
    nodes = _stand_in_nodes(robot, target, seed, status_period, config) + [
        NodeSpec(
            "lg_executor",
            "lg_executor",
            ("executor.yaml",) + config,
            common | {"robot_compensates_gravity": cfg.compensates_gravity, "seed": seed + 1},
        ),
        NodeSpec(
            "base_policy",
            "base_policy",
            config,
            common | {"seed": seed + 1, "joint_scale": list(cfg.effort_fraction)},
        ),
        _episode_manager(
            robot, target, steps, period, min(2 * n + 2, MAX_TARGETS), 0, "", "homing", config, ""
        ),
        replace(recorder, config=recorder.config + ("record_realtime.yaml",)),
    ]
    return [replace(node, remappings=node.remappings + target.remappings) for node in nodes]


def _stand_in_nodes(
    robot: str, target: Target, seed: int, status_period: float, config: tuple[str, ...]
) -> list[NodeSpec]:
    """What stands in for the robot of a real-time graph: the package's simulator in real time
    (``sim:=true``, its joint-state rate from ``config``) or the hardware-like fixture
    (``sim:=hardware``, 500 Hz), at the robot configuration's home, compensating gravity as the
    configuration says; none on a robot (``sim:=false``)."""
    if target.sim == "false":
        return []
    cfg = target.robot_settings
    mode = "realtime" if target.sim == "true" else "hardware"
    nodes = _sim_nodes(robot, mode, 0.0, seed, status_period, config[0], 1)
    nodes[0] = replace(nodes[0], config=config)
    nodes[0].parameters.update(
        gravity_compensation=cfg.compensates_gravity, initial_position_noise=0.0
    )
    if mode == "hardware":
        nodes[0].parameters["control_period"] = HARDWARE_PERIOD
    if cfg.home is not None:
        nodes[0].parameters["initial_position"] = list(cfg.home)
    return nodes


def _episode_manager(
    robot: str,
    target: Target,
    steps: int,
    period: float,
    n_train: int,
    n_eval: int,
    out: str,
    source: str,
    config: tuple[str, ...],
    planner_name: str = "mpc_planner",
) -> NodeSpec:
    """The episode manager of a real-time graph: ``n_train`` training then ``n_eval`` held-out
    episodes of ``steps`` control periods, each begun by ``source`` (homing to a start pose
    around home, or the simulator's reset service), targets around home; the robot facts from
    the target's robot configuration; ``planner_name`` '' for a graph without a planner."""
    cfg = target.robot_settings
    return NodeSpec(
        "episode_manager",
        "episode_manager",
        config,
        {
            "robot": robot,
            "use_sim_time": target.use_sim_time,
            "control_period": period,
            "episode_steps": steps,
            "episode_source": source,
            "train_episodes": n_train,
            "final_eval_episodes": n_eval,
            "output_dir": out,
            "planner_name": planner_name,
            "start_radius": cfg.start_radius,
            "target_radius": cfg.target_radius,
            "target_min_height": cfg.target_min_height,
            "limit_margin": cfg.limit_margin,
        }
        | ({"home": list(cfg.home)} if cfg.home is not None else {}),
    )


def _config_param(config: str, node: str, name: str) -> Any:
    """Parameter ``name`` of ``node`` in config/``config`` (for values a graph derives from it)."""
    return node_parameters(yaml.safe_load(share_path("config", config).read_text()), node)[name]


def _floats(name: str, text: str) -> list[float]:
    """'0.4,0,0.6' → [0.4, 0.0, 0.6] ('' → [])."""
    try:
        return [float(v) for v in text.split(",")] if text.strip() else []
    except ValueError:
        raise ValueError(f"{name} = {text!r} must be comma-separated numbers") from None


def _groups(name: str, text: str, size: int | None = None) -> list[list[float]]:
    """'0.3,0.5;-0.5,1.0' → [[0.3, 0.5], [-0.5, 1.0]] (one group per condition, ';' between
    them; '' → []); ValueError naming ``name`` unless each group has ``size`` numbers (if given)
    and all groups the same number."""
    groups = [_floats(name, part) for part in text.split(";")] if text.strip() else []
    sizes = {len(g) for g in groups}
    if groups and (len(sizes) > 1 or 0 in sizes or (size is not None and sizes != {size})):
        what = "x,y,z (m)" if size == 3 else "comma-separated numbers of equal count"
        raise ValueError(
            f"{name} = {text!r} must be {what} per condition, conditions separated by ';'"
        )
    return groups


def gps_graph(
    *,
    robot: str,
    task: str,
    target: str,
    initial_position: str,
    iterations: str,
    samples: str,
    prior: str,
    algorithm: str,
    output_dir: str,
    seed: str,
    status_period: str,
    sim: str,
    mode: str,
    robot_config: str,
    robot_compensates_gravity: str,
    joint_states: str,
    commands: str,
) -> list[NodeSpec]:
    """Guided policy search: the executor samples the trainer's linear-Gaussian controller of
    each condition (start pose, target) from its pose, the trainer fits local dynamics and makes
    the KL-constrained updates (``algorithm:=mdgps``: against a network policy's linearisation,
    the policy trained from all conditions' samples, published on /mbrl/policy and written to
    output_dir/policy.safetensors); it ends the graph after the last iteration. Conditions:
    ``initial_position`` and ``target`` with ';' between conditions (one target for all, one
    start pose for all, or one of each per condition).

    In lockstep with one condition and ``algorithm:=lqr`` the trainer resets the sim arm before
    each sample (exactly reproducible); with several conditions or mdgps it homes the lockstep
    sim arm to each condition's pose (the sim then cancels the arm's weight, as the policy
    graph's: the samples and the policy are torques on a weightless arm). In real time (a robot,
    the hardware-like fixture, the simulator in ``mode:=realtime``) it homes the arm to the
    condition's pose (``initial_position``, else the robot configuration's home, else the pose at
    start-up) and starts each sample once the arm has settled there.

    ``task:=insertion`` (lockstep, arm7's scene): the peg into the hole; ``target`` gives the holes'
    top centres (default ``config/gps_insertion.yaml``'s two holes), the arm starts every sample
    from one pose above the first hole (that file's, or ``initial_position``) by the sim's
    reset, which also moves the hole to the condition's (with mdgps too)."""
    seed_i = int(seed)
    starts = _groups("initial_position", initial_position)
    goals = _groups("target", target, 3)
    if len(goals) > 1 and len(starts) > 1 and len(goals) != len(starts):
        raise ValueError(
            f"target = {target!r} gives {len(goals)} targets for {len(starts)} start "
            "poses: give one target, one start pose, or one of each per condition"
        )
    if algorithm not in ("lqr", "mdgps"):
        raise ValueError(f"algorithm = {algorithm!r} must be lqr or mdgps")
    start = [v for g in starts for v in g]
    goal = [v for g in goals for v in g]
    where = robot_target(
        robot, sim, mode, robot_config, robot_compensates_gravity, joint_states, commands
    )
    runs = {
        "robot": robot,
        "iterations": int(iterations),
        "samples": int(samples),
        "prior": prior,
        "algorithm": algorithm,
        "output_dir": output_dir,
        "seed": seed_i,
    }
    if algorithm == "mdgps":
        runs["max_step_mult"] = MDGPS_MAX_STEP_MULT
    if task == "insertion":
        if where.realtime or sim != "true" or len(starts) > 1:
            raise ValueError(
                "task:=insertion runs on the package's lockstep simulator (sim:=true "
                "mode:=lockstep) from one start pose: its hole moves at the sim's resets"
            )
        return _gps_insertion_nodes(robot, start, goal, runs, float(status_period))
    if where.realtime:
        return _gps_realtime_nodes(robot, where, starts, goal, runs, float(status_period))
    homing = len(starts) > 1 or algorithm == "mdgps"
    pose = {"initial_position": start} if start else {}  # none: the home pose (node default)
    sim_nodes = _sim_nodes(robot, "lockstep", 0.0, seed_i, float(status_period), "gps.yaml", 2)
    sim_nodes[0].parameters.update({"initial_position": starts[0]} if starts else {})
    trainer = runs | {"target": goal or LOCKSTEP_GPS_TARGET, **pose, "use_sim_time": True}
    if homing:
        sim_nodes[0].parameters["gravity_compensation"] = True
        trainer |= {"episode_source": "homing", "lockstep": True}
    return sim_nodes + [
        NodeSpec(
            "lg_executor",
            "lg_executor",
            ("gps.yaml",),
            {
                "robot": robot,
                "seed": seed_i + 1,
                "use_sim_time": True,
                "min_command_subscribers": 2,
            },
        ),  # the sim and the trainer
        NodeSpec("gps_trainer", "gps_trainer", ("gps.yaml",), trainer, required=True),
    ]


LOCKSTEP_GPS_TARGET = [0.4, 0.0, 0.6]  # m: the lockstep gps graph's default (arm7's workspace)


def _gps_insertion_nodes(
    robot: str, start: list[float], holes: list[float], runs: dict, status_period: float
) -> list[NodeSpec]:
    """The 'gps' graph for peg insertion: the lockstep sim with the peg and the hole (which it
    moves to each condition's at its resets), the stochastic executor and the trainer resetting
    the sim before every sample; settings from gps.yaml and gps_insertion.yaml."""
    config = ("gps.yaml", "gps_insertion.yaml")
    sim_nodes = _sim_nodes(robot, "lockstep", 0.0, runs["seed"], status_period, config[0], 2)
    sim = replace(sim_nodes[0], config=config)
    pose = {"initial_position": start} if start else {}
    sim.parameters.update(pose)
    trainer = runs | pose | {"task": "insertion", "use_sim_time": True}
    if holes:
        trainer["target"] = holes
    return [
        sim,
        NodeSpec(
            "lg_executor",
            "lg_executor",
            config,
            {
                "robot": robot,
                "seed": runs["seed"] + 1,
                "use_sim_time": True,
                "min_command_subscribers": 2,
            },
        ),
        NodeSpec("gps_trainer", "gps_trainer", config, trainer, required=True),
    ]


# mdgps: the largest step multiplier of ε. Measured on arm2 (2 conditions × 5 samples): with the
# lqr default 3 the controllers outran the policy's linearisation and 3 of 8 updates asked for
# more feedforward than the executor takes; with 1 none did and both conditions converged.
MDGPS_MAX_STEP_MULT = 1.0


def _gps_realtime_nodes(
    robot: str,
    target: Target,
    starts: list[list[float]],
    goal: list[float],
    runs: dict,
    status_period: float,
) -> list[NodeSpec]:
    """The 'gps' graph in real time: samples start by homing (no resets); the stand-in arm
    starts at the first condition's pose."""
    cfg = target.robot_settings
    config = ("gps.yaml", "gps_realtime.yaml")
    starts = starts or ([list(cfg.home)] if cfg.home is not None else [])
    start = [v for g in starts for v in g]
    common = {"robot": robot, "use_sim_time": target.use_sim_time}
    gravity = {"robot_compensates_gravity": cfg.compensates_gravity}
    nodes = _stand_in_nodes(robot, target, runs["seed"], status_period, config) + [
        NodeSpec(
            "lg_executor", "lg_executor", config, common | gravity | {"seed": runs["seed"] + 1}
        ),
        NodeSpec(
            "gps_trainer",
            "gps_trainer",
            config,
            common
            | gravity
            | runs
            | {
                "episode_source": "homing",
                "target_radius": cfg.target_radius,
                "target_min_height": cfg.target_min_height,
                "limit_margin": cfg.limit_margin,
            }
            | {k: v for k, v in (("target", goal), ("initial_position", start)) if v},
            required=True,
        ),
    ]
    if starts and nodes[0].executable == "arm_sim":
        nodes[0].parameters["initial_position"] = starts[0]
    return [replace(node, remappings=node.remappings + target.remappings) for node in nodes]


@dataclass(frozen=True)
class Target:
    """Where a graph's nodes drive an arm: the package's simulator (``sim`` = true, in ``mode``
    lockstep or realtime), a robot of the user's (false) or the hardware-like fixture standing in
    for one (hardware); ``settings``: the robot's RobotConfig (None for the lockstep graphs,
    whose robot facts are in their config files); ``remappings`` of the robot's topics."""

    sim: str
    mode: str
    settings: RobotConfig | None
    remappings: tuple[tuple[str, str], ...]

    @property
    def realtime(self) -> bool:
        return self.mode == "realtime"

    @property
    def robot_settings(self) -> RobotConfig:
        """``settings`` for the real-time graphs, which always have them (ValueError if not)."""
        if self.settings is None:
            raise ValueError(f"a {self.mode} graph has no robot configuration to build from")
        return self.settings

    @property
    def use_sim_time(self) -> bool:
        """The package's simulator publishes /clock; a robot stamps with its wall clock."""
        return self.sim == "true"


def robot_target(
    robot: str,
    sim: str,
    mode: str,
    robot_config: str,
    robot_compensates_gravity: str,
    joint_states: str,
    commands: str,
) -> Target:
    """The graph arguments that say which arm is driven, checked together."""
    from mbrl_ros.robot.config import derive_robot_config, load_robot_config, robot_name
    from mbrl_ros.robot.description import (
        load_robot,  # torch, mujoco: only for graphs that need them
    )

    if sim not in ("true", "false", "hardware"):
        raise ValueError(f"sim = {sim!r} must be true, false or hardware")
    if robot_compensates_gravity not in ("", "true", "false"):
        raise ValueError(
            f"robot_compensates_gravity = {robot_compensates_gravity!r} must be true or false"
        )
    if sim != "true" and mode == "lockstep":
        mode = "realtime"  # a robot runs on its own clock
    remap = tuple(
        (src, dst)
        for src, dst in (
            (ROBOT_TOPICS["joint_states"], joint_states),
            (ROBOT_TOPICS["commands"], commands),
        )
        if resolve(src) != resolve(dst)
    )
    if mode == "lockstep":
        if robot_config or robot_compensates_gravity or remap:
            raise ValueError(
                "robot_config, robot_compensates_gravity and the topic names are "
                "for real-time runs (sim:=false, sim:=hardware or mode:=realtime)"
            )
        return Target(sim, mode, None, ())
    if robot_config:
        try:
            settings, _ = load_robot_config(robot_config)
        except OSError as exc:
            raise ValueError(f"robot_config {robot_config}: {exc.strerror or exc}") from None
        if (
            resolve_resource(settings.robot, "urdf", ".urdf").resolve()
            != resolve_resource(robot, "urdf", ".urdf").resolve()
        ):
            raise ValueError(f"robot_config {robot_config} is for {settings.robot}, not {robot}")
        if robot_compensates_gravity and settings.compensates_gravity != (
            robot_compensates_gravity == "true"
        ):
            raise ValueError(
                f"robot_compensates_gravity = {robot_compensates_gravity} "
                f"contradicts robot_config {robot_config}"
            )
    else:
        if sim == "false" and not robot_compensates_gravity:
            raise ValueError(
                "on your robot, say whether it compensates gravity itself: "
                "robot_compensates_gravity:=true or false (or give robot_config)"
            )
        compensates = {"true": True, "false": False, "": sim == "true"}[robot_compensates_gravity]
        settings = derive_robot_config(
            load_robot(robot), compensates_gravity=compensates, name=robot_name(robot)
        )
    return Target(sim, mode, settings, remap)


def _realtime_mpc_nodes(
    robot: str,
    target: Target,
    steps: int,
    period: float,
    n_train: int,
    n_eval: int,
    out: str,
    recorder: list[NodeSpec],
    seed: int,
    status_period: float,
    planner_args: dict,
    fitter_args: dict,
) -> list[NodeSpec]:
    """The 'mpc' graph in real time: on the package's simulator (sim time; its reset service
    starts the episodes), the hardware-like fixture or a robot (wall-clock stamps; homing between
    episodes)."""
    cfg = target.robot_settings
    config = ("mpc_realtime.yaml",)
    gravity = {"robot_compensates_gravity": cfg.compensates_gravity}
    common = {"robot": robot, "use_sim_time": target.use_sim_time}
    nodes = []
    if target.sim == "true":  # the lockstep graph's arm (start pose), reset around it
        nodes = _sim_nodes(robot, "realtime", 0.0, seed, status_period, config[0], 1)
        nodes[0] = replace(nodes[0], config=(lockstep_mpc_config(robot),) + config)
        nodes[0].parameters.update(
            control_period=REALTIME_SIM_PERIOD,
            initial_position_noise=cfg.start_radius,
            gravity_compensation=cfg.compensates_gravity,
        )
    elif target.sim == "hardware":
        nodes = _sim_nodes(robot, "hardware", 0.0, seed, status_period, config[0], 1)
        nodes[0].parameters.update(
            control_period=HARDWARE_PERIOD, gravity_compensation=cfg.compensates_gravity
        )
    if cfg.home is not None and nodes:
        nodes[0].parameters["initial_position"] = list(cfg.home)
    source = "service" if target.sim == "true" else "homing"
    nodes += [
        NodeSpec("lg_executor", "lg_executor", config, common | gravity | {"seed": seed + 1}),
        NodeSpec(
            "dynamics_fitter",
            "dynamics_fitter",
            config,
            common | gravity | fitter_args | {"control_period": period},
        ),
        NodeSpec(
            "mpc_planner",
            "mpc_planner",
            config,
            common
            | planner_args
            | {
                "control_period": period,
                "joint_effort_fraction": list(cfg.effort_fraction),
                "limit_margin": cfg.limit_margin,
                "velocity_margin": cfg.velocity_margin,
            },
        ),
        replace(
            _episode_manager(robot, target, steps, period, n_train, n_eval, out, source, config),
            required=True,
        ),
    ] + recorder
    return [replace(n, remappings=n.remappings + target.remappings) for n in nodes]


def mpc_graph(
    *,
    robot: str,
    train_episodes: str,
    final_eval_episodes: str,
    episode_length: str,
    planner: str,
    model: str,
    output_dir: str,
    record: str,
    seed: str,
    status_period: str,
    sim: str,
    mode: str,
    robot_config: str,
    robot_compensates_gravity: str,
    joint_states: str,
    commands: str,
) -> list[NodeSpec]:
    """The lecture's MBRL v1.5 from zero data.

    In lockstep (the package's simulator, the default): the sim arm runs reaching episodes; the
    planner replans through the latest learned model in every joint-state callback (π0 until the
    first model), the executor runs its controllers, the fitter refits on the growing data at
    every episode end and publishes (the planner waits for that model at the next episode's start,
    so the run does not depend on machine speed), the episode manager sets the targets, scores and
    ends the graph.

    In real time (``mode:=realtime`` on the simulator, ``sim:=false`` on a robot, ``sim:=hardware``
    on the hardware-like fixture) the same nodes run on the robot's clock: the planner plans for
    the newest state only, ahead by its latency; the fitter resamples the joint states onto the
    control period and refits in the background; the executor runs the time-indexed controllers
    at the robot's rate; between episodes the arm is homed (or reset by the simulator's service).
    Robot facts come from ``robot_config`` or are derived from the URDF."""
    seed_i, n_train, n_eval = int(seed), int(train_episodes), int(final_eval_episodes)
    if n_train < 0 or n_eval < 0 or n_train + n_eval < 1:
        raise ValueError(
            f"train_episodes = {n_train}, final_eval_episodes = {n_eval}: need "
            f"≥ 0 each and at least one episode"
        )
    if record not in ("true", "false"):
        raise ValueError(f"record = {record!r} must be true or false")
    target = robot_target(
        robot, sim, mode, robot_config, robot_compensates_gravity, joint_states, commands
    )
    name = robot if robot in MPC_CONTROL_PERIOD else "arm7"
    period = MPC_CONTROL_PERIOD[name]
    steps = int(round(float(episode_length) / period))
    if steps < 1:
        raise ValueError(
            f"episode_length = {episode_length} s is shorter than the control period {period:g} s"
        )
    out = output_dir or f"runs/mpc_{Path(robot).stem}"
    recorder = (
        [
            NodeSpec(
                "recorder",
                "recorder",
                ("recorder.yaml",),
                {"bag_path": str(Path(out) / "bag"), "use_sim_time": target.use_sim_time},
            )
        ]
        if record == "true"
        else []
    )
    planner_args = {"seed": seed_i + 2} | ({"planner": planner} if planner else {})
    fitter_args = {"seed": seed_i + 3} | ({"model": model} if model else {})
    if target.realtime:
        return _realtime_mpc_nodes(
            robot,
            target,
            steps,
            period,
            n_train,
            n_eval,
            out,
            recorder,
            seed_i,
            float(status_period),
            planner_args,
            fitter_args,
        )
    config = lockstep_mpc_config(robot)
    timing = {"robot": robot, "control_period": period, "use_sim_time": True}
    sim_nodes = _sim_nodes(
        robot, "lockstep", 0.0, seed_i, float(status_period), config, 4 + len(recorder)
    )
    sim_nodes[0].parameters.update(control_period=period, episode_steps=steps)
    return (
        sim_nodes
        + [
            NodeSpec(
                "lg_executor",
                "lg_executor",
                (config,),
                timing | {"seed": seed_i + 1, "min_command_subscribers": 2 + len(recorder)},
            ),  # sim, fitter
            NodeSpec(
                "dynamics_fitter",
                "dynamics_fitter",
                (config,),
                timing | fitter_args | {"episode_steps": steps},
            ),
            NodeSpec(
                "mpc_planner",
                "mpc_planner",
                (config,),
                timing | planner_args | {"episode_steps": steps},
            ),
            NodeSpec(
                "episode_manager",
                "episode_manager",
                (config,),
                timing
                | {
                    "episode_steps": steps,
                    "train_episodes": n_train,
                    "final_eval_episodes": n_eval,
                    "output_dir": out,
                },
                required=True,
            ),
        ]
        + recorder
    )


def policy_graph(
    *,
    policy_file: str,
    task: str,
    robot: str,
    episodes: str,
    episode_length: str,
    output_dir: str,
    seed: str,
    status_period: str,
    sim: str,
    mode: str,
    robot_config: str,
    robot_compensates_gravity: str,
    joint_states: str,
    commands: str,
) -> list[NodeSpec]:
    """A trained network policy (BPTT v2.0 or distilled) on the arm: the policy runner answers
    every joint state behind the safety layer; the episode manager sets held-out targets,
    scores and ends the graph. With a policy file the robot (unless given) and the control period
    come from its header; without one the runner waits for a policy on /mbrl/policy, for
    ``robot`` (default arm2) at the 'mpc' graph's control period.

    In lockstep: the 'mpc' graph's task and seeds on the sim arm. In real time (a robot, the
    hardware-like fixture, the simulator in ``mode:=realtime``): the runner answers the newest
    state at the robot's rate (commands tagged with their send time) and the episode manager
    homes the arm to a start pose around home before each episode (the runner follows the homing
    controller), with targets around home.

    ``task:=insertion`` (lockstep, arm7; a policy from ``gps task:=insertion algorithm:=mdgps``):
    the sim holds the peg and moves its hole to each episode's target at the episode's reset;
    held-out hole positions, start pose and scoring (the peg tip within 5 mm of the hole's floor)
    from config/policy_insertion.yaml."""
    if policy_file:
        try:
            _, meta = read_header(read_file(policy_file))
            period = float(meta["dt"])
            robot = robot or str(meta["robot"])
        except (OSError, ArtifactError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"policy_file {policy_file!r} is not a readable policy: {exc}"
            ) from None
    else:
        robot = robot or "arm2"
        period = MPC_CONTROL_PERIOD.get(robot, MPC_CONTROL_PERIOD["arm7"])
    seed_i, n = int(seed), int(episodes)
    if n < 1:
        raise ValueError(f"episodes = {n} must be at least 1")
    steps = int(round(float(episode_length) / period))
    if steps < 1:
        raise ValueError(
            f"episode_length = {episode_length} s is shorter than the control period {period:g} s"
        )
    target = robot_target(
        robot, sim, mode, robot_config, robot_compensates_gravity, joint_states, commands
    )
    if task == "insertion" and target.realtime:
        raise ValueError(
            "task:=insertion runs on the package's lockstep simulator (sim:=true mode:=lockstep)"
        )
    config = lockstep_mpc_config(robot)  # the mpc graph's task
    out = output_dir or f"runs/policy_{Path(robot).stem}"
    runner = {"robot": robot, "control_period": period, "use_sim_time": target.use_sim_time} | (
        {"policy_file": str(Path(policy_file).resolve())} if policy_file else {}
    )
    if target.realtime:
        cfg = target.robot_settings
        files: tuple[str, ...] = (config, "policy.yaml", "policy_realtime.yaml")
        nodes = _stand_in_nodes(robot, target, seed_i, float(status_period), files) + [
            NodeSpec(
                "policy_runner",
                "policy_runner",
                files,
                runner | {"robot_compensates_gravity": cfg.compensates_gravity},
            ),
            replace(
                _episode_manager(robot, target, steps, period, 0, n, out, "homing", files, ""),
                required=True,
            ),
        ]
        return [replace(node, remappings=node.remappings + target.remappings) for node in nodes]
    timing = {"robot": robot, "control_period": period, "use_sim_time": True}
    files = (config, "policy_insertion.yaml") if task == "insertion" else (config,)
    sim_nodes = _sim_nodes(robot, "lockstep", 0.0, seed_i, float(status_period), config, 2)
    sim_nodes[0] = replace(sim_nodes[0], config=files)
    sim_nodes[0].parameters.update(control_period=period, episode_steps=steps)
    return sim_nodes + [
        NodeSpec("policy_runner", "policy_runner", ("policy.yaml",), runner),
        NodeSpec(
            "episode_manager",
            "episode_manager",
            files,
            timing
            | {
                "episode_steps": steps,
                "train_episodes": 0,
                "final_eval_episodes": n,
                "output_dir": out,
                "planner_name": "",
            },
            required=True,
        ),
    ]


def namespace_choice(value: str) -> None:
    """A GraphArg check: a ROS namespace."""
    try:
        check_namespace(value)
    except ValueError:
        raise ValueError(
            "must be a ROS namespace: letters, digits and underscores in parts "
            "separated by single '/', no part starting with a digit"
        ) from None


# Arguments several graphs share.
NAMESPACE_ARG = GraphArg(
    "namespace",
    "",
    "ROS namespace of every node and of the graph's topics "
    "and services ('' = the root; /clock and /diagnostics "
    "stay absolute)",
    namespace_choice,
)
ROBOT_ARG = GraphArg("robot", "arm7", "robot: arm7, arm2 or a URDF path", robot_choice)


def lockstep_or_realtime(value: str) -> None:
    """A GraphArg check: the package's simulator's modes (the fixture is ``sim:=hardware``)."""
    if value not in ("lockstep", "realtime"):
        raise ValueError("must be one of: lockstep, realtime")


MODE_ARG = GraphArg(
    "mode", "lockstep", "lockstep (deterministic) or realtime", lockstep_or_realtime
)
# Arguments of the graphs that can drive a robot of the user's.
TARGET_ARGS = (
    GraphArg(
        "sim",
        "true",
        "true: the package's simulated arm; false: your robot (publishing "
        "joint_states, taking commands); hardware: the hardware-like fixture "
        "standing in for a robot",
    ),
    GraphArg(
        "mode",
        "lockstep",
        "with sim:=true: lockstep (deterministic) or realtime; a robot always runs in real time",
        lockstep_or_realtime,
    ),
    GraphArg(
        "robot_config",
        "",
        "robot settings YAML (mbrl-ros robot-config); '' = derived from the URDF",
    ),
    GraphArg(
        "robot_compensates_gravity",
        "",
        "true | false: whether the robot cancels its own "
        "weight (else the stack adds the URDF's gravity "
        "torque); required for sim:=false without "
        "robot_config",
    ),
    GraphArg(
        "joint_states", ROBOT_TOPICS["joint_states"], "the robot's sensor_msgs/JointState topic"
    ),
    GraphArg(
        "commands",
        ROBOT_TOPICS["commands"],
        "the robot's effort command topic "
        "(std_msgs/Float64MultiArray, ros2_control's "
        "ForwardCommandController)",
    ),
)
STATUS_ARG = GraphArg("status_period", "2.0", "wall seconds between the sim's status lines")

GRAPHS: dict[str, Graph] = {
    "sim": Graph(
        "sim",
        "simulated arm driven by random torques (the lecture's π0)",
        (
            ROBOT_ARG,
            MODE_ARG,
            GraphArg("duration", "60.0", "sim seconds to run; 0 = until stopped"),
            GraphArg("seed", "0", "random seed of the sim (the policy uses seed+1)"),
            STATUS_ARG,
        )
        + (NAMESPACE_ARG,),
        sim_graph,
    ),
    "record": Graph(
        "record",
        "collect random-torque episodes from the arm into a bag",
        (
            ROBOT_ARG,
            GraphArg(
                "episodes",
                "5",
                "episodes to record (the sim is reset, or a robot homed, before each)",
            ),
            GraphArg("episode_length", "5.0", "seconds per episode (of the joint states' stamps)"),
            GraphArg("bag", "", "bag folder to create; empty = bags/mbrl_<date and time>"),
            GraphArg("seed", "0", "random seed of the sim (the policy uses seed+1)"),
            GraphArg(
                "camera",
                "false",
                "true: the simulator's camera images (/camera/image_raw, "
                "64×64 rgb8) are recorded too",
            ),
            STATUS_ARG,
        )
        + TARGET_ARGS
        + (NAMESPACE_ARG,),
        record_graph,
    ),
    "gps": Graph(
        "gps",
        "guided policy search: local models + KL-constrained LQR on the arm",
        (
            ROBOT_ARG,
            GraphArg(
                "task",
                "reach",
                "reach: the end effector to the target; insertion (arm7, lockstep "
                "simulator): a peg into the hole whose top centre is the target",
                node_choice("gps_trainer", "task"),
            ),
            GraphArg(
                "target",
                "",
                "end-effector target x,y,z in the base frame (m), for every "
                "condition or one per condition separated by ';'; '' = "
                "lockstep: 0.4,0.0,0.6 (arm7's workspace); real time: one "
                "sampled around each start pose; insertion: the holes' top "
                "centres, '' = config/gps_insertion.yaml's",
            ),
            GraphArg(
                "initial_position",
                "",
                "start pose of each condition (rad, comma-separated; "
                "';' between conditions, e.g. 0.3,0.5;-0.5,1.0); '' = "
                "one condition: lockstep: the home pose; real time: "
                "the robot configuration's home or the pose at "
                "start-up",
            ),
            GraphArg("iterations", "10", "GPS iterations"),
            GraphArg("samples", "5", "controller samples per condition and iteration"),
            GraphArg(
                "prior",
                "gmm",
                "local dynamics prior: gmm or none",
                node_choice("gps_trainer", "prior"),
            ),
            GraphArg(
                "algorithm",
                "lqr",
                "lqr: a linear-Gaussian controller per condition; mdgps: "
                "also a network policy (published on /mbrl/policy, "
                "output_dir/policy.safetensors; run it with the 'policy' "
                "graph)",
                node_choice("gps_trainer", "algorithm"),
            ),
            GraphArg(
                "output_dir",
                "",
                "folder for summary.txt and learning_curve.png (mdgps: and policy.safetensors)",
            ),
            GraphArg("seed", "0", "random seed (sim; executor noise uses seed+1)"),
            STATUS_ARG,
        )
        + TARGET_ARGS
        + (NAMESPACE_ARG,),
        gps_graph,
    ),
    "mpc": Graph(
        "mpc",
        "model-based RL from zero data: learn the arm's dynamics and reach "
        "targets by MPC (the lecture's v1.5)",
        (
            ROBOT_ARG,
            GraphArg("train_episodes", "20", "reaching episodes on training targets"),
            GraphArg("final_eval_episodes", "10", "episodes on held-out targets at the end"),
            GraphArg("episode_length", "3.0", "sim seconds per episode"),
            GraphArg(
                "planner",
                "",
                "planner (icem, cem, mppi, random_shooting, ilqr); '' = the config's",
                node_choice("mpc_planner", "planner"),
            ),
            GraphArg(
                "model",
                "",
                "dynamics model kind; '' = the config's",
                node_choice("dynamics_fitter", "model"),
            ),
            GraphArg(
                "output_dir",
                "",
                "folder for summary.md, results.json, learning_curve.png "
                "(and the bag); '' = runs/mpc_<robot>",
            ),
            GraphArg("record", "false", "true: also record a bag into output_dir/bag"),
            GraphArg("seed", "0", "seed of the sim (executor +1, planner +2, fitter +3)"),
            GraphArg("status_period", "5.0", "wall seconds between the sim's status lines"),
        )
        + TARGET_ARGS
        + (NAMESPACE_ARG,),
        mpc_graph,
    ),
    "policy": Graph(
        "policy",
        "a trained network policy (BPTT v2.0 or distilled MPC) reaching "
        "held-out targets on the arm",
        (
            GraphArg(
                "policy_file",
                "",
                "policy artifact (sets robot and control period); '' = wait "
                "for one on /mbrl/policy",
            ),
            GraphArg(
                "robot", "", "robot; '' = the policy's (arm2 without a policy file)", robot_choice
            ),
            GraphArg(
                "task",
                "reach",
                "reach: end-effector targets; insertion (a policy of 'gps task:=insertion "
                "algorithm:=mdgps'): the peg into held-out hole positions",
                node_choice("gps_trainer", "task"),
            ),
            GraphArg("episodes", "10", "episodes on held-out targets"),
            GraphArg("episode_length", "3.0", "sim seconds per episode"),
            GraphArg(
                "output_dir",
                "",
                "folder for summary.md, results.json, learning_curve.png; '' = runs/policy_<robot>",
            ),
            GraphArg("seed", "0", "seed of the sim"),
            GraphArg("status_period", "5.0", "wall seconds between the sim's status lines"),
        )
        + TARGET_ARGS
        + (NAMESPACE_ARG,),
        policy_graph,
    ),
}


# -- SOLAR from camera images (issue 17) --------------------------------------------------------
SOLAR_PERIOD = 0.01  # s: the camera's frame and control period of SOLAR's task (arm2)


def solar_graph(
    *,
    model_file: str,
    controller_file: str,
    episodes: str,
    output_dir: str,
    seed: str,
    status_period: str,
) -> list[NodeSpec]:
    """SOLAR's latent linear-Gaussian controller reaching from camera images (lockstep, arm2):
    the simulator renders its camera with every state, the SOLAR runner answers each state from
    the image of its stamp behind the safety layer (joint states only for safety and timing), the
    episode manager sets the task's target (config/solar.yaml), scores and ends the graph. The
    model and controller are trained offline (``benchmarks/solar_reach.py --save DIR``); without
    files the runner waits for them on /mbrl/solar_model and /mbrl/controller."""
    n = int(episodes)
    if n < 1:
        raise ValueError(f"episodes = {n} must be at least 1")
    files = {}
    for name, path in (("model_file", model_file), ("controller_file", controller_file)):
        if path:
            if not Path(path).is_file():
                raise ValueError(f"{name} {path!r} is not a file")
            files[name] = str(Path(path).resolve())
    steps = _config_param("solar.yaml", "solar_runner", "episode_steps")
    timing = {"robot": "arm2", "control_period": SOLAR_PERIOD, "use_sim_time": True}
    sim_nodes = _sim_nodes(
        "arm2", "lockstep", 0.0, int(seed), float(status_period), "solar.yaml", 2
    )
    sim_nodes[0].parameters.update(
        control_period=SOLAR_PERIOD, episode_steps=steps, wait_for_target=True
    )
    return sim_nodes + [
        NodeSpec("solar_runner", "solar_runner", ("solar.yaml",), timing | files),
        NodeSpec(
            "episode_manager",
            "episode_manager",
            ("solar.yaml",),
            timing
            | {
                "episode_steps": steps,
                "final_eval_episodes": n,
                "output_dir": output_dir or "runs/solar_arm2",
                "planner_name": "",
            },
            required=True,
        ),
    ]


GRAPHS["solar"] = Graph(
    "solar",
    "SOLAR: reaching from camera images with a latent linear-Gaussian controller (arm2, lockstep)",
    (
        GraphArg(
            "model_file",
            "",
            "SOLAR model artifact (benchmarks/solar_reach.py --save); '' = "
            "wait for one on /mbrl/solar_model",
        ),
        GraphArg(
            "controller_file",
            "",
            "latent controller artifact; '' = wait for one on /mbrl/controller",
        ),
        GraphArg("episodes", "5", "episodes from the task's start pose to its target"),
        GraphArg(
            "output_dir",
            "",
            "folder for summary.md, results.json, learning_curve.png; '' = runs/solar_arm2",
        ),
        GraphArg("seed", "0", "seed of the sim"),
        GraphArg("status_period", "5.0", "wall seconds between the sim's status lines"),
        NAMESPACE_ARG,
    ),
    solar_graph,
)


def graph(name: str, **args: str) -> list[NodeSpec]:
    """Node specs of graph ``name`` with ``args`` (strings, as given on a command line)."""
    if name not in GRAPHS:
        raise ValueError(f"unknown graph '{name}'; graphs: {', '.join(sorted(GRAPHS))}")
    g = GRAPHS[name]
    known = {a.name for a in g.args}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"graph '{name}' has no argument(s) {unknown}; it takes {sorted(known)}")
    values = {a.name: a.default for a in g.args} | args
    try:
        _check_args(g, values)
        namespace = check_namespace(values.pop("namespace"))
        return [replace(spec, namespace=namespace) for spec in g.build(**values)]
    except (ValueError, ArithmeticError) as exc:
        raise ValueError(f"graph '{name}': bad argument value: {exc}") from None


def _check_args(g: Graph, values: dict[str, str]) -> None:
    """Run each argument's check on a value other than its default."""
    for a in g.args:
        value = values[a.name]
        if a.check is not None and value != a.default:
            try:
                a.check(value)
            except ValueError as exc:
                raise ValueError(f"{a.name} = {value!r} {exc}") from None
