"""Peg insertion over ROS (issue 16): the 'gps' graph with ``task:=insertion`` learns on the
lockstep sim (which holds the peg and moves its hole to each condition's at its resets), and
the 'policy' graph with ``task:=insertion`` runs the MDGPS policy on held-out holes exactly as
offline."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml
from ros_harness import launch_graph

from mbrl_ros.common.artifacts import read_file
from mbrl_ros.common.paths import resolve_resource
from mbrl_ros.control.safety import SafetyLayer
from mbrl_ros.experiments.insertion_gps import InsertionSetup
from mbrl_ros.graphs.description import graph
from mbrl_ros.policy.network import GoalPolicy
from mbrl_ros.policy.rollout import run_episode
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import SimConfig
from mbrl_ros.tasks.insertion import peg_pose
from mbrl_ros.tasks.insertion_scene import InsertionSimulator

ROBOT = load_robot("arm7")
N = ROBOT.n_joints
DT = 0.01
STEPS = 80  # config/gps_insertion.yaml's horizon
PROGRESS = re.compile(r"iteration (\d)/2, condition (\d): .*final depth ([\d.]+) mm")


def section(name: str, node: str) -> dict:
    text = resolve_resource(name, "config", ".yaml").read_text()
    return yaml.safe_load(text)[f"/**/{node}"]["ros__parameters"]


def test_the_configured_start_pose_holds_the_peg_7_cm_above_the_first_holes_floor():
    """Both config files start the arm where tasks.insertion.peg_pose puts the peg tip on the
    first training hole's axis, 7 cm above its floor (as the offline loop's test)."""
    trainer = section("gps_insertion", "gps_trainer")
    first = trainer["target"][:3]
    scene = InsertionSimulator(ROBOT, first)
    want = peg_pose(ROBOT, scene.peg_points, scene.hole, InsertionSetup.start_guess, height=0.07)
    for pose in (
        trainer["initial_position"],
        section("gps_insertion", "arm_sim")["initial_position"],
        section("policy_insertion", "arm_sim")["initial_position"],
    ):
        np.testing.assert_allclose(pose, want, atol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["sim:=hardware"], "lockstep simulator"),
        (["mode:=realtime"], "lockstep simulator"),
        (["initial_position:=0,0,0,0,0,0,0;0,0,0,0,0,0,0"], "one start pose"),
        (["task:=screw"], "must be one of: reach, insertion"),
    ],
)
def test_insertion_graph_arguments_that_cannot_work_are_refused(args, message):
    values = {"task": "insertion"} | dict(a.split(":=", 1) for a in args)
    with pytest.raises(ValueError, match=message):
        graph("gps", **values)


@pytest.mark.timeout(300)
def test_insertion_learns_over_ros_and_its_policy_inserts_as_offline(tmp_path):
    """2 holes × 2 samples × 2 iterations of mdgps over ROS: the hold controller inserts no
    sample (depth 0 in iteration 1), the updated controllers push the peg in (iteration 2), the
    summary has the success table, and the policy goes to output_dir. Then the 'policy' graph
    with task:=insertion runs it on held-out holes; each episode's scored distance (peg tip to
    the hole's floor) equals the same policy, holes, start pose and safety layer run offline."""
    out = tmp_path / "gps"
    result = launch_graph(
        [
            "gps",
            "task:=insertion",
            "algorithm:=mdgps",
            "iterations:=2",
            "samples:=2",
            f"output_dir:={out}",
            "status_period:=0",
        ],
        200,
    )
    log = result.stdout
    assert result.returncode == 0, log[-6000:]
    assert "insertion from [" in log and "2 conditions × 2 samples" in log, log[-3000:]
    depths = {(int(i), int(m)): float(d) for i, m, d in PROGRESS.findall(log)}
    assert sorted(depths) == [(1, 0), (1, 1), (2, 0), (2, 1)], log[-3000:]
    assert depths[1, 0] == depths[1, 1] == 0.0
    assert max(depths[2, 0], depths[2, 1]) > 5.0, depths  # mm: the peg went into a hole
    summary = (out / "summary.txt").read_text()
    table = summary.split("inserted to full depth (fraction of the iteration's samples)\n")[1]
    rows = [line.split() for line in table.splitlines()[1:3]]
    assert [r[:2] for r in rows] == [["1", "4"], ["2", "8"]] and rows[0][2:] == ["0.00", "0.00"]
    policy = GoalPolicy.from_bytes(read_file(out / "policy.safetensors"))
    np.testing.assert_allclose(policy.info["targets"], [[-0.45, 0.0, 0.2], [-0.43, 0.02, 0.2]])
    assert len(policy.info["final_depth_m"]) == 2

    run = tmp_path / "policy"
    episodes = 3
    result = launch_graph(
        [
            "policy",
            "task:=insertion",
            f"policy_file:={out / 'policy.safetensors'}",
            f"episodes:={episodes}",
            f"episode_length:={STEPS * DT}",
            f"output_dir:={run}",
            "status_period:=0",
        ],
        120,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    records = json.loads((run / "results.json").read_text())
    assert len(records) == episodes and all(r["held_out"] for r in records)
    holes = np.array([r["target"] for r in records])
    episode_manager = section("policy_insertion", "episode_manager")
    assert np.all(holes >= episode_manager["target_box_min"])
    assert np.all(holes <= episode_manager["target_box_max"])
    assert len({tuple(h) for h in holes.round(6)}) == episodes

    sim_cfg = section("policy_insertion", "arm_sim")
    start = np.array(sim_cfg["initial_position"])
    safety = SafetyLayer.for_robot(ROBOT, ROBOT.joint_names, DT)  # the runner's default
    frozen = policy.frozen()
    offline = []
    for hole in holes:
        sim = InsertionSimulator(
            ROBOT,
            hole,
            SimConfig(
                control_period=DT,
                physics_timestep=0.002,
                hold_damping=section("mpc", "arm_sim")["hold_damping"],
                scene="insertion",
            ),
        )
        tip = ForwardKinematics(ROBOT, {"tip": (ROBOT.ee_link, sim.peg_points["peg_tip"])})
        episode = run_episode(
            sim, lambda x, t: frozen.act(x[:N], x[N:], hole), hole, STEPS, start, safety
        )
        q = np.asarray(episode.states[-1, :N])
        with torch.no_grad():
            p = tip.positions(torch.as_tensor(q))[0].numpy()
        offline.append(float(np.linalg.norm(p - sim.hole.bottom)))
    np.testing.assert_allclose([r["final_distance"] for r in records], offline, atol=1e-9)
