"""Every node stops cleanly on SIGINT and on SIGTERM under CPU load: exit status 0 within 2 s of
the signal (the requirement itself), with no traceback, C++ abort or error in its output, also when
the signal comes twice (a terminal's Ctrl-C and the launcher's) and when the node is busy: the
fitter mid-fit (in its thread) and the planner mid-plan (in its joint-state callback, seconds per
plan here)."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time

import pytest
from data_testing import lockstep_messages, write_bag
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from ros_harness import wait_for
from sensor_msgs.msg import JointState
from std_msgs.msg import Header, UInt8MultiArray
from test_packaging import setup_nodes

from mbrl_ros.common.msgconv import ns_to_sec_nanosec
from mbrl_ros.dynamics.base import ModelSignature
from mbrl_ros.dynamics.catalog import new_model
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.nodes.messages import LATCHED_QOS, STATE_QOS, TARGET_QOS
from mbrl_ros.robot.description import load_robot

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

STOP_WITHIN_S = 2.0  # the requirement: exit 0 within 2 s of the signal
HOG_PROCESSES = 2  # busy processes beside the node: one per core of the 2-core CI machine
SECOND_SIGNAL_S = 0.1  # the same signal again after this long, as from a launcher after Ctrl-C
READY_TIMEOUT_S = 90.0  # start-up, and the planners' first plan, on a loaded machine
ARM2 = load_robot("arm2")
PLANNER_PERIOD = 0.05
# A plan takes seconds (about 5 s on an idle core): longer than the 2 s the planner has to stop,
# and long enough that the test sees each planner inside a plan (no heartbeat for 0.5 s).
SLOW_PLANNER = {
    "robot": "arm2",
    "control_period": PLANNER_PERIOD,
    "planner": "cem",
    "samples": 4000,
    "elites": 40,
    "horizon": 40,
    "iterations": 300,
    "torch_threads": 1,
}
BAD_OUTPUT = ("Traceback", "terminate called", "KeyboardInterrupt", "[ERROR]", "did not stop")


def _params(executable: str, tmp_path, name: str) -> dict:
    """A minimal working configuration of ``executable`` (instance ``name``): the 2-link arm, the
    episode manager with arm7's task (its target box)."""
    if executable == "dynamics_fitter":  # fits at start-up, with no end in sight
        data = tmp_path / "data.safetensors"
        if not data.exists():
            random_torque_dataset(ARM2, 6, 100, seed=4).save(data)
        return {
            "robot": "arm2",
            "dataset": str(data),
            "model": "ensemble",
            "members": 2,
            "min_transitions": 100,
            "max_epochs": 100000,
            "patience": 100000,
            "torch_threads": 1,
        }
    if executable == "replay":  # plays a bag in a loop
        bag = tmp_path / "bag"
        if not bag.exists():
            write_bag(bag, lockstep_messages(100))
        return {"bag": str(bag), "loop": True}
    return {
        "arm_sim": {"robot": "arm2", "mode": "realtime"},
        "lg_executor": {"robot": "arm2", "mode": "realtime"},
        "base_policy": {"robot": "arm2", "mode": "realtime"},
        "episode_manager": {
            "robot": "arm7",
            "control_period": PLANNER_PERIOD,
            "episode_steps": 20,
            "train_episodes": 1,
            "final_eval_episodes": 0,
        },
        "mpc_planner": SLOW_PLANNER,
        "gps_trainer": {
            "robot": "arm2",
            "initial_position": [0.3, 0.5],
            "target": [0.0546, 0.2167, 0.07],
            "iterations": 1,
            "samples": 2,
            "horizon": 20,
        },
        "policy_runner": {"robot": "arm2"},
        "solar_runner": {"robot": "arm2"},  # waits for a model and a controller
        "recorder": {"bag_path": str(tmp_path / f"{name}_bag")},
    }[executable]


class Observer:
    """What the test sees of the nodes: who has published diagnostics (their latest values) or
    messages on a topic, and when each planner instance last sent its heartbeat."""

    def __init__(self, ros):
        self.node = ros.node("signal_observer")
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.values: dict[str, dict[str, str]] = {}
        self.heartbeats: dict[str, float] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 100)
        self.node.create_subscription(Header, "/mbrl/planner_heartbeat", self._on_beat, 100)

    def _on_diag(self, msg) -> None:
        with self.lock:
            for s in msg.status:
                name = s.name.split(":")[0]
                self.seen.add(name)
                self.values[name] = {v.key: v.value for v in s.values}

    def _on_beat(self, msg) -> None:
        with self.lock:
            self.heartbeats[msg.frame_id] = time.monotonic()

    def watch(self, topic: str, msg_type, name: str) -> None:
        """Count ``name`` as seen once a message arrives on ``topic``."""

        def on_msg(_msg):
            with self.lock:
                self.seen.add(name)

        self.node.create_subscription(msg_type, topic, on_msg, 10)

    def has_seen(self, name: str) -> bool:
        with self.lock:
            return name in self.seen

    def count(self, name: str, key: str) -> int:
        """Counter ``key`` in node ``name``'s latest diagnostics (0 before it appears)."""
        with self.lock:
            return int(self.values.get(name, {}).get(key, 0))

    def silent_for(self, name: str) -> float:
        """Seconds since planner ``name``'s last heartbeat (0 before the first)."""
        with self.lock:
            last = self.heartbeats.get(name)
        return 0.0 if last is None else time.monotonic() - last


def _model_bytes() -> bytes:
    data = random_torque_dataset(ARM2, 3, 40, control_period=PLANNER_PERIOD, hold_steps=2)
    model = new_model("mlp", ModelSignature.of(data), "cpu", hidden=16, layers=1, max_epochs=3)
    model.fit(data, None)
    return model.to_bytes()


def _make_plan(observer: Observer, planners: list) -> None:
    """Give the ``planners`` a model, a target and joint states until each has made a plan (its
    first model load and plan did their one-time imports) and is stuck in the next: no
    heartbeat for 0.5 s, as the heartbeat timer cannot run during the joint-state callback."""
    node = observer.node
    model = node.create_publisher(UInt8MultiArray, "/mbrl/dynamics_model", LATCHED_QOS)
    target = node.create_publisher(PointStamped, "/mbrl/target", TARGET_QOS)
    state = node.create_publisher(JointState, "/joint_states", STATE_QOS)
    model.publish(UInt8MultiArray(data=_model_bytes()))
    goal = PointStamped()
    goal.point.x, goal.point.y, goal.point.z = 0.1, 0.2, 0.07
    target.publish(goal)
    msg = JointState(
        name=list(ARM2.joint_names), position=[0.3, 0.4], velocity=[0.0, 0.0], effort=[0.0, 0.0]
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    for k in itertools.count():  # the first states may come before the model or the target
        if all(
            observer.count(p.name, "controllers_plan") > 0 and observer.silent_for(p.name) > 0.5
            for p in planners
        ):
            return
        assert time.monotonic() < deadline, "the planners did not start planning: " + "; ".join(
            f"{p.name}: {observer.count(p.name, 'controllers_plan')} plans, heartbeat silent "
            f"{observer.silent_for(p.name):.1f} s, values {observer.values.get(p.name)}\n"
            f"{p.output()[-2000:]}"
            for p in planners
        )
        msg.header.stamp.sec, msg.header.stamp.nanosec = ns_to_sec_nanosec(
            k * int(PLANNER_PERIOD * 1e9)
        )
        state.publish(msg)
        time.sleep(0.2)


def _hog() -> list[subprocess.Popen]:
    return [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(HOG_PROCESSES)
    ]


def _stop(proc, sig: signal.Signals) -> str:
    """Send ``sig`` (twice) and wait for the exit; the output after the signal."""
    before = len(proc.output())
    t0 = time.monotonic()
    proc.proc.send_signal(sig)
    time.sleep(SECOND_SIGNAL_S)
    proc.proc.send_signal(sig)  # a no-op once the process has exited
    try:
        status = proc.wait(timeout=max(0.0, STOP_WITHIN_S - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:  # SIGABRT: faulthandler prints where each thread is
        proc.proc.send_signal(signal.SIGABRT)
        proc.proc.wait(timeout=10)
        raise AssertionError(
            f"{proc.name} still running {STOP_WITHIN_S} s after "
            f"{sig.name}:\n{proc.output()[-6000:]}"
        ) from None
    out = proc.output()
    assert status == 0, f"{proc.name} exited with {status} after {sig.name}:\n{out[-3000:]}"
    return out[before:]


@pytest.mark.parametrize("executable", sorted(setup_nodes()))  # every node of the package
def test_node_exits_cleanly_within_2_s_of_sigint_and_sigterm_under_load(
    executable, ros, node_process, tmp_path, monkeypatch
):
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")
    observer = Observer(ros)
    procs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        name = f"{executable}_{sig.name.lower()}"
        remappings = None
        if executable == "replay":  # no diagnostics: seen by what it plays
            remappings = {"/joint_states": f"/{name}/joint_states"}
            observer.watch(f"/{name}/joint_states", JointState, name)
        procs[sig] = node_process(executable, _params(executable, tmp_path, name), name, remappings)
    for proc in procs.values():
        wait_for(
            lambda: observer.has_seen(proc.name) or proc.proc.poll() is not None,
            READY_TIMEOUT_S,
            f"{proc.name} running",
        )
        assert proc.proc.poll() is None, proc.output()
    if executable == "mpc_planner":
        _make_plan(observer, list(procs.values()))
    hog = _hog()
    try:
        for sig, proc in procs.items():
            after = _stop(proc, sig)
            assert not [b for b in BAD_OUTPUT if b in proc.output()], proc.output()[-3000:]
            assert "Failed to publish" not in after, after
    finally:
        for p in hog:
            p.kill()
            p.wait()


STUCK_TEARDOWN = """
import sys, time
from rclpy.node import Node
from mbrl_ros.nodes.runner import run_node

class StuckTeardown(Node):
    def __init__(self):
        super().__init__("stuck_teardown")
        self.exit_status = 0
        print("ready", flush=True)

    def close(self):
        if sys.argv[1] == "close-fails":
            raise RuntimeError("close failed")

    def destroy_node(self):  # the middleware's teardown of a node, hanging
        time.sleep(60)

sys.exit(run_node(StuckTeardown, "stuck_teardown"))
"""


@pytest.mark.parametrize("close, status", [("close-ok", 0), ("close-fails", 1)])
def test_a_node_whose_teardown_hangs_ends_by_itself_with_its_status(close, status):
    """A ``destroy_node`` that hangs after the node's work is done (Fast DDS's teardown did, now
    and then, under load: the launcher then killed the node and failed a finished run) is given
    up: the process says so and exits by itself with the node's status, 1 where ``close()``
    raised (the teardown here would hang for 60 s, longer than the test waits)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_TEARDOWN, close],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert "[stuck_teardown] destroying the node in the middleware took more than" in err, err
