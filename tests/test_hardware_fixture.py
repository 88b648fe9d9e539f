"""The hardware-like fixture: the arm6 robot description and arm_sim's mode 'hardware', which
behaves like a ros2_control robot (wall-clock stamps, zero-order hold, zero torque on stale or
malformed commands, no reset service, no /clock, gravity not compensated)."""

import threading
import time
import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from ros_harness import wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_ros.common.msgconv import read_joint_state
from mbrl_ros.nodes.messages import COMMAND_QOS, STATE_QOS, command_msg
from mbrl_ros.robot.description import build_mujoco_model, load_robot
from mbrl_ros.robot.gravity import GravityModel
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, CommandHold, SimConfig

ALPHABETICAL = sorted(load_robot("arm6").joint_names)  # differs from the chain order


# -- the robot description ------------------------------------------------------------------------
def test_arm6_is_a_plausible_six_joint_arm():
    robot = load_robot("arm6")
    assert robot.n_joints == 6 and robot.ee_link == "ee_link"
    assert ALPHABETICAL != list(robot.joint_names)
    model = build_mujoco_model(robot)  # with the scene's floor
    moving = [model.body(link).id for link in robot.link_names[1:]]
    assert 8 <= model.body_mass[moving].sum() <= 25
    assert all(model.body_mass[i] > 0 for i in moving[:-1])
    assert np.all(robot.armature > 0) and np.all(robot.damping > 0)
    assert np.all(robot.friction > 0) and np.all(np.isfinite(robot.limits.lower))
    colliding = {
        model.body(model.geom_bodyid[g]).name
        for g in range(model.ngeom)
        if model.geom_contype[g] or model.geom_conaffinity[g]
    }
    assert set(robot.link_names[:-1]) <= colliding  # every link but the bare ee_link
    for link in ET.parse(robot.urdf_path).getroot().iter("link"):
        inertia = link.find("inertial/inertia")
        if inertia is None:
            continue
        i = {k: float(v) for k, v in inertia.attrib.items()}
        principal = np.linalg.eigvalsh(
            [
                [i["ixx"], i["ixy"], i["ixz"]],
                [i["ixy"], i["iyy"], i["iyz"]],
                [i["ixz"], i["iyz"], i["izz"]],
            ]
        )
        assert principal.min() > 0, link.get("name")
        assert principal[0] + principal[1] >= principal[2], link.get("name")
    fk = ForwardKinematics(robot)
    zero = torch.zeros(6, dtype=torch.float64)
    positions, _ = fk.link_poses(zero)
    shoulder = positions[robot.link_names.index(robot.chain[1].child)]
    assert 0.7 <= (fk.ee_position(zero) - shoulder).norm().item() <= 0.9


def test_arm6_effort_limits_leave_room_over_gravity():
    """max |g(q)| over the joint ranges is at most half the effort limit of each joint, by the
    potential energy's gradient (central differences of Σ m g z_com), independent of MuJoCo's
    bias forces."""
    robot = load_robot("arm6")
    gravity = GravityModel(robot)
    model = build_mujoco_model(robot, scene=None)
    data = mujoco.MjData(model)
    bodies = [model.body(link).id for link in robot.link_names[1:]]

    def potential(q):
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        return 9.81 * sum(model.body_mass[b] * data.xipos[b, 2] for b in bodies)

    rng = np.random.default_rng(0)
    worst = np.zeros(6)
    for _ in range(2000):
        q = rng.uniform(robot.limits.lower, robot.limits.upper)
        worst = np.maximum(worst, np.abs(gravity.torque(q)))
    for _ in range(20):
        q = rng.uniform(robot.limits.lower, robot.limits.upper)
        numeric = np.array(
            [(potential(q + 1e-6 * e) - potential(q - 1e-6 * e)) / 2e-6 for e in np.eye(6)]
        )
        np.testing.assert_allclose(gravity.torque(q), numeric, atol=1e-5)
    assert worst[1] > 10  # the shoulder carries the arm
    assert np.all(worst <= 0.5 * robot.limits.effort), worst / robot.limits.effort


def ee_height(robot, q):
    return ForwardKinematics(robot).ee_position(torch.as_tensor(q))[2].item()


def test_arm6_falls_under_zero_torque_without_gravity_compensation():
    robot = load_robot("arm6")
    tilted = np.array([0.0, 0.5, 0.4, 0.0, 0.0, 0.0])
    heights = {}
    for compensation in (False, True):
        sim = ArmSimulator(
            robot, SimConfig(initial_position=tuple(tilted), gravity_compensation=compensation)
        )
        for _ in range(50):  # 0.5 s
            sim.step(np.zeros(6))
        heights[compensation] = ee_height(robot, sim.measure().position)
    start = ee_height(robot, tilted)
    assert heights[False] < start - 0.1
    assert heights[True] == pytest.approx(start, abs=1e-3)


# -- the core pieces of the hardware mode ---------------------------------------------------------
def test_advance_follows_a_clock_off_the_physics_grid():
    """advance(τ, d): exactly d s of physics in equal substeps of at most the timestep, converging
    to a 20x finer fixed-step run; on the grid it is step()."""
    robot = load_robot("arm6")
    start = (0.3, 0.5, -0.4, 0.2, 0.1, 0.0)
    torque = np.array([3.0, 10.0, -5.0, 1.0, 0.5, -0.2])
    durations = [0.0037, 0.0011, 0.0052, 0.002, 0.00713]

    def run(timestep, durations):
        sim = ArmSimulator(
            robot,
            SimConfig(initial_position=start, physics_timestep=timestep, control_period=timestep),
        )
        for d in durations:
            sim.advance(torque, d)
        assert sim.data.time == pytest.approx(sum(durations), abs=1e-12)
        assert sim.model.opt.timestep == timestep
        return sim.measure().position - start

    moved = run(2e-4, durations)  # 19, 6, 26, 10, 36 substeps
    exact = run(1e-5, [1e-5] * round(sum(durations) / 1e-5))
    assert np.all(np.abs(exact) > 5e-4)
    np.testing.assert_allclose(moved, exact, rtol=0.05)

    config = SimConfig(initial_position=start, physics_timestep=0.002, control_period=0.002)
    a, b = ArmSimulator(robot, config), ArmSimulator(robot, config)
    for _ in range(20):
        a.step(torque)
        b.advance(torque, 0.002)
    np.testing.assert_array_equal(a.measure().position, b.measure().position)
    with pytest.raises(ValueError, match="duration"):
        a.advance(torque, -1.0)


def test_command_hold_is_a_zero_order_hold_with_a_timeout_to_zero_torque():
    hold = CommandHold(2, timeout=0.1)
    assert hold.torque(0.0)[1] is False and np.all(hold.torque(0.0)[0] == 0)
    hold.set(np.array([1.0, -2.0]), now=10.0)
    for now in (10.0, 10.05, 10.1):
        np.testing.assert_array_equal(hold.torque(now)[0], [1.0, -2.0])
    torque, in_force = hold.torque(10.1001)
    assert not in_force and np.all(torque == 0)
    hold.set(np.array([3.0, 4.0]), now=11.0)
    hold.clear()
    assert not hold.torque(11.0)[1]
    for bad in ([1.0], [np.nan, 0.0]):
        with pytest.raises(ValueError):
            hold.set(np.array(bad), now=12.0)


# -- the node over DDS ----------------------------------------------------------------------------
class Robot:
    """The test's side of the fixture: every joint state (raw names, decoded in robot order,
    arrival wall time), commands published in ``ALPHABETICAL`` order, /diagnostics."""

    def __init__(self, ros):
        self.node = ros.node("robot_user")
        self.robot = load_robot("arm6")
        self.lock = threading.Lock()
        self.states, self.names, self.arrivals, self.diags = [], [], [], []
        self.answer = None  # state → command (robot order) or None
        self.steady = None  # a command (robot order) re-sent at 100 Hz, or None
        self.pub = self.node.create_publisher(
            Float64MultiArray, "/effort_controller/commands", COMMAND_QOS
        )
        self.node.create_subscription(JointState, "/joint_states", self._on_state, STATE_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.node.create_timer(0.01, self._tick)
        self.order = self.robot.index_of(ALPHABETICAL)

    def send(self, torque_robot_order, tag=None):
        self.pub.publish(command_msg(np.asarray(torque_robot_order)[self.order], tag))

    def _on_state(self, msg):
        s = read_joint_state(msg, self.robot.joint_names)
        with self.lock:
            self.states.append(s)
            self.names.append(list(msg.name))
            self.arrivals.append(time.time_ns())
            answer = self.answer
        if answer is not None:
            self.send(answer(s), tag=s.stamp_ns)

    def _tick(self):
        with self.lock:  # no old steady command goes out after set_steady returns
            if self.steady is not None:
                self.send(self.steady)

    def set_steady(self, torque):
        with self.lock:
            self.steady = torque

    def _on_diag(self, msg):
        for status in msg.status:
            if status.name.startswith("arm_sim"):
                with self.lock:
                    self.diags.append({kv.key: kv.value for kv in status.values})

    def count(self):
        with self.lock:
            return len(self.states)

    def latest(self):
        with self.lock:
            return self.states[-1]

    def since(self, k):
        with self.lock:
            return self.states[k:]

    def diagnostics(self):
        with self.lock:
            return self.diags[-1] if self.diags else {}


def hardware_params(**kw):
    return {"robot": "arm6", "mode": "hardware", "joint_names": ALPHABETICAL} | kw


@pytest.mark.ros
def test_states_are_wall_clock_stamped_in_the_configured_order_without_sim_services(
    ros, node_process
):
    user = Robot(ros)
    node_process("arm_sim", hardware_params())
    wait_for(lambda: user.count() > 300, 60, "the fixture's joint states")
    with user.lock:
        stamps = np.array([s.stamp_ns for s in user.states])
        arrivals = np.array(user.arrivals)
        names = list(user.names)
    assert all(n == ALPHABETICAL for n in names)
    assert np.all(np.diff(stamps) > 0)
    # the wall clock (not sim time from 0, not a monotonic clock): stamped before arrival, and
    # within a minute of it
    assert np.all(stamps <= arrivals) and np.all(arrivals - stamps < 60e9)
    node = user.node
    wait_for(
        lambda: "/arm_sim/describe_parameters" in dict(node.get_service_names_and_types()),
        30,
        "the fixture's node discovered",
    )
    assert node.count_publishers("/clock") == 0
    assert node.count_publishers("/mbrl/episode_events") == 0
    services = [name for name, _ in node.get_service_names_and_types()]
    assert "/arm_sim/reset" not in services
    wait_for(lambda: "states_per_s" in user.diagnostics(), 10, "the fixture's diagnostics")
    d = user.diagnostics()
    assert float(d["states_per_s"]) > 0 and float(d["zero_torque_s"]) > 0  # no command yet


@pytest.mark.ros
def test_steady_command_is_held_and_stale_commands_become_zero_torque(ros, node_process):
    """Upright (balanced) arm6: a steady pan torque (sent in alphabetical order) turns the pan
    joint its way and is reported as the applied effort; then a gravity + PD law (like the
    executor's) tilts the arm; when the commands stop, the torque becomes zero and the arm falls."""
    user = Robot(ros)
    robot, gravity = user.robot, GravityModel(load_robot("arm6"))
    pan = np.zeros(6)
    pan[0] = 2.0
    user.set_steady(pan)
    node_process("arm_sim", hardware_params())
    wait_for(
        lambda: (
            user.count() > 0
            and user.latest().position[0] > 0.2
            and np.array_equal(user.latest().effort, pan)
        ),
        60,
        "the pan joint turning under the steady command, applied to the joint it names",
    )
    s = user.latest()
    assert np.all(np.abs(s.position[1:]) < 0.05)  # the rest stays up: balanced, no torque

    target = np.array([s.position[0], 0.5, 0.4, 0.0, 0.0, 0.0])
    kp = np.array([30.0, 150.0, 60.0, 0.0, 0.0, 0.0])
    kd = np.array([6.0, 25.0, 10.0, 0.3, 0.3, 0.3])
    user.set_steady(None)
    user.answer = lambda s: (
        gravity.torque(s.position) + kp * (target - s.position) - kd * s.velocity
    )

    def settled():
        s = user.latest()
        return np.all(np.abs(s.position - target)[:3] < 0.1) and np.all(np.abs(s.velocity) < 0.3)

    wait_for(settled, 60, "the arm held near the tilted target")
    held_height = ee_height(robot, user.latest().position)

    # The commands stop. (Not asserted: that no state after the first zero-torque one has torque.
    # Over UDP, a command lost and repaired by DDS holds back the ones after it; they then arrive
    # late, together, and the robot applies them, as a ros2_control robot would.)
    user.answer = None
    wait_for(lambda: np.all(user.latest().effort == 0.0), 30, "zero torque after the timeout")
    wait_for(
        lambda: ee_height(robot, user.latest().position) < held_height - 0.1,
        30,
        "the arm falling under its weight",
    )
    wait_for(
        lambda: int(user.diagnostics().get("command_timeouts", "0")) >= 1,
        10,
        "the timeout on /diagnostics",
    )


@pytest.mark.ros
def test_malformed_commands_are_counted_and_give_zero_torque(ros, node_process):
    user = Robot(ros)
    pan = np.zeros(6)
    pan[0] = -1.5
    user.set_steady(pan)
    node_process("arm_sim", hardware_params(command_timeout=60.0))
    wait_for(
        lambda: user.count() > 0 and np.array_equal(user.latest().effort, pan),
        60,
        "the steady command applied",
    )
    k = user.count()
    user.set_steady(None)
    bad = [
        Float64MultiArray(data=[50.0] * 7),
        Float64MultiArray(data=[np.nan] + [0.0] * 5),
        Float64MultiArray(data=[np.inf] * 6),
    ]
    for msg in bad:
        user.pub.publish(msg)
    wait_for(
        lambda: user.diagnostics().get("rejected_command") == "3",
        30,
        "three rejected commands on /diagnostics",
    )
    wait_for(lambda: np.all(user.latest().effort == 0.0), 30, "zero torque")
    n = user.count()
    wait_for(lambda: user.count() > n + 50, 30, "states after the malformed commands")
    # The steady commands were all taken before the first malformed one (one publisher, in
    # order), so from the first zero-torque state on, no command is in force.
    after = user.since(k)
    first = next(i for i, s in enumerate(after) if np.all(s.effort == 0.0))
    assert all(np.all(s.effort == 0.0) for s in after[first:])  # not the bad ones, not held
    assert user.diagnostics()["commands_applied"] != "0"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"use_sim_time": True}, "'use_sim_time'"),
        ({"episode_steps": 10}, "'episode_steps' = 10"),
        ({"real_time_factor": 2.0}, "'real_time_factor' = 2.0"),
        ({"drop_probability": 0.9}, "'drop_probability' = 0.9 is out of range"),
    ],
)
def test_hardware_mode_refuses_what_a_robot_does_not_have(node_process, params, message):
    proc = node_process("arm_sim", hardware_params() | params)
    assert proc.wait(60) == 2
    out = proc.output()
    assert "[arm_sim] cannot start" in out and message in out, out
    assert "Traceback" not in out


@pytest.mark.ros
def test_hardware_mode_stops_after_its_duration_and_on_sigint(node_process):
    """The loop thread ends the node after ``duration`` s of wall time (status 0), and stops with
    it on a stop signal."""
    timed = node_process("arm_sim", hardware_params(duration=1.0), name="timed")
    assert timed.wait(60) == 0
    assert "duration 1 s" in timed.output() and "Traceback" not in timed.output()
    running = node_process("arm_sim", hardware_params(), name="running")
    wait_for(lambda: "hardware at 500 Hz" in running.output(), 60, "the fixture running")
    running.proc.send_signal(2)
    assert running.wait(30) == 0 and "Traceback" not in running.output()
