"""Node ``episode_manager``: runs the reaching episodes of a learning run and scores them.

Works with the simulator's automatic episodes (``episode_steps`` = N on both nodes): episode e
starts at stamp e·(N+1)·control_period, so every episode's target is published on ``/mbrl/target``
at start-up with ``header.stamp`` = its episode's start stamp (planners use the newest target whose
stamp is not after the state's; transient-local, so late subscribers get them all). Training targets and held-out targets come from separate seeds. Each
episode's start and end go to ``/mbrl/episode_events``; one progress line per episode; at the end a
summary table, ``results.json`` and a learning-curve PNG in ``output_dir``, then the node exits
(the graph ends with it).
"""
from __future__ import annotations

import json
import sys
from collections import deque
from pathlib import Path

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray

from mbrl_ros.artifacts import read_header
from mbrl_ros.dynamics.base import model_info
from mbrl_ros.episodes import EpisodeClock, Summary, TargetSampler, progress_line, score
from mbrl_ros.msgconv import JointSample
from mbrl_ros.nodes.diagnostics import OK, Diagnostics
from mbrl_ros.nodes.intake import STATE_GATE_PARAMS, JointStateIntake, subscribe
from mbrl_ros.nodes.messages import (EVENT_QOS, LATCHED_QOS, MAX_TARGETS, STATE_QOS,
                                     TARGET_QOS, time_msg)
from mbrl_ros.nodes.params import ConfigError, Param, declare_params
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.robot import ForwardKinematics, load_robot

PARAMS = [
    Param("robot", "arm7", "robot description: a name in urdf/ or a URDF path"),
    Param("control_period", 0.01, "the simulator's control period (s)", (1e-4, 1.0)),
    Param("episode_steps", 200, "control steps per episode (same value as the simulator's)",
          (1, 10**7)),
    Param("train_episodes", 10, "episodes on training targets", (0, 100000)),
    Param("eval_every", 0, "a held-out episode after every k training episodes; 0 = none",
          (0, 100000)),
    Param("final_eval_episodes", 10, "held-out episodes at the end", (0, 100000)),
    Param("success_tolerance", 0.02, "final end-effector distance that counts as success (m)",
          (1e-4, 1.0)),
    Param("target_box_min", [0.2, -0.5, 0.2], "workspace box for targets, min corner (m)",
          (-10.0, 10.0)),
    Param("target_box_max", [0.7, 0.5, 0.8], "workspace box for targets, max corner (m)",
          (-10.0, 10.0)),
    Param("train_seed", 1, "seed of the training targets", (0, 2**31 - 1)),
    Param("eval_seed", 1000, "seed of the held-out targets", (0, 2**31 - 1)),
    Param("output_dir", "", "folder for summary.md, results.json, learning_curve.png; '' = none"),
    Param("planner_name", "mpc_planner", "node whose /diagnostics carry plan_rate_hz"),
] + STATE_GATE_PARAMS


class EpisodeManagerNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("episode_manager", **node_kwargs)
        p = self.p = declare_params(self, PARAMS)
        robot = load_robot(p.robot)
        if len(p.target_box_min) != 3 or len(p.target_box_max) != 3:
            raise ConfigError("parameters 'target_box_min' and 'target_box_max' need 3 values")
        box = (np.array(p.target_box_min), np.array(p.target_box_max))
        try:
            self.samplers = {False: TargetSampler(robot, box, p.train_seed),
                             True: TargetSampler(robot, box, p.eval_seed)}
        except ValueError as exc:
            raise ConfigError(f"target box: {exc}") from None
        self.joint_names = robot.joint_names
        self.frame = robot.link_names[0]
        self.fk = ForwardKinematics(robot)
        self.clock = EpisodeClock(p.episode_steps, int(round(p.control_period * 1e9)))
        self.schedule = self._schedule()
        if not self.schedule:
            raise ConfigError("no episodes to run: set 'train_episodes' or 'final_eval_episodes'")
        if len(self.schedule) > MAX_TARGETS:
            raise ConfigError(f"{len(self.schedule)} episodes: at most {MAX_TARGETS} per run "
                              "(every target is published at start-up)")
        self.targets = [self.samplers[held_out].sample() for held_out in self.schedule]
        self.distances: dict[int, list[float]] = {}
        self.summary = Summary()
        self.models: deque[dict] = deque(maxlen=MAX_TARGETS)  # infos of the models received
        self.plan_rate = float("nan")
        self.exit_status = 0

        self.target_pub = self.create_publisher(PointStamped, "/mbrl/target", TARGET_QOS)
        self.event_pub = self.create_publisher(String, "/mbrl/episode_events", EVENT_QOS)
        self.diag = Diagnostics(self, "episodes", self._report)
        self.intake = JointStateIntake(self, self.diag, robot, robot.joint_names, p,
                                       self._on_state, STATE_QOS)
        subscribe(self, self.diag, UInt8MultiArray, "/mbrl/dynamics_model", LATCHED_QOS,
                  self.models.append, lambda m: model_info(read_header(bytes(m.data))[1]),
                  "model")
        subscribe(self, self.diag, DiagnosticArray, "/diagnostics", 10, self._on_diagnostics,
                  what="diagnostics")
        # Every episode's target at once, each stamped with its episode's start: a node acting on
        # a state then never races the delivery of the next target (lockstep episodes can be
        # shorter than a DDS delivery under load).
        for e in range(len(self.schedule)):
            self._publish_target(e)
        self.get_logger().info(
            f"{len(self.schedule)} episodes of {p.episode_steps * p.control_period:g} s "
            f"({sum(self.schedule)} on held-out targets), success within "
            f"{100 * p.success_tolerance:g} cm")

    def _schedule(self) -> list[bool]:
        """held_out flag of each episode in order."""
        out = []
        for i in range(self.p.train_episodes):
            out.append(False)
            if self.p.eval_every and (i + 1) % self.p.eval_every == 0:
                out.append(True)
        return out + [True] * self.p.final_eval_episodes

    def _publish_target(self, e: int) -> None:
        msg = PointStamped()
        msg.header.stamp = time_msg(self.clock.start_ns(e))
        msg.header.frame_id = self.frame
        msg.point.x, msg.point.y, msg.point.z = (float(v) for v in self.targets[e])
        self.target_pub.publish(msg)

    def _event(self, kind: str, e: int, stamp_ns: int) -> None:
        self.event_pub.publish(String(data=json.dumps({
            "event": kind, "episode": e, "stamp_ns": stamp_ns, "held_out": self.schedule[e],
            "target": [float(v) for v in self.targets[e]], "source": self.get_name()})))

    def _on_state(self, s: JointSample) -> None:
        e, k = self.clock.locate(s.stamp_ns)
        if e >= len(self.schedule) or e in {r.episode for r in self.summary.results}:
            return
        if e not in self.distances:
            self.distances[e] = []
            self._event("start", e, s.stamp_ns)
        ee = self.fk.ee_position(torch.as_tensor(s.position)).numpy()
        self.distances[e].append(float(np.linalg.norm(ee - self.targets[e])))
        if k == self.p.episode_steps:
            self._event("end", e, s.stamp_ns)
            self._finish_episode(e)

    def _model_of(self, e: int) -> dict:
        """Info of the model the planner used in episode ``e``: the newest one whose data was
        taken by the episode's start (``seen_until_ns``; the fitter fits at episode starts)."""
        start = self.clock.start_ns(e)
        used = [m for m in self.models if m.get("seen_until_ns", -1) <= start]
        return max(used, key=lambda m: m.get("version", 0), default={})

    def _finish_episode(self, e: int) -> None:
        m = self._model_of(e)  # the fitter's artifact info
        error = m.get("val_rmse_1step")
        info = {"data_size": m.get("transitions", 0), "model_version": m.get("version", -1),
                "val_error": float("nan") if error is None else float(error),
                "plan_rate_hz": self.plan_rate}
        result = score(e, self.schedule[e], self.targets[e], np.array(self.distances.pop(e)),
                       self.p.success_tolerance,
                       (e + 1) * self.p.episode_steps * self.p.control_period, **info)
        self.summary.results.append(result)
        self.get_logger().info(progress_line(result, self.p.success_tolerance))
        if len(self.summary.results) == len(self.schedule):
            self._write_summary()
            self.context.try_shutdown()

    def _write_summary(self) -> None:
        table = self.summary.table(self.p.success_tolerance)
        print("\n" + table + "\n", flush=True)
        if self.p.output_dir:
            out = Path(self.p.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "summary.md").write_text(table + "\n")
            (out / "results.json").write_text(json.dumps(self.summary.records(), indent=1))
            png = self.summary.plot(out / "learning_curve.png", self.p.success_tolerance,
                                    f"reaching on {self.p.robot}")
            print(f"[episode_manager] wrote {out / 'summary.md'}, results.json and {png}",
                  flush=True)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(self.p.planner_name + ":"):
                for kv in status.values:
                    if kv.key == "plan_rate_hz":
                        try:
                            self.plan_rate = float(kv.value)
                        except ValueError:
                            pass

    def _report(self) -> tuple[int, str, dict]:
        done = len(self.summary.results)
        return OK, f"{done}/{len(self.schedule)} episodes", {
            "episodes_done": done, "episodes": len(self.schedule)}


def main(args=None) -> int:
    return run_node(lambda: EpisodeManagerNode(), "episode_manager", args)


if __name__ == "__main__":
    sys.exit(main())
