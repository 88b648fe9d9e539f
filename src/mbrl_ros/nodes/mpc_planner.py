"""Node ``mpc_planner``: model-predictive control through the latest learned dynamics model.

Subscribes ``/joint_states``, ``/mbrl/target`` (PointStamped; ``header.stamp`` = the stamp from
which the target holds, so targets can be sent ahead of their episode) and ``/mbrl/dynamics_model``
(model artifacts, transient-local). Every ``replan_every`` control periods it publishes a controller
artifact on ``/mbrl/controller`` (starting at the state's stamp, covering the steps until the next
replan with ``cover_until_replan``, else the whole plan; never past the end of an episode; valid
until ``plan_validity`` after the next replan is due, so the executor holds when plans stop) and
the predicted end-effector path on ``/mbrl/planned_path``. Until a model arrives (and for
``random_seconds`` at the start) it sends the base policy π0: random torques. A heartbeat
(std_msgs/Header, the node clock) goes to ``/mbrl/planner_heartbeat`` every 0.1 s of wall time and
in lockstep with every state: an executor in real time holds when it stops.

Planning runs in the joint-state callback: in a lockstep graph (``mode`` sync) the whole graph
waits for it, so results do not depend on machine speed; in real time (``mode`` realtime) only
the newest state is kept, so a plan is never made for a state that is already old. With
``wait_for_model`` the planner also holds back its answer until the model it needs has arrived:
after ``random_seconds`` the first model, and with the simulator's automatic episodes
(``episode_steps``) at the first state of every episode a model fitted on all data before it (the
fitter fits at episode ends; after ``model_wait_seconds`` of wall time without one it plans with the
model it has and warns). π0 then runs whole episodes (``random_seconds`` rounded up). A model for
other joints, another control period or an unknown state layout is refused (diagnostic, the previous
model stays); a plan with NaN falls back to the previous plan and is reported.

On a robot without the simulator's episodes (``episodes_from_events``) the planner plans only
inside an episode, from a ``start`` to an ``end`` event on ``/mbrl/episode_events`` (between
episodes the episode manager's homing controller drives the arm), and starts cold at each start.
With ``compensate_latency`` (real time) it plans from the model's prediction of the state at the
moment its plan takes effect: the median of its recent latencies ahead, under the previous plan's
actions. A latency is measured in the joint states' own clock, whatever it is (a robot's, the
simulator's), as the stamp of the first state received after a plan went out minus the stamp of
the state it was planned for. That covers the planning time and any queueing, not the network
transit of the state and the controller (about a millisecond each on a LAN; the lead is rounded
up to whole control periods). The node clock cannot measure it: under ``use_sim_time`` it stands
still while the callback plans, and a robot's clock need not be this computer's. In lockstep the
latency is the node clock's: the simulator waits for the plan. With ``model_offset``
(offset-free MPC) it adds the fitter's estimate of the model's recent one-step bias
(``/mbrl/model_offset``, ``dynamics.offset``) to every predicted step, while that estimate is for
the model in use, at most ``offset_max_age`` from the state and from the same episode. A plan is
cut at its first nominal state the executor would refuse (beyond the joint limits: a young
model's prediction). The gains it carries are ``feedback``'s (``mpc.MPC``): the planner's own,
none, or PD tracking of the plan.

Run control: ``~/pause`` (std_srvs/SetBool, ``_on_pause``) stops and resumes planning,
``~/save_controller`` (std_srvs/Trigger) writes the last controller to ``controller_path``; cost
weights, the torque box and the planner's size can be set at run time (``_set_params``).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from std_msgs.msg import Header, String, UInt8MultiArray
from std_srvs.srv import SetBool

from mbrl_ros.common.msgconv import JointSample, seconds_to_ns
from mbrl_ros.control.plausibility import TargetGate
from mbrl_ros.data.topics import (
    CONTROLLER,
    DYNAMICS_MODEL,
    EVENTS,
    MODEL_OFFSET,
    PLANNED_PATH,
    PLANNER_HEARTBEAT,
    read_episode_event,
)
from mbrl_ros.dynamics.base import DynamicsModel
from mbrl_ros.dynamics.catalog import available_kinds, load_model
from mbrl_ros.dynamics.offset import ModelOffset
from mbrl_ros.nodes.diagnostics import OK, WARN, Diagnostics
from mbrl_ros.nodes.intake import STATE_GATE_PARAMS, JointStateIntake, subscribe
from mbrl_ros.nodes.markers import PlanMarkers
from mbrl_ros.nodes.messages import (
    EVENT_QOS,
    LATCHED_QOS,
    NEWEST_ONLY,
    STATE_QOS,
    time_msg,
)
from mbrl_ros.nodes.params import ConfigError, Param, declare_params, select_joints
from mbrl_ros.nodes.run_control import add_save_service, save_path_param
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.nodes.targets import TargetSchedule, subscribe_targets
from mbrl_ros.planning import PlanError
from mbrl_ros.planning.mpc import MPCStep, PlannerSettings, build_mpc
from mbrl_ros.robot.description import load_robot
from mbrl_ros.tasks.checks import TaskError
from mbrl_ros.tasks.episodes import EpisodeClock

HEARTBEAT_PERIOD = 0.1  # s of wall time
SPIN_INTERVAL = 0.005  # s between callbacks in real time: the newest state is all it plans for

PARAMS = (
    [
        Param("robot", "arm7", "robot description: a name in urdf/ or a URDF path"),
        Param("joint_names", [], "joints to control, in command order; [] = all, robot order"),
        Param(
            "mode",
            "sync",
            "sync: plan for every joint state in order (lockstep graphs); "
            "realtime: only for the newest (a backlog is skipped, never planned "
            "late)",
            choices=("sync", "realtime"),
        ),
        Param(
            "wait_for_model",
            False,
            "lockstep graphs: after random_seconds, hold back the answer to "
            "a joint state until the first model arrives (the graph waits, "
            "so runs do not depend on fit speed; random_seconds must give "
            "the fitter its min_transitions); with episode_steps also, "
            "at each episode start, a model fitted on the data before it",
        ),
        Param(
            "episode_steps",
            0,
            "the simulator's automatic episode length (control steps); 0 = none",
            (0, 10**7),
        ),
        Param(
            "cover_until_replan",
            False,
            "publish controllers that end at the next replan, so a "
            "sync executor waits for every plan (lockstep: each state "
            "gets the plan made for it or for the replan before it); "
            "false = the whole plan, which a realtime executor can "
            "run on while the next plan is late",
        ),
        Param(
            "plan_validity",
            0.1,
            "a controller stays valid this long after the next replan is "
            "due (s): the latency a late plan may have before the executor "
            "holds",
            (0.0, 3600.0),
        ),
        Param(
            "episodes_from_events",
            False,
            "plan only inside episodes, from a 'start' to an 'end' "
            "event on /mbrl/episode_events (robots without the "
            "simulator's automatic episodes)",
        ),
        Param(
            "random_episodes",
            0,
            "with episodes_from_events: π0 for the first this many "
            "episodes (instead of random_seconds)",
            (0, 100000),
        ),
        Param(
            "compensate_latency",
            False,
            "realtime: plan from the state predicted for when the "
            "plan takes effect (the recent median latency ahead)",
        ),
        Param(
            "model_wait_seconds",
            30.0,
            "wall time to wait for a held state's model or target "
            "before going on without (s): the only wall-clock "
            "dependence of a lockstep run, so far above any fit time",
            (0.1, 1e6),
        ),
        Param(
            "model_offset",
            False,
            "offset-free MPC: add the fitter's estimate of the model's recent one-step bias "
            "(mbrl/model_offset; the fitter's offset_window) to the model's predictions",
        ),
        Param(
            "offset_max_age",
            0.5,
            "model_offset: use an estimate only this close to the state's stamp (s)",
            (0.0, 3600.0),
        ),
        save_path_param("controller"),
        Param(
            "torch_threads",
            1,
            "CPU threads of a plan (torch.set_num_threads): 1 leaves the other "
            "cores to the executor, sim and fitter and keeps plans "
            "reproducible; 0 = torch's default",
            (0, 1024),
        ),
    ]
    + PlannerSettings.params()
    + STATE_GATE_PARAMS
)


class MPCPlannerNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("mpc_planner", **node_kwargs)
        p = self.p = declare_params(self, PARAMS, self._set_params)
        robot = load_robot(p.robot)
        names, idx = select_joints(robot, p.joint_names)
        self.robot, self.joint_index = robot, idx
        self.joint_names = tuple(names)
        if p.torch_threads:
            torch.set_num_threads(p.torch_threads)
        self.device = p.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.realtime = p.mode == "realtime"
        self.spin_interval = SPIN_INTERVAL if self.realtime else 0.0  # see nodes.runner
        self.period_ns = seconds_to_ns(p.control_period)
        self.episodes = EpisodeClock(p.episode_steps, self.period_ns) if p.episode_steps else None
        random_seconds = p.random_seconds
        if self.episodes and random_seconds > 0:  # π0 for whole episodes
            n = math.ceil(random_seconds * 1e9 / self.episodes.episode_ns - 1e-9)
            random_seconds = self.episodes.start_ns(n) / 1e9
        self.random_seconds = random_seconds
        self.mpc = self._build_mpc(vars(p))
        available_kinds()  # import every model module now, not in the first model's callback
        self.frame = robot.link_names[0]
        self.targets = TargetSchedule(TargetGate.for_robot(robot))
        self.next_plan_ns: int | None = None
        self.model_version = -1
        self.model_seen = -1  # the model's data: up to this state (ns)
        self.plan_times: list[float] = []
        self.last_cost = float("nan")
        self.pending: JointSample | None = None  # a state held back until its model arrives
        self.pending_since = 0.0  # monotonic s
        self.latencies: list[int] = []  # ns, state stamp → controller published
        self.sent_for_ns: int | None = None  # real time: the stamp of the state last planned for
        self.episode_events: list[tuple[int, str]] = []  # (stamp, kind) of starts and ends
        self.episodes_started = 0  # with episodes_from_events
        self.last_planned_ns = -1  # stamp of the last state answered
        self.last_controller: bytes | None = None  # the last controller published
        self.paused = False  # ~/pause: no plans, no heartbeat
        self.offset: ModelOffset | None = None  # the fitter's newest model offset
        self.offset_norm = float("nan")  # |offset| of the last plan that used one

        self.controller_pub = self.create_publisher(UInt8MultiArray, CONTROLLER, LATCHED_QOS)
        self.path_pub = self.create_publisher(Path, PLANNED_PATH, 10)
        self.markers = PlanMarkers(self, self.mpc.fk, self.frame, len(names), self.period_ns)
        self.heartbeat_pub = self.create_publisher(Header, PLANNER_HEARTBEAT, 10)
        self.create_timer(
            HEARTBEAT_PERIOD, self._heartbeat, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        self.diag = Diagnostics(self, "planner", self._report)
        self.intake = JointStateIntake(
            self,
            self.diag,
            robot,
            names,
            p,
            self._on_state,
            NEWEST_ONLY if p.mode == "realtime" else STATE_QOS,
        )
        subscribe_targets(self, self.diag, self.targets, self._on_target)
        subscribe(
            self,
            self.diag,
            UInt8MultiArray,
            DYNAMICS_MODEL,
            LATCHED_QOS,
            self._on_model,
            self._read_model,
            "model",
        )
        if p.episodes_from_events:
            subscribe(
                self,
                self.diag,
                String,
                EVENTS,
                EVENT_QOS,
                self._on_event,
                read_episode_event,
                "event",
            )
        if p.model_offset:
            subscribe(
                self,
                self.diag,
                String,
                MODEL_OFFSET,
                10,
                self._on_offset,
                ModelOffset.from_msg,
                "model offset",
            )
        add_save_service(self, "controller", lambda: self.last_controller)
        self.create_service(SetBool, "~/pause", self._on_pause)
        if p.wait_for_model:
            self.create_timer(0.5, self._check_wait, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"{p.planner} planner, horizon {p.horizon} × "
            f"{p.control_period:g} s, replanning every {p.replan_every} "
            f"step(s) on {self.device}"
        )

    def _build_mpc(self, values: dict):
        """The MPC for the parameter values ``values``; ConfigError naming a bad setting."""
        try:
            settings = PlannerSettings.select(
                values | {"device": self.device, "random_seconds": self.random_seconds}
            )
            mpc = build_mpc(self.robot, self.joint_index, settings)
        except (PlanError, TaskError, ValueError) as exc:
            raise ConfigError(f"planner configuration: {exc}") from None
        if self.realtime:
            mpc.pi0_steps = settings.horizon
        return mpc

    def _set_params(self, changes) -> None:
        """Runtime parameters (cost weights, torque box, planner size): a new MPC built from
        them (ConfigError, nothing changed, if it cannot be) takes over the model, the warm-up
        clock and π0's random stream; its first plan starts cold. The published controller
        runs on until the next replan."""
        mpc = self._build_mpc(vars(self.p) | dict(changes))
        old = self.mpc
        if old.model is not None:
            mpc.set_model(old.model)
        mpc.first_stamp, mpc.base_policy = old.first_stamp, old.base_policy
        self.mpc = mpc
        self.get_logger().info(f"parameters set at run time: {dict(changes)}")

    # -- inputs --------------------------------------------------------------------------------
    def _read_model(self, msg: UInt8MultiArray) -> DynamicsModel:
        """A model artifact that this planner can use (ArtifactError, ModelError otherwise)."""
        model = load_model(bytes(msg.data), device=self.device)
        self.mpc.check_model(model)
        return model

    def _on_model(self, model: DynamicsModel) -> None:
        self.mpc.set_model(model)
        self.model_version = model.info.get("version", self.model_version + 1)
        self.model_seen = model.info.get("seen_until_ns", -1)
        self.diag.count("models_received")
        self._answer_pending()

    def _on_event(self, event) -> None:
        if event.kind in ("start", "end"):
            self.episode_events.append((event.stamp_ns, event.kind))
            self.episode_events.sort()
            del self.episode_events[:-4]

    def _on_offset(self, offset: ModelOffset) -> None:
        self.offset = offset

    def _offset_for(self, s: JointSample) -> np.ndarray | None:
        """The model offset to plan ``s`` with (``model_offset``): the newest estimate if it is
        for the model in use and its state layout, within ``offset_max_age`` of ``s`` and from
        ``s``'s episode (no start event between them); else None."""
        o, model = self.offset, self.mpc.model
        if o is None or model is None or o.model_version != self.model_version:
            return None
        if abs(s.stamp_ns - o.stamp_ns) > seconds_to_ns(self.p.offset_max_age):
            return None
        if any(k == "start" and o.stamp_ns < t <= s.stamp_ns for t, k in self.episode_events):
            return None
        if o.offset.shape != (model.dx,):
            self.diag.warn(
                "rejected_model_offset",
                f"model offset has {o.offset.size} values, the model's state {model.dx}",
            )
            return None
        return o.offset

    def _in_episode(self, stamp_ns: int) -> bool:
        """Whether the newest start/end event at or before ``stamp_ns`` is a start."""
        kinds = [k for t, k in self.episode_events if t <= stamp_ns]
        return bool(kinds) and kinds[-1] == "start"

    def _episode_starts(self, stamp_ns: int) -> bool:
        """Whether a start event lies after the last state planned for and at or before
        ``stamp_ns`` (the arm was brought to a new start pose)."""
        return any(
            k == "start" and self.last_planned_ns < t <= stamp_ns for t, k in self.episode_events
        )

    def _on_target(self, _target) -> None:
        self._answer_pending()

    def _answer_pending(self) -> None:
        """Answer the held state once what it waited for has arrived."""
        if self.pending is not None and not self._must_wait(self.pending):
            pending, self.pending = self.pending, None
            self._answer(pending)

    def _must_wait(self, s: JointSample) -> bool:
        """Whether the answer to ``s`` waits for a model (``wait_for_model``, see the module
        docstring): after the warm-up, for its target, and for a model: none yet; with automatic
        episodes instead: ``s`` starts an episode and no model's data was taken after the fitter
        had seen ``s`` (so with the last episode)."""
        if not self.p.wait_for_model or self.mpc.warming_up(s.stamp_ns):
            return False
        if self.targets.at(s.stamp_ns) is None:
            return True
        if self.episodes is None:
            return self.mpc.model is None
        return self.episodes.starts_episode(s.stamp_ns) and self.model_seen < s.stamp_ns

    def _check_wait(self) -> None:
        """Wall-clock timer: answer a held episode start with the current model (π0 without one)
        once ``model_wait_seconds`` have passed without the refit."""
        s = self.pending
        if s is None or time.monotonic() - self.pending_since < self.p.model_wait_seconds:
            return
        if self.targets.at(s.stamp_ns) is None:
            self.diag.warn(
                "late_targets",
                f"no target for {s.stamp_ns} ns within {self.p.model_wait_seconds:g} s: π0 runs on",
            )
        else:
            using = (
                f"planning with model v{self.model_version}"
                if self.mpc.model is not None
                else "π0 runs on (is min_transitions more than the π0 episodes give?)"
            )
            self.diag.warn(
                "late_refits",
                f"no model fitted on the data before {s.stamp_ns} ns "
                f"within {self.p.model_wait_seconds:g} s: {using}",
            )
        self.pending = None
        self._answer(s)

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response):
        """``~/pause``: true stops planning: no controller and no heartbeat is sent, so the
        executor runs the last controller at most until its validity ends (``plan_validity``
        after the next replan was due; in real time also ``heartbeat_timeout``) and then holds;
        false resumes with the next joint state, planning cold."""
        self.paused = request.data
        self.sent_for_ns = None  # the pause is no latency
        if request.data:
            self.pending = None
        else:
            self.mpc.reset()
            self.next_plan_ns = None
        response.success = True
        response.message = (
            "planning paused: the executor holds once the last controller expires"
            if request.data
            else "planning resumed"
        )
        self.get_logger().info(f"~/pause: {response.message}")
        return response

    def _heartbeat(self) -> None:
        if self.paused:
            return
        msg = Header(frame_id=self.get_name())
        msg.stamp = self.get_clock().now().to_msg()
        self.heartbeat_pub.publish(msg)

    def _on_state(self, s: JointSample) -> None:
        if self.paused:
            return
        if self.sent_for_ns is not None:  # the first state after a controller went out
            self._add_latency(s.stamp_ns - self.sent_for_ns)
            self.sent_for_ns = None
        if not self.realtime:  # lockstep: with every state (in real time: the timer's)
            self._heartbeat()
        if self.p.episodes_from_events and not self._in_episode(s.stamp_ns):
            return
        if (
            self.next_plan_ns is not None
            and s.stamp_ns < self.next_plan_ns
            and not (self.p.episodes_from_events and self._episode_starts(s.stamp_ns))
        ):
            return
        if self._must_wait(s):
            if self.mpc.model is None and self.pending is None:
                self.get_logger().info("π0 data collected: waiting for the first model")
            self.pending, self.pending_since = s, time.monotonic()
            return
        self.pending = None  # a newer state supersedes a held one (e.g. after a sim timeout)
        self._answer(s)

    def _answer(self, s: JointSample) -> None:
        """Publish the controller for joint state ``s``."""
        next_plan_ns = s.stamp_ns + self.p.replan_every * self.period_ns
        cover = None  # steps the published controller covers; None = all of the plan
        if self.episodes is not None:
            if self.episodes.starts_episode(s.stamp_ns):
                self.mpc.reset()  # the arm was reset: no warm start from the last episode
            # never cover the next episode's states: the executor would run this plan from the
            # reset state before the plan for it arrives
            cover = self.episodes.states_left(s.stamp_ns)
            next_plan_ns = min(next_plan_ns, s.stamp_ns + cover * self.period_ns)
        elif self.p.episodes_from_events and self._episode_starts(s.stamp_ns):
            self.mpc.reset()
            self.episodes_started += 1
        if self.p.cover_until_replan:
            cover = (next_plan_ns - s.stamp_ns) // self.period_ns
        lead = self._lead()
        tic = time.perf_counter()
        if self.p.episodes_from_events and self.episodes_started <= self.p.random_episodes:
            step = MPCStep(self.mpc.pi0(s.stamp_ns), "pi0")
        else:
            offset = self._offset_for(s) if self.p.model_offset else None
            step = self.mpc.act(
                s.position, s.velocity, s.stamp_ns, self.targets.at(s.stamp_ns), lead, offset
            )
            if offset is not None and step.plan is not None:
                if not self.diag.counters["plans_with_offset"]:
                    self.get_logger().info(
                        f"planning with the fitter's model offset from now on (model "
                        f"v{self.model_version}, |offset| {np.linalg.norm(offset):.3g})"
                    )
                self.diag.count("plans_with_offset")
                self.offset_norm = float(np.linalg.norm(offset))
        controller = step.controller
        if cover is not None and controller.T > cover:
            controller = controller.slice(0, cover)
        self.diag.count(f"controllers_{step.source}")
        if step.plan is not None:
            self.plan_times.append(time.perf_counter() - tic)
            del self.plan_times[:-50]
            self.last_cost = step.plan.cost
            if not step.plan.ok:
                self.diag.warn(
                    "nan_plans",
                    f"plan at {s.stamp_ns} ns produced NaN: using the {step.source} controller",
                )
        self.last_planned_ns = s.stamp_ns
        controller = self._plausible_part(controller)
        if controller is None:
            self.mpc.reset()  # the next plan starts cold, not from the refused one
            self.next_plan_ns = None  # plan again for the next state
            return
        next_plan_ns = min(next_plan_ns, max(controller.end_ns, s.stamp_ns + self.period_ns))
        self.next_plan_ns = next_plan_ns
        controller = controller.with_validity(
            max(next_plan_ns, controller.start_ns) + seconds_to_ns(self.p.plan_validity)
        )
        self.last_controller = controller.to_bytes()
        self.controller_pub.publish(UInt8MultiArray(data=self.last_controller))
        if self.realtime:
            self.sent_for_ns = s.stamp_ns
        else:
            self._add_latency(self.get_clock().now().nanoseconds - s.stamp_ns)
        if step.source == "plan" and step.plan is not None and step.plan.states is not None:
            self._publish_path(step.plan.states, s.stamp_ns)
            self.markers.publish(step.plan, self.mpc.model, self.targets.at(s.stamp_ns), s.stamp_ns)

    def _add_latency(self, ns: int) -> None:
        self.latencies.append(ns)
        del self.latencies[:-20]

    def _plausible_part(self, c):
        """The controller up to the first step whose nominal state the executor would find
        implausible (a young model's prediction running far beyond the joint limits: the
        executor refuses such a controller whole); None (and a warning) if its first step is."""
        n = len(self.joint_names)
        t = self.intake.gate.first_implausible(c.x_hat[:, :n], c.x_hat[:, n : 2 * n])
        if t is None:
            return c
        self.diag.warn(
            "implausible_plan_steps",
            f"plan from {c.start_ns} ns leaves the joint "
            f"limits at step {t} of {c.T}: " + ("cut there" if t else "not sent"),
        )
        return c.slice(0, t) if t else None

    def _lead(self) -> int:
        """ns to plan ahead: the median recent latency, with ``compensate_latency``; 0 (and a
        warning) when it exceeds the plan's horizon: the plan would end before it took effect."""
        if not (self.p.compensate_latency and self.latencies):
            return 0
        lead = int(np.median(self.latencies))
        if lead >= self.p.horizon * self.period_ns:
            self.diag.warn(
                "latency_beyond_horizon",
                f"plans take effect {lead * 1e-9:.3g} s after their joint state, later "
                f"than the plan's end: planning without a lead (is the planner short of "
                f"CPU? torch_threads, and the other nodes on its cores)",
            )
            return 0
        return lead

    def _publish_path(self, states: np.ndarray, stamp_ns: int) -> None:
        n = len(self.joint_names)
        ee = self.mpc.fk.ee_position(torch.as_tensor(states[:, :n], dtype=torch.float64)).numpy()
        path = Path()
        path.header.stamp, path.header.frame_id = time_msg(stamp_ns), self.frame
        for t, point in enumerate(ee):
            pose = PoseStamped()
            pose.header.stamp, pose.header.frame_id = (
                time_msg(stamp_ns + t * self.period_ns),
                self.frame,
            )
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, point)
            pose.pose.orientation.w = 1.0
            path.poses.append(pose)
        self.path_pub.publish(path)

    def _report(self) -> tuple[int, str, dict]:
        rate = 1.0 / np.mean(self.plan_times) if self.plan_times else float("nan")
        level = (
            WARN if self.diag.counters["nan_plans"] or self.diag.counters["rejected_model"] else OK
        )
        latency = float(np.median(self.latencies)) * 1e-6 if self.latencies else float("nan")
        return (
            level,
            f"{self.p.planner}, model v{self.model_version}",
            {
                "plan_rate_hz": rate,
                "last_cost": self.last_cost,
                "model_version": self.model_version,
                "plan_latency_ms": latency,
                "model_offset_norm": self.offset_norm,
                "paused": self.paused,
            },
        )


def main(args=None) -> int:
    return run_node(lambda: MPCPlannerNode(), "mpc_planner", args)


if __name__ == "__main__":
    sys.exit(main())
