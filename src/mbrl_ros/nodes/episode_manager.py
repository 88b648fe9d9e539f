"""Node ``episode_manager``: runs the reaching episodes of a learning run and scores them.

``episode_source`` says where episodes come from:

* ``clock``: the lockstep simulator's automatic episodes (below);
* ``homing`` (a robot without resets): before each episode the manager publishes a homing
  controller on ``/mbrl/homing_controller`` that brings the arm from where it is to the episode's
  start pose (home ± ``start_radius``, home = ``home`` or the pose at start-up); the episode starts
  at the first state at which the arm has settled there (the homing controller is then republished
  cut at that stamp, and the planner takes over) and lasts ``episode_steps`` control periods of
  joint-state stamps. A homing that does not settle within ``homing_timeout`` is started again
  from where the arm is (``homing_retries`` times), then ends the run with an error naming the
  joints;
* ``service``: the same, but the robot's (or simulator's) std_srvs/Trigger ``reset_service``
  resets the arm and the episode starts at the first state at rest after its answer.

Without the clock, targets are sampled around the home pose (``target_radius``,
``target_min_height``) once the first state has arrived, and each is published when its episode
starts, stamped with the start.

With the simulator's automatic episodes (``episode_steps`` = N on both nodes): episode e
starts at stamp e·(N+1)·control_period, so every episode's target is published on ``/mbrl/target``
at start-up with ``header.stamp`` = its episode's start stamp (planners use the newest target whose
stamp is not after the state's; transient-local, so late subscribers get them all). Training
targets and held-out targets come from separate seeds (or every episode has the one ``target``,
as in the 'solar' graph's task). Each episode's start and end go to ``/mbrl/episode_events``;
one progress line per episode; at the end a summary table, ``results.json`` and a learning-curve
PNG in ``output_dir``, then the node exits (the graph ends with it).

Peg insertion (``tool``, e.g. ``peg``, with the simulator's ``scene``; clock source): each target
is the top centre of the episode's hole (the simulator moves its block there at the episode's
reset), and the distance scored is the peg tip's (``tool``'s site ``peg_tip``) to where it is when
fully inserted, the hole's floor centre: within ``success_tolerance`` (e.g. 5 mm) = inserted.
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
from std_srvs.srv import Trigger

from mbrl_ros.common.artifacts import read_header
from mbrl_ros.common.msgconv import JointSample, seconds_to_ns
from mbrl_ros.control.homing import HomingSettings
from mbrl_ros.data.topics import DIAGNOSTICS, DYNAMICS_MODEL, EVENTS, RESET_SERVICE, TARGET, resolve
from mbrl_ros.dynamics.base import model_info
from mbrl_ros.nodes.diagnostics import ERROR, OK, Diagnostics
from mbrl_ros.nodes.homing_sender import HomingSender
from mbrl_ros.nodes.intake import STATE_GATE_PARAMS, JointStateIntake, subscribe
from mbrl_ros.nodes.messages import (
    EVENT_QOS,
    LATCHED_QOS,
    MAX_TARGETS,
    NEWEST_ONLY,
    STATE_QOS,
    TARGET_QOS,
    target_msg,
)
from mbrl_ros.nodes.params import ConfigError, Param, declare_params
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.tasks.episodes import (
    EpisodeClock,
    EpisodeSettings,
    Summary,
    TargetRegionSettings,
    progress_line,
    score,
)
from mbrl_ros.tasks.insertion_scene import InsertionSimulator, tool_scene
from mbrl_ros.tasks.robot_episodes import HOMING, SERVICE, EpisodeSequencer, Step

SPIN_INTERVAL = 0.01  # s, between callbacks without the clock

PARAMS = (
    [
        Param("robot", "arm7", "robot description: a name in urdf/ or a URDF path"),
        Param("control_period", 0.01, "control period of the learning run (s)", (1e-4, 1.0)),
        Param(
            "episode_source",
            "clock",
            "clock: the simulator's automatic episodes; homing: the "
            "manager brings the arm to each start pose; service: a reset service does",
            choices=("clock", HOMING, SERVICE),
        ),
        Param("reset_service", RESET_SERVICE, "service: the std_srvs/Trigger that resets the arm"),
        Param(
            "output_dir", "", "folder for summary.md, results.json, learning_curve.png; '' = none"
        ),
        Param(
            "planner_name",
            "mpc_planner",
            "node whose /diagnostics carry plan_rate_hz; '' = a graph without a planner and "
            "fitter (the controller comes from a file): no model or plan rate is reported",
        ),
        Param(
            "tool",
            "",
            "'' = score the end effector against the target; a tool (e.g. peg, with 'scene'): "
            "targets are hole positions and the peg tip is scored against the hole's floor",
        ),
        Param("scene", "insertion", "tool: the simulator's scene with the hole"),
    ]
    + EpisodeSettings.params()
    + TargetRegionSettings.params()
    + HomingSettings.params()
    + STATE_GATE_PARAMS
)


class EpisodeManagerNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("episode_manager", **node_kwargs)
        p = self.p = declare_params(self, PARAMS)
        self.episodes = EpisodeSettings.select(vars(p))
        self.region = TargetRegionSettings.select(vars(p))
        self.homing_settings = HomingSettings.select(vars(p))
        robot = self.robot = load_robot(p.robot)
        self.joint_names = robot.joint_names
        self.frame = robot.link_names[0]
        self.fk = ForwardKinematics(robot)
        self.period_ns = seconds_to_ns(p.control_period)
        self.clock = EpisodeClock(p.episode_steps, self.period_ns)
        self.schedule = self.episodes.schedule()
        if len(self.schedule) > MAX_TARGETS:
            raise ConfigError(
                f"{len(self.schedule)} episodes: at most {MAX_TARGETS} per run "
                "(every target is published at start-up)"
            )
        self.external = p.episode_source != "clock"
        self.targets: list[np.ndarray] = []
        self.sequencer: EpisodeSequencer | None = None
        if self.external:
            self._check_home(robot)
            self.sequencer = EpisodeSequencer(
                len(self.schedule),
                p.episode_steps * self.period_ns,
                p.episode_source,
                self._start_pose,
                lambda goal: self.homing_settings.settle_detector(goal, self.joint_names),
                p.homing_retries,
            )
        else:
            try:
                self.targets = (
                    self.episodes.uniform_targets() if p.tool else self.episodes.box_targets(robot)
                )
            except ValueError as exc:
                raise ConfigError(f"target box: {exc}") from None
        self.scene = self._insertion_scene() if p.tool else None
        # the point scored per episode: the target, or (tool) the floor of the hole there
        self.goals = [self._goal(t) for t in self.targets]
        self.distances: dict[int, list[float]] = {}
        self.summary = Summary()
        self.models: deque[dict] = deque(maxlen=MAX_TARGETS)  # infos of the models received
        self.plan_rate = float("nan")
        self.exit_status = 0
        self.failure = ""
        self.last_state: JointSample | None = None
        self.tracked_ns = -1  # stamp of the last distance taken
        # without the clock: the newest state every 10 ms is enough (see nodes.runner)
        self.spin_interval = SPIN_INTERVAL if self.external else 0.0

        self.target_pub = self.create_publisher(PointStamped, TARGET, TARGET_QOS)
        self.event_pub = self.create_publisher(String, EVENTS, EVENT_QOS)
        self.homing = (
            HomingSender(self, robot, robot.joint_names, self.homing_settings)
            if self.external
            else None
        )
        self.reset_client = (
            self.create_client(Trigger, p.reset_service) if p.episode_source == SERVICE else None
        )
        self.diag = Diagnostics(self, "episodes", self._report)
        # without the clock only the newest state matters (settling, and one distance per
        # control period): a robot's 500 Hz stream is not queued
        self.intake = JointStateIntake(
            self,
            self.diag,
            robot,
            robot.joint_names,
            p,
            self._on_state,
            NEWEST_ONLY if self.external else STATE_QOS,
        )
        if p.planner_name:
            subscribe(
                self,
                self.diag,
                UInt8MultiArray,
                DYNAMICS_MODEL,
                LATCHED_QOS,
                self.models.append,
                lambda m: model_info(read_header(bytes(m.data))[1]),
                "model",
            )
            # the planner's status on /diagnostics, named with its namespace (as Diagnostics
            # does)
            self._planner_status = resolve(p.planner_name, self.get_namespace()).lstrip("/") + ":"
            subscribe(
                self,
                self.diag,
                DiagnosticArray,
                DIAGNOSTICS,
                10,
                self._on_diagnostics,
                what="diagnostics",
            )
        if not self.external:
            # Every episode's target at once, each stamped with its episode's start: a node
            # acting on a state then never races the delivery of the next target (lockstep
            # episodes can be shorter than a DDS delivery under load).
            for e in range(len(self.schedule)):
                self._publish_target(e, self.clock.start_ns(e))
        self.get_logger().info(
            f"{len(self.schedule)} episodes of {p.episode_steps * p.control_period:g} s "
            f"({sum(self.schedule)} on held-out targets), success within "
            f"{100 * p.success_tolerance:g} cm"
            + (f"; between episodes: {p.episode_source}" if self.external else "")
        )

    # -- set-up --------------------------------------------------------------------------------
    def _check_home(self, robot) -> None:
        home = self.p.home
        if home and (
            len(home) != robot.n_joints
            or not np.all(
                (np.array(home) >= robot.limits.lower) & (np.array(home) <= robot.limits.upper)
            )
        ):
            raise ConfigError(
                f"parameter 'home' = {home} must be {robot.n_joints} positions "
                f"within the joint limits of {robot.name}"
            )

    def _set_home(self, q: np.ndarray) -> None:
        """At the first state: home (the parameter, or this pose), the targets around it and
        the start poses."""
        home = np.array(self.p.home, float) if self.p.home else np.array(q, float)
        try:
            self.targets = self.episodes.region_targets(self.robot, home, self.region)
            self.goals = list(self.targets)  # a tool needs the clock
        except ValueError as exc:
            raise ConfigError(f"targets around the home pose: {exc}") from None
        self.start_poses = self.episodes.start_poses(self.robot, home, self.region)
        self.get_logger().info(
            f"home pose {np.round(home, 3).tolist()} rad; {len(self.targets)} targets around it"
        )

    def _start_pose(self, e: int, q: np.ndarray) -> np.ndarray:
        """Episode e's start pose: home ± start_radius within the limits minus the margin."""
        return self.start_poses.pose(e)

    # -- output --------------------------------------------------------------------------------
    def _publish_target(self, e: int, stamp_ns: int) -> None:
        self.target_pub.publish(target_msg(stamp_ns, self.frame, self.targets[e]))

    def _event(self, kind: str, e: int, stamp_ns: int) -> None:
        self.event_pub.publish(
            String(
                data=json.dumps(
                    {
                        "event": kind,
                        "episode": e,
                        "stamp_ns": stamp_ns,
                        "held_out": self.schedule[e],
                        "target": [float(v) for v in self.targets[e]],
                        "source": self.get_name(),
                    }
                )
            )
        )

    # -- episodes ------------------------------------------------------------------------------
    def _on_state(self, s: JointSample) -> None:
        if self.external:
            if not self.targets:
                self._set_home(s.position)
            self.last_state = s
            seq = self._sequencer()
            episode = seq.episode
            for step in seq.on_state(s.stamp_ns, s.position, s.velocity):
                if step.kind == "end":
                    self._track(episode, s)  # the final distance: at the episode's end
                self._do(step, s)
            if seq.running and (
                not self.distances.get(episode) or s.stamp_ns >= self.tracked_ns + self.period_ns
            ):
                self._track(episode, s)  # one distance per control period
                self.tracked_ns = s.stamp_ns
            return
        e, k = self.clock.locate(s.stamp_ns)
        if e >= len(self.schedule) or e in {r.episode for r in self.summary.results}:
            return
        if e not in self.distances:
            self._event("start", e, s.stamp_ns)
        self._track(e, s)
        if k == self.p.episode_steps:
            self._event("end", e, s.stamp_ns)
            self._finish_episode(e, self.clock.start_ns(e))

    def _track(self, e: int, s: JointSample) -> None:
        q = torch.as_tensor(s.position)
        with torch.no_grad():
            point = self.fk.positions(q)[0] if self.scene else self.fk.ee_position(q)
        self.distances.setdefault(e, []).append(
            float(np.linalg.norm(point.numpy() - self.goals[e]))
        )

    def _insertion_scene(self) -> InsertionSimulator:
        """The simulator's scene with the tool: the peg tip is what ``fk`` then measures."""
        p = self.p
        if self.external:
            raise ConfigError(
                f"parameter 'tool' = {p.tool!r} needs episode_source clock: the lockstep "
                "simulator moves its hole at the episodes' resets"
            )
        scene = tool_scene(self.robot, p.scene, p.tool)
        tip = scene.peg_points["peg_tip"]
        self.fk = ForwardKinematics(self.robot, {"peg_tip": (self.robot.ee_link, tip)})
        return scene

    def _goal(self, target: np.ndarray) -> np.ndarray:
        """Where the scored point should end (3,) m: the target, or the floor of its hole."""
        if self.scene is None:
            return target
        self.scene.set_hole(target)
        return self.scene.hole.bottom

    def _sequencer(self) -> EpisodeSequencer:
        """The sequencer of an external episode source (the clock source has none)."""
        if self.sequencer is None:
            raise RuntimeError(f"episode_source '{self.p.episode_source}' has no sequencer")
        return self.sequencer

    def _do(self, step: Step, s: JointSample | None) -> None:
        """Carry out a step of the external episode sequence (``s``: the latest state)."""
        e = step.episode
        if step.kind == "home":
            # homing starts from a state (reset answers come after the episode's states)
            assert s is not None and step.goal is not None, "home step without state or goal"
            self.homing.home(s, step.goal)
            if step.message:
                self.diag.warn("homing_retries", f"episode {e}: homing {step.message}")
            else:
                self.get_logger().info(f"episode {e}: homing to {np.round(step.goal, 3).tolist()}")
        elif step.kind == "reset":
            self._call_reset()
        elif step.kind == "start":
            self.homing.hand_over(step.stamp_ns)  # to the planner from this state on
            self._publish_target(e, step.stamp_ns)
            self._event("start", e, step.stamp_ns)
        elif step.kind == "end":
            self._event("end", e, step.stamp_ns)
            self._finish_episode(e, self._sequencer().starts[e])
        elif step.kind == "failed":
            self.failure = f"episode {e}: {step.message}"
            self.get_logger().error(f"{self.failure}; ending the run")
            self.diag.count("episode_failures")
            self.diag.publish()
            self.exit_status = 1
            self.context.try_shutdown()

    def _call_reset(self) -> None:
        if not self.reset_client.wait_for_service(timeout_sec=5.0):
            self._fail_reset(f"reset service {self.p.reset_service} is not available")
            return
        future = self.reset_client.call_async(Trigger.Request())
        future.add_done_callback(self._on_reset_answer)

    def _on_reset_answer(self, future) -> None:
        try:
            answer = future.result()
            ok, message = bool(answer.success), str(answer.message)
        except Exception as exc:  # the call failed: say so, never crash
            ok, message = False, f"{type(exc).__name__}: {exc}"
        stamp = self.last_state.stamp_ns if self.last_state else 0
        for step in self._sequencer().reset_done(ok, message, stamp):
            self._do(step, self.last_state)

    def _fail_reset(self, message: str) -> None:
        self._do(Step("failed", self._sequencer().episode, 0, message=message), self.last_state)

    def _model_of(self, start_ns: int) -> dict:
        """Info of the model the planner used in an episode that started at ``start_ns``: the
        newest one whose data was taken by then (``seen_until_ns``; the fitter fits at episode
        starts)."""
        used = [m for m in self.models if m.get("seen_until_ns", -1) <= start_ns]
        return max(used, key=lambda m: m.get("version", 0), default={})

    def _finish_episode(self, e: int, start_ns: int) -> None:
        m = self._model_of(start_ns)  # the fitter's artifact info
        error = m.get("val_rmse_1step")
        info = {
            "data_size": m.get("transitions", 0),
            "model_version": m.get("version", -1),
            "val_error": float("nan") if error is None else float(error),
            "plan_rate_hz": self.plan_rate,
        }
        result = score(
            e,
            self.schedule[e],
            self.targets[e],
            np.array(self.distances.pop(e)),
            self.p.success_tolerance,
            (e + 1) * self.p.episode_steps * self.p.control_period,
            **info,
        )
        self.summary.results.append(result)
        self.get_logger().info(
            progress_line(result, self.p.success_tolerance, learner=bool(self.p.planner_name))
        )
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
            png = self.summary.plot(
                out / "learning_curve.png", self.p.success_tolerance, f"reaching on {self.p.robot}"
            )
            print(
                f"[episode_manager] wrote {out / 'summary.md'}, results.json and {png}", flush=True
            )

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(self._planner_status):
                for kv in status.values:
                    if kv.key == "plan_rate_hz":
                        try:
                            self.plan_rate = float(kv.value)
                        except ValueError:
                            pass

    def _report(self) -> tuple[int, str, dict]:
        done = len(self.summary.results)
        phase = self.sequencer.phase if self.sequencer else "clock"
        if self.failure:
            return ERROR, self.failure, {"episodes_done": done, "phase": phase}
        return (
            OK,
            f"{done}/{len(self.schedule)} episodes ({phase})",
            {"episodes_done": done, "episodes": len(self.schedule), "phase": phase},
        )


def main(args=None) -> int:
    return run_node(lambda: EpisodeManagerNode(), "episode_manager", args)


if __name__ == "__main__":
    sys.exit(main())
