"""Lockstep round trip over DDS between processes: the arm_sim node (subprocess) publishes state k,
this process answers with the command for k, the sim steps and publishes k+1. Reports the median and
p99 of (command k sent → state k+1 received) and the sustained lockstep rate."""

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
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from mbrl_ros.common.msgconv import stamp_to_ns  # noqa: E402
from mbrl_ros.nodes.messages import COMMAND_QOS, STATE_QOS, command_msg  # noqa: E402

STEPS, WARMUP = 5000, 200


def main():
    params = {
        "arm_sim": {
            "ros__parameters": {
                "robot": "arm7",
                "mode": "lockstep",
                "control_period": 0.002,
                "lockstep_timeout": 30.0,
            }
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        pfile = Path(tmp) / "p.yaml"
        pfile.write_text(yaml.safe_dump(params))
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mbrl_ros.nodes.arm_sim",
                "--ros-args",
                "--params-file",
                str(pfile),
            ],
            stdout=subprocess.DEVNULL,
        )
        rclpy.init()
        node = rclpy.create_node("lockstep_bench")
        pub = node.create_publisher(Float64MultiArray, "/effort_controller/commands", COMMAND_QOS)
        sent, received, done = {}, {}, threading.Event()
        zero = np.zeros(7)

        def on_state(msg):
            now = time.perf_counter()
            stamp = stamp_to_ns(msg.header.stamp)
            received[stamp] = now
            if len(received) > STEPS:
                done.set()
                return
            sent[stamp] = time.perf_counter()
            pub.publish(command_msg(zero, stamp))

        node.create_subscription(JointState, "/joint_states", on_state, STATE_QOS)
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        while not done.is_set():
            ex.spin_once(timeout_sec=0.1)
        sim.send_signal(2)
        sim.wait(10)
        node.destroy_node()
        rclpy.shutdown()
    stamps = sorted(received)
    rtt = np.array([received[b] - sent[a] for a, b in zip(stamps[WARMUP:-1], stamps[WARMUP + 1 :])])
    span = received[stamps[-1]] - received[stamps[WARMUP]]
    print("== bench_lockstep: arm7, control period 2 ms, sim and driver in separate processes")
    print(
        f"round trip command k -> state k+1 over DDS: median {np.median(rtt) * 1e3:.3f} ms, "
        f"p99 {np.percentile(rtt, 99) * 1e3:.3f} ms, max {rtt.max() * 1e3:.3f} ms "
        f"({len(rtt)} steps)"
    )
    print(
        f"sustained lockstep rate: {(len(stamps) - 1 - WARMUP) / span:.0f} steps/s "
        f"= real-time factor {(len(stamps) - 1 - WARMUP) / span * 0.002:.2f} at 500 Hz"
    )


if __name__ == "__main__":
    main()
