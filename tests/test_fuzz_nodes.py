"""The fuzz suite: every subscriber of every node gets more than 1,000 malformed, absurd and
adversarial messages (``fuzz_messages``: joint states stamped far ahead or going backwards or at
1e308, commands, controllers and models and policies mutated or well-formed but absurd, targets,
episode events up to 50,000 levels of nested JSON, heartbeats, diagnostics), interleaved with
good ones, over real DDS to the nine node processes of the package at once. Then:

* no node exits, and every node counted each message it took (``received <topic>`` on
  /diagnostics) — at least 1,000 per subscription;
* every command the torque-commanding nodes sent (their outputs are remapped to topics only they
  publish on) is finite and within the effort limits; the hold engaged on bad states;
* every node recovers when good messages return: an implausible state gets the hold, a good
  controller / policy gives exactly its torque, the planners answer a good state, the fitter
  builds transitions again, the simulator steps on a good command.
"""

import threading
import time

import fuzz_messages as fm
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from ros_harness import wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header, String, UInt8MultiArray

from mbrl_ros.common.msgconv import read_command, read_joint_state, seconds_to_ns
from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.data.topics import episode_event_json
from mbrl_ros.dynamics.base import ModelSignature
from mbrl_ros.dynamics.catalog import new_model
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.nodes.messages import (
    COMMAND_QOS,
    EVENT_QOS,
    STATE_QOS,
    TARGET_QOS,
    command_msg,
    joint_state_msg,
    time_msg,
)
from mbrl_ros.policy.network import GoalPolicy, PolicySignature
from mbrl_ros.robot.description import load_robot

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROBOT = load_robot("arm2")
NAMES = list(ROBOT.joint_names)
N = len(NAMES)
EFFORT = ROBOT.limits.effort
DT = 0.01
DT_NS = seconds_to_ns(DT)
FUZZ = 1100  # messages per topic
DEEP = 10_000
ARTIFACT_QOS = STATE_QOS.__class__(
    depth=DEEP, reliability=STATE_QOS.reliability, durability=TARGET_QOS.durability
)

# node → (parameters, remappings, topics it subscribes)
NODES = {
    "arm_sim": (
        {"robot": "arm2", "lockstep_timeout": 600.0, "wait_for_peers": False},
        {"/joint_states": "/out/arm_sim"},
        ["/effort_controller/commands"],
    ),
    "lg_executor": (
        {
            "robot": "arm2",
            "mode": "realtime",
            "control_period": DT,
            "diagnostics_period": 0.2,
            "max_state_age": 0.0,
        },
        {"/effort_controller/commands": "/out/lg_executor"},
        ["/joint_states", "/mbrl/controller", "/mbrl/planner_heartbeat"],
    ),
    "policy_runner": (
        {"robot": "arm2", "mode": "sync", "control_period": DT, "diagnostics_period": 0.2},
        {"/effort_controller/commands": "/out/policy_runner"},
        ["/joint_states", "/mbrl/target", "/mbrl/policy"],
    ),
    "base_policy": (
        {"robot": "arm2", "mode": "realtime", "control_period": DT},
        {"/mbrl/controller": "/out/base_policy"},
        ["/joint_states"],
    ),
    "mpc_planner": (
        {"robot": "arm2", "control_period": DT, "planner": "ilqr", "horizon": 5, "iterations": 1},
        {"/mbrl/controller": "/out/mpc_planner"},
        ["/joint_states", "/mbrl/target", "/mbrl/dynamics_model"],
    ),
    "dynamics_fitter": (
        {
            "robot": "arm2",
            "model": "mlp",
            "members": 1,
            "hidden": 8,
            "layers": 1,
            "control_period": DT,
            "min_transitions": 10**9,
        },
        {},
        ["/joint_states", "/effort_controller/commands", "/mbrl/episode_events"],
    ),
    "episode_manager": (
        {
            "robot": "arm2",
            "control_period": DT,
            "episode_steps": 20,
            "train_episodes": 1,
            "final_eval_episodes": 0,
            "target_box_min": [-0.27, -0.27, 0.0],
            "target_box_max": [0.27, 0.27, 0.15],
        },
        {},
        ["/joint_states", "/mbrl/dynamics_model", "/diagnostics"],
    ),
    "gps_trainer": (
        {
            "robot": "arm2",
            "horizon": 10,
            "control_period": DT,
            "target": [0.1, 0.1, 0.07],
            "reset_service": "/fuzz/no_reset",
        },
        {"/mbrl/controller": "/out/gps_trainer"},
        ["/joint_states", "/effort_controller/commands", "/mbrl/episode_events"],
    ),
    "recorder": ({}, {}, []),
}
RECORDED = [
    "/joint_states",
    "/effort_controller/commands",
    "/mbrl/target",
    "/mbrl/controller",
    "/mbrl/episode_events",
]


class Probe:
    """Publishes the fuzz and the good messages; records the nodes' outputs and the latest
    /diagnostics values of each node (by hardware id)."""

    def __init__(self, ros):
        self.node = node = ros.node("fuzzer")
        self.lock = threading.Lock()
        self.out: dict[str, list] = {}
        self.diags: dict[str, tuple[float, dict]] = {}
        self.pub = {
            "/joint_states": node.create_publisher(JointState, "/joint_states", STATE_QOS),
            "/effort_controller/commands": node.create_publisher(
                Float64MultiArray, "/effort_controller/commands", COMMAND_QOS
            ),
            "/mbrl/controller": node.create_publisher(
                UInt8MultiArray, "/mbrl/controller", ARTIFACT_QOS
            ),
            "/mbrl/dynamics_model": node.create_publisher(
                UInt8MultiArray, "/mbrl/dynamics_model", ARTIFACT_QOS
            ),
            "/mbrl/policy": node.create_publisher(UInt8MultiArray, "/mbrl/policy", ARTIFACT_QOS),
            "/mbrl/target": node.create_publisher(PointStamped, "/mbrl/target", TARGET_QOS),
            "/mbrl/episode_events": node.create_publisher(
                String, "/mbrl/episode_events", EVENT_QOS
            ),
            "/mbrl/planner_heartbeat": node.create_publisher(Header, "/mbrl/planner_heartbeat", 10),
            "/diagnostics": node.create_publisher(DiagnosticArray, "/diagnostics", 100),
        }
        self.unreadable: list[str] = []  # outputs of the nodes that do not decode
        for name in ("lg_executor", "policy_runner"):
            node.create_subscription(
                Float64MultiArray,
                f"/out/{name}",
                lambda m, k=name: self._keep(k, lambda: read_command(m, N)),
                DEEP,
            )
        for name in ("base_policy", "mpc_planner"):
            node.create_subscription(
                UInt8MultiArray,
                f"/out/{name}",
                lambda m, k=name: self._keep(
                    k, lambda: LinearGaussianController.from_bytes(bytes(m.data))
                ),
                DEEP,
            )
        node.create_subscription(
            JointState,
            "/out/arm_sim",
            lambda m: self._keep("arm_sim", lambda: read_joint_state(m, NAMES)),
            DEEP,
        )
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, DEEP)

    def _keep(self, key, read):
        try:
            value = read()
        except ValueError as exc:
            with self.lock:
                self.unreadable.append(f"{key}: {exc}")
            return
        with self.lock:
            self.out.setdefault(key, []).append(value)

    def _on_diag(self, msg):
        for s in msg.status:
            if s.hardware_id in NODES:
                values = {kv.key: kv.value for kv in s.values}
                with self.lock:
                    self.diags[s.hardware_id] = (time.monotonic(), values)

    def outputs(self, key) -> list:
        with self.lock:
            return list(self.out.get(key, []))

    def value(self, node: str, key: str, default=0.0) -> float:
        with self.lock:
            values = self.diags.get(node, (0.0, {}))[1]
        try:
            return float(values.get(key, default))
        except ValueError:
            return default

    def seen_since(self, node: str, t: float) -> bool:
        with self.lock:
            return self.diags.get(node, (0.0, {}))[0] > t

    def send_state(self, stamp, q, qd=None):
        qd = np.zeros(N) if qd is None else qd
        self.pub["/joint_states"].publish(
            joint_state_msg(stamp, NAMES, np.asarray(q, float), np.asarray(qd, float), np.zeros(N))
        )

    def command_for(self, key, stamp, timeout=20.0, sent_ns=None):
        """``key``'s command answering the state stamped ``stamp``: tagged with it, or, for the
        real-time executor (tags are send times; no watchdog here), the first one tagged at or
        after ``sent_ns``, the wall time just before the state was published."""

        def match(tag):
            return tag == stamp if sent_ns is None else tag >= sent_ns

        wait_for(
            lambda: any(match(tag) for _, tag in self.outputs(key)),
            timeout,
            f"{key}'s command for {stamp}",
        )
        found = [u for u, tag in self.outputs(key) if match(tag)]
        return found[-1] if sent_ns is None else found[0]


def _model_bytes() -> bytes:
    data = random_torque_dataset(ROBOT, 3, 40, control_period=DT)
    model = new_model("mlp", ModelSignature.of(data), "cpu", hidden=8, layers=1, max_epochs=2)
    model.fit(data, None)
    return model.to_bytes()


MODEL = _model_bytes()


def _policy() -> GoalPolicy:
    return GoalPolicy(PolicySignature.for_joints("arm2", NAMES, DT), np.ones(N), (8,), seed=0)


def _fuzz(probe: Probe, rng) -> None:
    """FUZZ messages on each topic, round robin, paced so that no subscriber's queue overflows."""
    good_controller = LinearGaussianController.open_loop(
        np.full((20, N), 0.05), 2 * N, dt_ns=DT_NS, start_ns=time.time_ns(), joint_names=NAMES
    ).to_bytes()
    good_model, good_policy = MODEL, _policy().to_bytes()
    lower, upper = ROBOT.limits.lower, ROBOT.limits.upper
    for _ in range(FUZZ):
        now = time.time_ns()
        last = now - DT_NS
        p = probe.pub
        p["/joint_states"].publish(fm.joint_state(rng, NAMES, lower, upper, now, last))
        p["/effort_controller/commands"].publish(fm.command(rng, N, last))
        p["/mbrl/controller"].publish(fm.controller(rng, good_controller, NAMES, DT_NS, now))
        # no good model: the planner would plan on every good state and skip models meanwhile
        p["/mbrl/dynamics_model"].publish(fm.artifact(rng, good_model, allow_good=False))
        p["/mbrl/policy"].publish(fm.artifact(rng, good_policy))
        p["/mbrl/target"].publish(fm.target(rng, now))
        p["/mbrl/episode_events"].publish(fm.episode_event(rng, last))
        p["/mbrl/planner_heartbeat"].publish(fm.heartbeat(rng, now))
        p["/diagnostics"].publish(fm.diagnostics(rng))
        time.sleep(0.01)


def test_every_subscriber_of_every_node_survives_fuzz_and_recovers(ros, node_process, tmp_path):
    probe = Probe(ros)
    procs = {}
    for name, (params, remap, _) in NODES.items():
        params = dict(params)
        if name == "recorder":
            params["bag_path"] = str(tmp_path / "bag")
        if name == "episode_manager":
            params["output_dir"] = str(tmp_path / "episodes")
        procs[name] = node_process(name, params, remappings=remap)
    start = time.monotonic()
    wait_for(
        lambda: (
            all(probe.seen_since(n, 0) for n in NODES)
            and all(p.get_subscription_count() > 0 for p in probe.pub.values())
        ),
        120,
        f"every node up ({[n for n in NODES if not probe.seen_since(n, 0)]} missing)",
    )
    _fuzz(probe, np.random.default_rng(2024))

    # every subscription of every node took at least 1,000 of the fuzz messages
    def counts():
        got = {
            (n, t): probe.value(n, f"received {t}")
            for n, (_, _, topics) in NODES.items()
            for t in topics
        }
        got |= {("recorder", t): probe.value("recorder", f"messages {t}") for t in RECORDED}
        return got

    try:
        wait_for(lambda: min(counts().values()) >= 1000, 120, "every subscriber's 1,000")
    finally:
        short = {k: v for k, v in counts().items() if v < 1000}
        assert not short, f"subscriptions that took fewer than 1,000 messages: {short}"
    for name, proc in procs.items():
        assert proc.proc.poll() is None, f"{name} exited:\n{proc.output()[-3000:]}"
    assert not probe.unreadable, probe.unreadable[:5]

    # the torque commands: finite, within the limits; the hold engaged on the bad states
    for name in ("lg_executor", "policy_runner"):
        sent = np.array([u for u, _ in probe.outputs(name)])
        assert len(sent) > 100, name
        assert np.all(np.isfinite(sent)) and np.all(np.abs(sent) <= EFFORT), name
        assert probe.value(name, "bad_state") > 100, name
    assert probe.value("lg_executor", "implausible_state") > 50
    for name, key in [
        ("lg_executor", "rejected_controller"),
        ("policy_runner", "rejected_policy"),
        ("policy_runner", "rejected_target"),
        ("mpc_planner", "rejected_model"),
        ("episode_manager", "rejected_model"),
        ("gps_trainer", "rejected_event"),
        ("dynamics_fitter", "rejected_message"),
        ("arm_sim", "rejected_command"),
    ]:
        assert probe.value(name, key) > 50, (name, key)

    # recovery, with stamps after every fuzz stamp the nodes accepted (≤ 0.5 s ahead of them)
    time.sleep(1.0)
    s0 = time.time_ns()
    q = 0.5 * (ROBOT.limits.lower + ROBOT.limits.upper) + np.array([0.2, -0.3])
    probe.send_state(s0, np.full(N, 1e308))  # implausible: the hold at zero velocity
    np.testing.assert_array_equal(probe.command_for("lg_executor", s0, sent_ns=s0), np.zeros(N))
    np.testing.assert_array_equal(probe.command_for("policy_runner", s0), np.zeros(N))

    u = np.array([0.2, -0.1])
    probe.pub["/mbrl/controller"].publish(
        UInt8MultiArray(
            data=LinearGaussianController.open_loop(
                np.tile(u, (500, 1)), 2 * N, dt_ns=DT_NS, start_ns=s0, joint_names=NAMES
            ).to_bytes()
        )
    )
    policy = _policy()
    probe.pub["/mbrl/policy"].publish(UInt8MultiArray(data=policy.to_bytes()))
    target = np.array([0.1, 0.15, 0.07])
    s1 = s0 + 20 * DT_NS
    msg = PointStamped()
    msg.header.stamp = time_msg(s1)
    msg.point.x, msg.point.y, msg.point.z = (float(v) for v in target)
    probe.pub["/mbrl/target"].publish(msg)
    time.sleep(0.3)
    sent = time.time_ns()
    probe.send_state(s1, q)
    np.testing.assert_array_equal(probe.command_for("lg_executor", s1, sent_ns=sent), u)
    np.testing.assert_allclose(
        probe.command_for("policy_runner", s1),
        np.clip(policy.frozen().act(q, np.zeros(N), target), -EFFORT, EFFORT),
    )
    for name in ("mpc_planner", "base_policy"):
        wait_for(
            lambda: any(c.start_ns == s1 for c in probe.outputs(name)),
            20,
            f"{name}'s controller for the good state",
        )
    probe.pub["/mbrl/dynamics_model"].publish(UInt8MultiArray(data=MODEL))
    wait_for(lambda: probe.value("mpc_planner", "models_received") >= 1, 20, "the good model")
    s2 = s1 + 20 * DT_NS
    probe.send_state(s2, q)
    wait_for(
        lambda: (
            any(c.start_ns == s2 for c in probe.outputs("mpc_planner"))
            and probe.value("mpc_planner", "controllers_plan") >= 1
        ),
        30,
        "a plan through the good model",
    )

    before = probe.value("dynamics_fitter", "transitions")
    s3 = s2 + 20 * DT_NS
    # a new episode, as an episode manager would start it: a fuzzed 'end' event (stamped before
    # s0) rightly keeps the fitter from taking states until the next start
    probe.pub["/mbrl/episode_events"].publish(String(data=episode_event_json("start", 0, s3)))
    for k in range(30):
        probe.send_state(s3 + k * DT_NS, q + 0.001 * k)
        probe.pub["/effort_controller/commands"].publish(command_msg(u, s3 + k * DT_NS))
        time.sleep(0.005)
    wait_for(
        lambda: probe.value("dynamics_fitter", "transitions") >= before + 25,
        20,
        "the fitter's new transitions",
    )

    pending = probe.outputs("arm_sim")[-1].stamp_ns
    probe.pub["/effort_controller/commands"].publish(command_msg(np.zeros(N), pending))
    wait_for(lambda: probe.outputs("arm_sim")[-1].stamp_ns > pending, 20, "the sim's next step")

    t = time.monotonic()
    wait_for(lambda: all(probe.seen_since(n, t) for n in NODES), 20, "fresh diagnostics")
    for name, proc in procs.items():
        assert proc.proc.poll() is None, f"{name} exited:\n{proc.output()[-3000:]}"
    print(
        f"fuzz suite: {FUZZ} messages on each of {len(probe.pub)} topics to 9 nodes, "
        f"{time.monotonic() - start:.0f} s"
    )
