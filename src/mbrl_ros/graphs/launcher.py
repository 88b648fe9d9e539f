"""``mbrl-ros launch``: start a graph from ``mbrl_ros.graphs.description`` as processes, without
ros2 launch.

Each node runs as ``python -m mbrl_ros.nodes.<executable> --ros-args ...`` with the graph's config
files and overrides as parameter files. DDS stays on this machine unless the user says otherwise:
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a per-run ``ROS_DOMAIN_ID`` are set when absent.
The graph ends when a required node exits, when any node fails (a non-zero exit: the launcher
returns that status) or on SIGINT/SIGTERM; the others get SIGINT, then SIGTERM, then SIGKILL, so the
stop is bounded, and a node that fails while stopping makes the status non-zero too.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mbrl_ros.common.dds import ros_environment
from mbrl_ros.common.param_files import parameter_file
from mbrl_ros.common.paths import share_path
from mbrl_ros.graphs.description import NodeSpec, graph

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the launcher dies, however it dies, so no node
    outlives its graph (Linux; a no-op elsewhere)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def node_command(spec: NodeSpec, overrides_dir: Path) -> list[str]:
    """The command line that runs ``spec`` as a process (parameter overrides written to a file,
    keyed so they apply in the node's namespace)."""
    override_file = overrides_dir / f"{spec.name}.yaml"
    override_file.write_text(yaml.safe_dump(parameter_file(spec.name, spec.parameters)))
    cmd = [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace != "/":
        cmd += ["-r", f"__ns:={spec.namespace}"]
    for config in spec.config:
        cmd += ["--params-file", str(share_path("config", config))]
    cmd += ["--params-file", str(override_file)]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def parse_graph_args(items: list[str]) -> dict[str, str]:
    """``['robot:=arm2', 'duration:=5']`` → ``{'robot': 'arm2', 'duration': '5'}``."""
    args = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ValueError(f"graph argument '{item}' is not of the form name:=value")
        args[name] = value
    return args


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def launch(
    name: str,
    args: dict[str, str],
    environ: dict[str, str] | None = None,
    stop_grace_s: float = 5.0,
) -> int:
    """Run graph ``name`` until a required node exits, a node fails or SIGINT/SIGTERM; returns the
    exit status: 0, the first failed node's, or 128 + the signal's number."""
    specs = graph(name, **args)
    env = ros_environment(environ)
    print(
        f"[mbrl-ros] graph '{name}': {', '.join(s.name for s in specs)} | "
        f"namespace {specs[0].namespace if specs else '/'} | "
        f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} "
        f"ROS_AUTOMATIC_DISCOVERY_RANGE={env['ROS_AUTOMATIC_DISCOVERY_RANGE']}",
        flush=True,
    )
    received: list[int] = []  # stop signals, recorded by the handler (later ones change nothing)
    previous = {
        sig: signal.signal(sig, lambda signum, frame: received.append(signum))
        for sig in STOP_SIGNALS
    }
    try:
        with tempfile.TemporaryDirectory(prefix="mbrl_ros_launch_") as tmp:
            procs = [
                (
                    s,
                    subprocess.Popen(
                        node_command(s, Path(tmp)), env=env, preexec_fn=die_with_parent
                    ),
                )
                for s in specs
            ]
            status, reported = _run_graph(procs, received)
            _stop_all([p for _, p in procs], stop_grace_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for s, p in procs:  # nodes that failed (or had to be killed) while the graph stopped
        if s is not reported and p.returncode not in STOPPED_AS_ASKED:
            print(
                f"[mbrl-ros] node '{s.name}' exited with status {p.returncode} while the graph "
                "stopped",
                file=sys.stderr,
                flush=True,
            )
            status = status or _exit_code(p.returncode)
    return status


# A node's return code after the stop: 0, or killed by the SIGINT/SIGTERM the launcher sent before
# the node had installed its handlers (it was still starting: importing torch, say).
STOPPED_AS_ASKED = (0, -signal.SIGINT, -signal.SIGTERM)


def _run_graph(
    procs: list[tuple[NodeSpec, subprocess.Popen]], received: list[int]
) -> tuple[int, NodeSpec | None]:
    """Wait until the graph should stop: (status, the failed node that stopped it, if one)."""
    while True:
        if received:
            print(f"[mbrl-ros] {signal.Signals(received[0]).name}: stopping the graph", flush=True)
            return 128 + received[0], None
        ended = [(s, p) for s, p in procs if p.poll() is not None]
        failed = [(s, p) for s, p in ended if p.returncode != 0]
        if failed:
            s, p = failed[0]
            print(
                f"[mbrl-ros] node '{s.name}' exited with status {p.returncode}; stopping the graph",
                file=sys.stderr,
                flush=True,
            )
            return _exit_code(p.returncode), s
        if any(s.required for s, _ in ended) or len(ended) == len(procs):
            return 0, None
        time.sleep(0.1)


def _exit_code(returncode: int | None) -> int:
    """A process exit code for a child's return code: killed by signal N, 128 + N; still running
    (not even SIGKILL stopped it), 1."""
    if returncode is None:
        return 1
    return returncode if returncode >= 0 else 128 - returncode


def _stop_all(procs: list[subprocess.Popen], grace_s: float) -> None:
    """SIGINT, then after ``grace_s`` SIGTERM, then SIGKILL (2 s each) to the nodes still running:
    at most ``grace_s`` + 4 s."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            return
        for p in alive:
            p.send_signal(sig)
        deadline = time.monotonic() + wait
        for p in alive:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
