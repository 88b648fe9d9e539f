"""The arm_sim node over real DDS: lockstep determinism, real-time liveness, reset, bad input."""

import json
import threading

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String
from std_srvs.srv import Trigger

from mbrl_ros.common.msgconv import read_joint_state
from mbrl_ros.nodes.messages import COMMAND_QOS, STATE_QOS, command_msg
from mbrl_ros.robot.description import load_robot
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig

pytestmark = pytest.mark.ros


class Driver:
    """Answers joint state k with ``torques[k]`` (tagged with the state's stamp), or with
    ``answer(k, state)`` when given; records every state."""

    def __init__(self, ros, robot, torques=None, answer=None, state_qos=STATE_QOS):
        self.node = ros.node("driver")
        self.names = robot.joint_names
        self.torques, self.answer = torques, answer
        self.states = []
        self.lock = threading.Lock()
        self.pub = self.node.create_publisher(
            Float64MultiArray, "/effort_controller/commands", COMMAND_QOS
        )
        self.node.create_subscription(JointState, "/joint_states", self._on_state, state_qos)

    def _on_state(self, msg):
        s = read_joint_state(msg, self.names)
        with self.lock:
            if self.states and s.stamp_ns == self.states[-1].stamp_ns:
                return  # the sim re-sent its first state before it was answered
            self.states.append(s)
            k = len(self.states) - 1
        if self.answer is not None:
            out = self.answer(k, s)
            if out is not None:
                self.pub.publish(out)
        elif self.torques is not None and k < len(self.torques):
            self.pub.publish(command_msg(self.torques[k], s.stamp_ns))

    def count(self):
        with self.lock:
            return len(self.states)


def sim_params(**kw):
    return {"robot": "arm7", "mode": "lockstep", "lockstep_timeout": 60.0} | kw


def test_lockstep_trajectory_equals_offline_mujoco(ros, node_process):
    """A known torque sequence over DDS gives exactly the trajectory of the same simulator run
    offline with the same seed (torque and sensor noise on)."""
    robot = load_robot("arm7")
    steps = 150
    torques = np.random.default_rng(0).uniform(-0.4, 0.4, (steps, 7)) * robot.limits.effort
    params = dict(
        seed=5,
        torque_noise_std=0.3,
        position_noise_std=1e-4,
        velocity_noise_std=1e-3,
        control_period=0.01,
        physics_timestep=0.002,
    )
    driver = Driver(ros, robot, torques)
    sim = node_process("arm_sim", sim_params(**params))
    wait_for(lambda: driver.count() == steps + 1, 60, "all lockstep states")

    offline = ArmSimulator(robot, SimConfig(**params))
    expected = [offline.measure()]
    for tau in torques:
        offline.step(tau)
        expected.append(offline.measure())
    got = driver.states
    assert [s.stamp_ns for s in got] == [k * 10_000_000 for k in range(steps + 1)]
    np.testing.assert_array_equal(
        np.array([s.position for s in got]), np.array([e.position for e in expected])
    )
    np.testing.assert_array_equal(
        np.array([s.velocity for s in got]), np.array([e.velocity for e in expected])
    )
    np.testing.assert_array_equal(
        np.array([s.effort for s in got[1:]]), np.array([e.effort for e in expected[1:]])
    )
    assert sim.proc.poll() is None


def test_realtime_mode_keeps_publishing_whole_periods(ros, node_process):
    """Real-time mode stays live and its clock moves by whole control periods. No wall-clock rate
    is asserted (that depends on load); rate and jitter figures are in benchmarks/."""
    robot = load_robot("arm2")
    # a real-time consumer takes the newest state (like the executor in realtime mode)
    driver = Driver(
        ros,
        robot,
        answer=lambda k, s: command_msg(np.zeros(2), s.stamp_ns),
        state_qos=QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
    )
    sim = node_process("arm_sim", {"robot": "arm2", "mode": "realtime", "control_period": 0.01})
    wait_for(lambda: driver.count() > 50, 30, "the first real-time states")
    first = driver.count()
    wait_for(lambda: driver.count() > first + 50, 30, "real-time states keep coming")
    with driver.lock:
        stamps_ns = np.array([s.stamp_ns for s in driver.states])
    steps = np.diff(stamps_ns)
    assert np.all(steps > 0), "stamps must strictly increase"
    assert np.all(steps % 10_000_000 == 0), "sim time must advance by whole control periods"
    assert sim.proc.poll() is None


def test_reset_service_restarts_episode_and_time_keeps_going(ros, node_process):
    robot = load_robot("arm2")
    events = []
    reset_done = threading.Event()

    def answer(k, s):
        if k == 10 and not reset_done.is_set():
            client.call_async(Trigger.Request()).add_done_callback(lambda f: reset_done.set())
            return None
        return command_msg(0.5 * robot.limits.effort, s.stamp_ns)

    driver = Driver(ros, robot, answer=answer)
    client = driver.node.create_client(Trigger, "/arm_sim/reset")
    driver.node.create_subscription(
        String, "/mbrl/episode_events", lambda m: events.append(json.loads(m.data)), 10
    )
    node_process("arm_sim", sim_params(robot="arm2"))
    wait_for(lambda: driver.count() >= 15, 30, "states after the reset")
    wait_for(lambda: len(events) == 1, 10, "the reset event")
    after = driver.states[11]
    assert after.stamp_ns == 11 * 10_000_000
    np.testing.assert_array_equal(after.velocity, 0.0)
    np.testing.assert_array_equal(after.position, 0.0)
    assert events[0]["event"] == "reset" and events[0]["episode"] == 1
    assert events[0]["stamp_ns"] == after.stamp_ns


def test_bad_commands_are_rejected_counted_and_get_the_safe_hold(ros, node_process):
    """Wrong length and NaN → safe hold for that step; a stale stamp → ignored; all on
    /diagnostics."""
    robot = load_robot("arm2")
    damping = 0.7
    bad = {
        3: Float64MultiArray(data=[1.0, 2.0, 3.0]),
        5: Float64MultiArray(data=[float("nan"), 0.0]),
    }

    def answer(k, s):
        if k in bad:
            msg = bad[k]
            msg.layout.dim = [MultiArrayDimension(label=f"stamp={s.stamp_ns}", size=2, stride=2)]
            return msg
        if k == 7:  # stale, then the right one
            driver.pub.publish(command_msg(np.ones(2), s.stamp_ns - 10_000_000))
        return command_msg(0.8 * robot.limits.effort, s.stamp_ns)

    driver = Driver(ros, robot, answer=answer)
    diags = []
    driver.node.create_subscription(
        DiagnosticArray, "/diagnostics", lambda m: diags.extend(m.status), 10
    )
    node_process("arm_sim", sim_params(robot="arm2", hold_damping=damping))
    wait_for(lambda: driver.count() >= 10, 30, "states")
    capped = ArmSimulator(robot, SimConfig(hold_damping=damping)).hold_damping
    for k in bad:
        held = driver.states[k + 1].effort
        expected = np.clip(
            -capped * driver.states[k].velocity, -robot.limits.effort, robot.limits.effort
        )
        np.testing.assert_array_equal(held, expected)
    np.testing.assert_array_equal(driver.states[8].effort, 0.8 * robot.limits.effort)

    def counters():
        for st in reversed(diags):
            if st.name.startswith("arm_sim"):
                return {kv.key: kv.value for kv in st.values}
        return {}

    wait_for(lambda: counters().get("stale_command") == "1", 10, "diagnostics with counters")
    c = counters()
    assert c["rejected_command"] == "2" and c["safe_holds"] == "2"


def test_lockstep_timeout_applies_the_safe_hold(ros, node_process):
    robot = load_robot("arm2")
    driver = Driver(ros, robot, answer=lambda k, s: None)  # publishes nothing
    node_process(
        "arm_sim", sim_params(robot="arm2", lockstep_timeout=0.05, initial_position=[0.3, -0.2])
    )
    wait_for(lambda: driver.count() >= 4, 30, "states advanced by timeouts")
    for s in driver.states[1:4]:
        assert np.all(np.abs(s.effort) <= robot.limits.effort)
    np.testing.assert_array_equal(driver.states[1].effort, 0.0)  # at rest: damping gives zero


@pytest.mark.parametrize(
    "params, message",
    [
        ({"robot": "/nonexistent/arm.urdf"}, "/nonexistent/arm.urdf"),
        ({"robot": "BROKEN"}, "broken.urdf"),
        ({"scene": "/nonexistent/scene.xml"}, "/nonexistent/scene.xml"),
        ({"joint_names": ["joint1", "elbow"]}, "unknown joint(s) ['elbow']"),
        ({"control_period": 5.0}, "'control_period' = 5.0 is out of range"),
        ({"mode": "fast"}, "'mode' = 'fast' must be one of"),
        ({"control_period": 0.005, "physics_timestep": 0.002}, "whole multiple"),
        ({"tool": "peg"}, "'tool' = 'peg': scene 'scene' has no body 'hole'"),
        ({"tool": "nosuch", "scene": "insertion"}, "'tool' = 'nosuch': no file 'nosuch'"),
        (
            {"tool": "peg", "scene": "insertion", "gravity_compensation": True},
            "without gravity compensation",
        ),
        ({"tool": "peg", "scene": "insertion", "mode": "hardware"}, "needs mode lockstep"),
        ({"wait_for_target": True}, "'wait_for_target' = True needs mode lockstep and episode"),
        (
            {"wait_for_target": True, "episode_steps": 5, "mode": "realtime"},
            "(got mode 'realtime', episode_steps 5)",
        ),
        (
            {"control_perod": 0.01},
            "unknown parameter(s) for node 'arm_sim': 'control_perod' (did "
            "you mean 'control_period'?)",
        ),
    ],
)
def test_startup_errors_name_the_problem(node_process, tmp_path, params, message):
    if params.get("robot") == "BROKEN":
        broken = tmp_path / "broken.urdf"
        broken.write_text("<robot name='x'><link name='a'></robot")
        params = {"robot": str(broken)}
    proc = node_process("arm_sim", {"robot": "arm2"} | params)
    assert proc.wait(60) == 2
    out = proc.output()
    assert "[arm_sim] cannot start" in out and message in out, out
    assert "Traceback" not in out


def test_automatic_episodes_have_deterministic_boundaries(ros, node_process):
    """episode_steps = N: N steps, the terminal state, then a reset; episode e starts at
    e·(N+1) control periods."""
    robot = load_robot("arm2")
    events = []
    driver = Driver(
        ros, robot, answer=lambda k, s: command_msg(0.5 * robot.limits.effort, s.stamp_ns)
    )
    driver.node.create_subscription(
        String, "/mbrl/episode_events", lambda m: events.append(json.loads(m.data)), 10
    )
    node_process("arm_sim", sim_params(robot="arm2", episode_steps=4))
    wait_for(lambda: driver.count() >= 11 and len(events) >= 2, 30, "two automatic resets")
    assert [s.stamp_ns for s in driver.states[:11]] == [k * 10_000_000 for k in range(11)]
    assert [(e["episode"], e["stamp_ns"]) for e in events[:2]] == [
        (1, 50_000_000),
        (2, 100_000_000),
    ]
    for start in (5, 10):
        np.testing.assert_array_equal(driver.states[start].velocity, 0.0)
    assert np.all(np.abs(driver.states[4].velocity) > 0)
