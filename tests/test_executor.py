"""The lg_executor node over real DDS: lockstep against the sim equals the pure core offline, sync
waiting, the stale-state watchdog in sim time, the e-stop latch, bad input, send-controller, and a
fuzz of ≥ 1,000 messages at each subscriber."""
import argparse
import os
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, UInt8MultiArray
from std_srvs.srv import SetBool, Trigger

from mbrl_ros import artifacts
from mbrl_ros.controller import LinearGaussianController, exploration_noise, seconds_to_ns
from mbrl_ros.msgconv import MessageError, read_command, read_joint_state, stamp_to_ns
from mbrl_ros.nodes import send_controller
from mbrl_ros.nodes.lg_executor import LGExecutorNode
from mbrl_ros.nodes.messages import LATCHED_QOS, STATE_QOS, clock_msg, joint_state_msg
from mbrl_ros.nodes.params import ConfigError
from mbrl_ros.robot import load_robot
from mbrl_ros.safety import SafetyConfig, SafetyLayer, robot_gain_caps
from mbrl_ros.scripted import scripted_controller
from mbrl_ros.simulation import ArmSimulator, SimConfig, home_position
import fuzz_messages as fm
from ros_harness import CommandProbe, wait_for

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
        self.state_pub = self.node.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.ctrl_pub = self.node.create_publisher(UInt8MultiArray, "/mbrl/controller",
                                                   LATCHED_QOS)
        self.clock_pub = self.node.create_publisher(Clock, "/clock", 10)
        self.node.create_subscription(Float64MultiArray, "/effort_controller/commands",
                                      self._on_command, DEEP)
        self.state_sub = self.node.create_subscription(JointState, "/joint_states",
                                                       self._on_state, DEEP)
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

    def n_commands(self):
        with self.lock:
            return len(self.commands)

    def send_controller(self, c: LinearGaussianController | bytes):
        msg = UInt8MultiArray()
        msg.data = c if isinstance(c, bytes) else c.to_bytes()
        self.ctrl_pub.publish(msg)

    def send_state(self, stamp_ns, q, qd, names=NAMES):
        self.state_pub.publish(joint_state_msg(stamp_ns, names, np.asarray(q, float),
                                               np.asarray(qd, float), np.zeros(len(names))))



def executor(ros, **params):
    node = LGExecutorNode(context=ros.context, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    ros.add(node)
    return node


def connected(probe, node):
    wait_for(lambda: probe.state_pub.get_subscription_count() > 0
             and probe.ctrl_pub.get_subscription_count() > 0
             and probe.node.count_publishers("/effort_controller/commands") > 0, 10,
             "probe ↔ executor discovery")


def open_loop(u, T=1000, start_ns=0, **kw):
    return LinearGaussianController.open_loop(np.tile(u, (T, 1)), 2 * N, dt_ns=PERIOD_NS,
                                              start_ns=start_ns, joint_names=NAMES, **kw)


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
    c = scripted_controller("pd", ROBOT, dt_ns=PERIOD_NS, goal=goal, duration=0.8,
                            hold_after=0.4)
    seed, smoothing = 3, 2.0
    if stochastic:
        cov = np.broadcast_to(np.diag(0.02 * EFFORT) ** 2 / 4, (c.T, N, N))
        c = LinearGaussianController.gaussian(c.x_hat, c.u_hat, c.K, c.k, cov, dt_ns=c.dt_ns,
                                              joint_names=NAMES)
    assert c.T == steps
    probe = Probe(ros)
    node_process("lg_executor", {"mode": "sync", "stochastic": stochastic, "seed": seed,
                                 "noise_smoothing": smoothing, "control_period": PERIOD,
                                 "diagnostics_period": 0.05})
    node_process("arm_sim", {"mode": "lockstep", "control_period": PERIOD,
                             "lockstep_timeout": 600.0})
    start = _synchronise(probe)
    c = c.restamp(start)
    probe.send_controller(c)
    last = start + (steps - 1) * PERIOD_NS
    wait_for(lambda: any(s.stamp_ns == last for s in probe.states), 60, "the lockstep run")

    sim = ArmSimulator(ROBOT, SimConfig(control_period=PERIOD, physics_timestep=0.002))
    safety = SafetyLayer(ROBOT.limits.lower, ROBOT.limits.upper, ROBOT.limits.velocity, EFFORT,
                         SafetyConfig(), robot_gain_caps(ROBOT, NAMES, PERIOD))
    noise = exploration_noise(c.T, N, np.random.default_rng([seed, c.start_ns]), smoothing)
    expected = []
    for k in range(steps):
        s = sim.measure()
        expected.append(s)
        x = np.concatenate([s.position, s.velocity])
        t = c.index(start + k * PERIOD_NS)
        u = c.sample(x, t, z=noise[t]) if stochastic else c.act(x, t)
        sim.step(safety.filter(s.position, s.velocity, u)[0])
    got = {(s.stamp_ns - start) // PERIOD_NS: s for s in probe.states
           if start <= s.stamp_ns <= last}
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
    probe.send_state(PERIOD_NS, HOME, qd)
    np.testing.assert_array_equal(probe.command_for(PERIOD_NS), np.full(N, 1.0))
    assert probe.call_estop(True).success
    for k in range(2, 6):
        if k == 3:  # a new controller does not release the latch
            probe.send_controller(open_loop(np.full(N, 2.0)))
            wait_for(lambda: node.controller.u_hat[0, 0] == 2.0, 10, "the new controller")
        probe.send_state(k * PERIOD_NS, HOME, qd)
        np.testing.assert_allclose(probe.command_for(k * PERIOD_NS), hold)
    wait_for(lambda: any(level == DiagnosticStatus.ERROR and "e-stop" in text
                         for _, level, text in probe.diags), 10, "an ERROR diagnostic")
    assert probe.call_estop(False).success
    probe.send_state(6 * PERIOD_NS, HOME, qd)
    np.testing.assert_array_equal(probe.command_for(6 * PERIOD_NS), np.full(N, 2.0))


# -- real-time mode: watchdogs in sim time -----------------------------------------------------
def _tick(probe, node, t_ns):
    probe.clock_pub.publish(clock_msg(t_ns))
    wait_for(lambda: node.get_clock().now().nanoseconds == t_ns, 10, f"sim time {t_ns}")


def test_stale_state_watchdog_fires_within_one_control_period_of_sim_time(ros):
    max_age = 0.05
    node = executor(ros, mode="realtime", use_sim_time=True, control_period=PERIOD,
                    max_state_age=max_age, max_plan_age=0.0)
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
    assert all(tag is not None for _, tag in probe.commands)  # no watchdog hold so far
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
    assert tag is None and np.array_equal(u, np.zeros(N))  # damping at zero (untrusted) velocity
    wait_for(lambda: any("stale_state" in text for _, _, text in probe.diags), 10,
             "the stale_state diagnostic")
    stamp = next(s for s, _, text in probe.diags if "stale_state" in text)
    assert stamp == fired_at  # published the moment it fired, stamped in sim time
    before = probe.n_commands()  # and it goes on holding every control period
    for k in range(fired_at // PERIOD_NS + 1, fired_at // PERIOD_NS + 4):
        _tick(probe, node, k * PERIOD_NS)
        wait_for(lambda: probe.n_commands() > before, 10, f"the hold at tick {k}")
        before = probe.n_commands()
    assert node.diag.counters["stale_state"] == 4


def test_realtime_holds_past_the_plan_end_before_its_start_and_when_old(ros):
    node = executor(ros, mode="realtime", use_sim_time=True, max_state_age=0.0,
                    max_plan_age=1.0)
    probe = Probe(ros)
    connected(probe, node)
    wait_for(lambda: probe.clock_pub.get_subscription_count() > 0, 10, "/clock subscriber")
    _tick(probe, node, seconds_to_ns(1.0))
    start = seconds_to_ns(1.0)
    probe.send_controller(open_loop(np.full(N, 0.5), T=10, start_ns=start))
    wait_for(lambda: node.controller is not None, 10, "the controller")
    qd = np.full(N, 0.2)
    hold = -node.safety.gains["damping"] * qd
    cases = [(start + 3 * PERIOD_NS, np.full(N, 0.5), None),
             (start + 10 * PERIOD_NS, hold, "plan_expired"),
             (start - PERIOD_NS, None, "stamp_backwards")]
    for stamp, expected, key in cases:
        probe.send_state(stamp, HOME, qd)
        if expected is None:
            wait_for(lambda: node.diag.counters[key] == 1, 10, key)
            continue
        np.testing.assert_allclose(probe.command_for(stamp), expected)
        assert key is None or node.diag.counters[key] == 1
    probe.send_controller(open_loop(np.full(N, 0.5), T=1000, start_ns=start))
    wait_for(lambda: node.controller.T == 1000, 10, "the long controller")
    _tick(probe, node, start + seconds_to_ns(1.0) + 1)  # plan received at 1.0 s: now too old
    probe.send_state(start + 20 * PERIOD_NS, HOME, qd)
    np.testing.assert_allclose(probe.command_for(start + 20 * PERIOD_NS), hold)
    assert node.diag.counters["stale_plan"] == 1
    probe.send_state(start + 21 * PERIOD_NS, HOME, qd, names=["x"] + NAMES[1:])  # joint missing
    np.testing.assert_allclose(probe.command_for(start + 21 * PERIOD_NS), np.zeros(N))
    assert node.diag.counters["rejected_state"] == 1


def test_reordered_joint_names_give_the_same_command(ros):
    node = executor(ros, mode="realtime", max_plan_age=0.0, max_state_age=0.0)
    probe = Probe(ros)
    connected(probe, node)
    rng = np.random.default_rng(0)
    K = rng.standard_normal((1000, N, 2 * N))
    probe.send_controller(LinearGaussianController.feedback(
        np.zeros((1000, 2 * N)), np.zeros((1000, N)), K, dt_ns=PERIOD_NS, joint_names=NAMES))
    wait_for(lambda: node.controller is not None, 10, "the controller")
    q, qd = HOME + 0.01 * rng.standard_normal(N), 0.01 * rng.standard_normal(N)
    probe.send_state(PERIOD_NS, q, qd)
    first = probe.command_for(PERIOD_NS)
    order = rng.permutation(N)
    probe.send_state(PERIOD_NS + 1, q[order], qd[order], names=[NAMES[i] for i in order])
    np.testing.assert_array_equal(probe.command_for(PERIOD_NS + 1), first)


def test_bad_controllers_are_rejected_and_the_last_good_one_kept(ros):
    node = executor(ros, mode="realtime", max_plan_age=0.0, max_state_age=0.0)
    probe = Probe(ros)
    connected(probe, node)
    good = open_loop(np.full(N, 0.25))
    probe.send_controller(good)
    wait_for(lambda: node.controller is not None, 10, "the controller")
    wrong_joints = LinearGaussianController.open_loop(
        np.zeros((10, N)), 2 * N, dt_ns=PERIOD_NS, joint_names=[f"x{i}" for i in range(N)])
    bad = [b"garbage", good.to_bytes()[:-9], wrong_joints.to_bytes(),
           artifacts.encode(artifacts.Schema("mbrl_ros/policy", 1, {}, extra_tensors=True),
                            {"w": np.zeros(3)}, {})]
    for i, data in enumerate(bad, 1):
        probe.send_controller(data)
        wait_for(lambda: node.diag.counters["rejected_controller"] == i, 10, f"rejection {i}")
    assert node.controller is not None and node.controller.u_hat[0, 0] == 0.25
    probe.send_state(PERIOD_NS, HOME, np.zeros(N))
    np.testing.assert_array_equal(probe.command_for(PERIOD_NS), np.full(N, 0.25))


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
    assert send_controller.run(parser.parse_args(
        ["--make", "hold", "--duration", "0.5", "-o", str(path)])) == 0
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
    node = executor(ros, mode="realtime", max_plan_age=0.0, max_state_age=0.0,
                    stochastic=True, noise_smoothing=1.0)
    probe = Probe(ros)
    connected(probe, node)
    rng = np.random.default_rng(1234)
    good = LinearGaussianController.gaussian(
        np.zeros((20, 2 * N)), np.full((20, N), 0.5), np.zeros((20, N, 2 * N)),
        np.zeros((20, N)), np.broadcast_to(np.eye(N), (20, N, N)), dt_ns=PERIOD_NS,
        start_ns=time.time_ns(), joint_names=NAMES).to_bytes()
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
    wait_for(lambda: node.controller is not None and node.controller.start_ns == start, 10,
             "a good controller")
    probe.send_state(start, HOME, np.zeros(N))
    np.testing.assert_array_equal(probe.command_for(start), np.full(N, 0.125))


def test_realtime_priority_puts_every_thread_of_the_node_under_fifo(node_process):
    """realtime_priority > 0: the executor's threads (its own, rclpy's and the middleware's) run
    under SCHED_FIFO, so a loaded machine cannot starve its commands and watchdogs."""
    proc = node_process("lg_executor", {"robot": "arm2", "mode": "realtime",
                                        "realtime_priority": 10})
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
    probe.send_state(ahead, HOME, np.zeros(N))
    np.testing.assert_array_equal(probe.command_for(ahead), np.full(N, 0.25))
    stamps = [start + k * PERIOD_NS for k in range(1, 6)]
    for stamp in stamps:  # one at a time (the real-time executor keeps only the newest)
        taken = node.diag.counters["received /joint_states"]
        probe.send_state(stamp, HOME, np.zeros(N))
        wait_for(lambda: node.diag.counters["received /joint_states"] > taken, 10, "the state")
    for stamp in stamps[2:]:  # the third in a row from an earlier stamp restarts the timeline
        np.testing.assert_array_equal(probe.command_for(stamp), np.full(N, 0.25))
    assert node.diag.counters["stamp_backwards"] == 2
    assert node.diag.counters["timeline_restarts"] == 1
    assert not any(tag in stamps[:2] for _, tag in probe.commands)
