"""Simulator speed and the hardware-like fixture's timing.

1. The 7-DOF arm's core: raw MuJoCo steps/s and the simulator core's control steps/s and real-time
   factor (control period 10 ms = 5 physics steps of 2 ms).
2. ``arm_sim`` in mode 'hardware' (arm6, 500 Hz, state_jitter 0.2 ms, drop_probability 0.2 %) as
   a subprocess, answered by this process with a gravity hold on every state (as an executor
   would): achieved state rate, inter-state interval of the stamps (median, p99, max) and its
   deviation from the 2 ms period (median, p99), gaps (a dropped or missed state), and the
   arrival latency here (arrival − stamp, both wall clock). Run it in a private network namespace:

    tools/isolated .venv/bin/python benchmarks/bench_sim.py [--duration 20] [--skip-hardware]
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

import mujoco
import numpy as np

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))

import rclpy  # noqa: E402
import yaml  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from mbrl_ros.common.msgconv import read_joint_state  # noqa: E402
from mbrl_ros.nodes.messages import COMMAND_QOS, STATE_QOS, command_msg  # noqa: E402
from mbrl_ros.robot.description import load_robot  # noqa: E402
from mbrl_ros.robot.gravity import GravityModel  # noqa: E402
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig  # noqa: E402

PERIOD = 0.002  # s, the hardware mode's default


def rate(fn, seconds=2.0):
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def bench_core():
    robot = load_robot("arm7")
    sim = ArmSimulator(robot, SimConfig(physics_timestep=0.002, control_period=0.01))
    torque = 0.2 * robot.limits.effort
    raw = rate(lambda: mujoco.mj_step(sim.model, sim.data))
    raw5 = rate(lambda: mujoco.mj_step(sim.model, sim.data, nstep=5))
    control = rate(lambda: (sim.step(torque), sim.measure()))
    print("== bench_sim: 7-DOF arm, MuJoCo", mujoco.__version__)
    print(
        f"raw mj_step (2 ms):           {raw:10.0f} steps/s   real-time factor {raw * 0.002:7.1f}"
    )
    print(
        f"ArmSimulator step+measure:    {control:10.0f} steps/s   real-time factor "
        f"{control * 0.01:7.1f}  (10 ms control period)"
    )
    print(
        f"core overhead per control step: {1e6 / control - 1e6 / raw5:6.1f} µs on top of "
        f"mj_step(nstep=5) ({1e6 / raw5:.1f} µs)"
    )


def bench_hardware(duration: float):
    robot = load_robot("arm6")
    gravity = GravityModel(robot)
    names = robot.joint_names
    stamps, arrivals = [], []
    lock = threading.Lock()
    rclpy.init()
    node = rclpy.create_node("bench_sim_hardware")
    pub = node.create_publisher(Float64MultiArray, "/effort_controller/commands", COMMAND_QOS)

    def on_state(msg):
        arrival = time.time_ns()
        s = read_joint_state(msg, names)
        pub.publish(command_msg(gravity.torque(s.position)))
        with lock:
            stamps.append(s.stamp_ns)
            arrivals.append(arrival)

    node.create_subscription(JointState, "/joint_states", on_state, STATE_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / "arm_sim.yaml"
        params.write_text(
            yaml.safe_dump(
                {
                    "arm_sim": {
                        "ros__parameters": {
                            "robot": "arm6",
                            "mode": "hardware",
                            "control_period": PERIOD,
                            "state_jitter": 0.0002,
                            "drop_probability": 0.002,
                        }
                    }
                }
            )
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mbrl_ros.nodes.arm_sim",
                "--ros-args",
                "--params-file",
                str(params),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not stamps and time.monotonic() < deadline:
                time.sleep(0.05)
            if not stamps:
                raise SystemExit("arm_sim (hardware) published no joint state in 60 s")
            time.sleep(1.0 + duration)  # the first second (discovery, start-up) is left out
        finally:
            proc.send_signal(2)
            proc.wait(timeout=10)
    executor.shutdown(timeout_sec=2.0)
    node.destroy_node()
    rclpy.try_shutdown()

    with lock:
        t, a = np.array(stamps), np.array(arrivals)
    keep = t >= t[0] + 1e9
    t, a = t[keep], a[keep]
    dt_ms = np.diff(t) / 1e6
    gaps = int(np.sum(dt_ms > 1.5 * PERIOD * 1e3))
    regular = dt_ms[dt_ms <= 1.5 * PERIOD * 1e3]
    dev = np.abs(regular - PERIOD * 1e3)
    lat_ms = (a - t) / 1e6
    span = (t[-1] - t[0]) / 1e9
    print(
        f"\n== arm_sim mode 'hardware': arm6, {PERIOD * 1e3:g} ms period (500 Hz), jitter 0.2 ms "
        f"std, drops 0.2 %, answered with a gravity hold; {span:.1f} s, {os.cpu_count()} CPUs"
    )
    print(
        f"achieved state rate:        {(len(t) - 1) / span:8.1f} states/s   "
        f"(nominal {1 / PERIOD:.0f})"
    )
    print(
        f"inter-state interval (ms):  median {np.median(dt_ms):6.3f}  p99 "
        f"{np.percentile(dt_ms, 99):6.3f}  max {dt_ms.max():7.3f}"
    )
    print(
        f"|interval − period| (ms):   median {np.median(dev):6.3f}  p99 "
        f"{np.percentile(dev, 99):6.3f}  (gaps of > 1.5 periods left out)"
    )
    print(
        f"gaps > 1.5 periods:         {gaps:8d}   ({100 * gaps / len(dt_ms):.2f} % of intervals: "
        f"drops and missed cycles)"
    )
    print(
        f"arrival latency here (ms):  median {np.median(lat_ms):6.3f}  p99 "
        f"{np.percentile(lat_ms, 99):6.3f}"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=20.0, help="s of hardware-mode states")
    ap.add_argument("--skip-hardware", action="store_true")
    args = ap.parse_args()
    bench_core()
    if not args.skip_hardware:
        bench_hardware(args.duration)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
