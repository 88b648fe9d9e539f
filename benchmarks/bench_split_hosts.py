"""Latency that splitting the graph across two hosts adds (issue 13, deliverable 8).

The robot side (arm_sim in ``mode: hardware`` + lg_executor) runs in one network namespace, the
learning side (dynamics_fitter, mpc_planner, episode_manager) in another, joined by a veth pair
(``tests/netns.py``); the same short 'mpc' run then runs in one namespace. Reported, median and p99:
the executor's state stamp → command latency and the planner's ``plan_latency_ms`` (from
/diagnostics, read by a probe on the learning side), and DDS round trips of a JointState and a
controller-sized UInt8MultiArray (``--bytes``) between the namespaces vs. within one. Needs root.

    python benchmarks/bench_split_hosts.py [--episodes 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from netns import (  # noqa: E402
    DIAG_KEYS,
    PROBE,
    SplitNetwork,
    dds_environment,
    run_split_graph,
    stop,
    unavailable_reason,
)

from mbrl_ros.graphs.description import graph  # noqa: E402
from mbrl_ros.graphs.launcher import die_with_parent  # noqa: E402


def _stats(values) -> dict:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {"n": 0, "median": float("nan"), "p99": float("nan")}
    return {"n": int(v.size), "median": float(np.median(v)), "p99": float(np.percentile(v, 99))}


def round_trips(ping_host, echo_host, peer_of_ping, peer_of_echo, count: int, nbytes: int) -> dict:
    """Round-trip seconds of each message kind, ping on ``ping_host``, echo on ``echo_host``."""
    echo = subprocess.Popen(
        echo_host.command([sys.executable, PROBE, "echo", "600", "--bytes", str(nbytes)]),
        env=dds_environment(echo_host, peer_of_echo),
        stdout=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    try:
        ping = subprocess.run(
            ping_host.command([sys.executable, PROBE, "ping", str(count), "--bytes", str(nbytes)]),
            env=dds_environment(ping_host, peer_of_ping),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stop([echo])
    if ping.returncode != 0:
        raise RuntimeError(f"ping probe failed: {ping.stderr[-2000:]}")
    times = json.loads(ping.stdout.strip().splitlines()[-1])
    return {kind: _stats(np.asarray(t) * 1e3) for kind, t in times.items()}


def learning_run(net: SplitNetwork, split: bool, args, out_dir: Path) -> dict:
    """One short 'mpc' run on the fixture; ``split``: the learning side in its own namespace.
    Returns the latency statistics (ms) and whether results.json was written."""
    specs = graph(
        "mpc",
        sim="hardware",
        robot="arm6",
        robot_compensates_gravity="false",
        train_episodes=str(args.episodes),
        final_eval_episodes=str(args.eval_episodes),
        episode_length=str(args.episode_length),
        output_dir=str(out_dir),
    )
    failed, values = run_split_graph(net, specs, split, out_dir, args.timeout)
    return {
        **{key: _stats(values.get(key, [])) for key in DIAG_KEYS},
        "results_written": (out_dir / "results.json").exists(),
        "failed_nodes": failed,
        "logs": str(out_dir),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=4, help="training episodes")
    parser.add_argument("--eval-episodes", type=int, default=2)
    parser.add_argument("--episode-length", type=float, default=2.0, help="s")
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--bytes", type=int, default=30_000, help="artifact message size")
    parser.add_argument("--timeout", type=float, default=600.0, help="s per learning run")
    parser.add_argument("--skip-graph", action="store_true", help="only the DDS round trips")
    parser.add_argument("--out", default="", help="folder for the runs' logs (default: temp)")
    parser.add_argument("--json", default="", help="also write the results to this file")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"bench_split_hosts: {reason}", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_split_hosts_"))
    results: dict = {}
    with SplitNetwork() as net:
        results["rtt_split"] = round_trips(
            net.robot, net.learning, net.learning, net.robot, args.round_trips, args.bytes
        )
        results["rtt_same"] = round_trips(
            net.robot, net.robot, None, None, args.round_trips, args.bytes
        )
        if not args.skip_graph:
            for split in (True, False):
                run_dir = out / ("split" if split else "same")
                run_dir.mkdir(parents=True, exist_ok=True)
                results["graph_split" if split else "graph_same"] = learning_run(
                    net, split, args, run_dir
                )
    _print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def _print_table(results: dict) -> None:
    rows = []
    for kind in ("state", "artifact"):
        rows.append(
            (f"DDS round trip, {kind} (ms)", results["rtt_same"][kind], results["rtt_split"][kind])
        )
    if "graph_split" in results:
        for key, label in (
            ("latency_ms_median", "executor stamp→command, report medians"),
            ("latency_ms_max", "executor stamp→command, report maxima"),
            ("plan_latency_ms", "planner plan_latency_ms"),
        ):
            rows.append((label, results["graph_same"][key], results["graph_split"][key]))
    print(f"{'measure':40s} {'one namespace':>24s} {'split (veth)':>24s}")
    print(f"{'':40s} {'median / p99 (n)':>24s} {'median / p99 (n)':>24s}")
    for label, same, split in rows:
        cells = [f"{s['median']:.3f} / {s['p99']:.3f} ({s['n']})" for s in (same, split)]
        print(f"{label:40s} {cells[0]:>24s} {cells[1]:>24s}")
    for name in ("graph_same", "graph_split"):
        if name in results:
            r = results[name]
            print(
                f"{name}: results.json written: {r['results_written']}, "
                f"failed nodes: {r['failed_nodes'] or 'none'}, logs: {r['logs']}"
            )


if __name__ == "__main__":
    sys.exit(main())
