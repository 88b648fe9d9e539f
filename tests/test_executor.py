"""The lg_executor node over real DDS: lockstep against the sim equals the pure core offline, sync
waiting, the stale-state watchdog in sim time, the e-stop latch, bad input, send-controller, and a
fuzz of ≥ 1,000 messages at each subscriber."""

import argparse
import os
import threading
import time

import fuzz_messages as fm
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import CommandProbe, wait_for
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, UInt8MultiArray
from std_srvs.srv import SetBool, Trigger

from mbrl_ros.common import artifacts
from mbrl_ros.common.msgconv import (
    MessageError,
    read_command,
    read_joint_state,
    seconds_to_ns,
    stamp_to_ns,
)
from mbrl_ros.control.controller import LinearGaussianController, exploration_noise
from mbrl_ros.control.safety import SafetyConfig, SafetyLayer
from mbrl_ros.control.scripted import scripted_controller
from mbrl_ros.nodes import send_controller
from mbrl_ros.nodes.lg_executor import LGExecutorNode
from mbrl_ros.nodes.messages import LATCHED_QOS, STATE_QOS, clock_msg, joint_state_msg
from mbrl_ros.nodes.params import ConfigError
from mbrl_ros.robot.description import home_position, load_robot
from mbrl_ros.robot.gains import robot_gain_caps
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig

pytestmark = pytest.mark.ros

ROBOT = load_robot("arm7")
NAMES = list(ROBOT.joint_names)
N = len(NAMES)
EFFORT = ROBOT.limits.effort
PERIOD = 0.01
PERIOD_NS = seconds_to_ns(PERIOD)
DEEP = QoSProfile(depth=10_000, reliability=ReliabilityPolicy.RELIABLE)


class Probe(CommandProbe):
    """Test node: publishes states, controllers and /clock; records commands and the executor's
    diagnostics (sim-time stamp, level, message)."""

    def __init__(self, ros):
        self.node = ros.node("probe")
        self.lock = threading.Lock()
        self.commands: list[tuple[np.ndarray, int | None]] = []
        self.states: list = []
        self.diags: list[tuple[int, bytes, str]] = []
        self.waiting_for: list[int] = []  # the executor's pending stamps, from /diagnostics
        self.diag_values: list[dict] = []  # the executor's /diagnostics values
        self.state_pub = self.node.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.ctrl_pub = self.node.create_publisher(UInt8MultiArray, "/mbrl/controller", LATCHED_QOS)
        self.clock_pub = self.node.create_publisher(Clock, "/clock", 10)
        self.node.create_subscription(
            Float64MultiArray, "/effort_controller/commands", self._on_command, DEEP
        )
        self.state_sub = self.node.create_subscription(
            JointState, "/joint_states", self._on_state, DEEP
        )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 100)
        self.estop = self.node.create_client(SetBool, "/lg_executor/estop")

    def _on_command(self, msg):
        with self.lock:
            self.commands.append(read_command(msg, N))

    def _on_state(self, msg):
        try:
            state = read_joint_state(msg, NAMES)
        except MessageError:  # the fuzz test's own garbage
            return
        with self.lock:
            self.states.append(state)

    def _on_diag(self, msg):
        for s in msg.status:
            if s.name.startswith("lg_executor"):
                values = {kv.key: kv.value for kv in s.values}
                with self.lock:
                    self.diags.append((stamp_to_ns(msg.header.stamp), bytes(s.level), s.message))
                    self.waiting_for.append(int(values.get("waiting_for_stamp_ns", -1)))
                    self.diag_values.append(values)

    def diag_with(self, key, timeout=10.0) -> dict:
        """The executor's latest /diagnostics values that carry ``key`` (waits for one)."""

        def found():
            with self.lock:
                return [v for v in self.diag_values if key in v]

        wait_for(found, timeout, f"/diagnostics with {key}")
        return found()[-1]

    def n_commands(self):
        with self.lock:
            return len(self.commands)

    def send_controller(self, c: LinearGaussianController | bytes):
        msg = UInt8MultiArray()
        msg.data = c if isinstance(c, bytes) else c.to_bytes()
        self.ctrl_pub.publish(msg)

    def send_state(self, stamp_ns, q, qd, names=NAMES):
        self.state_pub.publish(
            joint_state_msg(
                stamp_ns, names, np.asarray(q, float), np.asarray(qd, float), np.zeros(len(names))
            )
        )


def executor(ros, **params):
    node = LGExecutorNode(
        context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]
    )
    ros.add(node)
    return node


def connected(probe, node):
    wait_for(
        lambda: (
            probe.state_pub.get_subscription_count() > 0
            and probe.ctrl_pub.get_subscription_count() > 0
            and probe.node.count_publishers("/effort_controller/commands") > 0
        ),
        10,
        "probe ↔ executor discovery",
    )


def open_loop(u, T=1000, start_ns=0, **kw):
    return LinearGaussianController.open_loop(
        np.tile(u, (T, 1)), 2 * N, dt_ns=PERIOD_NS, start_ns=start_ns, joint_names=NAMES, **kw
    )


HOME = home_position(ROBOT)


# -- lockstep against the simulator ------------------------------------------------------------
def _synchronise(probe) -> int:
    """Reset the sim until both the probe and the executor have its fresh state (the sim's first
    state can precede DDS matching); returns that state's stamp, which the executor holds."""
    reset = probe.node.create_client(Trigger, "/arm_sim/reset")
    assert reset.wait_for_service(timeout_sec=60.0)
    for _ in range(20):
        seen = {s.stamp_ns for s in probe.states}
        future = reset.call_async(Trigger.Request())
        wait_for(future.done, 30, "the sim's reset")
        try:
            wait_for(lambda: {s.stamp_ns for s in probe.states} - seen, 2.0, "the reset state")
            stamp = max(s.stamp_ns for s in probe.states)
            wait_for(lambda: stamp in probe.waiting_for, 2.0, "the executor to wait on it")
        except AssertionError:
            continue
        return stamp
    raise AssertionError("sim, executor and probe never synchronised")


@pytest.mark.parametrize("stochastic", [False, True])
def test_lockstep_pd_tracking_equals_the_pure_core_offline(ros, node_process, stochastic):
    """Sim (lockstep) + executor (sync) over DDS, driven by a scripted PD-tracking controller,
    give exactly the trajectory of the same controller and safety layer applied to MuJoCo
    offline; with ``stochastic`` the controller has Σ and the seeded, smoothed noise too."""
    steps = 120
    goal = HOME + np.array([0.3, 0.2, -0.2, 0.3, 0.2, -0.3, 0.4])
    c = scripted_controller("pd", ROBOT, dt_ns=PERIOD_NS, goal=goal, duration=0.8, hold_after=0.4)
    seed, smoothing = 3, 2.0
    if stochastic:
        cov = np.broadcast_to(np.diag(0.02 * EFFORT) ** 2 / 4, (c.T, N, N))
        c = LinearGaussianController.gaussian(
            c.x_hat, c.u_hat, c.K, c.k, cov, dt_ns=c.dt_ns, joint_names=NAMES
        )
    assert c.T == steps
    probe = Probe(ros)
    node_process(
        "lg_executor",
        {
            "mode": "sync",
            "stochastic": stochastic,
            "seed": seed,
            "noise_smoothing": smoothing,
            "control_period": PERIOD,
            "diagnostics_period": 0.05,
        },
    )
    node_process(
        "arm_sim", {"mode": "lockstep", "control_period": PERIOD, "lockstep_timeout": 600.0}
    )
    start = _synchronise(probe)
    c = c.restamp(start)
    probe.send_controller(c)
    last = start + (steps - 1) * PERIOD_NS
    wait_for(lambda: any(s.stamp_ns == last for s in probe.states), 60, "the lockstep run")

    sim = ArmSimulator(ROBOT, SimConfig(control_period=PERIOD, physics_timestep=0.002))
    safety = SafetyLayer(
        ROBOT.limits.lower,
        ROBOT.limits.upper,
        ROBOT.limits.velocity,
        EFFORT,
        SafetyConfig(),
        robot_gain_caps(ROBOT, NAMES, PERIOD),
    )
    noise = exploration_noise(c.T, N, np.random.default_rng([seed, c.start_ns]), smoothing)
    expected = []
    for k in range(steps):
        s = sim.measure()
        expected.append(s)
        x = np.concatenate([s.position, s.velocity])
        t = c.index(start + k * PERIOD_NS)
        u = c.sample(x, t, z=noise[t]) if stochastic else c.act(x, t)
        sim.step(safety.filter(s.position, s.velocity, u)[0])
    got = {
        (s.stamp_ns - start) // PERIOD_NS: s for s in probe.states if start <= s.stamp_ns <= last
    }
    assert sorted(got) == list(range(steps))
    for k in range(steps):
        np.testing.assert_array_equal(got[k].position, expected[k].position, err_msg=f"step {k}")
        np.testing.assert_array_equal(got[k].velocity, expected[k].velocity, err_msg=f"step {k}")
    assert np.abs(expected[-1].position - goal).max() < 0.01  # and it did track the move


# -- sync waiting, e-stop ----------------------------------------------------------------------
def test_sync_waits_for_a_covering_controller_then_answers(ros):
    node = executor(ros, mode="sync")
    probe = Probe(ros)
    connected(probe, node)
    stamp = seconds_to_ns(1.0)
    probe.send_state(stamp, HOME, np.zeros(N))
    wait_for(lambda: node.pending is not None, 10, "the executor to hold the state")
    assert probe.n_commands() == 0  # waiting: nothing published, so a lockstep sim waits
    probe.send_controller(open_loop(np.full(N, 0.5), T=10, start_ns=stamp))
    np.testing.assert_array_equal(probe.command_for(stamp), np.full(N, 0.5))
    later = stamp + 10 * PERIOD_NS  # past the controller's end: waits again
    probe.send_state(later, HOME, np.zeros(N))
    wait_for(lambda: node.pending is not None and node.pending.stamp_ns == later, 10, "waiting")
    assert probe.call_estop(True).success  # an e-stop answers the waiting state with the hold
    np.testing.assert_array_equal(probe.command_for(later), np.zeros(N))


def test_estop_latches_the_hold_until_released(ros):
    node = executor(ros, mode="realtime", max_plan_age=0.0, max_state_age=0.0)
    probe = Probe(ros)
    connected(probe, node)
    probe.send_controller(open_loop(np.full(N, 1.0)))
    wait_for(lambda: node.controller is not None, 10, "the controller")
    qd = np.full(N, 0.5)
    hold = -node.safety.gains["damping"] * qd
    np.testing.assert_array_equal(probe.answer(PERIOD_NS, HOME, qd), np.full(N, 1.0))
    before = probe.n_commands()
    assert probe.call_estop(True).success
    wait_for(lambda: probe.n_commands() > before, 10, "the hold at the e-stop")
    for k in range(2, 6):
        if k == 3:  # a new controller does not release the latch
            probe.send_controller(open_loop(np.full(N, 2.0)))
            wait_for(lambda: node.controller.u_hat[0, 0] == 2.0, 10, "the new controller")
        np.testing.assert_allclose(probe.answer(k * PERIOD_NS, HOME, qd), hold)
    wait_for(
        lambda: any(
            level == DiagnosticStatus.ERROR and "e-stop" in text for _, level, text in probe.diags
        ),
        10,
        "an ERROR diagnostic",
    )
    assert probe.call_estop(False).success
    np.testing.assert_array_equal(probe.answer(6 * PERIOD_NS, HOME, qd), np.full(N, 2.0))


# -- real-time mode: watchdogs in sim time -----------------------------------------------------
def _tick(probe, node, t_ns):
    probe.clock_pub.publish(clock_msg(t_ns))
    wait_for(lambda: node.get_clock().now().nanoseconds == t_ns, 10, f"sim time {t_ns}")


def test_stale_state_watchdog_fires_within_one_control_period_of_sim_time(ros):
    max_age = 0.05
    node = executor(
        ros,
        mode="realtime",
        use_sim_time=True,
        control_period=PERIOD,
        max_state_age=max_age,
        max_plan_age=0.0,
    )
    probe = Probe(ros)
    connected(probe, node)
    wait_for(lambda: probe.clock_pub.get_subscription_count() > 0, 10, "/clock subscriber")
    probe.send_controller(open_loop(np.full(N, 0.5)))
    wait_for(lambda: node.controller is not None, 10, "the controller")
    last = 10
    for k in range(1, last + 1):
        _tick(probe, node, k * PERIOD_NS)
        probe.send_state(k * PERIOD_NS, HOME, np.full(N, 0.1))
        np.testing.assert_array_equal(probe.command_for(k * PERIOD_NS), np.full(N, 0.5))
    assert probe.n_commands() == last  # no watchdog hold so far
    fired_at = None
    for k in range(last + 1, last + 20):  # states stop; sim time goes on
        before = probe.n_commands()
        _tick(probe, node, k * PERIOD_NS)
        try:
            wait_for(lambda: probe.n_commands() > before, 0.3, "a watchdog hold")
        except AssertionError:
            continue
        fired_at = k * PERIOD_NS
        break
    deadline = last * PERIOD_NS + seconds_to_ns(max_age)
    assert fired_at is not None and deadline <= fired_at < deadline + PERIOD_NS
    u, tag = probe.commands[-1]
    assert np.array_equal(u, np.zeros(N))  # damping at zero (untrusted) velocity
    assert tag == fired_at  # tagged with its send time (sim time)
    wait_for(
        lambda: any("stale_state" in text for _, _, text in probe.diags),
        10,
        "the stale_state diagnostic",
    )
    stamp = next(s for s, _, text in probe.diags if "stale_state" in text)
    assert stamp == fired_at  # published the moment it fired, stamped in sim time
    before = probe.n_commands()  # and it goes on holding every control period
    for k in range(fired_at // PERIOD_NS + 1, fired_at // PERIOD_NS + 4):
        _tick(probe, node, k * PERIOD_NS)
        wait_for(lambda: probe.n_commands() > before, 10, f"the hold at tick {k}")
        before = probe.n_commands()
    assert node.diag.counters["stale_state"] == 4


def test_realtime_holds_past_the_plan_end_before_its_start_and_when_old(ros):
    node = executor(ros, mode="realtime", use_sim_time=True, max_state_age=0.0, max_plan_age=1.0)
    probe = Probe(ros)
    connected(probe, node)
    wait_for(lambda: probe.clock_pub.get_subscription_count() > 0, 10, "/clock subscriber")
    _tick(probe, node, seconds_to_ns(1.0))
    start = seconds_to_ns(1.0)
    probe.send_controller(open_loop(np.full(N, 0.5), T=10, start_ns=start))
    wait_for(lambda: node.controller is not None, 10, "the controller")
    qd = np.full(N, 0.2)
    hold = -node.safety.gains["damping"] * qd
    cases = [
        (start + 3 * PERIOD_NS, np.full(N, 0.5), None),
        (start + 10 * PERIOD_NS, hold, "plan_expired"),
        (start - PERIOD_NS, None, "stamp_backwards"),
    ]
    for stamp, expected, key in cases:
        if expected is None:
            probe.send_state(stamp, HOME, qd)
            wait_for(lambda: node.diag.counters[key] == 1, 10, key)
            continue
        np.testing.assert_allclose(probe.answer(stamp, HOME, qd), expected)
        assert key is None or node.diag.counters[key] == 1
    probe.send_controller(open_loop(np.full(N, 0.5), T=1000, start_ns=start))
    wait_for(lambda: node.controller.T == 1000, 10, "the long controller")
    _tick(probe, node, start + seconds_to_ns(1.0) + 1)  # plan received at 1.0 s: now too old
    np.testing.assert_allclose(probe.answer(start + 20 * PERIOD_NS, HOME, qd), hold)
    assert node.diag.counters["stale_plan"] == 1
    np.testing.assert_allclose(
        probe.answer(start + 21 * PERIOD_NS, HOME, qd, names=["x"] + NAMES[1:]), np.zeros(N)
    )  # joint missing
    assert node.diag.counters["rejected_state"] == 1


def test_reordered_joint_names_give_the_same_command(ros):
    node = executor(ros, mode="realtime", max_plan_age=0.0, max_state_age=0.0)
    probe = Probe(ros)
    connected(probe, node)
    rng = np.random.default_rng(0)
    K = rng.standard_normal((1000, N, 2 * N))
    probe.send_controller(
        LinearGaussianController.feedback(
            np.zeros((1000, 2 * N)), np.zeros((1000, N)), K, dt_ns=PERIOD_NS, joint_names=NAMES
        )
    )
    wait_for(lambda: node.controller is not None, 10, "the controller")
    q, qd = HOME + 0.01 * rng.standard_normal(N), 0.01 * rng.standard_normal(N)
    first = probe.answer(PERIOD_NS, q, qd)
    order = rng.permutation(N)
    np.testing.assert_array_equal(
        probe.answer(PERIOD_NS + 1, q[order], qd[order], names=[NAMES[i] for i in order]), first
    )


def test_bad_controllers_are_rejected_and_the_last_good_one_kept(ros):
    node = executor(ros, mode="realtime", max_plan_age=0.0, max_state_age=0.0)
    probe = Probe(ros)
    connected(probe, node)
    good = open_loop(np.full(N, 0.25))
    probe.send_controller(good)
    wait_for(lambda: node.controller is not None, 10, "the controller")
    wrong_joints = LinearGaussianController.open_loop(
        np.zeros((10, N)), 2 * N, dt_ns=PERIOD_NS, joint_names=[f"x{i}" for i in range(N)]
    )
    bad = [
        b"garbage",
        good.to_bytes()[:-9],
        wrong_joints.to_bytes(),
        artifacts.encode(
            artifacts.Schema("mbrl_ros/policy", 1, {}, extra_tensors=True), {"w": np.zeros(3)}, {}
        ),
    ]
    for i, data in enumerate(bad, 1):
        probe.send_controller(data)
        wait_for(lambda: node.diag.counters["rejected_controller"] == i, 10, f"rejection {i}")
    assert node.controller is not None and node.controller.u_hat[0, 0] == 0.25
    np.testing.assert_array_equal(probe.answer(PERIOD_NS, HOME, np.zeros(N)), np.full(N, 0.25))


def test_invalid_parameters_stop_the_node_with_a_clear_error(ros):
    with pytest.raises(ConfigError, match="mode"):
        executor(ros, mode="fast")
    with pytest.raises(ConfigError, match="joint_names"):
        executor(ros, joint_names=["joint1", "elbow"])


# -- send-controller -----------------------------------------------------------------------------
def test_send_controller_publishes_a_file_and_restamps(ros, tmp_path):
    node = executor(ros, mode="sync")
    parser = argparse.ArgumentParser()
    send_controller.add_arguments(parser)
    path = tmp_path / "hold.safetensors"
    assert (
        send_controller.run(
            parser.parse_args(["--make", "hold", "--duration", "0.5", "-o", str(path)])
        )
        == 0
    )
    assert send_controller.run(parser.parse_args([str(path)])) == 0
    wait_for(lambda: node.controller is not None, 10, "the controller")
    assert node.controller.T == 50 and node.controller.start_ns == 0
    np.testing.assert_array_equal(node.controller.x_hat[:, :N], np.tile(HOME, (50, 1)))
    # --restamp: starts at the stamp of the next joint state
    probe = Probe(ros)
    stop = threading.Event()

    def publish_states():
        while not stop.is_set():
            probe.send_state(seconds_to_ns(7.0), HOME, np.zeros(N))
            time.sleep(0.02)

    publisher = threading.Thread(target=publish_states)
    publisher.start()
    try:
        assert send_controller.run(parser.parse_args([str(path), "--restamp"])) == 0
    finally:
        stop.set()
        publisher.join()
    wait_for(lambda: node.controller.start_ns == seconds_to_ns(7.0), 10, "the restamped one")


# -- fuzz ------------------------------------------------------------------------------------------
def test_fuzz_with_estop_toggles_never_commands_beyond_limits_and_recovers(ros):
    """1,200 malformed, absurd and adversarial joint states and 1,200 controllers
    (``fuzz_messages``), interleaved, each processed before the next, with e-stop toggles, to a
    stochastic executor: every command is finite and within the effort limits, and afterwards
    the executor answers a good state exactly. (``test_fuzz_nodes`` fuzzes every node at once.)"""
    node = executor(
        ros,
        mode="realtime",
        max_plan_age=0.0,
        max_state_age=0.0,
        stochastic=True,
        noise_smoothing=1.0,
    )
    probe = Probe(ros)
    connected(probe, node)
    rng = np.random.default_rng(1234)
    good = LinearGaussianController.gaussian(
        np.zeros((20, 2 * N)),
        np.full((20, N), 0.5),
        np.zeros((20, N, 2 * N)),
        np.zeros((20, N)),
        np.broadcast_to(np.eye(N), (20, N, N)),
        dt_ns=PERIOD_NS,
        start_ns=time.time_ns(),
        joint_names=NAMES,
    ).to_bytes()
    lower, upper = ROBOT.limits.lower, ROBOT.limits.upper
    counters = node.diag.counters
    for i in range(2400):
        now = time.time_ns()
        if i % 2 == 0:
            probe.state_pub.publish(fm.joint_state(rng, NAMES, lower, upper, now, now - PERIOD_NS))
            key = "received /joint_states"
        else:
            probe.ctrl_pub.publish(fm.controller(rng, good, NAMES, PERIOD_NS, now))
            key = "received /mbrl/controller"
        wait_for(lambda: counters[key] == i // 2 + 1, 10, f"message {i} processed")
        if i % 400 == 399:
            assert probe.call_estop(bool(rng.integers(2))).success
    assert probe.call_estop(False).success
    wait_for(lambda: probe.n_commands() >= counters["commands"], 10, "all commands")
    with probe.lock:
        sent = np.array([u for u, _ in probe.commands])
    assert len(sent) > 600 and counters["rejected_controller"] > 600
    assert counters["rejected_state"] + counters["implausible_state"] > 400
    assert np.all(np.isfinite(sent)) and np.all(np.abs(sent) <= EFFORT)
    # extreme controllers were refused, not clamped: no command pins every joint at its limit
    assert not (np.abs(sent) == EFFORT).all(axis=1).any()
    assert ros._thread.is_alive()
    time.sleep(0.6)  # past every fuzz stamp the executor accepted (≤ 0.5 s ahead of its clock)
    start = time.time_ns()
    probe.send_controller(open_loop(np.full(N, 0.125), start_ns=start))
    wait_for(
        lambda: node.controller is not None and node.controller.start_ns == start,
        10,
        "a good controller",
    )
    np.testing.assert_array_equal(probe.answer(start, HOME, np.zeros(N)), np.full(N, 0.125))


def test_realtime_priority_puts_every_thread_of_the_node_under_fifo(node_process):
    """realtime_priority > 0: the executor's threads (its own, rclpy's and the middleware's) run
    under SCHED_FIFO, so a loaded machine cannot starve its commands and watchdogs."""
    proc = node_process(
        "lg_executor", {"robot": "arm2", "mode": "realtime", "realtime_priority": 10}
    )
    pid = proc.proc.pid

    def policies():
        tasks = os.listdir(f"/proc/{pid}/task")
        return {int(t): os.sched_getscheduler(int(t)) & ~os.SCHED_RESET_ON_FORK for t in tasks}

    wait_for(lambda: "realtime mode" in proc.output(), 30, "the executor's start")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except PermissionError:
        assert "not applied" in proc.output()  # no rtprio here: said so, still running
        return
    found = policies()
    assert len(found) > 3 and all(p == os.SCHED_FIFO for p in found.values()), found
    assert all(os.sched_getparam(t).sched_priority == 10 for t in found)


def test_one_state_stamped_ahead_cannot_lock_the_executor_out(ros):
    """A state stamped 1000 s ahead of the node's (wall) clock is rejected and held; one stamped
    0.4 s ahead (inside the window) is taken, and the real states after it, from an earlier
    stamp, become the timeline again after RECOVER_AFTER of them (before: dropped for good)."""
    node = executor(ros, mode="realtime", max_plan_age=0.0, max_state_age=0.0)
    probe = Probe(ros)
    connected(probe, node)
    start = time.time_ns()
    probe.send_controller(open_loop(np.full(N, 0.25), start_ns=start))
    wait_for(lambda: node.controller is not None, 10, "the controller")
    probe.send_state(start + seconds_to_ns(1000.0), HOME, np.zeros(N))
    wait_for(lambda: node.diag.counters["implausible_state"] == 1, 10, "the rejection")
    ahead = start + seconds_to_ns(0.4)
    np.testing.assert_array_equal(probe.answer(ahead, HOME, np.zeros(N)), np.full(N, 0.25))
    before = probe.n_commands()
    stamps = [start + k * PERIOD_NS for k in range(1, 6)]
    for stamp in stamps:  # one at a time (the real-time executor keeps only the newest)
        taken = node.diag.counters["received /joint_states"]
        probe.send_state(stamp, HOME, np.zeros(N))
        wait_for(lambda: node.diag.counters["received /joint_states"] > taken, 10, "the state")
    # the third in a row from an earlier stamp restarts the timeline: it and later are answered
    wait_for(lambda: probe.n_commands() == before + 3, 10, "the answers after the restart")
    with probe.lock:
        answers = probe.commands[before:]
    assert all(np.array_equal(u, np.full(N, 0.25)) for u, _ in answers)
    assert node.diag.counters["stamp_backwards"] == 2
    assert node.diag.counters["timeline_restarts"] == 1


# -- issue 13: command timing, gravity, homing -----------------------------------------------------
def test_realtime_tags_are_send_times_and_latency_is_reported(ros):
    """Realtime: each command is tagged with the executor's clock time when it was sent (not
    before the stamp of the state it answers, strictly increasing); the latency state stamp →
    send is reported on /diagnostics (median and max, ms)."""
    node = executor(
        ros, mode="realtime", max_plan_age=0.0, max_state_age=0.0, diagnostics_period=0.1
    )
    probe = Probe(ros)
    connected(probe, node)
    start = time.time_ns()
    probe.send_controller(open_loop(np.full(N, 0.25), start_ns=start - seconds_to_ns(1.0)))
    wait_for(lambda: node.controller is not None, 10, "the controller")
    late = seconds_to_ns(0.03)  # states stamped 30 ms before they are sent
    for _ in range(5):
        published = time.time_ns()
        stamp = published - late
        np.testing.assert_array_equal(probe.answer(stamp, HOME, np.zeros(N)), np.full(N, 0.25))
        with probe.lock:
            tag = probe.commands[-1][1]
        assert published <= tag <= time.time_ns()  # sent after the state was published
    probe.diag_with("latency_ms_median")  # every window so far has only the late states
    with probe.lock:
        windows = [v for v in probe.diag_values if "latency_ms_median" in v]
    assert all(
        30.0 <= float(v["latency_ms_median"]) <= float(v["latency_ms_max"]) for v in windows
    ), windows
    before = probe.n_commands()  # a rejected state stamped far ahead: the hold, at send time
    probe.send_state(time.time_ns() + seconds_to_ns(1000.0), HOME, np.zeros(N))
    wait_for(lambda: probe.n_commands() > before, 10, "the hold for the rejected state")
    assert probe.commands[-1][1] <= time.time_ns()
    stamp = time.time_ns()  # and it did not move the tags of later commands either
    np.testing.assert_array_equal(probe.answer(stamp, HOME, np.zeros(N)), np.full(N, 0.25))
    assert probe.commands[-1][1] <= time.time_ns()
    with probe.lock:
        tags = [tag for _, tag in probe.commands]
    assert tags == sorted(set(tags))


def test_without_robot_gravity_compensation_commands_are_plan_plus_gravity(ros):
    """robot_compensates_gravity false: the command is the plan's torque + the URDF's g(q) (to
    1e-9), the hold law too, and an implausible state gets the gravity of the last plausible
    one."""
    from mbrl_ros.robot.gravity import GravityModel

    node = executor(
        ros, mode="realtime", max_plan_age=0.0, max_state_age=0.0, robot_compensates_gravity=False
    )
    probe = Probe(ros)
    connected(probe, node)
    g = GravityModel(ROBOT)
    rng = np.random.default_rng(5)
    u_plan = 0.1 * EFFORT * rng.uniform(-1, 1, N)
    probe.send_controller(open_loop(u_plan, T=50))
    wait_for(lambda: node.controller is not None, 10, "the controller")
    for k in range(1, 6):
        q = HOME + 0.2 * rng.uniform(-1, 1, N)
        expected = np.clip(u_plan + g.torque(q), -EFFORT, EFFORT)
        np.testing.assert_allclose(
            probe.answer(k * PERIOD_NS, q, np.zeros(N)), expected, rtol=0, atol=1e-9
        )
    bad = HOME.copy()
    bad[0] = ROBOT.limits.upper[0] + 2.0  # implausible: held, with the last plausible gravity
    hold = probe.answer(6 * PERIOD_NS, bad, np.zeros(N))
    np.testing.assert_allclose(hold, np.clip(g.torque(q), -EFFORT, EFFORT), rtol=0, atol=1e-9)
    qd = np.full(N, 0.3)  # past the plan's end: the damping hold + g(q)
    expected = np.clip(-node.safety.gains["damping"] * qd + g.torque(HOME), -EFFORT, EFFORT)
    np.testing.assert_allclose(probe.answer(60 * PERIOD_NS, HOME, qd), expected, atol=1e-9)


def test_gravity_needs_inertials_and_every_joint(ros, tmp_path):
    import re

    stripped = re.sub(r"<inertial>.*?</inertial>", "", ROBOT.urdf_path.read_text(), flags=re.S)
    path = tmp_path / "massless.urdf"
    path.write_text(stripped)
    with pytest.raises(ConfigError, match="robot_compensates_gravity.*inertial"):
        executor(ros, robot=str(path), robot_compensates_gravity=False)
    executor(ros, robot=str(path))  # a robot that compensates needs no masses
    from mbrl_ros.nodes.policy_runner import PolicyRunnerNode  # the same for the policy runner

    with pytest.raises(ConfigError, match="robot_compensates_gravity.*inertial"):
        PolicyRunnerNode(
            context=ros.context,
            parameter_overrides=[
                Parameter("robot", value=str(path)),
                Parameter("robot_compensates_gravity", value=False),
            ],
        )
    with pytest.raises(ConfigError, match="every joint"):
        executor(ros, joint_names=NAMES[:3], robot_compensates_gravity=False)


def test_homing_controller_overrides_the_planner_and_hands_over_when_truncated(ros):
    from mbrl_ros.control.homing import homing_controller

    node = executor(ros, mode="realtime", max_plan_age=0.0, max_state_age=0.0)
    probe = Probe(ros)
    homing_pub = probe.node.create_publisher(
        UInt8MultiArray, "/mbrl/homing_controller", LATCHED_QOS
    )
    connected(probe, node)
    wait_for(lambda: homing_pub.get_subscription_count() > 0, 10, "homing subscriber")
    probe.send_controller(open_loop(np.full(N, 0.5)))
    wait_for(lambda: node.controller is not None, 10, "the controller")
    goal = HOME + 0.2
    homing = homing_controller(HOME, goal, 0, PERIOD_NS, robot=ROBOT, hold=0.5)
    homing_pub.publish(UInt8MultiArray(data=homing.to_bytes()))
    wait_for(lambda: node.homing is not None, 10, "the homing controller")
    rng = np.random.default_rng(2)
    for k in (1, 5, 9):
        q, qd = HOME + 0.01 * rng.standard_normal(N), 0.01 * rng.standard_normal(N)
        expected = homing.act(np.concatenate([q, qd]), k)
        np.testing.assert_allclose(probe.answer(k * PERIOD_NS, q, qd), expected, atol=1e-12)
    assert node.homing_active
    wait_for(
        lambda: probe.diag_with("homing_active")["homing_active"] == "True",
        10,
        "homing_active on /diagnostics",
    )
    homing_pub.publish(UInt8MultiArray(data=homing.with_validity(10 * PERIOD_NS).to_bytes()))
    wait_for(lambda: node.homing.valid_until_ns == 10 * PERIOD_NS, 10, "the truncated homing")
    np.testing.assert_array_equal(
        probe.answer(10 * PERIOD_NS, HOME, np.zeros(N)), np.full(N, 0.5)
    )  # the planner's controller again
    assert not node.homing_active
    too_stiff = LinearGaussianController.feedback(  # beyond ControllerBounds: refused
        homing.x_hat, homing.u_hat, homing.K * 1e6, dt_ns=PERIOD_NS, joint_names=NAMES
    )
    homing_pub.publish(UInt8MultiArray(data=too_stiff.to_bytes()))
    wait_for(lambda: node.diag.counters["rejected_homing_controller"] == 1, 10, "the refusal")
    np.testing.assert_array_equal(probe.answer(11 * PERIOD_NS, HOME, np.zeros(N)), np.full(N, 0.5))


def _lockstep_without_gravity_compensation(probe, node_process, **executor_params):
    """arm7's lockstep sim without gravity compensation and a sync executor; returns the stamp of
    the sim's first state, which the executor holds (waiting)."""
    node_process(
        "lg_executor",
        {"mode": "sync", "control_period": PERIOD, "diagnostics_period": 0.05, **executor_params},
    )
    node_process(
        "arm_sim",
        {
            "mode": "lockstep",
            "control_period": PERIOD,
            "lockstep_timeout": 600.0,
            "gravity_compensation": False,
        },
    )
    return _synchronise(probe)


def _states_from(probe, start, steps):
    last = start + (steps - 1) * PERIOD_NS
    wait_for(lambda: any(s.stamp_ns == last for s in probe.states), 120, "the lockstep run")
    with probe.lock:
        got = {s.stamp_ns: s for s in probe.states if start <= s.stamp_ns <= last}
    assert len(got) == steps
    return [got[t] for t in sorted(got)]


@pytest.mark.parametrize("adds_gravity", [True, False])
def test_the_hold_keeps_a_gravity_loaded_arm_in_place(ros, node_process, adds_gravity):
    """arm7 in lockstep without gravity compensation in the sim, the executor holding (e-stop:
    the damping hold law) for 2 s: with robot_compensates_gravity false (the executor adds g(q))
    the arm stays where it is; with the default (true) it falls."""
    probe = Probe(ros)
    start = _lockstep_without_gravity_compensation(
        probe, node_process, robot_compensates_gravity=not adds_gravity
    )
    assert probe.call_estop(True).success
    states = _states_from(probe, start, 200)
    drift = np.abs(states[-1].position - states[0].position).max()
    if adds_gravity:
        assert drift < 0.02, drift
    else:
        assert drift > 0.1, drift  # the arm fell


def test_homing_in_lockstep_without_gravity_compensation_settles_at_the_goal(ros, node_process):
    """The homing controller, published on /mbrl/homing_controller, drives arm7 (lockstep sim
    without gravity compensation, executor adding g(q)) from its start pose to another: every
    command is homing + g(q) clamped (to 1e-9), the arm settles within tolerance and the settle
    detector says so."""
    from mbrl_ros.control.homing import SettleDetector, homing_controller
    from mbrl_ros.robot.gravity import GravityModel

    probe = Probe(ros)
    homing_pub = probe.node.create_publisher(
        UInt8MultiArray, "/mbrl/homing_controller", LATCHED_QOS
    )
    start = _lockstep_without_gravity_compensation(
        probe, node_process, robot_compensates_gravity=False
    )
    q0 = next(s for s in probe.states if s.stamp_ns == start).position
    goal = q0 + np.array([0.3, -0.25, 0.2, 0.3, -0.3, 0.25, 0.4])
    homing = homing_controller(q0, goal, start, PERIOD_NS, robot=ROBOT, hold=1.0)
    homing_pub.publish(UInt8MultiArray(data=homing.to_bytes()))
    states = _states_from(probe, start, homing.T)
    detector = SettleDetector(goal, 0.01, 0.05, 0.2, homing.T * PERIOD, NAMES)
    for s in states:
        detector.update(s.stamp_ns, s.position, s.velocity)
    assert detector.settled, detector.message
    assert np.abs(states[-1].position - goal).max() < 0.01
    g = GravityModel(ROBOT)
    with probe.lock:
        commands = {tag: u for u, tag in probe.commands}
    for k, s in enumerate(states[:-1]):
        u = homing.act(np.concatenate([s.position, s.velocity]), k) + g.torque(s.position)
        np.testing.assert_allclose(
            commands[s.stamp_ns],
            np.clip(u, -EFFORT, EFFORT),
            rtol=0,
            atol=1e-9,
            err_msg=f"step {k}",
        )
