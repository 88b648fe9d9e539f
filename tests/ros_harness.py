"""Helpers for tests with real rclpy nodes over real DDS (no mocks)."""

from __future__ import annotations

import array
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
import yaml
from rcl_interfaces.srv import GetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import parameter_value_to_python
from std_srvs.srv import SetBool

from mbrl_ros.graphs.launcher import die_with_parent


def wait_for(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll ``predicate`` every 10 ms; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def get_parameters(node: Node, fqn: str, names: list[str]) -> dict:
    """Parameters ``names`` of the node with fully qualified name ``fqn``, asked by ``node``
    (spun by the caller's executor) through its ~/get_parameters service; arrays as lists."""
    client = node.create_client(GetParameters, f"{fqn}/get_parameters")
    try:
        assert client.wait_for_service(timeout_sec=30.0), f"no {fqn}/get_parameters"
        future = client.call_async(GetParameters.Request(names=names))
        wait_for(future.done, 30.0, f"{fqn}/get_parameters answered")
        values = [parameter_value_to_python(v) for v in future.result().values]
        return {
            n: list(v) if isinstance(v, (array.array, tuple)) else v for n, v in zip(names, values)
        }
    finally:
        node.destroy_client(client)


def launch_graph(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``mbrl-ros launch ARGS`` with its output captured. After ``timeout`` s the launcher is
    interrupted (it stops its nodes) and an AssertionError carries the tail of its output, so a
    stuck graph says where it stopped."""
    cmd = [sys.executable, "-m", "mbrl_ros.cli", "launch", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        raise AssertionError(
            f"{' '.join(cmd)} did not finish in {timeout} s; its output "
            f"(the sim's status lines but the last left out) ends:\n"
            f"{_without_status_lines(out)[-8000:]}"
        ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def _without_status_lines(out: str) -> str:
    """The launcher's output without the sim's periodic status lines, but for the last one."""
    lines = out.splitlines()
    status = [i for i, line in enumerate(lines) if "steps/s |" in line]
    keep = set(status[-1:])
    return "\n".join(line for i, line in enumerate(lines) if i in keep or i not in status)


class CommandProbe:
    """Mixin for test nodes that record tagged torque commands (``self.commands``: (u, stamp tag)
    under ``self.lock``) and hold an e-stop client (``self.estop``)."""

    def command_for(self, stamp_ns, timeout=10.0):
        """The command tagged with ``stamp_ns`` (waits for it)."""

        def find():
            with self.lock:
                return [u for u, tag in self.commands if tag == stamp_ns]

        wait_for(lambda: find(), timeout, f"a command for stamp {stamp_ns}")
        return find()[-1]

    def answer(self, stamp_ns, q, qd, **state):
        """Send a state to a realtime node and return the command that answers it (the next one:
        realtime commands are tagged with their send time, never before the state's stamp).
        Needs ``send_state(stamp_ns, q, qd, **state)`` and ``n_commands()``."""
        before = self.n_commands()
        self.send_state(stamp_ns, q, qd, **state)
        wait_for(lambda: self.n_commands() > before, 10, f"the answer to state {stamp_ns}")
        with self.lock:
            assert len(self.commands) == before + 1
            u, tag = self.commands[-1]
        assert tag >= stamp_ns
        return u

    def call_estop(self, engage: bool):
        assert self.estop.wait_for_service(timeout_sec=10.0)
        future = self.estop.call_async(SetBool.Request(data=engage))
        wait_for(future.done, 10.0, "the e-stop service")
        return future.result()


class RosHarness:
    """An rclpy context and a single-threaded executor spinning in a thread (as the nodes run in
    production; rclpy's MultiThreadedExecutor re-submits ready entities in a busy loop and starved
    the fuzz test on 2 cores); nodes are added with ``add``."""

    def __init__(self):
        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list[Node] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # context shut down under the executor
            pass

    def node(self, name: str) -> Node:
        """A plain helper node in this context."""
        return self.add(Node(name, context=self.context))

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        for node in self.nodes:
            node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(timeout=5.0)


class NodeProcess:
    """A node executable of this package running as ``python -m mbrl_ros.nodes.<executable>``."""

    def __init__(
        self,
        executable: str,
        params: dict,
        workdir: Path,
        name: str | None = None,
        remappings: dict | None = None,
    ):
        self.name = name or executable
        params_file = workdir / f"{self.name}_params.yaml"
        params_file.write_text(yaml.safe_dump({self.name: {"ros__parameters": params}}))
        cmd = [
            sys.executable,
            "-m",
            f"mbrl_ros.nodes.{executable}",
            "--ros-args",
            "-r",
            f"__node:={self.name}",
            "--params-file",
            str(params_file),
        ]
        for src, dst in (remappings or {}).items():
            cmd += ["-r", f"{src}:={dst}"]
        self.log_path = workdir / f"{self.name}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode
