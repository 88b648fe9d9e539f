"""Runtime parameters and run-control services over real DDS, through rclpy's parameter services
and std_srvs clients of a test node: an accepted set changes what the node does, an out-of-range,
ill-typed or looser-than-start safety value is refused with a reason naming the parameter, a
read-only one is refused; fitter ~/pause, ~/save_model, planner ~/save_controller and policy
runner ~/save_policy write artifacts that decode, and refuse bad paths with a clear message."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from ros_harness import wait_for
from std_msgs.msg import Header, UInt8MultiArray
from std_srvs.srv import SetBool, Trigger
from test_executor import HOME, NAMES, Probe, connected, executor, open_loop
from test_mpc_planner_node import ARM2, PERIOD_NS, _model_bytes, _planner
from test_policy_runner import make_policy, runner

from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.dynamics.base import model_from_bytes
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.nodes.dynamics_fitter import DynamicsFitterNode
from mbrl_ros.nodes.messages import LATCHED_QOS
from mbrl_ros.nodes.params import Param, descriptor
from mbrl_ros.nodes.recorder import RecorderNode
from mbrl_ros.policy.network import GoalPolicy
from mbrl_ros.robot.description import load_robot

pytestmark = pytest.mark.ros
torch.set_num_threads(1)

NODE_MODULES = (
    "arm_sim",
    "base_policy",
    "dynamics_fitter",
    "episode_manager",
    "gps_trainer",
    "lg_executor",
    "mpc_planner",
    "policy_runner",
    "recorder",
    "replay",
    "solar_runner",
)
# a change mid-run is unsafe or meaningless: the robot, its joints, dimensions, seeds, topics,
# the timing contract with the rest of the graph
NEVER_RUNTIME = (
    "robot",
    "joint_names",
    "control_period",
    "mode",
    "seed",
    "device",
    "model",
    "planner",
    "members",
    "hidden",
    "layers",
    "dataset",
    "episode_steps",
    "safety_enabled",
    "hold_law",
    "robot_compensates_gravity",
    "gravity_compensation",
)


def node_params() -> list[tuple[str, Param]]:
    out = []
    for name in NODE_MODULES:
        module = importlib.import_module(f"mbrl_ros.nodes.{name}")
        out += [(name, p) for p in module.PARAMS]
    return out


def test_read_only_unless_runtime_and_never_for_robot_topics_seeds_or_dimensions():
    params = node_params()
    runtime = [(n, p.name) for n, p in params if p.runtime]
    assert ("lg_executor", "position_margin") in runtime and ("mpc_planner", "w_l2") in runtime
    for node, p in params:
        d = descriptor(p)
        assert d.read_only == (not p.runtime), (node, p.name)
        if p.runtime:
            assert p.name not in NEVER_RUNTIME and not p.name.endswith("_topic"), (node, p.name)
        if p.safer:
            assert "at run time only" in d.additional_constraints


def test_readme_names_every_runtime_parameter():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Parameters at run time")[1].split("\n## ")[0]
    missing = {(n, p.name) for n, p in node_params() if p.runtime and f"`{p.name}`" not in section}
    assert not missing


def call(ros, service: str, kind, **fields):
    """``service`` called from one test node, one client per service for the whole test."""
    clients = ros.__dict__.setdefault("service_clients", {})
    if service not in clients:
        node = clients.get(None) or clients.setdefault(None, ros.node("service_caller"))
        clients[service] = node.create_client(kind, service)
    client = clients[service]
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(kind.Request(**fields))
    wait_for(future.done, 10.0, service)
    return future.result()


def set_params(ros, node_name: str, **values):
    """SetParameters on ``node_name`` from a test node: [(successful, reason)] per value."""
    response = call(
        ros,
        f"/{node_name}/set_parameters",
        SetParameters,
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()],
    )
    return [(r.successful, r.reason) for r in response.results]


# -- safety settings: tighter only -----------------------------------------------------------
def test_executor_position_margin_tightens_the_guard_and_cannot_loosen(ros):
    node = executor(ros, mode="realtime", max_plan_age=0.0, max_state_age=0.0, position_margin=0.05)
    probe = Probe(ros)
    connected(probe, node)
    probe.send_controller(open_loop(np.full(len(NAMES), 1.0)))
    wait_for(lambda: node.controller is not None, 10, "the controller")
    upper = node.robot.limits.upper[0]
    q = HOME.copy()
    q[0] = upper - 0.08  # outside a 0.05 margin, inside a 0.1 one
    qd = np.zeros(len(NAMES))
    assert probe.answer(1_000_000, q, qd)[0] == 1.0

    assert set_params(ros, "lg_executor", position_margin=0.1) == [(True, "")]
    wall = -node.safety.gains["brake_kp"][0] * (q[0] - (upper - 0.1))
    assert wall < 0
    np.testing.assert_allclose(probe.answer(2_000_000, q, qd)[0], wall)
    assert node.p.position_margin == 0.1
    assert node.get_parameter("position_margin").value == 0.1

    ok, reason = set_params(ros, "lg_executor", position_margin=0.01)[0]
    assert not ok and "position_margin" in reason and "0.05" in reason and "restart" in reason
    ok, reason = set_params(ros, "lg_executor", position_margin=5.0)[0]  # range [0, 3.2]
    assert not ok and "position_margin" in reason and "3.2" in reason
    ok, reason = set_params(ros, "lg_executor", position_margin="wide")[0]
    assert not ok and "position_margin" in reason and "number" in reason
    ok, reason = set_params(ros, "lg_executor", robot="arm2")[0]
    assert not ok and "read-only" in reason and "robot" in reason
    assert node.p.position_margin == 0.1 and node.p.robot == "arm7"
    np.testing.assert_allclose(probe.answer(3_000_000, q, qd)[0], wall)  # unchanged


def test_controller_bounds_tighten_for_controllers_that_arrive_later(ros):
    node = executor(ros, mode="realtime", max_plan_age=0.0, max_state_age=0.0)
    probe = Probe(ros)
    connected(probe, node)
    effort = node.robot.limits.effort
    assert set_params(ros, "lg_executor", max_feedforward_ratio=0.5) == [(True, "")]
    ok, reason = set_params(ros, "lg_executor", max_feedforward_ratio=3.0)[0]
    assert not ok and "max_feedforward_ratio" in reason and "2.0" in reason
    probe.send_controller(open_loop(0.8 * effort))  # within 2 × effort, beyond 0.5 ×
    wait_for(lambda: node.diag.counters["rejected_controller"] == 1, 10, "the refusal")
    assert node.controller is None


# -- the planner: cost weights, torque box, planner size ------------------------------------
def test_planner_parameters_rebuild_the_planner_and_bad_combinations_are_refused(ros):
    node, probe = _planner(
        ros,
        planner="icem",
        samples=16,
        elites=4,
        iterations=1,
        random_seconds=0.0,
        wait_for_model=False,
    )
    effort = ARM2.limits.effort
    old = node.mpc
    assert (
        set_params(ros, "mpc_planner", effort_fraction=0.25, w_action=0.5, samples=32)
        == [(True, "")] * 3
    )
    assert node.mpc is not old and node.p.samples == 32 and node.p.w_action == 0.5
    np.testing.assert_allclose(node.mpc.planner.action_high, 0.25 * effort)
    assert node.mpc.planner.population == 32 and node.mpc.cost.w_action == 0.5
    assert node.mpc.base_policy is old.base_policy

    mpc = node.mpc
    ok, reason = set_params(ros, "mpc_planner", elites=64)[0]  # more elites than samples
    assert not ok and "planner configuration" in reason and "elites" in reason
    ok, reason = set_params(ros, "mpc_planner", replan_every=9)[0]  # > horizon 5
    assert not ok and "replan_every" in reason
    ok, reason = set_params(ros, "mpc_planner", horizon=0)[0]
    assert not ok and "horizon" in reason
    ok, reason = set_params(ros, "mpc_planner", planner="cem")[0]
    assert not ok and "read-only" in reason
    assert node.mpc is mpc and node.p.elites == 4

    # a plan with the new box: every torque of the published controller within 0.25 × effort
    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes()))
    wait_for(lambda: node.mpc.model is not None, 30, "the model")
    probe.send_state(0)
    wait_for(lambda: probe.starts() == [0], 30, "the plan")
    assert node.diag.counters["controllers_plan"] == 1
    with probe.lock:
        c = probe.controllers[-1]
    assert np.all(np.abs(c.u_hat) <= 0.25 * effort + 1e-9)


# -- run control: save services, pause --------------------------------------------------------
def test_planner_saves_the_last_controller_and_refuses_bad_paths(ros, tmp_path):
    node, probe = _planner(ros, random_seconds=1.0, wait_for_model=False)
    response = call(ros, "/mpc_planner/save_controller", Trigger)
    assert not response.success and "controller_path" in response.message
    path = tmp_path / "c.safetensors"
    assert set_params(ros, "mpc_planner", controller_path=str(path)) == [(True, "")]
    response = call(ros, "/mpc_planner/save_controller", Trigger)
    assert not response.success and "no controller" in response.message
    probe.send_state(0)
    wait_for(lambda: probe.starts() == [0], 10, "π0's controller")
    response = call(ros, "/mpc_planner/save_controller", Trigger)
    assert response.success and str(path) in response.message
    saved = LinearGaussianController.from_bytes(path.read_bytes())
    with probe.lock:
        sent = probe.controllers[-1]
    np.testing.assert_array_equal(saved.u_hat, sent.u_hat)
    assert saved.start_ns == 0

    for bad, why in (
        (tmp_path / "missing" / "c.safetensors", "does not exist"),
        (tmp_path, "is a directory"),
    ):
        assert set_params(ros, "mpc_planner", controller_path=str(bad)) == [(True, "")]
        response = call(ros, "/mpc_planner/save_controller", Trigger)
        assert not response.success and why in response.message
        assert "controller_path" in response.message


def test_fitter_pause_stops_fits_and_save_model_writes_the_model(ros, tmp_path):
    data = random_torque_dataset(load_robot("arm2"), 3, 60, seed=1)
    data.save(tmp_path / "d.safetensors")
    node = ros.add(
        DynamicsFitterNode(
            context=ros.context,
            parameter_overrides=[
                Parameter(k, value=v)
                for k, v in {
                    "robot": "arm2",
                    "dataset": str(tmp_path / "d.safetensors"),
                    "model": "mlp",
                    "members": 1,
                    "hidden": 8,
                    "layers": 1,
                    "max_epochs": 3,
                    "min_transitions": 1000,
                }.items()
            ],
        )
    )
    assert not call(ros, "/dynamics_fitter/save_model", Trigger).success  # path unset
    path = tmp_path / "m.safetensors"
    assert set_params(ros, "dynamics_fitter", model_path=str(path)) == [(True, "")]
    response = call(ros, "/dynamics_fitter/save_model", Trigger)
    assert not response.success and "no model" in response.message

    assert call(ros, "/dynamics_fitter/pause", SetBool, data=True).success
    # 180 transitions now suffice, but learning is paused
    assert set_params(ros, "dynamics_fitter", min_transitions=100) == [(True, "")]
    node._maybe_fit()
    assert (
        node.version == 0 and not node._fitting and node._report()[1].startswith("learning paused")
    )
    ok, reason = set_params(ros, "dynamics_fitter", min_transitions=0)[0]
    assert not ok and "min_transitions" in reason

    received = []
    sub = ros.node("model_sink").create_subscription(
        UInt8MultiArray,
        "/mbrl/dynamics_model",
        lambda m: received.append(bytes(m.data)),
        LATCHED_QOS,
    )
    assert sub is not None
    assert call(ros, "/dynamics_fitter/pause", SetBool, data=False).success
    wait_for(lambda: node.version == 1 and received, 60, "the fit after resuming")
    response = call(ros, "/dynamics_fitter/save_model", Trigger)
    assert response.success
    assert path.read_bytes() == received[-1]
    model = model_from_bytes(path.read_bytes())
    assert model.info["version"] == 1 and model.info["transitions"] == 180


def test_policy_runner_saves_the_policy_in_use(ros, tmp_path):
    policy = make_policy()
    source = tmp_path / "p.safetensors"
    source.write_bytes(policy.to_bytes())
    path = tmp_path / "out.safetensors"
    runner(ros, policy_file=str(source), policy_path=str(path))
    response = call(ros, "/policy_runner/save_policy", Trigger)
    assert response.success
    saved = GoalPolicy.from_bytes(path.read_bytes())
    q, qd, target = np.array([0.3, -0.2]), np.array([0.1, 0.0]), np.array([0.1, 0.15, 0.07])
    np.testing.assert_array_equal(
        saved.frozen().act(q, qd, target), policy.frozen().act(q, qd, target)
    )
    assert set_params(ros, "policy_runner", policy_path="") == [(True, "")]
    response = call(ros, "/policy_runner/save_policy", Trigger)
    assert not response.success and "policy_path" in response.message
    assert "empty" in response.message


def test_recorder_flush_period_retimes_the_flush(ros, tmp_path):
    node = ros.add(
        RecorderNode(
            context=ros.context,
            parameter_overrides=[Parameter("bag_path", value=str(tmp_path / "bag"))],
        )
    )
    timer = node.timers_by_param["flush_period"]
    assert timer.timer_period_ns == 1_000_000_000
    assert set_params(ros, "recorder", flush_period=0.25) == [(True, "")]
    assert timer.timer_period_ns == 250_000_000 and node.p.flush_period == 0.25
    ok, reason = set_params(ros, "recorder", flush_period=0.0)[0]
    assert not ok and "flush_period" in reason
    ok, reason = set_params(ros, "recorder", bag_path=str(tmp_path / "other"))[0]
    assert not ok and "read-only" in reason
    assert timer.timer_period_ns == 250_000_000


def test_planner_pause_stops_plans_and_heartbeats_until_resumed(ros):
    node, probe = _planner(ros, random_seconds=1.0, wait_for_model=False)
    beats = []
    probe.node.create_subscription(Header, "/mbrl/planner_heartbeat", beats.append, 10)
    probe.send_state(0)
    wait_for(lambda: probe.starts() == [0], 10, "π0's controller")
    assert call(ros, "/mpc_planner/pause", SetBool, data=True).success
    probe.send_state(1)
    wait_for(lambda: node.intake.last_stamp == PERIOD_NS, 10, "state 1 at the planner")
    n = len(beats)
    time.sleep(0.5)  # 5 heartbeat periods: none while paused, and no controller for state 1
    assert len(beats) == n and probe.starts() == [0] and node._report()[2]["paused"]
    assert call(ros, "/mpc_planner/pause", SetBool, data=False).success
    probe.send_state(2)
    wait_for(lambda: probe.starts() == [0, 2 * PERIOD_NS], 10, "the controller after resuming")
    wait_for(lambda: len(beats) > n, 10, "heartbeats again")
