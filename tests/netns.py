"""Two "hosts" on one machine: network namespaces joined by a veth pair, for running parts of a
graph apart over DDS (``SplitNetwork``), and a small rclpy probe run inside them
(``python tests/netns.py send|listen|echo|ping ...``).

DDS in a namespace sees only that namespace's links: ``lo`` and its end of the veth (a /30 in
10.213.0.0/16, no default route), so nothing leaves the pair. Fast DDS's shared-memory transport
crosses namespaces through /dev/shm, so ``dds_environment`` keeps it to UDPv4. Needs root
(``ip netns``); ``unavailable_reason`` says why not where it is refused.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUBNET_PREFIX = "10.213"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def unavailable_reason() -> str | None:
    """None when this process may create network namespaces, else why not (for a test skip)."""
    name = f"mbrl_probe_{os.getpid()}_{random.randrange(1 << 30)}"
    try:
        made = _ip("netns", "add", name, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"'ip netns' cannot run here: {exc}"
    if made.returncode != 0:
        return f"'ip netns add' is not allowed here: {made.stderr.strip()}"
    _ip("netns", "delete", name, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """One side: namespace ``netns`` whose veth end has IPv4 ``address`` (None: only ``lo``)."""

    netns: str
    address: str | None

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]


class SplitNetwork:
    """Context manager: namespaces ``robot`` and ``learning`` joined by a veth pair
    (10.213.S.1/30 and .2, S random per instance) and, with ``isolated=True``, a third namespace
    ``outsider`` with only its own loopback. Everything is deleted on exit, also on an exception
    or KeyboardInterrupt; a half-made setup is undone before the error propagates."""

    def __init__(self, isolated: bool = False):
        tag = f"{os.getpid()}_{random.randrange(1 << 20)}"
        subnet = f"{SUBNET_PREFIX}.{random.randrange(256)}"
        self.robot = Host(f"mbrl_robot_{tag}", f"{subnet}.1")
        self.learning = Host(f"mbrl_learn_{tag}", f"{subnet}.2")
        self.outsider = Host(f"mbrl_out_{tag}", None) if isolated else None
        self._made: list[str] = []

    @property
    def hosts(self) -> list[Host]:
        return [h for h in (self.robot, self.learning, self.outsider) if h is not None]

    def __enter__(self) -> SplitNetwork:
        try:
            for host in self.hosts:
                _ip("netns", "add", host.netns)
                self._made.append(host.netns)
                _ip("-n", host.netns, "link", "set", "lo", "up")
            # The pair is created inside the robot namespace, so neither end ever exists outside.
            _ip(
                "-n",
                self.robot.netns,
                "link",
                "add",
                "veth0",
                "type",
                "veth",
                "peer",
                "name",
                "veth1",
                "netns",
                self.learning.netns,
            )
            for host, dev in ((self.robot, "veth0"), (self.learning, "veth1")):
                _ip("-n", host.netns, "addr", "add", f"{host.address}/30", "dev", dev)
                _ip("-n", host.netns, "link", "set", dev, "up", "multicast", "on")
                # Discovery's multicast goes out the veth only (there is no default route).
                _ip("-n", host.netns, "route", "add", "224.0.0.0/4", "dev", dev)
        except subprocess.CalledProcessError as exc:
            self.close()
            raise RuntimeError(
                f"could not set up the split network: {' '.join(exc.cmd)}: {exc.stderr.strip()}"
            ) from None
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Delete the namespaces made so far (their veth ends go with them)."""
        while self._made:
            _ip("netns", "delete", self._made.pop(), check=False)


def dds_environment(
    host: Host, peer: Host | None = None, environ: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment for ROS processes on ``host``: DDS over UDPv4 only (no shared memory across
    namespaces), discovery on the host's subnets, and ``peer``'s address as a static peer."""
    env = dict(os.environ if environ is None else environ)
    env["FASTDDS_BUILTIN_TRANSPORTS"] = "UDPv4"
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"
    env.pop("ROS_STATIC_PEERS", None)
    if peer is not None and peer.address is not None:
        env["ROS_STATIC_PEERS"] = peer.address
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


ROBOT_SIDE = ("arm_sim", "lg_executor")
PROBE = __file__
DIAG_KEYS = ("latency_ms_median", "latency_ms_max", "plan_latency_ms")


def run_split_graph(
    net: SplitNetwork, specs, split: bool, out_dir: Path, timeout_s: float
) -> tuple[list[str], dict[str, list[float]]]:
    """Run graph ``specs`` (``mbrl_ros.graphs.description.graph``) with the nodes in ROBOT_SIDE in
    ``net.robot`` and the others in ``net.learning`` (``split``) or also in ``net.robot``, logs in
    ``out_dir/<node>.log``, until a required node exits, a node fails or ``timeout_s``; all are
    then stopped. Returns the names of failed nodes and the /diagnostics latencies (DIAG_KEYS,
    ms, finite values) read on the learning side."""
    from mbrl_ros.graphs.launcher import die_with_parent, node_command

    learn = net.learning if split else net.robot
    peer = {net.robot: net.learning, net.learning: net.robot}
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="split_graph_") as tmp:
        diag = subprocess.Popen(
            learn.command([sys.executable, PROBE, "diag", "3600"]),
            env=dds_environment(learn, peer[learn]),
            text=True,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        try:
            for spec in specs:
                host = net.robot if spec.name in ROBOT_SIDE else learn
                with open(out_dir / f"{spec.name}.log", "w") as log:
                    procs.append(
                        subprocess.Popen(
                            host.command(node_command(spec, Path(tmp))),
                            env=dds_environment(host, peer[host]),
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent,
                        )
                    )
            required = [p for s, p in zip(specs, procs) if s.required]
            deadline = time.monotonic() + timeout_s
            while (
                time.monotonic() < deadline
                and all(p.poll() is None for p in required)
                and not any(p.poll() not in (None, 0) for p in procs)
            ):
                time.sleep(0.2)
            failed = [s.name for s, p in zip(specs, procs) if p.poll() not in (None, 0)]
            if time.monotonic() >= deadline:
                failed.append(f"(timed out after {timeout_s} s)")
        finally:
            stop(procs)
            diag.send_signal(signal.SIGINT)
            diag_out, _ = diag.communicate(timeout=30)
    values: dict[str, list[float]] = {}
    lines = diag_out.strip().splitlines()
    for name, series in (json.loads(lines[-1]) if lines else {}).items():
        values.setdefault(name.split("/")[-1], []).extend(v for v in series if math.isfinite(v))
    return failed, values


def stop(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGINT, then after ``grace_s`` SIGKILL, to the processes still running."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            p.send_signal(sig)
        for p in alive:
            try:
                p.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass


# --- the probe: one small rclpy program for both sides -----------------------------------------


def _probe(argv: list[str]) -> int:
    """``send N`` publishes JointState and UInt8MultiArray (``--bytes``) messages N times;
    ``listen S`` prints one line per message received in S seconds; ``echo S`` answers every
    /probe/ping_* message on /probe/pong_*; ``ping N`` times N round trips of each kind and
    prints their seconds as JSON; ``diag S`` collects the latencies on /diagnostics
    (DIAG_KEYS, by node) for S seconds or until SIGINT and prints them as JSON."""
    import argparse

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import UInt8MultiArray

    parser = argparse.ArgumentParser(prog="netns.py")
    parser.add_argument("mode", choices=["send", "listen", "echo", "ping", "diag"])
    parser.add_argument("count", type=float, help="messages (send, ping) or seconds")
    parser.add_argument("--bytes", type=int, default=30_000, help="artifact size, bytes")
    parser.add_argument("--joints", type=int, default=6)
    args = parser.parse_args(argv)

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    kinds = {"state": JointState, "artifact": UInt8MultiArray}

    def make(kind: str, seq: int):
        if kind == "state":
            msg = JointState(
                name=[f"j{i}" for i in range(args.joints)],
                position=[float(seq)] * args.joints,
                velocity=[0.0] * args.joints,
                effort=[0.0] * args.joints,
            )
            msg.header.frame_id = str(seq)
            return msg
        data = bytes([seq % 256]) * args.bytes
        return UInt8MultiArray(data=data)

    def seq_of(kind: str, msg) -> int:
        return int(msg.header.frame_id) if kind == "state" else int(msg.data[0])

    rclpy.init()
    node = rclpy.create_node(f"netns_probe_{args.mode}_{os.getpid()}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    diag: dict[str, list[float]] = {}
    try:
        if args.mode in ("send", "ping"):
            return _sender(args, node, executor, qos, kinds, make, seq_of)
        if args.mode == "listen":

            def report(kind: str, msg) -> None:
                size = len(msg.data) if kind == "artifact" else len(msg.position)
                print(f"{kind} {seq_of(kind, msg)} {size}", flush=True)

            for kind, cls in kinds.items():
                node.create_subscription(
                    cls, f"/probe/{kind}", lambda msg, k=kind: report(k, msg), qos
                )
        elif args.mode == "diag":
            from diagnostic_msgs.msg import DiagnosticArray

            def collect(msg) -> None:
                for status in msg.status:
                    for kv in status.values:
                        if kv.key in DIAG_KEYS:
                            diag.setdefault(f"{status.hardware_id}/{kv.key}", []).append(
                                float(kv.value)
                            )

            # Best effort matches any publisher's reliability.
            node.create_subscription(
                DiagnosticArray,
                "/diagnostics",
                collect,
                QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT),
            )
        else:  # echo
            for kind, cls in kinds.items():
                pub = node.create_publisher(cls, f"/probe/pong_{kind}", qos)
                node.create_subscription(cls, f"/probe/ping_{kind}", pub.publish, qos)
        print("ready", flush=True)
        end = time.monotonic() + args.count
        while rclpy.ok() and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if args.mode == "diag":
            print(json.dumps(diag), flush=True)
        node.destroy_node()
        rclpy.try_shutdown()


def _sender(args, node, executor, qos, kinds, make, seq_of) -> int:
    """``send``: publish each kind ``count`` times, 20 ms apart, once a subscriber matched (or
    after 30 s without one). ``ping``: round trips, one at a time, via an ``echo`` probe."""
    count = int(args.count)
    if args.mode == "send":
        pubs = {k: node.create_publisher(c, f"/probe/{k}", qos) for k, c in kinds.items()}
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not all(
            p.get_subscription_count() for p in pubs.values()
        ):
            executor.spin_once(timeout_sec=0.05)
        for seq in range(count):
            for kind, pub in pubs.items():
                pub.publish(make(kind, seq))
            executor.spin_once(timeout_sec=0.02)
        print("sent", flush=True)
        return 0
    times: dict[str, list[float]] = {k: [] for k in kinds}
    got: dict[str, int] = {}
    pubs = {k: node.create_publisher(c, f"/probe/ping_{k}", qos) for k, c in kinds.items()}
    for kind, cls in kinds.items():
        node.create_subscription(
            cls, f"/probe/pong_{kind}", lambda msg, k=kind: got.__setitem__(k, seq_of(k, msg)), qos
        )
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline and not all(
        p.get_subscription_count() for p in pubs.values()
    ):
        executor.spin_once(timeout_sec=0.05)
    for kind, pub in pubs.items():
        for seq in range(count + 5):  # the first 5 warm up the path and are not counted
            got.pop(kind, None)
            start = time.perf_counter()
            pub.publish(make(kind, seq))
            limit = start + 2.0
            while got.get(kind) != seq % (256 if kind == "artifact" else 1 << 62):
                executor.spin_once(timeout_sec=0.002)
                if time.perf_counter() > limit:
                    raise SystemExit(f"no answer to {kind} ping {seq} within 2 s")
            if seq >= 5:
                times[kind].append(time.perf_counter() - start)
    print(json.dumps(times), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_probe(sys.argv[1:]))
