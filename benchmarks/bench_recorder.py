"""Recorder throughput and CPU use, across processes.

This process publishes sensor_msgs/JointState messages of 7 joints (reliable, depth 1000, each
with its sequence number) to a recorder node running as its own process (flush every second).

* Throughput: for each rate, a fresh recorder; publish for a few seconds at that rate, stop the
  recorder with SIGINT once it has settled and count the messages in the bag. The sustained rate
  without loss is the highest rate at which every message is in the bag.
* CPU at 500 Hz: the recorder and, as the baseline in the same run, a bare rclpy process that only
  receives the same messages (raw subscription, no work) listen to one 500 Hz stream; CPU time of
  each process over the window, as % of one core, and their ratio.

    python benchmarks/bench_recorder.py [--seconds S] [--rates R1 R2 ...]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
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
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from mbrl_ros.data.bags import BagReader  # noqa: E402
from mbrl_ros.nodes.messages import joint_state_msg  # noqa: E402

TOPIC = "/joint_states"
QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
JOINTS = tuple(f"joint{i}" for i in range(1, 8))
BARE_SUBSCRIBER = f"""
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
rclpy.init()
node = rclpy.create_node("bare_subscriber")
node.create_subscription(JointState, "{TOPIC}", lambda data: None,
                         QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE), raw=True)
try:
    rclpy.spin(node)
except BaseException:
    pass
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self):
        rclpy.init()
        self.node = rclpy.create_node("bench_publisher")
        self.pub = self.node.create_publisher(JointState, TOPIC, QOS)
        self.recorded = 0
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 100)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.msg = joint_state_msg(0, JOINTS, np.zeros(7), np.zeros(7), np.zeros(7))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name.startswith("recorder:"):
                self.recorded = int(next(kv.value for kv in s.values if kv.key == "messages"))

    def wait_subscribers(self, n: int) -> None:
        """Until ``n`` subscribers are matched and the recorder has received a warm-up message
        (DDS may take seconds to match both ends)."""
        deadline = time.monotonic() + 30
        self.msg.header.frame_id = "warm-up"
        while self.pub.get_subscription_count() < n or self.recorded < 1:
            if time.monotonic() > deadline:
                sys.exit("benchmark: the recorder did not receive messages within 30 s")
            self.pub.publish(self.msg)
            time.sleep(0.05)

    def publish(self, rate: float, seconds: float) -> tuple[int, float]:
        """Publish at ``rate`` Hz for ``seconds``; returns (messages, achieved rate)."""
        n = int(rate * seconds)
        t0 = time.perf_counter()
        for i in range(n):
            target = t0 + i / rate
            while (wait := target - time.perf_counter()) > 0:
                time.sleep(min(wait, 0.001)) if wait > 0.0002 else None
            self.msg.header.frame_id = str(i)
            self.pub.publish(self.msg)
        return n, n / (time.perf_counter() - t0)

    def start_recorder(self, bag: Path) -> subprocess.Popen:
        self.recorded = 0
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mbrl_ros.nodes.recorder",
                "--ros-args",
                "-p",
                f"bag_path:={bag}",
                "-p",
                f"topics:=[{TOPIC}]",
                "-p",
                "queue_depth:=1000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def settle(self) -> None:
        last, since = self.recorded, time.monotonic()
        while time.monotonic() - since < 2.5:
            time.sleep(0.1)
            if self.recorded != last:
                last, since = self.recorded, time.monotonic()


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="publishing time per rate")
    parser.add_argument("--rates", type=float, nargs="+", default=[1000, 2000, 4000, 8000, 16000])
    args = parser.parse_args()
    bench = Bench()
    tmp = Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    print(
        f"recorder throughput, JointState of 7 joints, {args.seconds:g} s per rate "
        f"(publisher and recorder in different processes, {os.cpu_count()} CPUs)"
    )
    print(
        f"{'target Hz':>10} {'sent Hz':>10} {'sent':>7} {'recorded':>9} {'lost':>6} "
        f"{'recorder CPU µs/msg':>20}"
    )
    lossless = 0.0
    for k, rate in enumerate(args.rates):
        bag = tmp / f"rate{k}"
        proc = bench.start_recorder(bag)
        bench.wait_subscribers(1)
        cpu0 = cpu_seconds(proc.pid)
        sent, achieved = bench.publish(rate, args.seconds)
        bench.settle()
        cpu = cpu_seconds(proc.pid) - cpu0
        stop(proc)
        with BagReader(bag) as reader:
            seq = [
                int(m.header.frame_id)
                for _, _, m in reader.messages([TOPIC])
                if m.header.frame_id != "warm-up"
            ]
        lost = sent - len(set(seq))
        if lost == 0:
            lossless = max(lossless, achieved)
        print(
            f"{rate:10.0f} {achieved:10.0f} {sent:7d} {len(seq):9d} {lost:6d} "
            f"{cpu / max(len(seq), 1) * 1e6:20.0f}",
            flush=True,
        )
    print(f"sustained without loss: {lossless:,.0f} messages/s")

    seconds = 10.0
    proc = bench.start_recorder(tmp / "cpu500")
    bare = subprocess.Popen([sys.executable, "-c", BARE_SUBSCRIBER])
    bench.wait_subscribers(2)
    c_rec, c_bare, t0 = cpu_seconds(proc.pid), cpu_seconds(bare.pid), time.monotonic()
    sent, achieved = bench.publish(500.0, seconds)
    wall = time.monotonic() - t0
    rec = (cpu_seconds(proc.pid) - c_rec) / wall * 100
    base = (cpu_seconds(bare.pid) - c_bare) / wall * 100
    bench.settle()
    stop(proc)
    stop(bare)
    with BagReader(tmp / "cpu500") as reader:
        n = sum(1 for _, _, m in reader.messages([TOPIC]) if m.header.frame_id != "warm-up")
    print(
        f"CPU at 500 Hz ({sent} messages over {wall:.1f} s, {n} recorded): recorder {rec:.1f} % "
        f"of a core, bare rclpy subscriber {base:.1f} % -> ratio {rec / max(base, 1e-9):.2f}"
    )
    bench.executor.shutdown(timeout_sec=5)
    bench.thread.join(timeout=5)
    bench.node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
