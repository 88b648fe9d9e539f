"""Trainer node ``gps_trainer``: guided policy search's inner loop against the (sim) arm.

Per iteration: ``samples`` times, reset the arm (``reset_service``, std_srvs/Trigger; the sim
announces the reset state's stamp on /mbrl/episode_events, and the reset is asked for again after
``reset_timeout`` without one, as is a sample that stalls that long: a lost state or command),
publish the current linear-Gaussian controller restamped to start at the reset state's stamp on
``/mbrl/controller`` (the executor in sync mode with ``stochastic`` samples it), and record the
T + 1 joint states and the T commands that answer them; then fit the local dynamics, make the
KL-constrained update (``mbrl_ros.trajopt.gps``) and log a progress line (cost, KL, ε, η, step
multiplier, final distance). After the last iteration it writes ``summary.txt`` and
``learning_curve.png`` to ``output_dir``, publishes the final controller and stops.

An update that fails (too few samples, a covariance that is not positive definite, η at its
bound) is logged and counted on /diagnostics; no controller is published from it and the next
iteration samples the previous controller again. One initial condition: the simulator's reset
pose, which ``initial_position`` must equal (checked on every reset).
"""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray
from std_srvs.srv import Trigger

from mbrl_ros.controller import seconds_to_ns
from mbrl_ros.data.topics import EpisodeEvent, read_episode_event
from mbrl_ros.msgconv import JointSample, read_command
from mbrl_ros.nodes.diagnostics import ERROR, OK, Diagnostics
from mbrl_ros.nodes.intake import STATE_GATE_PARAMS, JointStateIntake, subscribe
from mbrl_ros.nodes.messages import COMMAND_QOS, EVENT_QOS, LATCHED_QOS, STATE_QOS
from mbrl_ros.nodes.params import ConfigError, Param, declare_params
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.robot import load_robot
from mbrl_ros.simulation import ArmSimulator, SimConfig, home_position
from mbrl_ros.tasks.reach import ReachCost
from mbrl_ros.trajopt.gps import (GPS, GPSConfig, format_curve, initial_controllers,
                                  learning_curve, plot_curves)
from mbrl_ros.trajopt.kl_update import KLSettings, KLUpdateError
from mbrl_ros.trajopt.local_dynamics import FitError

PARAMS = [
    Param("robot", "arm7", "robot description: a name in urdf/ (arm7, arm2) or a URDF path"),
    Param("initial_position", [], "the condition's start pose (rad, robot joint order): the "
                                  "simulator's reset pose; [] = zero or mid-range"),
    Param("target", [0.4, 0.0, 0.6], "end-effector target in the base frame (m)"),
    Param("horizon", 100, "controller steps T per sample", (2, 100_000)),
    Param("samples", 5, "samples per iteration", (2, 10_000)),
    Param("iterations", 10, "GPS iterations", (1, 100_000)),
    Param("control_period", 0.01, "the arm's control period (s): the controller's step",
          (1e-4, 1.0)),
    Param("kl_step", 0.3, "trust region per time step (nats); ε = kl_step · step_mult · T",
          (1e-6, 1e6)),
    Param("min_step_mult", 0.01, "smallest step multiplier of ε", (1e-6, 1.0)),
    Param("max_step_mult", 3.0, "largest step multiplier of ε", (1.0, 1e6)),
    Param("eta_max", 1e16, "upper bound of the dual variable η", (1e-3, 1e30)),
    Param("prior", "gmm", "local dynamics: Bayesian with a GMM prior, or ridge regression",
          choices=("gmm", "none")),
    Param("prior_strength", 1.0, "scale of the prior's pseudo-counts", (0.0, 1e6)),
    Param("prior_samples", 20, "recent samples the GMM prior is fit on", (1, 100_000)),
    Param("prior_clusters", 20, "largest number of GMM clusters", (2, 1000)),
    Param("regularization", 1e-6, "ridge on the (x, u) covariance of the regression",
          (0.0, 1e6)),
    Param("init_kp", 0.2, "initial PD hold stiffness (fraction of effort limit per rad)",
          (0.0, 100.0)),
    Param("init_kd", 0.02, "initial PD hold damping (fraction of effort limit per rad/s)",
          (0.0, 100.0)),
    Param("init_std", 0.05, "initial exploration std (fraction of effort limit)", (1e-6, 10.0)),
    Param("w_l2", 100.0, "cost weight of ½ d² (d: end-effector distance, m)", (0.0, 1e9)),
    Param("w_log", 1.0, "cost weight of log(d² + alpha)", (0.0, 1e9)),
    Param("alpha", 1e-5, "alpha of the log term (m²)", (1e-12, 1e3)),
    Param("terminal_weight", 10.0, "weight of the last step's distance terms", (0.0, 1e9)),
    Param("w_velocity", 0.5, "cost weight of ‖q̇_T‖² at the last step (arrive at rest)",
          (0.0, 1e9)),
    Param("w_action", 1e-3, "cost weight of Σ (u / effort limit)² per step", (0.0, 1e9)),
    Param("w_limit", 1.0, "cost weight of the joint-limit margin penalty", (0.0, 1e9)),
    Param("reset_service", "/arm_sim/reset", "std_srvs/Trigger service that resets the arm"),
    Param("reset_timeout", 5.0, "wall time to wait for a reset's announcement before asking "
                                "again (s)", (0.1, 3600.0)),
    Param("output_dir", "", "folder for summary.txt and learning_curve.png; '' = "
                            "gps_<UTC date and time>"),
    Param("seed", 0, "seed of the GMM fits", (0, 2**31 - 1)),
    Param("diagnostics_period", 1.0, "wall seconds between /diagnostics messages", (0.0, 3600.0)),
] + STATE_GATE_PARAMS


class GPSTrainerNode(Node):
    """The trainer; ``node_kwargs`` go to rclpy's Node (parameter_overrides, context, ...)."""

    def __init__(self, **node_kwargs):
        super().__init__("gps_trainer", **node_kwargs)
        p = self.p = declare_params(self, PARAMS)
        robot = load_robot(p.robot)
        self.names = list(robot.joint_names)
        self.n = robot.n_joints
        q0 = np.asarray(p.initial_position, dtype=float) if p.initial_position \
            else home_position(robot)
        lim = robot.limits
        if q0.shape != (self.n,) or np.any(q0 < lim.lower) or np.any(q0 > lim.upper):
            raise ConfigError(f"parameter 'initial_position' = {p.initial_position} must be "
                              f"{self.n} angles within the joint limits")
        if len(p.target) != 3:
            raise ConfigError(f"parameter 'target' = {p.target} must be 3 numbers (m)")
        self.q0, self.T, self.dt_ns = q0, p.horizon, seconds_to_ns(p.control_period)
        try:
            config = GPSConfig(kl_step=p.kl_step, min_step_mult=p.min_step_mult,
                               max_step_mult=p.max_step_mult, prior=p.prior,
                               prior_samples=p.prior_samples, prior_clusters=p.prior_clusters,
                               prior_strength=p.prior_strength, regularization=p.regularization,
                               kl=KLSettings(eta_max=p.eta_max), seed=p.seed)
            self.cost = ReachCost(robot, p.target, w_l2=p.w_l2, w_log=p.w_log, alpha=p.alpha,
                                  terminal_weight=p.terminal_weight, w_velocity=p.w_velocity,
                                  w_action=p.w_action,
                                  w_limit=p.w_limit)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        # The known model (MuJoCo) gives the initial controller's gravity compensation.
        known = ArmSimulator(robot, SimConfig(control_period=p.control_period,
                                              physics_timestep=p.control_period, scene=None))
        ctrl = initial_controllers(known, [q0], self.T, p.init_kp, p.init_kd, p.init_std)[0]
        self.gps = GPS(self.cost, [ctrl], config, self._final_distance)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
        self.output_dir = Path(p.output_dir or f"gps_{stamp}")
        self.records = []
        self.batch_X, self.batch_U = [], []
        self.phase = "waiting"      # waiting → resetting → sampling → … → done
        self.start_ns = None
        self.reset_stamp = None     # the announced stamp of the reset state being waited for
        self.reset_sent = 0.0       # wall (monotonic) time of the last reset request
        self.latest = None          # (stamp_ns, x) of the newest joint state
        self.last_progress = 0.0    # wall (monotonic) time the current sample last advanced
        self.X = self.U = None
        self.failure = ""
        self.exit_status = 0

        self.ctrl_pub = self.create_publisher(UInt8MultiArray, "/mbrl/controller", LATCHED_QOS)
        self.diag = Diagnostics(self, "gps trainer", self._report, p.diagnostics_period)
        self.intake = JointStateIntake(self, self.diag, robot, self.names, p, self._on_state,
                                       STATE_QOS)
        subscribe(self, self.diag, Float64MultiArray, "/effort_controller/commands", COMMAND_QOS,
                  self._on_command, lambda m: read_command(m, self.n), "command")
        subscribe(self, self.diag, String, "/mbrl/episode_events", EVENT_QOS, self._on_event,
                  read_episode_event, "event")
        self.reset_client = self.create_client(Trigger, p.reset_service)
        self.reset_future = None
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(0.05, self._tick, clock=wall)
        self.get_logger().info(
            f"{robot.name}: reach {np.round(p.target, 3).tolist()} m from "
            f"{np.round(q0, 3).tolist()} rad; {p.iterations} iterations × {p.samples} samples of "
            f"T = {self.T} steps; prior {p.prior}; output {self.output_dir}")

    def _final_distance(self, X) -> np.ndarray:
        with torch.no_grad():
            return self.cost.distance2(torch.as_tensor(X))[..., -1].sqrt().numpy()

    # -- episode driving -------------------------------------------------------------------------
    def _tick(self) -> None:
        if self.reset_future is not None and self.reset_future.done():
            result, self.reset_future = self.reset_future.result(), None
            if result is None or not result.success:
                self._stop(f"reset via {self.p.reset_service} failed: "
                           f"{getattr(result, 'message', 'no response')}")
            return
        if self.phase == "waiting" and self._graph_ready():
            self._reset()
        elif self.phase == "resetting" and self.reset_stamp is None \
                and time.monotonic() - self.reset_sent > self.p.reset_timeout:
            self.diag.warn("reset_retries", f"no reset announced within "
                                            f"{self.p.reset_timeout:g} s: asking again")
            self._reset()
        elif self.phase == "sampling" \
                and time.monotonic() - self.last_progress > self.p.reset_timeout:
            missing_x = np.flatnonzero(np.isnan(self.X[:, 0])).tolist()
            missing_u = np.flatnonzero(np.isnan(self.U[:, 0])).tolist()
            self.diag.warn("sample_restarts", f"sample stalled for {self.p.reset_timeout:g} s "
                                              f"without states {missing_x[:5]} / commands "
                                              f"{missing_u[:5]}: starting it again")
            self._reset()

    def _graph_ready(self) -> bool:
        """The sim's reset service and state publisher and the executor (command publisher,
        controller subscriber) are matched: a reset state cannot go unanswered."""
        return (self.reset_client.service_is_ready()
                and self.count_publishers("/joint_states") > 0
                and self.count_publishers("/mbrl/episode_events") > 0
                and self.count_publishers("/effort_controller/commands") > 0
                and self.count_subscribers("/mbrl/controller") > 0)

    def _reset(self) -> None:
        self.phase, self.reset_stamp = "resetting", None
        self.reset_sent = time.monotonic()
        self.reset_future = self.reset_client.call_async(Trigger.Request())

    def _on_event(self, event: EpisodeEvent) -> None:
        if event.kind != "reset" or self.phase != "resetting":
            return
        self.reset_stamp = event.stamp_ns
        if self.latest is not None and self.latest[0] == event.stamp_ns:
            self._start_sample(*self.latest)

    def _on_state(self, s: JointSample) -> None:
        x = np.concatenate([s.position, s.velocity])
        self.latest = (s.stamp_ns, x)
        if self.phase == "resetting" and s.stamp_ns == self.reset_stamp:
            self._start_sample(s.stamp_ns, x)
        elif self.phase == "sampling":
            t = self._index(s.stamp_ns)
            if t is not None and 1 <= t <= self.T:
                self.X[t] = x
                self.last_progress = time.monotonic()
                self._maybe_complete()

    def _on_command(self, command: tuple[np.ndarray, int | None]) -> None:
        if self.phase != "sampling":
            return
        torque, tag = command
        t = None if tag is None else self._index(tag)
        if t is None or not 0 <= t < self.T:
            self.diag.count("unmatched_commands")
            return
        self.U[t] = torque
        self.last_progress = time.monotonic()
        self._maybe_complete()

    def _index(self, stamp_ns: int) -> int | None:
        offset = stamp_ns - self.start_ns
        if offset % self.dt_ns:
            self.diag.warn("off_grid", f"stamp {stamp_ns} ns is not on the {self.dt_ns} ns grid "
                                       f"from {self.start_ns} ns: is control_period the arm's?")
            return None
        return offset // self.dt_ns

    def _start_sample(self, stamp_ns: int, x: np.ndarray) -> None:
        if np.abs(x[:self.n] - self.q0).max() > 1e-3 or np.abs(x[self.n:]).max() > 1e-3:
            self.diag.warn("start_mismatch", f"reset state {np.round(x[:self.n], 3).tolist()} "
                                             f"rad is not initial_position at rest")
        self.phase, self.start_ns = "sampling", stamp_ns
        self.last_progress = time.monotonic()
        self.X = np.full((self.T + 1, 2 * self.n), np.nan)
        self.U = np.full((self.T, self.n), np.nan)
        self.X[0] = x
        ctrl = self.gps.controller(0).restamp(stamp_ns)
        self.ctrl_pub.publish(UInt8MultiArray(data=list(ctrl.to_bytes({"planner": "gps"}))))

    def _maybe_complete(self) -> None:
        if np.isnan(self.X).any() or np.isnan(self.U).any():
            return
        self.batch_X.append(self.X)
        self.batch_U.append(self.U)
        self.diag.count("samples")
        if len(self.batch_X) < self.p.samples:
            self._reset()
            return
        X, U = np.stack(self.batch_X), np.stack(self.batch_U)
        self.batch_X, self.batch_U = [], []
        self._update(X, U)
        if self.phase != "done":
            self._reset()

    def _update(self, X: np.ndarray, U: np.ndarray) -> None:
        it = self.gps.iteration
        try:
            rec = self.gps.update(0, X, U)
        except (FitError, KLUpdateError, ValueError) as exc:
            self.diag.count("failed_updates")
            self.get_logger().error(f"iteration {it + 1}: update failed, no controller "
                                    f"published: {exc}")
            self.failure = str(exc)
        else:
            self.records.append(rec)
            self.failure = ""
            self.get_logger().info(
                f"iteration {it + 1}/{self.p.iterations}: cost {rec.cost:.2f}, KL "
                f"{rec.kl:.2f} nats, ε {rec.epsilon:.2f}, η {rec.eta:.3g}, step × "
                f"{rec.step_mult:.2f}, final distance {100 * rec.final_metric:.2f} cm, "
                f"{rec.samples_used} samples")
        self.gps.iteration = it + 1
        if self.gps.iteration >= self.p.iterations:
            self._finish()

    def _finish(self) -> None:
        self.phase = "done"
        final = self.gps.controller(0).restamp(self.latest[0] if self.latest else 0)
        self.ctrl_pub.publish(UInt8MultiArray(data=list(final.to_bytes({"planner": "gps"}))))
        if not self.records:
            self._stop("no iteration succeeded")
            return
        rows = learning_curve(self.records)
        table = format_curve(rows)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "summary.txt").write_text(table + "\n")
        plot_curves({f"prior {self.p.prior}": rows}, self.output_dir / "learning_curve.png",
                    f"GPS reach ({self.p.robot}), {self.p.samples} samples per iteration",
                    goal=2.0)
        self.get_logger().info(f"done: {len(rows)} iterations, final distance "
                               f"{100 * rows[-1]['final']:.2f} cm\n{table}\nwrote "
                               f"{self.output_dir}/summary.txt and learning_curve.png")
        self.context.try_shutdown()

    def _stop(self, problem: str) -> None:
        self.get_logger().error(problem)
        self.failure, self.phase, self.exit_status = problem, "done", 1
        self.context.try_shutdown()

    def _report(self) -> tuple[int, str, dict]:
        values = {"iteration": self.gps.iteration, "phase": self.phase,
                  "samples_used": self.gps.samples_used}
        if self.records:
            r = self.records[-1]
            values.update({"cost": r.cost, "kl": r.kl, "epsilon": r.epsilon, "eta": r.eta,
                           "final_distance": r.final_metric})
        if self.failure:
            return ERROR, self.failure, values
        return OK, f"iteration {self.gps.iteration}/{self.p.iterations}", values


def main(args=None) -> int:
    return run_node(lambda: GPSTrainerNode(), "gps_trainer", args)


if __name__ == "__main__":
    sys.exit(main())
