"""The ``mpc_planner`` node over real DDS: π0 controllers during the warm-up, then (with
``wait_for_model``) the answer to a joint state is held back until the first model arrives, and
the controller for that very state is a plan; with automatic episodes, every episode start waits
for the model fitted on the episodes before it (or, after ``model_wait_seconds``, plans with the
model it has); models for other joints are refused."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from geometry_msgs.msg import PointStamped
from rclpy.parameter import Parameter
from ros_harness import wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import String, UInt8MultiArray

from mbrl_ros.common.msgconv import ns_to_sec_nanosec
from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.data.topics import episode_event_json
from mbrl_ros.dynamics.base import ModelSignature
from mbrl_ros.dynamics.catalog import new_model
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.nodes.messages import EVENT_QOS, LATCHED_QOS, STATE_QOS, TARGET_QOS
from mbrl_ros.nodes.mpc_planner import MPCPlannerNode
from mbrl_ros.robot.description import load_robot

pytestmark = pytest.mark.ros
torch.set_num_threads(1)

PERIOD_NS = 50_000_000
ARM2 = load_robot("arm2")


def _model_bytes(joint_names=ARM2.joint_names, seen_until_ns: int | None = None) -> bytes:
    data = random_torque_dataset(ARM2, 3, 40, control_period=0.05, hold_steps=2)
    if tuple(joint_names) != ARM2.joint_names:  # the same numbers, labelled for other joints
        data = type(data)(
            data.states,
            data.actions,
            data.next_states,
            data.episodes,
            data.stamps,
            tuple(joint_names),
            data.dt,
            tuple(f"{k}/{j}" for k in ("position", "velocity") for j in joint_names),
        )
    model = new_model("mlp", ModelSignature.of(data), "cpu", hidden=16, layers=1, max_epochs=3)
    model.fit(data, None)
    if seen_until_ns is not None:  # as the fitter labels its artifacts: data up to this state
        model.info = {"version": 1 + seen_until_ns // PERIOD_NS, "seen_until_ns": seen_until_ns}
    return model.to_bytes()


class Probe:
    def __init__(self, ros):
        self.node = ros.node("planner_probe")
        self.lock = threading.Lock()
        self.controllers: list[LinearGaussianController] = []
        self.state_pub = self.node.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.target_pub = self.node.create_publisher(PointStamped, "/mbrl/target", TARGET_QOS)
        self.model_pub = self.node.create_publisher(
            UInt8MultiArray, "/mbrl/dynamics_model", LATCHED_QOS
        )
        self.node.create_subscription(
            UInt8MultiArray, "/mbrl/controller", self._on_ctrl, LATCHED_QOS
        )

    def _on_ctrl(self, msg):
        with self.lock:
            self.controllers.append(LinearGaussianController.from_bytes(bytes(msg.data)))

    def send_state(self, k: int, base_ns: int = 0) -> None:
        msg = JointState(
            name=list(ARM2.joint_names), position=[0.3, 0.4], velocity=[0.0, 0.0], effort=[0.0, 0.0]
        )
        msg.header.stamp.sec, msg.header.stamp.nanosec = ns_to_sec_nanosec(base_ns + k * PERIOD_NS)
        self.state_pub.publish(msg)

    def starts(self) -> list[int]:
        with self.lock:
            return [c.start_ns for c in self.controllers]


def _planner(ros, **params):
    node = MPCPlannerNode(
        context=ros.context,
        parameter_overrides=[
            Parameter(k, value=v)
            for k, v in (
                dict(
                    robot="arm2",
                    control_period=0.05,
                    planner="ilqr",
                    horizon=5,
                    iterations=1,
                    random_seconds=0.1,
                    wait_for_model=True,
                )
                | params
            ).items()
        ],
    )
    ros.add(node)
    probe = Probe(ros)
    wait_for(
        lambda: (
            probe.state_pub.get_subscription_count() > 0
            and probe.node.count_publishers("/mbrl/controller") > 0
        ),
        10,
        "discovery",
    )
    target = PointStamped()
    target.point.x, target.point.y, target.point.z = 0.1, 0.2, 0.07
    probe.target_pub.publish(target)
    wait_for(lambda: node.targets.at(0) is not None, 10, "the target")
    return node, probe


@pytest.fixture
def planner(ros):
    return _planner(ros)


@pytest.fixture
def episodic_planner(ros):
    """Episodes of 2 steps (states k = 0, 1, 2; the next episode starts at k = 3); π0's 0.1 s
    are rounded up to the whole first episode."""
    return _planner(ros, episode_steps=2, model_wait_seconds=1.0)


def test_waits_for_the_first_model_then_plans_for_the_held_state(planner):
    node, probe = planner
    for k in range(2):
        probe.send_state(k)
        wait_for(lambda: len(probe.starts()) == k + 1, 10, f"π0 controller {k}")
    assert probe.starts() == [0, PERIOD_NS] and node.diag.counters["controllers_pi0"] == 2
    probe.send_state(2)
    wait_for(lambda: node.pending is not None, 10, "the held state")
    assert len(probe.starts()) == 2  # state 2 is held: no answer yet

    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes()))
    wait_for(lambda: len(probe.starts()) == 3, 30, "the plan for the held state")
    assert probe.starts()[2] == 2 * PERIOD_NS and node.pending is None
    assert node.diag.counters["controllers_plan"] == 1
    probe.send_state(3)
    wait_for(lambda: len(probe.starts()) == 4, 30, "the next plan")


def test_a_model_for_other_joints_is_refused_and_the_state_stays_held(planner):
    node, probe = planner
    for k in range(3):
        probe.send_state(k)
        wait_for(lambda: node.intake.last_stamp == k * PERIOD_NS, 10, f"state {k}")
    wait_for(lambda: node.pending is not None, 10, "the held state")
    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes(["shoulder", "elbow"])))
    wait_for(lambda: node.diag.counters["rejected_model"] == 1, 10, "the refusal")
    assert node.pending is not None and node.diag.counters["controllers_pi0"] == 2
    assert np.isnan(node.last_cost)


def test_each_episode_start_waits_for_the_model_fitted_on_the_episodes_before_it(episodic_planner):
    node, probe = episodic_planner
    for k in range(3):
        probe.send_state(k)
        wait_for(lambda: len(probe.starts()) == k + 1, 10, f"π0 controller {k}")
    assert node.diag.counters["controllers_pi0"] == 3  # the whole first episode
    probe.send_state(3)  # episode 1 starts: no model yet
    wait_for(lambda: node.pending is not None, 10, "the held state")
    # a model fitted on the data the fitter had when it saw state 3: all of episode 0
    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes(seen_until_ns=3 * PERIOD_NS)))
    wait_for(lambda: len(probe.starts()) == 4, 30, "the plan for episode 1's first state")
    for k in (4, 5):  # within the episode: no waiting
        probe.send_state(k)
        wait_for(lambda: len(probe.starts()) == k + 1, 30, f"the plan for state {k}")
    # horizon 5, cut where the episode ends (its last state is k = 5): the executor never runs
    # a plan of this episode on the next episode's reset state
    assert [c.T for c in probe.controllers[3:6]] == [3, 2, 1]
    probe.send_state(6)  # episode 2 starts: the model has not seen episode 1
    wait_for(lambda: node.pending is not None, 10, "the held episode start")
    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes(seen_until_ns=5 * PERIOD_NS)))
    wait_for(lambda: node.model_seen == 5 * PERIOD_NS, 10, "the stale refit")
    assert node.pending is not None and len(probe.starts()) == 6  # fitted before state 6
    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes(seen_until_ns=6 * PERIOD_NS)))
    wait_for(lambda: len(probe.starts()) == 7, 30, "the plan for episode 2's first state")
    assert probe.starts()[6] == 6 * PERIOD_NS and node.diag.counters["controllers_plan"] == 4
    assert node.diag.counters["late_refits"] == 0


def test_a_refit_that_does_not_come_is_waited_for_model_wait_seconds(episodic_planner):
    node, probe = episodic_planner
    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes(seen_until_ns=3 * PERIOD_NS)))
    wait_for(lambda: node.model_seen == 3 * PERIOD_NS, 10, "the model")
    for k in range(6):
        probe.send_state(k)
        wait_for(lambda: len(probe.starts()) == k + 1, 30, f"controller {k}")
    assert node.diag.counters["late_refits"] == 0
    probe.send_state(6)
    wait_for(lambda: node.pending is not None, 10, "the held episode start")
    wait_for(lambda: len(probe.starts()) == 7, 10, "the plan after model_wait_seconds")
    assert node.diag.counters["late_refits"] == 1 and probe.starts()[6] == 6 * PERIOD_NS


def test_with_cover_until_replan_each_controller_ends_at_the_next_replan(ros):
    node, probe = _planner(
        ros, cover_until_replan=True, replan_every=2, random_seconds=0.0, wait_for_model=False
    )
    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes()))
    wait_for(lambda: node.mpc.model is not None, 10, "the model")
    for i, k in enumerate((0, 2, 4)):  # states 1, 3 are covered by the plan before them
        probe.send_state(k)
        wait_for(lambda: len(probe.starts()) == i + 1, 30, f"the plan for state {k}")
        probe.send_state(k + 1)
    assert probe.starts() == [0, 2 * PERIOD_NS, 4 * PERIOD_NS]
    assert [c.T for c in probe.controllers] == [2, 2, 2]  # horizon 5 cut at the next replan


def test_with_episode_events_it_plans_only_inside_episodes_and_leads_its_latency(ros):
    """Without the simulator's episodes: no controller before a start event or after an end
    event (the homing controller drives the arm then); a plan starts cold at each start. With
    compensate_latency each plan starts at the first control step after the state's stamp plus
    its measured latency (states stamped with the wall clock, as on a robot)."""
    node, probe = _planner(
        ros,
        random_seconds=0.0,
        wait_for_model=False,
        episodes_from_events=True,
        compensate_latency=True,
        horizon=20,
    )
    events = probe.node.create_publisher(String, "/mbrl/episode_events", EVENT_QOS)
    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes()))
    wait_for(lambda: node.mpc.model is not None, 10, "the model")
    base = (time.time_ns() // PERIOD_NS - 4) * PERIOD_NS  # measured 0.2 s ago, on the grid
    probe.send_state(0, base)
    wait_for(lambda: node.intake.last_stamp == base, 10, "state 0")
    events.publish(String(data=episode_event_json("start", 0, base + PERIOD_NS)))
    wait_for(lambda: node.episode_events, 10, "the start event")
    assert probe.starts() == []  # state 0 lies before the start
    probe.send_state(1, base)
    wait_for(lambda: len(probe.starts()) == 1, 30, "the first plan (no latency known yet)")
    assert probe.starts() == [base + PERIOD_NS] and node.diag.counters["controllers_plan"] == 1
    probe.send_state(2, base)
    wait_for(lambda: len(probe.starts()) == 2, 30, "a plan with a lead")
    lead = probe.starts()[1] - (base + 2 * PERIOD_NS)
    assert lead > 0 and lead % PERIOD_NS == 0
    assert node.diag.counters["latency_beyond_horizon"] == 0
    events.publish(String(data=episode_event_json("end", 0, base + 3 * PERIOD_NS)))
    wait_for(lambda: len(node.episode_events) == 2, 10, "the end event")
    for k in (3, 4):
        probe.send_state(k, base)
        wait_for(lambda: node.intake.last_stamp == base + k * PERIOD_NS, 10, f"state {k}")
    assert len(probe.starts()) == 2  # between episodes: nothing


def test_in_real_time_the_lead_is_measured_in_the_joint_states_own_clock(ros):
    """mode realtime, compensate_latency: a latency is the stamp of the first state received
    after a plan went out minus the stamp of the state it was planned for, in the states' own
    clock, here a robot's that is 1000 s past the epoch, far from this node's wall clock (the
    node clock measured 56 years: no lead and ``latency_beyond_horizon``; under use_sim_time it
    stood still while the callback planned: no lead either). The lead is the median latency
    rounded up to whole control periods."""
    node, probe = _planner(
        ros,
        mode="realtime",
        random_seconds=0.0,
        wait_for_model=False,
        compensate_latency=True,
        horizon=20,
    )
    probe.model_pub.publish(UInt8MultiArray(data=_model_bytes()))
    wait_for(lambda: node.mpc.model is not None, 10, "the model")
    base = 1000 * 10**9
    probe.send_state(0, base)
    wait_for(lambda: len(probe.starts()) == 1, 30, "the first plan (no latency known yet)")
    probe.send_state(3, base)  # the plan went out 3 periods after its state
    wait_for(lambda: len(probe.starts()) == 2, 30, "a plan with a lead of 3 periods")
    probe.send_state(5, base)  # latencies 3 and 2 periods: median 2.5, rounded up
    wait_for(lambda: len(probe.starts()) == 3, 30, "a plan with a lead of 3 periods")
    assert probe.starts() == [base, base + 6 * PERIOD_NS, base + 8 * PERIOD_NS]
    with probe.lock:
        first_states = [c.x_hat[0] for c in probe.controllers]
    assert not np.allclose(first_states[1], first_states[0])  # from the predicted state
    assert node.diag.counters["latency_beyond_horizon"] == 0
    assert node._report()[2]["plan_latency_ms"] == 125.0


def test_model_offset_is_planned_with_only_for_its_model_and_while_fresh(ros):
    """model_offset: a plan's nominal states follow the model plus the fitter's offset d
    (x̂_{t+1} = f̄(x̂_t, û_t) + d, checked with the model itself) when the offset is for the
    model in use and within offset_max_age of the state; an offset for another version or an
    old one is not used (x̂_{t+1} = f̄(x̂_t, û_t))."""
    from mbrl_ros.dynamics.catalog import load_model
    from mbrl_ros.dynamics.offset import ModelOffset

    node, probe = _planner(
        ros, random_seconds=0.0, wait_for_model=False, model_offset=True, offset_max_age=0.2
    )
    offsets = probe.node.create_publisher(String, "/mbrl/model_offset", 10)
    blob = _model_bytes(seen_until_ns=0)  # version 1
    model = load_model(blob, device="cpu")
    probe.model_pub.publish(UInt8MultiArray(data=blob))
    wait_for(lambda: node.model_version == 1, 10, "model v1")
    d = np.array([0.0, 0.0, 0.05, -0.04])

    def residual(c: LinearGaussianController) -> np.ndarray:
        with torch.no_grad():
            mean, _ = model.predict(torch.tensor(c.x_hat[:-1]), torch.tensor(c.u_hat[:-1]))
        return c.x_hat[1:] - mean.numpy()

    def plan_after(k: int, offset: ModelOffset) -> LinearGaussianController:
        offsets.publish(String(data=offset.to_json()))
        key = (offset.model_version, offset.stamp_ns)
        wait_for(
            lambda: (
                node.offset is not None and (node.offset.model_version, node.offset.stamp_ns) == key
            ),
            10,
            "the offset",
        )
        n = len(probe.starts())
        probe.send_state(k)
        wait_for(lambda: len(probe.starts()) == n + 1, 30, f"the plan for state {k}")
        with probe.lock:
            return probe.controllers[-1]

    c = plan_after(1, ModelOffset(2, PERIOD_NS, 5, d))  # for another model
    np.testing.assert_allclose(residual(c), 0.0, atol=1e-6)
    c = plan_after(2, ModelOffset(1, PERIOD_NS, 5, d))  # 50 ms old
    np.testing.assert_allclose(residual(c), np.broadcast_to(d, (c.T - 1, 4)), atol=1e-6)
    assert node.diag.counters["plans_with_offset"] == 1
    c = plan_after(8, ModelOffset(1, 3 * PERIOD_NS, 5, d))  # 0.25 s old
    np.testing.assert_allclose(residual(c), 0.0, atol=1e-6)
    assert node.diag.counters["plans_with_offset"] == 1
