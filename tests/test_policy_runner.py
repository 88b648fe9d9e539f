"""The policy_runner node over real DDS: its commands are the policy's torques for the states and
targets it gets (sync waiting, target stamps), a policy producing NaN gives the safe hold, a
policy for another robot / joints / control period is refused, the e-stop latches; and the
'policy' graph in lockstep equals the same policy run offline."""

import json
import threading

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PointStamped
from rclpy.parameter import Parameter
from ros_harness import CommandProbe, launch_graph, wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, UInt8MultiArray
from std_srvs.srv import SetBool

from mbrl_ros.common.artifacts import ArtifactError, write_file
from mbrl_ros.common.msgconv import read_command, seconds_to_ns
from mbrl_ros.control.safety import SafetyConfig, SafetyLayer
from mbrl_ros.nodes.messages import LATCHED_QOS, STATE_QOS, TARGET_QOS, joint_state_msg, time_msg
from mbrl_ros.nodes.params import ConfigError
from mbrl_ros.nodes.policy_runner import PolicyRunnerNode
from mbrl_ros.policy.network import GoalPolicy, PolicySignature
from mbrl_ros.policy.rollout import final_distance, run_episode
from mbrl_ros.robot.description import home_position, load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.episodes import TargetSampler

pytestmark = pytest.mark.ros

ROBOT = load_robot("arm2")
NAMES = list(ROBOT.joint_names)
N = 2
DT = 0.05
DT_NS = seconds_to_ns(DT)
TARGET = np.array([0.1, 0.15, 0.07])


def make_policy(robot="arm2", names=NAMES, dt=DT, seed=0, overflow=False):
    """A seeded arm2 policy whose torques depend visibly on state and target. ``overflow``:
    first-layer weights +1e308 on q1 and −1e308 on q2, so states with q1, q2 > 1 rad give
    inf − inf = NaN (the artifact itself is finite)."""
    sig = PolicySignature.for_joints(robot, names, dt)
    p = GoalPolicy(sig, np.ones(len(names)), (16, 16), seed=seed)
    with torch.no_grad():
        p.layers[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
        if overflow:
            p.layers[0].weight[:, 0] = 1e308
            p.layers[0].weight[:, 1] = -1e308
    return p


class Probe(CommandProbe):
    """Test node: publishes states, targets and policies; records commands and the runner's
    diagnostics."""

    def __init__(self, ros):
        self.node = ros.node("probe")
        self.lock = threading.Lock()
        self.commands: list[tuple[np.ndarray, int | None]] = []
        self.diags: list[tuple[bytes, str]] = []
        self.state_pub = self.node.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.target_pub = self.node.create_publisher(PointStamped, "/mbrl/target", TARGET_QOS)
        self.policy_pub = self.node.create_publisher(UInt8MultiArray, "/mbrl/policy", LATCHED_QOS)
        self.node.create_subscription(
            Float64MultiArray, "/effort_controller/commands", self._on_command, STATE_QOS
        )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 100)
        self.estop = self.node.create_client(SetBool, "/policy_runner/estop")

    def _on_command(self, msg):
        with self.lock:
            self.commands.append(read_command(msg, N))

    def _on_diag(self, msg):
        with self.lock:
            self.diags += [
                (bytes(s.level), s.message)
                for s in msg.status
                if s.name.startswith("policy_runner")
            ]

    def n_commands(self):
        with self.lock:
            return len(self.commands)

    def send_state(self, stamp_ns, q, qd):
        self.state_pub.publish(
            joint_state_msg(
                stamp_ns, NAMES, np.asarray(q, float), np.asarray(qd, float), np.zeros(N)
            )
        )

    def send_target(self, stamp_ns, target):
        msg = PointStamped()
        msg.header.stamp = time_msg(stamp_ns)
        msg.point.x, msg.point.y, msg.point.z = (float(v) for v in target)
        self.target_pub.publish(msg)

    def send_policy(self, data: bytes):
        self.policy_pub.publish(UInt8MultiArray(data=data))


def runner(ros, **params):
    params = {"robot": "arm2", "control_period": DT} | params
    node = PolicyRunnerNode(
        context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]
    )
    ros.add(node)
    return node


def connected(probe, node):
    wait_for(
        lambda: (
            probe.state_pub.get_subscription_count() > 0
            and probe.policy_pub.get_subscription_count() > 0
            and probe.target_pub.get_subscription_count() > 0
            and probe.node.count_publishers("/effort_controller/commands") > 0
        ),
        10,
        "probe ↔ policy runner discovery",
    )


def expected(policy, q, qd, target):
    return policy.frozen().act(np.asarray(q, float), np.asarray(qd, float), target)


def test_commands_are_the_policys_torques_and_sync_waits_for_policy_and_target(ros):
    node = runner(ros, mode="sync")
    probe = Probe(ros)
    connected(probe, node)
    p = make_policy()
    q, qd = np.array([0.3, -0.4]), np.array([0.5, -0.2])
    first = seconds_to_ns(1.0)
    probe.send_state(first, q, qd)
    wait_for(lambda: node.pending is not None, 10, "the runner to hold the state")
    probe.send_policy(p.to_bytes())
    wait_for(lambda: node.policy is not None, 10, "the policy")
    probe.send_target(first + DT_NS, TARGET)  # holds only from a later stamp: still waiting
    wait_for(lambda: node.targets.at(first + DT_NS) is not None, 10, "the target")
    assert node.pending is not None and probe.n_commands() == 0
    probe.send_target(first, TARGET)
    np.testing.assert_array_equal(probe.command_for(first), expected(p, q, qd, TARGET))
    rng = np.random.default_rng(1)
    for k in range(1, 6):  # every state answered, tagged with its stamp
        q, qd = rng.uniform(-1, 1, N), rng.uniform(-2, 2, N)
        stamp = first + k * DT_NS
        probe.send_state(stamp, q, qd)
        np.testing.assert_array_equal(probe.command_for(stamp), expected(p, q, qd, TARGET))
    assert node.diag.counters["states"] == 6 and node.diag.counters["commands"] == 6


def test_a_policy_producing_nan_gives_the_safe_hold(ros):
    node = runner(ros, mode="realtime", max_state_age=0.0)
    probe = Probe(ros)
    connected(probe, node)
    p = make_policy(overflow=True)
    with pytest.raises(ArtifactError, match="beyond the bound"):
        p.to_bytes()  # such weights cannot travel as an artifact: given to the node directly
    node._use(p, "test")
    probe.send_target(0, TARGET)
    wait_for(lambda: node.policy is not None and node.targets.at(0) is not None, 10, "inputs")
    q_nan, qd = np.array([2.0, 2.0]), np.array([0.3, -0.6])
    assert not np.all(np.isfinite(expected(p, q_nan, qd, TARGET)))
    hold = -node.safety.gains["damping"] * qd
    np.testing.assert_allclose(probe.answer(DT_NS, q_nan, qd), hold)
    assert node.diag.counters["non_finite_command"] == 1
    q = np.array([0.2, -0.3])  # finite there: the policy's torque again
    np.testing.assert_array_equal(probe.answer(2 * DT_NS, q, qd), expected(p, q, qd, TARGET))


def test_policies_for_another_robot_joints_or_period_are_refused(ros, tmp_path):
    node = runner(ros, mode="realtime", max_state_age=0.0)
    probe = Probe(ros)
    connected(probe, node)
    good = make_policy()
    probe.send_policy(good.to_bytes())
    wait_for(lambda: node.policy is not None, 10, "the good policy")
    arm7 = load_robot("arm7")
    bad = [
        make_policy("arm7", list(arm7.joint_names)),
        make_policy(names=NAMES[::-1]),
        make_policy(dt=0.01),
        make_policy(robot="arm2b"),
        b"not a policy",
    ]
    for i, p in enumerate(bad, 1):
        probe.send_policy(p if isinstance(p, bytes) else p.to_bytes())
        wait_for(lambda: node.diag.counters["rejected_policy"] == i, 10, f"rejection {i}")
    probe.send_target(0, TARGET)
    wait_for(lambda: node.targets.at(0) is not None, 10, "the target")
    q, qd = np.array([0.1, 0.2]), np.zeros(N)
    np.testing.assert_array_equal(probe.answer(DT_NS, q, qd), expected(good, q, qd, TARGET))
    path = tmp_path / "arm7.safetensors"
    write_file(path, bad[0].to_bytes())
    with pytest.raises(ConfigError, match="robot 'arm7', not 'arm2'"):
        runner(ros, policy_file=str(path))
    with pytest.raises(ConfigError, match="policy_file"):
        runner(ros, policy_file=str(tmp_path / "missing.safetensors"))


def test_estop_latches_the_hold_until_released(ros, tmp_path):
    path = tmp_path / "policy.safetensors"
    p = make_policy()
    write_file(path, p.to_bytes())
    node = runner(ros, mode="realtime", max_state_age=0.0, policy_file=str(path))
    probe = Probe(ros)
    connected(probe, node)
    probe.send_target(0, TARGET)
    wait_for(lambda: node.targets.at(0) is not None, 10, "the target")
    q, qd = np.array([0.1, 0.2]), np.array([0.4, -0.4])
    np.testing.assert_array_equal(probe.answer(DT_NS, q, qd), expected(p, q, qd, TARGET))
    before = probe.n_commands()
    assert probe.call_estop(True).success
    wait_for(lambda: probe.n_commands() > before, 10, "the hold at the e-stop")
    hold = -node.safety.gains["damping"] * qd
    for k in range(2, 5):
        np.testing.assert_allclose(probe.answer(k * DT_NS, q, qd), hold)
    wait_for(
        lambda: any(
            level == DiagnosticStatus.ERROR and "e-stop" in text for level, text in probe.diags
        ),
        10,
        "an ERROR diagnostic",
    )
    assert probe.call_estop(False).success
    np.testing.assert_array_equal(probe.answer(5 * DT_NS, q, qd), expected(p, q, qd, TARGET))


@pytest.mark.timeout(240)
def test_policy_graph_in_lockstep_equals_the_policy_run_offline(tmp_path):
    """`mbrl-ros launch policy` (sim + policy runner + episode manager, lockstep) gives exactly the
    final distances of the same policy, targets, resets and safety layer offline."""
    p = make_policy(seed=4)
    path = tmp_path / "policy.safetensors"
    write_file(path, p.to_bytes())
    episodes, length = 3, 1.0
    result = launch_graph(
        [
            "policy",
            f"policy_file:={path}",
            f"episodes:={episodes}",
            f"episode_length:={length}",
            f"output_dir:={tmp_path}",
        ],
        200,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    records = json.loads((tmp_path / "results.json").read_text())
    got = [r["final_distance"] for r in records]

    sim = ArmSimulator(
        ROBOT, SimConfig(control_period=DT, initial_position_noise=0.3, hold_damping=0.1, seed=0)
    )  # config/mpc_arm2.yaml
    safety = SafetyLayer.for_robot(ROBOT, NAMES, DT, SafetyConfig())
    sampler = TargetSampler(
        ROBOT, (np.array([-0.27, -0.27, 0.0]), np.array([0.27, 0.27, 0.15])), 1000
    )
    fk, frozen = ForwardKinematics(ROBOT), p.frozen()
    offline = []
    for e in range(episodes):
        target = sampler.sample()
        np.testing.assert_allclose(records[e]["target"], target)
        episode = run_episode(
            sim,
            lambda x, t: frozen.act(x[:N], x[N:], target),
            target,
            int(round(length / DT)),
            home_position(ROBOT) if e == 0 else None,
            safety,
        )
        offline.append(final_distance(fk, episode))
    np.testing.assert_allclose(got, offline, rtol=0, atol=1e-12)
    assert len(set(np.round(got, 6))) == episodes  # the episodes differ
