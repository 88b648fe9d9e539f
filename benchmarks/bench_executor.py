"""The lg_executor's speed.

1. Compute per step, in this process, for the 7-DOF arm and a T = 100 Gaussian controller: the
   controller's act / sample, the safety filter, message parsing and building, and the node's whole
   joint-state callback (parse → act → safety → publish), each against a plain 7×14 numpy
   matrix-vector product measured in the same run.
2. Real time across processes: the arm_sim node (realtime mode, 500 Hz) and the lg_executor
   (realtime mode) as subprocesses; this process measures: it listens to /joint_states and
   /effort_controller/commands, and, as a planner would, publishes a fresh T = 100 hold controller
   (gravity feed-forward) every 50 ms. Reported: achieved command rate, period jitter of the
   commands' arrival (|Δt − 2 ms|) and of the states' (the sim's own), state→command latency (a
   command's arrival here after the arrival of the newest state before it: realtime commands are
   tagged with their send time, not with the state they answer), the executor's own latency
   report (state stamp → send on its clock, sim time here), and states left unanswered.
3. The stale-state watchdog: joint states at 100 Hz stop; the delay until the executor's hold,
   in control periods (configured: 5), on an idle machine, beside CPU hogs, and beside the hogs
   with this process (executor and the stand-in robot driver) under SCHED_FIFO
   (``realtime_priority``; needs root or an rtprio limit).

    tools/isolated .venv/bin/python benchmarks/bench_executor.py [--duration 60] [--skip-realtime]
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))

import rclpy  # noqa: E402
import yaml  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, UInt8MultiArray  # noqa: E402

from mbrl_ros.common.msgconv import (  # noqa: E402
    read_joint_state,
    seconds_to_ns,  # noqa: E402
    stamp_to_ns,
)
from mbrl_ros.control.controller import LinearGaussianController  # noqa: E402
from mbrl_ros.control.safety import SafetyConfig, SafetyLayer
from mbrl_ros.control.scripted import scripted_controller  # noqa: E402
from mbrl_ros.nodes.lg_executor import LGExecutorNode  # noqa: E402
from mbrl_ros.nodes.messages import LATCHED_QOS, command_msg, joint_state_msg  # noqa: E402
from mbrl_ros.robot.description import (
    home_position,
    load_robot,  # noqa: E402
)
from mbrl_ros.robot.gains import robot_gain_caps

PERIOD = 0.002
T = 100


def per_call_us(fn, n=20000, repeats=5) -> float:
    """Best of ``repeats`` mean times of ``fn()`` in µs."""
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / n / 1e3)
    return best


def bench_compute():
    robot = load_robot("arm7")
    names, n = list(robot.joint_names), robot.n_joints
    rng = np.random.default_rng(0)
    A = rng.standard_normal((T, n, n)) * 0.1
    c = LinearGaussianController.gaussian(
        rng.standard_normal((T, 2 * n)),
        rng.standard_normal((T, n)),
        rng.standard_normal((T, n, 2 * n)),
        rng.standard_normal((T, n)),
        A @ np.swapaxes(A, 1, 2) + 0.01 * np.eye(n),
        dt_ns=seconds_to_ns(PERIOD),
        joint_names=names,
    )
    x = np.concatenate([home_position(robot), np.zeros(n)])
    z = rng.standard_normal(n)
    safety = SafetyLayer(
        robot.limits.lower,
        robot.limits.upper,
        robot.limits.velocity,
        robot.limits.effort,
        SafetyConfig(),
        robot_gain_caps(robot, names, PERIOD),
    )
    msg = joint_state_msg(10**9, names, x[:n], x[n:], np.zeros(n))
    u = c.act(x, 50)
    K = c.K[50]

    rclpy.init()
    node = LGExecutorNode(
        parameter_overrides=[
            Parameter("mode", value="realtime"),
            Parameter("stochastic", value=True),
            Parameter("control_period", value=PERIOD),
            Parameter("max_state_age", value=0.0),
            Parameter("diagnostics_period", value=0.0),
        ]
    )
    art = UInt8MultiArray()
    art.data = c.restamp(0).to_bytes()
    node._on_controller(art)
    stamps = iter(range(10**9, 10**18, seconds_to_ns(PERIOD) // 1000))

    def callback():
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(
            next(stamps) % (T * 2_000_000), 1_000_000_000
        )
        node.last_state = None  # stamps cycle through the controller's range
        node._on_state(msg)

    rows = [
        ("numpy 7×14 mat-vec (reference)", per_call_us(lambda: K @ x)),
        ("controller.act(x, t)", per_call_us(lambda: c.act(x, 50))),
        ("controller.sample(x, t, z)", per_call_us(lambda: c.sample(x, 50, z=z))),
        ("controller.index(stamp)", per_call_us(lambda: c.index(123_456_789))),
        (
            "safety.filter (all checks)",
            per_call_us(
                lambda: safety.filter(
                    x[:n], x[n:], u, 10**9, state_time_ns=10**9, plan_time_ns=10**9
                )
            ),
        ),
        ("read_joint_state(msg)", per_call_us(lambda: read_joint_state(msg, names))),
        ("command_msg(u, stamp)", per_call_us(lambda: command_msg(u, 10**9))),
        ("node callback: parse→act→safety→publish", per_call_us(callback, n=5000)),
        (
            "controller decode (T=100, from bytes)",
            per_call_us(lambda: LinearGaussianController.from_bytes(bytes(art.data), names), n=200),
        ),
    ]
    node.destroy_node()
    rclpy.shutdown()
    ref = rows[0][1]
    print(
        f"== bench_executor: compute per step, arm7 (7 joints, dx = 14), T = {T} Gaussian "
        "controller, stochastic"
    )
    for name, us in rows:
        print(f"  {name:42s} {us:8.2f} µs  ({us / ref:6.1f}× the mat-vec)")
    cb = rows[7][1]
    print(
        f"  → one step uses {cb / (PERIOD * 1e6) * 100:.1f} % of a 2 ms period "
        f"(the callback without rclpy's executor and DDS)"
    )


def _spawn(module, params, tmp):
    pfile = Path(tmp) / f"{module}.yaml"
    pfile.write_text(yaml.safe_dump({module: {"ros__parameters": params}}))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            f"mbrl_ros.nodes.{module}",
            "--ros-args",
            "--params-file",
            str(pfile),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats_ms(values) -> str:
    v = np.asarray(values) * 1e3
    return (
        f"p50 {np.percentile(v, 50):.3f} ms, p99 {np.percentile(v, 99):.3f} ms, "
        f"max {v.max():.3f} ms"
    )


def bench_realtime(duration: float, max_state_age: float, warmup: float = 5.0):
    load = os.getloadavg()[0]
    robot = load_robot("arm7")
    hold = scripted_controller("hold", robot, dt_ns=seconds_to_ns(PERIOD), duration=T * PERIOD)
    with tempfile.TemporaryDirectory() as tmp:
        procs = [
            _spawn(
                "arm_sim",
                {
                    "robot": "arm7",
                    "mode": "realtime",
                    "control_period": PERIOD,
                    "physics_timestep": PERIOD,
                    "command_timeout": 0.05,
                },
                tmp,
            ),
            _spawn(
                "lg_executor",
                {
                    "robot": "arm7",
                    "mode": "realtime",
                    "control_period": PERIOD,
                    "use_sim_time": True,
                    "max_state_age": max_state_age,
                    "max_plan_age": 0.5,
                },
                tmp,
            ),
        ]
        rclpy.init()
        node = rclpy.create_node("executor_bench")
        deep = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        lock = threading.Lock()
        state_at, command_at = {}, []
        latest = {"stamp": None}
        recording = threading.Event()
        diag, latencies = {}, []

        def on_state(msg):
            now = time.perf_counter()
            stamp = stamp_to_ns(msg.header.stamp)
            latest["stamp"] = stamp
            if recording.is_set():
                with lock:
                    state_at[stamp] = now

        def on_command(msg):
            now = time.perf_counter()
            if recording.is_set():
                with lock:
                    command_at.append(now)

        def on_diag(msg):
            for s in msg.status:
                if s.name.startswith("lg_executor"):
                    values = {kv.key: kv.value for kv in s.values}
                    diag.update(values)
                    if recording.is_set() and "latency_ms_median" in values:
                        latencies.append(
                            (float(values["latency_ms_median"]), float(values["latency_ms_max"]))
                        )

        ctrl_pub = node.create_publisher(UInt8MultiArray, "/mbrl/controller", LATCHED_QOS)

        def plan():  # a 20 Hz "planner": a fresh T = 100 controller from the latest state
            if latest["stamp"] is not None:
                msg = UInt8MultiArray()
                msg.data = hold.restamp(latest["stamp"]).to_bytes()
                ctrl_pub.publish(msg)

        node.create_subscription(JointState, "/joint_states", on_state, deep)
        node.create_subscription(Float64MultiArray, "/effort_controller/commands", on_command, deep)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        node.create_timer(0.05, plan)
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        stop = threading.Event()
        spinner = threading.Thread(
            target=lambda: [ex.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)]
        )
        spinner.start()
        try:
            deadline = time.monotonic() + 60
            while latest["stamp"] is None and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(warmup)
            cpu0 = [cpu_seconds(p.pid) for p in procs] + [time.process_time()]
            recording.set()
            t0 = time.perf_counter()
            time.sleep(duration)
            recording.clear()
            elapsed = time.perf_counter() - t0
            cpu = [
                (b - a) / elapsed
                for a, b in zip(cpu0, [cpu_seconds(p.pid) for p in procs] + [time.process_time()])
            ]
            time.sleep(0.5)
        finally:
            stop.set()
            spinner.join()
            for p in procs:
                p.send_signal(2)
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            node.destroy_node()
            rclpy.shutdown()
    with lock:
        states = sorted(state_at)
        cmd_times = np.sort(np.array(command_at))
    state_times = np.array([state_at[s] for s in states])
    newest = np.searchsorted(state_times, cmd_times) - 1  # the newest state before each command
    first = np.unique(newest[newest >= 0], return_index=True)[1]  # its first command only
    pairs = np.flatnonzero(newest >= 0)[first]
    latency = cmd_times[pairs] - state_times[newest[pairs]]
    answered = len(pairs)
    cmd_jitter = np.abs(np.diff(cmd_times) - PERIOD)
    state_jitter = np.abs(np.diff(state_times) - PERIOD)
    cmd_rate = len(cmd_times) / elapsed
    print(
        f"== bench_executor: real time across processes, arm7, sim at {1 / PERIOD:.0f} Hz, "
        f"executor realtime mode (watchdog {max_state_age * 1e3:g} ms), a T = {T} controller "
        f"republished at 20 Hz, {elapsed:.1f} s "
        f"measured after {warmup:.0f} s warm-up, {os.cpu_count()} CPU cores, load average "
        f"{load:.1f} before the run"
    )
    missed = len(states) - answered
    print(
        f"  states received {len(states)} ({len(states) / elapsed:.1f} Hz); commands "
        f"{len(cmd_times)} ({cmd_rate:.1f} Hz = {cmd_rate * PERIOD:.3f} of the target); states "
        f"followed by no command before the next state {missed} "
        f"({missed / max(1, len(states)):.2%})"
    )
    print(
        f"  command period jitter |Δt − 2 ms|: {stats_ms(cmd_jitter)}; "
        f"share ≤ 0.5 ms: {np.mean(cmd_jitter <= 0.0005):.2%}"
    )
    print(f"  state period jitter (the sim's own): {stats_ms(state_jitter)}")
    print(
        f"  state→command latency: {stats_ms(latency)}  "
        f"(p50 = {np.percentile(latency, 50) / PERIOD:.2f} periods)"
    )
    if latencies:
        med, worst = np.array(latencies).T
        print(
            f"  executor's reported latency (state stamp → send, sim time): median of window "
            f"medians {np.median(med):.3f} ms, max {worst.max():.3f} ms"
        )
    print(
        f"  CPU use (share of one core): sim {cpu[0]:.0%}, executor {cpu[1]:.0%}, this "
        f"measuring/planner process {cpu[2]:.0%}; machine load average {os.getloadavg()[0]:.1f}"
        " after"
    )
    if diag:
        print(
            f"  executor's own compute (last diagnostics window): mean "
            f"{float(diag.get('compute_us_mean', 'nan')):.1f} µs, max "
            f"{float(diag.get('compute_us_max', 'nan')):.1f} µs; holds: "
            + ", ".join(
                f"{k} {diag[k]}"
                for k in ("stale_state", "stale_plan", "plan_expired", "no_plan")
                if k in diag
            )
        )


def bench_watchdog(trials: int = 20, hogs: int = 3) -> None:
    """Delay from the last joint state to the executor's stale-state hold (periods)."""
    from mbrl_ros.nodes.safe_command_node import fifo_scheduling

    robot = load_robot("arm2")
    period, max_age = 0.01, 0.05
    rclpy.init()
    ex = SingleThreadedExecutor()
    node = LGExecutorNode(
        parameter_overrides=[
            Parameter(k, value=v)
            for k, v in dict(
                robot="arm2",
                mode="realtime",
                control_period=period,
                max_state_age=max_age,
                heartbeat_timeout=0.0,
                max_plan_age=0.0,
            ).items()
        ]
    )
    probe = rclpy.create_node("watchdog_bench")
    pub = probe.create_publisher(JointState, "/joint_states", 10)
    ctrl = probe.create_publisher(UInt8MultiArray, "/mbrl/controller", LATCHED_QOS)
    holds = []  # (arrival, the executor's stale_state count then: same thread, so up to date)
    probe.create_subscription(
        Float64MultiArray,
        "/effort_controller/commands",
        lambda m: holds.append((time.perf_counter(), node.diag.counters["stale_state"])),
        1000,
    )
    for n in (node, probe):
        ex.add_node(n)
    stop = threading.Event()
    spinner = threading.Thread(
        target=lambda: [ex.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)]
    )
    spinner.start()
    zero = np.zeros(robot.n_joints)

    def delays() -> np.ndarray:
        out = []
        for _ in range(trials):
            start = time.time_ns()
            ctrl.publish(
                UInt8MultiArray(
                    data=LinearGaussianController.open_loop(
                        np.zeros((1000, robot.n_joints)),
                        2 * robot.n_joints,
                        dt_ns=seconds_to_ns(period),
                        start_ns=start,
                        joint_names=robot.joint_names,
                    ).to_bytes()
                )
            )
            time.sleep(0.05)
            for k in range(20):
                last = time.perf_counter()
                pub.publish(
                    joint_state_msg(
                        start + (k + 6) * seconds_to_ns(period), robot.joint_names, zero, zero, zero
                    )
                )
                time.sleep(period)
            fired = node.diag.counters["stale_state"]
            holds.clear()
            time.sleep(0.3)
            after = [t for t, count in holds if count > fired]
            if after:
                out.append((after[0] - last) / period)
        return np.array(out)

    time.sleep(1.0)
    rows = [("idle", delays())]
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    try:
        rows.append((f"{hogs} CPU hogs", delays()))
        problem = fifo_scheduling(50)
        rows.append(
            (
                f"{hogs} CPU hogs, SCHED_FIFO 50"
                if problem is None
                else f"SCHED_FIFO not available ({problem})",
                delays() if problem is None else np.array([np.nan]),
            )
        )
    finally:
        for p in procs:
            p.kill()
        stop.set()
        spinner.join()
        rclpy.shutdown()
    print(
        f"== bench_executor: stale-state watchdog (arm2, {1 / period:.0f} Hz states, "
        f"max_state_age {max_age * 1e3:g} ms = {max_age / period:g} periods), delay from the "
        f"last state to the hold, in control periods, {trials} trials each"
    )
    for name, d in rows:
        print(
            f"  {name:32s} min {np.min(d):5.2f}  median {np.median(d):5.2f}  max {np.max(d):5.2f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds (≥ 60)")
    parser.add_argument(
        "--max-state-age",
        type=float,
        default=0.02,
        help="executor watchdog (s); 0 = no watchdog timer (default 0.02)",
    )
    parser.add_argument("--skip-realtime", action="store_true")
    parser.add_argument(
        "--watchdog-only",
        action="store_true",
        help="only the stale-state watchdog measurement (part 3)",
    )
    args = parser.parse_args()
    if not args.watchdog_only:
        bench_compute()
        if not args.skip_realtime:
            bench_realtime(args.duration, args.max_state_age)
    bench_watchdog()


if __name__ == "__main__":
    main()
