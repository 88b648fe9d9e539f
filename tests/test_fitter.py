"""The ``dynamics_fitter`` node over real DDS: models fitted from a dataset file and from the live
lockstep simulator under the random base policy are published (transient local) and received in
this process; bad configuration stops the node with a message naming the parameter."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from ros_harness import wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray
from test_data_resample import messages, robot_stream

from mbrl_ros.data.topics import STATES
from mbrl_ros.dynamics.catalog import load_model
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.nodes.diagnostics import ERROR
from mbrl_ros.nodes.dynamics_fitter import DynamicsFitterNode, lower_thread_priority
from mbrl_ros.nodes.messages import COMMAND_QOS, LATCHED_QOS, STATE_QOS
from mbrl_ros.nodes.params import ConfigError
from mbrl_ros.robot.description import load_robot

pytestmark = pytest.mark.ros
torch.set_num_threads(1)

ARM2 = ["joint1", "joint2"]
SMALL_NET = {"torch_threads": 1, "hidden": 32, "layers": 2, "max_epochs": 15, "patience": 5}


class ModelReceiver:
    """Collects the model artifacts published on /mbrl/dynamics_model (a late subscriber)."""

    def __init__(self, ros):
        self.models, self.lock = [], threading.Lock()
        self.node = ros.node("model_receiver")
        self.node.create_subscription(
            UInt8MultiArray, "/mbrl/dynamics_model", self._on_model, LATCHED_QOS
        )

    def _on_model(self, msg):
        with self.lock:
            self.models.append(load_model(bytes(msg.data), device="cpu"))

    def versions(self) -> list[int]:
        with self.lock:
            return [m.info["version"] for m in self.models]


def test_publishes_a_model_fitted_to_a_dataset_file(ros, node_process, tmp_path):
    robot = load_robot("arm2")
    assert list(robot.joint_names) == ARM2
    data = random_torque_dataset(robot, 6, 100, seed=4)
    data.save(tmp_path / "d.safetensors")
    fitter = node_process(
        "dynamics_fitter",
        {
            "robot": "arm2",
            "dataset": str(tmp_path / "d.safetensors"),
            "model": "mlp",
            "members": 1,
            "min_transitions": 100,
            **SMALL_NET,
            "max_epochs": 150,
            "patience": 20,
        },
    )
    receiver = ModelReceiver(ros)  # subscribes whenever; transient local delivers the latest
    wait_for(lambda: receiver.versions() == [1], 90, f"model v1 ({fitter.output()[-2000:]})")
    model = receiver.models[0]
    assert model.kind == "mlp" and model.signature.joint_names == tuple(ARM2)
    assert model.info["transitions"] == 600 and model.info["episodes"] == 6
    no_motion = np.sqrt(np.mean(data.deltas**2))  # error of predicting s' = s
    assert 0 < model.info["val_rmse_1step"] < 0.3 * no_motion and model.info["fit_seconds"] > 0
    with torch.no_grad():
        mean, var = model.predict(torch.as_tensor(data.states), torch.as_tensor(data.actions))
    assert torch.isfinite(mean).all() and (var > 0).all()
    assert fitter.proc.poll() is None


def fitter_statuses(ros) -> list:
    """The fitter's /diagnostics statuses, as they come (a list filled by a listener node)."""
    statuses = []
    ros.node("diag_listener").create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: statuses.extend(s for s in m.status if s.name.startswith("dynamics_fitter")),
        10,
    )
    return statuses


def test_refits_from_the_live_simulator(ros, node_process, pi0):
    """Lockstep arm2 simulator + random base policy: the fitter builds transitions from the
    topics, publishes v1 after 300 and v2 after 300 more (warm start), with diagnostics."""
    statuses = fitter_statuses(ros)
    receiver = ModelReceiver(ros)
    fitter = node_process(
        "dynamics_fitter",
        {
            "robot": "arm2",
            "model": "ensemble",
            "members": 2,
            "min_transitions": 300,
            "refit_every": 300,
            **SMALL_NET,
        },
    )
    pi0("arm2", seed=1, scale=0.5)
    node_process(
        "arm_sim", {"robot": "arm2", "mode": "lockstep", "lockstep_timeout": 60.0, "seed": 1}
    )
    wait_for(
        lambda: len(receiver.versions()) >= 2,
        120,
        f"two model versions ({fitter.output()[-2000:]})",
    )
    v1, v2 = receiver.models[:2]
    # The model topic keeps the latest model only, so a receiver slowed by a loaded machine may
    # first see a later version than 1; version n holds ≥ 300·n transitions (300, then every 300).
    n1, n2 = v1.info["version"], v2.info["version"]
    assert 1 <= n1 < n2
    assert v1.info["transitions"] >= 300 * n1
    assert v2.info["transitions"] - v1.info["transitions"] >= 300 * (n2 - n1)
    assert v2.info["stamp_ns"] > v1.info["stamp_ns"]
    assert v1.stats is not None and np.array_equal(v1.stats.state_mean, v2.stats.state_mean)
    wait_for(
        lambda: any(
            kv.key == "model_version" and kv.value != "0" for s in list(statuses) for kv in s.values
        ),
        10,
        "fitter diagnostics",
    )


def test_with_automatic_episodes_fits_start_at_episode_starts(ros, node_process, pi0):
    """Sim episodes of 20 steps (a new one every 21 stamps): each model's data was taken at the
    first state of an episode (``seen_until_ns``) and holds the episodes before it; without
    warm start every fit takes its normalisation from all its data."""
    receiver = ModelReceiver(ros)
    fitter = node_process(
        "dynamics_fitter",
        {
            "robot": "arm2",
            "model": "mlp",
            "members": 1,
            "min_transitions": 30,
            "refit_every": 1,
            "episode_steps": 20,
            "warm_start": False,
            **SMALL_NET,
        },
    )
    pi0("arm2", seed=1, scale=0.5)
    node_process(
        "arm_sim",
        {
            "robot": "arm2",
            "mode": "lockstep",
            "lockstep_timeout": 60.0,
            "seed": 1,
            "episode_steps": 20,
        },
    )
    wait_for(
        lambda: len(receiver.versions()) >= 2,
        120,
        f"two model versions ({fitter.output()[-2000:]})",
    )
    episode_ns = 21 * 10_000_000  # control period 0.01 s
    for model in receiver.models[:2]:
        seen = model.info["seen_until_ns"]
        assert seen >= episode_ns and seen % episode_ns == 0, seen
        # the episode before is in (its last transition starts 2 periods before), none after
        assert seen - episode_ns < model.info["stamp_ns"] < seen
    v1, v2 = receiver.models[:2]
    assert v1.info["seen_until_ns"] < v2.info["seen_until_ns"]
    assert not np.array_equal(v1.stats.state_mean, v2.stats.state_mean)


def diagnostic_values(statuses) -> dict[str, str]:
    """The key-values of the newest fitter status (later keys win)."""
    return {kv.key: kv.value for s in list(statuses) for kv in s.values}


def test_resamples_a_real_robots_stream_and_fits(ros, node_process):
    """A robot's stream as from ros2_control: jittered 500 Hz joint states (5 % dropped) stamped
    with the wall clock, commands tagged with their send time (every 7 ms on average), no
    episode events, a 50 ms stall: the fitter (control period 10 ms) resamples it, fits after
    min_transitions and reports the source rate and the dropped intervals."""
    statuses = fitter_statuses(ros)
    receiver = ModelReceiver(ros)
    fitter = node_process(
        "dynamics_fitter",
        {
            "robot": "arm2",
            "model": "mlp",
            "members": 1,
            "min_transitions": 200,
            "refit_every": 100000,
            "resample": True,
            "control_period": 0.01,
            **SMALL_NET,
        },
    )
    pub = ros.node("robot")
    states = pub.create_publisher(JointState, "/joint_states", STATE_QOS)
    commands = pub.create_publisher(Float64MultiArray, "/effort_controller/commands", COMMAND_QOS)
    wait_for(
        lambda: states.get_subscription_count() and commands.get_subscription_count(),
        60,
        f"the fitter's subscriptions ({fitter.output()[-2000:]})",
    )
    start = time.time_ns() + 50_000_000
    stream = robot_stream(
        1,
        seconds=4.0,
        names=tuple(ARM2),
        b=np.array([0.2, 0.2]),
        v0=0.0,
        t0=start,
        holes=[(2.0, 2.05)],
    )  # the robot stalls for 50 ms
    for topic, msg in messages(stream):  # in real time: nothing stamped ahead of the clock
        stamp = msg.header.stamp if topic == STATES else None
        if stamp is not None:
            time.sleep(max(0.0, (stamp.sec * 10**9 + stamp.nanosec - time.time_ns()) * 1e-9))
            states.publish(msg)
        else:
            commands.publish(msg)
    wait_for(lambda: receiver.versions() == [1], 120, f"model v1 ({fitter.output()[-2000:]})")
    info = receiver.models[0].info
    assert 200 <= info["transitions"] < 399  # 10 ms intervals of 4 s; fitted at 200
    assert start <= info["stamp_ns"] < start + 4 * 10**9
    assert (info["stamp_ns"] - stream["stamps"][0]) % 10_000_000 == 0  # on the grid
    wait_for(
        lambda: int(diagnostic_values(statuses).get("resampled_transitions", 0)) >= 250,
        20,
        f"resampling diagnostics ({fitter.output()[-2000:]})",
    )
    values = diagnostic_values(statuses)
    assert 470 < float(values["source_rate_hz"]) < 530
    decided = (
        int(values["resampled_transitions"])
        + int(values.get("dropped state_gap", 0))
        + int(values.get("dropped no_command", 0))
    )
    assert decided <= 399 and int(values["dropped state_gap"]) >= 5, repr(values)  # the stall


@pytest.mark.parametrize("resample", [False, True])
def test_gravity_is_taken_off_the_recorded_commands(ros, resample):
    """robot_compensates_gravity false: the fitter's data holds the commands minus the URDF's
    g(q) (lockstep: at the state each command answers; resampled: at its send time, here the
    stamp of an unmoving arm's state)."""
    from mbrl_ros.nodes.messages import command_msg, joint_state_msg
    from mbrl_ros.robot.gravity import GravityModel

    robot = load_robot("arm7")
    overrides = [
        Parameter(k, value=v)
        for k, v in {
            "robot": "arm7",
            "robot_compensates_gravity": False,
            "resample": resample,
            "min_transitions": 10**6,
            "torch_threads": 1,
        }.items()
    ]
    node = ros.add(DynamicsFitterNode(context=ros.context, parameter_overrides=overrides))
    pub = ros.node("robot")
    states = pub.create_publisher(JointState, "/joint_states", STATE_QOS)
    commands = pub.create_publisher(Float64MultiArray, "/effort_controller/commands", COMMAND_QOS)
    wait_for(
        lambda: states.get_subscription_count() and commands.get_subscription_count(),
        30,
        "the fitter's subscriptions",
    )
    rng = np.random.default_rng(3)
    q = rng.uniform(-0.5, 0.5, 7)
    us = rng.normal(0, 5.0, (40, 7))
    start = time.time_ns()
    for k in range(40):
        stamp = start + k * 10_000_000
        states.publish(joint_state_msg(stamp, robot.joint_names, q, np.zeros(7), np.zeros(7)))
        commands.publish(command_msg(us[k], stamp))
    wait_for(lambda: len(node.dataset()) >= 35, 30, "the transitions")
    data = node.dataset()
    k = ((data.stamps - start) // 10_000_000).astype(int)
    g = GravityModel(robot).torque(q)
    assert np.abs(g).max() > 1.0  # the arm's weight matters at this pose
    np.testing.assert_allclose(data.actions, us[k] - g, atol=1e-9)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"dataset": "/nonexistent/d.safetensors"}, "parameter 'dataset'"),
        ({"refit_every": 0}, "parameter 'refit_every' = 0 is out of range"),
        ({"model": "linear"}, "parameter 'model' = 'linear' must be one of"),
        ({"joint_names": ["joint1", "wrist"]}, "parameter 'joint_names'"),
        ({"resample": True, "episode_steps": 20}, "parameter 'episode_steps' = 20"),
        (
            {"robot_compensates_gravity": False, "joint_names": ["joint1"]},
            "parameter 'robot_compensates_gravity' = false: the gravity torque needs",
        ),
    ],
)
def test_bad_configuration_names_the_parameter(ros, params, message):
    overrides = [Parameter(k, value=v) for k, v in {"robot": "arm2", **params}.items()]
    with pytest.raises(ConfigError, match=message):
        DynamicsFitterNode(context=ros.context, parameter_overrides=overrides)


def test_dataset_of_other_joints_is_refused(ros, tmp_path):
    random_torque_dataset(load_robot("arm2"), 2, 60).save(tmp_path / "d.safetensors")
    overrides = [
        Parameter("robot", value="arm7"),
        Parameter("dataset", value=str(tmp_path / "d.safetensors")),
    ]
    with pytest.raises(
        ConfigError,
        match="model is for joints .* dataset file .* has "
        r"\[.joint1., .joint2.\]",
    ):
        DynamicsFitterNode(context=ros.context, parameter_overrides=overrides)


def test_a_failed_fit_is_reported_and_nothing_is_published(ros, tmp_path):
    """A start dataset whose joint-2 torque never varies cannot be fitted: the failure is kept
    for /diagnostics (ERROR while no model exists) and no model is published."""
    data = random_torque_dataset(load_robot("arm2"), 3, 60)
    actions = data.actions.copy()
    actions[:, 1] = 0.0
    flat = type(data)(
        data.states,
        actions,
        data.next_states,
        data.episodes,
        data.stamps,
        data.joint_names,
        data.dt,
        data.state_names,
    )
    flat.save(tmp_path / "d.safetensors")
    overrides = [
        Parameter(k, value=v)
        for k, v in {
            "robot": "arm2",
            "dataset": str(tmp_path / "d.safetensors"),
            "min_transitions": 100,
            **SMALL_NET,
        }.items()
    ]
    node = ros.add(DynamicsFitterNode(context=ros.context, parameter_overrides=overrides))
    wait_for(lambda: node.failure is not None, 30, "the failed fit")
    assert "model not published" in node.failure and "effort/joint2" in node.failure
    level, message, values = node._report()
    assert node.version == 0 and values["model_version"] == 0 and message == node.failure
    assert node.published_at is None and level == ERROR


def test_fit_thread_priority_is_lowered_for_that_thread_only():
    """fit_niceness lowers the fit thread's priority (so a fit cannot starve the planner of
    CPU), not the node's callbacks'."""
    import os

    seen = {}

    def fit_thread():
        lower_thread_priority(4)
        seen["fit"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=fit_thread)
    t.start()
    t.join()
    assert seen["fit"] == before + 4
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
    lower_thread_priority(0)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_publishes_the_models_recent_residual_for_offset_free_mpc(ros, tmp_path):
    """offset_window: once model v1 (fitted on a dataset file) is out, every new live transition
    brings a model offset for v1: the published model's mean one-step residual over the newest
    episode's transitions within the window (computed here from the received artifact)."""
    from mbrl_ros.dynamics.offset import ModelOffset
    from mbrl_ros.nodes.messages import command_msg, joint_state_msg

    robot = load_robot("arm2")
    random_torque_dataset(robot, 4, 100, seed=5).save(tmp_path / "d.safetensors")
    params = {
        "robot": "arm2",
        "dataset": str(tmp_path / "d.safetensors"),
        "model": "mlp",
        "members": 1,
        "min_transitions": 100,
        "refit_every": 10**6,
        "offset_window": 0.05,  # s: 5 transitions of 10 ms
        **SMALL_NET,
    }
    node = ros.add(
        DynamicsFitterNode(
            context=ros.context,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
        )
    )
    receiver = ModelReceiver(ros)
    wait_for(lambda: receiver.versions() == [1], 90, "model v1")
    offsets: list[ModelOffset] = []
    pub = ros.node("robot")
    offset_sub = pub.create_subscription(
        String, "/mbrl/model_offset", lambda m: offsets.append(ModelOffset.from_msg(m)), 10
    )
    states = pub.create_publisher(JointState, "/joint_states", STATE_QOS)
    commands = pub.create_publisher(Float64MultiArray, "/effort_controller/commands", COMMAND_QOS)
    wait_for(
        lambda: (
            states.get_subscription_count()
            and commands.get_subscription_count()
            # matched, not only discovered: an offset published before the match is lost
            and offset_sub.get_publisher_count()
        ),
        30,
        "the fitter's topics",
    )
    rng = np.random.default_rng(2)
    start = time.time_ns()
    for k in range(12):
        stamp = start + k * 10_000_000
        qd = np.array([0.5, -0.4]) + rng.uniform(-0.1, 0.1, 2)
        q = np.array([0.3, 0.2]) + np.array([0.5, -0.4]) * k * 0.01
        states.publish(joint_state_msg(stamp, ARM2, q, qd, np.zeros(2)))
        commands.publish(command_msg(rng.uniform(-0.3, 0.3, 2), stamp))
    end = start + 10 * 10_000_000  # the newest decided transition's next state (the builder
    # decides a transition once a state after it has come)
    wait_for(lambda: offsets and offsets[-1].stamp_ns == end, 30, "the offset up to state 10")
    got = offsets[-1]
    live = node.dataset()
    rows = (live.stamps > end - 10_000_000 - 50_000_000) & (live.stamps < end)
    assert got.model_version == 1 and got.transitions == rows.sum() == 5
    model = receiver.models[0]
    with torch.no_grad():
        mean, _ = model.predict(
            torch.as_tensor(live.states[rows]), torch.as_tensor(live.actions[rows])
        )
    residuals = live.next_states[rows] - mean.numpy()
    r, se2 = residuals.mean(0), residuals.var(0, ddof=1) / 5  # shrunk by the standard error
    expected = r * np.clip(1 - se2 / r**2, 0, 1)
    np.testing.assert_allclose(got.offset, expected, rtol=1e-5, atol=1e-9)
