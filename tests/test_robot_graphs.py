"""The 'record', 'gps' and 'policy' graphs driving an arm they do not simulate (issue 13).

Graph arguments: sim:=false leaves the simulator out and remaps the robot's topics on every
node, robot facts come from the robot configuration, episodes and GPS samples start by homing
(no resets), lockstep keeps its resets, and bad arguments are named. On the hardware-like fixture
(sim:=hardware: arm6 at 500 Hz with jitter, wall-clock stamps, stale commands → zero torque, no
gravity compensation, no reset service), in real time on a loaded machine, each graph runs end to
end; the assertions cannot depend on load: the run ends cleanly, the recorder records whole
episodes delimited by the episode manager's events, GPS iterations run from samples started by
homing and report their cost, the policy's commands stay within the effort limits. The record
graph also runs on the package's simulator in real time (sim time, homing, no resets).
"""

import json
import threading

import numpy as np
import pytest
import torch
from ros_harness import launch_graph
from std_msgs.msg import Float64MultiArray

from mbrl_ros.common.artifacts import write_file
from mbrl_ros.common.paths import share_path
from mbrl_ros.data.bags import BagReader
from mbrl_ros.data.topics import COMMANDS, STATES, read_episode_event
from mbrl_ros.graphs.description import graph
from mbrl_ros.nodes.messages import STATE_QOS
from mbrl_ros.policy.network import GoalPolicy, PolicySignature
from mbrl_ros.robot.description import load_robot

ROBOT = "arm6"
ARM6 = load_robot(ROBOT)
ARM6_CONFIG = str(share_path("config", "robots", "arm6.yaml"))  # a reviewed home
FIXTURE = ["sim:=hardware", f"robot:={ROBOT}", f"robot_config:={ARM6_CONFIG}", "status_period:=0"]
REMAP = dict(joint_states="/arm/joint_states", commands="/arm/effort_controller/commands")


def specs(name, **args):
    return {s.name: s for s in graph(name, **args)}


@pytest.mark.parametrize("name", ["record", "gps", "policy"])
def test_on_a_robot_there_is_no_simulator_and_every_node_takes_its_topics(name):
    nodes = specs(name, sim="false", robot=ROBOT, robot_compensates_gravity="false", **REMAP)
    assert "arm_sim" not in nodes
    for s in nodes.values():
        assert s.parameters.get("use_sim_time") is not True
        assert set(s.remappings) == {(STATES, REMAP["joint_states"]), (COMMANDS, REMAP["commands"])}
    commander = nodes.get("lg_executor") or nodes["policy_runner"]
    assert commander.parameters["robot_compensates_gravity"] is False
    homing = nodes.get("episode_manager") or nodes["gps_trainer"]
    assert homing.parameters["episode_source"] == "homing"
    if name == "gps":
        assert nodes["gps_trainer"].parameters["robot_compensates_gravity"] is False


def test_record_in_real_time_records_the_episode_managers_homed_episodes():
    nodes = specs(
        "record",
        sim="hardware",
        robot=ROBOT,
        robot_config=ARM6_CONFIG,
        episodes="3",
        episode_length="2.0",
    )
    assert nodes["arm_sim"].parameters["mode"] == "hardware"
    assert nodes["arm_sim"].parameters["initial_position"] == [0.0, 0.7, 1.2, 0.0, 0.0, 0.0]
    assert "episode_steps" not in nodes["arm_sim"].parameters  # no resets
    manager = nodes["episode_manager"].parameters
    assert manager["episode_source"] == "homing" and not nodes["episode_manager"].required
    assert manager["train_episodes"] > 3  # an episode begun before the recorder listened
    assert manager["episode_steps"] * manager["control_period"] == pytest.approx(2.0)
    assert nodes["recorder"].required and nodes["recorder"].parameters["episodes"] == 3
    assert nodes["base_policy"].parameters["joint_scale"] == pytest.approx(
        [0.06625, 0.06131, 0.05154, 0.04116, 0.03736, 0.03655]
    )  # the config's effort fraction


def test_realtime_on_the_simulator_uses_sim_time_and_homing():
    for name in ("record", "gps", "policy"):
        nodes = specs(name, mode="realtime", robot="arm2")
        assert nodes["arm_sim"].parameters["mode"] == "realtime"
        assert all(
            s.parameters["use_sim_time"]
            for s in nodes.values()
            if "use_sim_time" in s.parameters and s.name != "arm_sim"
        )
        assert "episode_manager" in nodes or name == "gps"


def test_lockstep_keeps_the_simulators_resets():
    nodes = specs("gps", robot="arm2", initial_position="0.3,0.5")
    trainer = nodes["gps_trainer"].parameters
    assert "episode_source" not in trainer and nodes["gps_trainer"].config == ("gps.yaml",)
    assert trainer["target"] == [0.4, 0.0, 0.6] and trainer["initial_position"] == [0.3, 0.5]
    assert nodes["lg_executor"].parameters.get("mode") is None  # gps.yaml: sync
    assert "episode_steps" in specs("record")["arm_sim"].parameters


def test_several_conditions_or_mdgps_home_the_lockstep_arm():
    nodes = specs(
        "gps",
        robot="arm2",
        initial_position="0.3,0.5; -0.5,1.0",
        target="0.05,0.2,0.07;0.1,0.25,0.07",
        algorithm="mdgps",
    )
    trainer = nodes["gps_trainer"].parameters
    assert trainer["episode_source"] == "homing" and trainer["algorithm"] == "mdgps"
    assert trainer["lockstep"] is True and trainer["max_step_mult"] == 1.0
    assert trainer["initial_position"] == [0.3, 0.5, -0.5, 1.0]
    assert trainer["target"] == [0.05, 0.2, 0.07, 0.1, 0.25, 0.07]
    sim = nodes["arm_sim"].parameters  # the first condition's pose, the weight cancelled
    assert sim["initial_position"] == [0.3, 0.5] and sim["gravity_compensation"] is True
    single = specs("gps", robot="arm2", algorithm="mdgps")["gps_trainer"].parameters
    assert single["episode_source"] == "homing" and single["target"] == [0.4, 0.0, 0.6]
    fixture = specs(
        "gps",
        sim="hardware",
        robot=ROBOT,
        robot_config=ARM6_CONFIG,
        initial_position="0,0.7,1.2,0,0,0;0.3,0.7,1.2,0,0,0",
    )
    assert fixture["gps_trainer"].parameters["initial_position"] == [
        0.0,
        0.7,
        1.2,
        0.0,
        0.0,
        0.0,
        0.3,
        0.7,
        1.2,
        0.0,
        0.0,
        0.0,
    ]
    assert fixture["arm_sim"].parameters["initial_position"] == [0.0, 0.7, 1.2, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "name, args, words",
    [
        ("record", dict(sim="false"), "robot_compensates_gravity:=true or false"),
        ("gps", dict(sim="simulated"), "true, false or hardware"),
        ("policy", dict(robot="arm2", mode="fast"), "mode = 'fast' must be one of: lockstep"),
        ("gps", dict(robot_config="/nonexistent.yaml", sim="false"), "nonexistent"),
        ("record", dict(robot="arm2", robot_config=ARM6_CONFIG, sim="false"), "is for arm6"),
        ("policy", dict(robot="arm2", robot_compensates_gravity="false"), "real-time runs"),
        ("gps", dict(sim="hardware", target="0.1,0.2"), "must be x,y,z"),
        ("gps", dict(sim="hardware", initial_position="a,b"), "comma-separated numbers"),
        ("gps", dict(initial_position="0.1,0.2;0.3"), "numbers of equal count per condition"),
        (
            "gps",
            dict(
                initial_position="0,0,0,0,0,0;1,1,1,1,1,1",
                target="0.1,0.2,0.3;0.1,0.2,0.3;0.1,0.2,0.3",
            ),
            "3 targets for 2 start poses",
        ),
        ("gps", dict(algorithm="ppo"), "algorithm = 'ppo' must be one of: lqr, mdgps"),
        ("record", dict(sim="hardware", episodes="0"), "at least 1"),
    ],
)
def test_bad_graph_arguments_are_named(name, args, words):
    with pytest.raises(ValueError, match=words):
        graph(name, **({"robot": ROBOT} | args))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "where, robot, min_states",
    [
        (FIXTURE, ARM6, 200),  # 500 Hz
        (["mode:=realtime", "robot:=arm2", "status_period:=0"], load_robot("arm2"), 40),  # 100 Hz
    ],
    ids=["fixture", "realtime_sim"],
)
def test_record_graph_records_whole_homed_episodes(tmp_path, where, robot, min_states):
    bag = tmp_path / "bag"
    result = launch_graph(
        ["record", *where, "episodes:=2", "episode_length:=1.0", f"bag:={bag}"], 100
    )
    assert result.returncode == 0, result.stdout[-6000:]
    assert "2 episodes recorded" in result.stdout and "homing to" in result.stdout
    with BagReader(bag) as reader:
        events = [read_episode_event(m) for _, _, m in reader.messages(["/mbrl/episode_events"])]
        stamps = [
            m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
            for _, _, m in reader.messages(["/joint_states"])
        ]
        commands = np.array(
            [m.data for _, _, m in reader.messages(["/effort_controller/commands"])]
        )
    starts = [e.stamp_ns for e in events if e.kind == "start"]
    assert len(starts) == 2, events  # (an end is after the episode's last state: not kept)
    assert starts[1] - starts[0] > 10**9  # homed in between
    for start in starts:
        inside = [t for t in stamps if start <= t <= start + 10**9]
        assert len(inside) > min_states  # over 1 s; drops and a loaded machine allowed for
        assert max(inside) > start + 10**9 - 20_000_000  # the whole second
    assert all(any(b <= t <= b + 10**9 for b in starts) for t in stamps)  # nothing else
    # the executor answers the newest state only: how many depends on the load
    assert len(commands) > 20 and np.all(np.isfinite(commands))
    assert np.all(np.abs(commands) <= robot.limits.effort + 1e-9)


@pytest.mark.timeout(150)
def test_gps_graph_on_the_fixture_iterates_from_homed_samples(tmp_path):
    out = tmp_path / "run"
    result = launch_graph(
        ["gps", *FIXTURE, "iterations:=2", "samples:=2", f"output_dir:={out}"], 130
    )
    log = result.stdout
    assert result.returncode == 0, log[-6000:]
    assert "samples start by homing" in log and "iteration 2/2: cost" in log
    rows = (out / "summary.txt").read_text().splitlines()[1:]
    assert len(rows) == 2
    cost, final_cm = (float(v) for v in rows[-1].split()[2:4])
    assert np.isfinite(cost) and 0 < final_cm < 200


@pytest.mark.timeout(120)
def test_policy_graph_on_the_fixture_commands_within_the_limits(ros, tmp_path):
    names = list(ARM6.joint_names)
    policy = GoalPolicy(
        PolicySignature.for_joints(ROBOT, names, 0.05), ARM6.limits.effort * 0.05, (16, 16), seed=3
    )
    with torch.no_grad():
        policy.layers[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "policy.safetensors"
    write_file(path, policy.to_bytes())
    commands, lock = [], threading.Lock()

    def on_command(msg):
        with lock:
            commands.append(np.array(msg.data))

    ros.node("probe").create_subscription(
        Float64MultiArray, "/effort_controller/commands", on_command, STATE_QOS
    )
    out = tmp_path / "run"
    result = launch_graph(
        [
            "policy",
            *FIXTURE,
            f"policy_file:={path}",
            "episodes:=2",
            "episode_length:=1.0",
            f"output_dir:={out}",
        ],
        100,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 2 and all(np.isfinite(r["final_distance"]) for r in records)
    with lock:
        u = np.array(commands)
    assert len(u) > 500 and np.all(np.isfinite(u))
    assert np.all(np.abs(u) <= ARM6.limits.effort + 1e-9)
