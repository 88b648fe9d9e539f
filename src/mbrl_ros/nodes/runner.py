"""Common ``main()`` for the nodes: init, construct, spin, and a bounded clean stop.

A node that cannot start (bad or unknown parameter, missing file) prints one clear line naming the
problem and exits with status 2 instead of a traceback.

SIGINT and SIGTERM both stop a node with status 0 (or the node's ``exit_status``) and no
traceback, within 2 s under load. The handlers are this module's, not rclpy's (which would shut
the context down under the callbacks still running, so that their publishing fails): the executor
waits at most ``SPIN_PERIOD_S`` at a time, so a signal stops an idle node at once; a callback
still running ``INTERRUPT_AFTER_S`` after the signal (a plan, a fit in a callback) gets
``NodeInterrupted`` raised in it, so long work cannot hold the node, while short callbacks finish
undisturbed. A process still running ``STUCK_AFTER_S`` after the signal prints every thread's
stack to stderr, so a stop that hangs says where. Later signals are ignored, so ``close()`` (which
nodes keep short: a worker thread is stopped and joined with a bound), ``destroy_node`` and the
shutdown of the context run to their end; a ``destroy_node`` still running after
``DESTROY_LIMIT_S`` (the middleware's teardown of the node hangs now and then under load, after
the node's own work and ``close()`` are done) is given up: the process says so and ends with the
node's status rather than wait for a launcher's SIGKILL. Then the process ends at once
(``os._exit`` once stdout and stderr are flushed): the interpreter's own teardown of torch, mujoco
and DDS takes seconds under load.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.experimental import EventsExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from mbrl_ros.nodes.params import ConfigError, check_unknown_parameters

STARTUP_ERRORS = (ConfigError, FileNotFoundError, ValueError)
EXIT_CONFIG = 2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPT_AFTER_S = 0.3  # a callback still running this long after a stop signal is interrupted
SPIN_PERIOD_S = 0.1  # the longest wait of the executor: a signal's handler runs within it
STUCK_AFTER_S = 4.0  # still running this long after a stop signal: every thread's stack to
# stderr (before a launcher's SIGKILL, which comes after 5 s + 2 s)
DESTROY_LIMIT_S = 3.0  # destroy_node still running this long: the process ends without it


class NodeInterrupted(BaseException):
    """Raised in the main thread when work outlasts ``INTERRUPT_AFTER_S`` after a stop signal (a
    BaseException, so the nodes' ``except Exception`` fault handlers let it through)."""


# How a spinning executor ends on a stop: the interrupt, or the node's own shutdown of its context.
STOPPED = (NodeInterrupted, ExternalShutdownException)


class StopSignals:
    """SIGINT/SIGTERM handling for a node process (installed from the main thread; a no-op
    elsewhere). The first signal arms a one-shot interrupt of the main thread, due after
    ``interrupt_after_s`` while ``active``; every later signal is ignored, for the rest of the
    process. The handler only sets flags (a thread waiting from the start does the rest), and
    clearing ``active`` is a plain attribute store, so no interrupt can land between the end of
    the work and the clearing."""

    def __init__(self, interrupt_after_s: float = INTERRUPT_AFTER_S):
        self.interrupt_after_s = interrupt_after_s
        self.requested = False
        self.active = True
        self._due = False
        self._signalled = threading.Event()

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            threading.Thread(target=self._interrupt_main, name="stop_signals", daemon=True).start()
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self._due and self.active:
            self._due = False
            raise NodeInterrupted()
        if not self.requested:
            self.requested = True
            faulthandler.dump_traceback_later(STUCK_AFTER_S)
            self._signalled.set()

    def _interrupt_main(self) -> None:
        """The waiting thread: ``interrupt_after_s`` after the first signal, a real signal to the
        main thread (so a blocking call returns too) that makes the handler raise."""
        self._signalled.wait()
        time.sleep(self.interrupt_after_s)
        main = threading.main_thread().ident  # (None only before a thread starts)
        if self.active and main is not None:
            self._due = True
            signal.pthread_kill(main, signal.SIGINT)


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """Run the node built by ``make_node`` until shutdown; returns the process exit status, or
    after a stop signal ends the process with it."""
    signals = StopSignals()
    signals.install()
    try:
        status = _run(make_node, name, args, signals)
    except NodeInterrupted:  # the one interrupt, landing just as the work ended
        status = 0
    finally:
        signals.active = False
        rclpy.try_shutdown()
    if signals.requested:
        _end_process(status)
    return status


def _run(
    make_node: Callable[[], Node], name: str, args: list[str] | None, signals: StopSignals
) -> int:
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        node = make_node()
        check_unknown_parameters(node)
    except STARTUP_ERRORS as exc:
        print(f"[{name}] cannot start: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    except NodeInterrupted:  # a stop signal during a long start-up
        return 0
    ok = False
    try:
        _spin(node, signals)
        ok = True
    finally:
        signals.active = False
        _close(node, name, ok)
    return getattr(node, "exit_status", 0)


def _spin(node: Node, signals: StopSignals) -> None:
    """Spin ``node`` until a stop signal or the end of its context (the node shut it down). A
    node with a ``spin_interval`` (s) > 0 handles at most one callback per interval: its
    newest-only subscriptions then skip the messages in between (a node that needs only the
    latest of a robot's 500 Hz joint states does not pay for all of them). A node whose
    ``events_executor`` is true runs under rclpy's EventsExecutor (``rclpy.experimental`` in
    Kilted): a node that takes every message of a robot's 500 Hz streams (the fitter, on a real
    robot) spends about 40 % of the CPU time per message it spends under the
    SingleThreadedExecutor, whose wait set is rebuilt in Python for every message."""
    executor = (
        EventsExecutor() if getattr(node, "events_executor", False) else SingleThreadedExecutor()
    )
    executor.add_node(node)
    interval = getattr(node, "spin_interval", 0.0)
    try:
        while rclpy.ok() and not signals.requested:
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
            if interval > 0:
                time.sleep(interval)
    except STOPPED:
        pass
    except RuntimeError:  # RCLError, or a failed take_message: the node shut its context down
        if rclpy.ok():
            raise
    finally:
        signals.active = False


def _end_process(status: int) -> None:
    """End the process now with ``status``, skipping the interpreter's teardown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _close(node: Node, name: str, ok: bool) -> None:
    """The node's ``close()`` (if it has one), then ``destroy_node``, given up after
    ``DESTROY_LIMIT_S``: the process then ends with the node's ``exit_status``, or 1 where its
    work (``ok`` False) or ``close()`` raised."""
    close = getattr(node, "close", None)
    try:
        if close is not None:
            close()
    except BaseException:
        ok = False
        raise
    finally:
        watchdog = threading.Timer(DESTROY_LIMIT_S, _destroy_hung, (node, name, ok))
        watchdog.daemon = True
        watchdog.start()
        try:
            node.destroy_node()
        finally:
            watchdog.cancel()


def _destroy_hung(node: Node, name: str, ok: bool) -> None:
    print(
        f"[{name}] destroying the node in the middleware took more than {DESTROY_LIMIT_S:g} s "
        f"(its work and close() had ended{'' if ok else ', with an error'}): ending the "
        "process without it",
        file=sys.stderr,
    )
    _end_process(getattr(node, "exit_status", 0) if ok else 1)
