"""Trainer node ``gps_trainer``: guided policy search against the arm, from one or several
initial conditions.

A condition is a start pose (``initial_position``: n angles per condition, K·n values for K
conditions, or one pose for all) and a target (``target``: 3 values shared, or 3 per condition).
``task`` ``reach``: the target is the end effector's (``tasks.reach.ReachCost``); ``insertion``
(lockstep simulator with ``tool`` and ``scene``): the target is the top centre of the hole the peg
goes into (``tasks.insertion.InsertionCost`` on the peg's axis points, geometry from the same
scene files as the simulator's); before each reset the trainer publishes the condition's hole on
``/mbrl/target``, the simulator moves its block there at the reset, and a reset whose announced
``hole`` is elsewhere is asked for again. The metric is then the peg tip's final depth in the
hole (mm; full depth = the hole's depth − ``full_depth_tolerance``). Per iteration,
for each condition in turn, ``samples`` times: bring the arm to the condition's start pose,
publish the condition's current linear-Gaussian controller restamped to start at the start
state's stamp on ``/mbrl/controller`` (the executor with ``stochastic`` samples it) and record
the T + 1 joint states and the T commands of the sample. Then every condition's learner (a
``trajopt.gps.GPS`` of its own: local dynamics with its GMM prior, cost, trust region and step
multiplier) fits its local dynamics and makes the KL-constrained update, and a progress line per
condition is logged (cost, KL, ε, η, step multiplier, whether the η search met ε, final distance).

``algorithm`` ``mdgps`` (mirror-descent GPS, ``trajopt.mdgps``): the KL constraint of each
condition's update is taken against the linearisation of one network policy π(x, target)
(``policy.network.GoalPolicy``), which is trained after each iteration on the samples of all
conditions labelled by the new controllers (its input normalisation from the first iteration's
states and the targets). At the end the policy artifact goes to ``output_dir``/policy.safetensors
and, latched, to ``/mbrl/policy`` (where ``policy_runner`` takes it); no final controller is then
published, so the executor falls silent (sync) or holds (realtime) and a policy runner can take
over. ``lqr``: the local-model loop alone; its final controller (of the last condition) is
published.

After the last iteration the node writes ``summary.txt`` (the learning curve table, per-condition
final distances) and ``learning_curve.png`` (one curve per condition) to ``output_dir`` and stops.
``episode_source`` says how a sample starts:

* ``reset`` (the lockstep simulator, one start pose; several conditions differ by target): the
  trainer calls ``reset_service``
  (std_srvs/Trigger); the sim announces the reset state's stamp on /mbrl/episode_events (the
  reset is asked for again after ``reset_timeout`` without one, as is a sample that stalls that
  long: a lost state or command); the executor in sync mode answers each state with a command
  tagged with its stamp, so the sample is those T + 1 states and T commands exactly.
  ``initial_position`` must be the simulator's reset pose (checked on every reset); the initial
  controller holds it with the URDF's gravity torque (the lockstep sim does not cancel the arm's
  weight).
* ``homing`` (a robot, the hardware-like fixture, the simulator in real time or in lockstep; any
  number of conditions): before each sample the trainer publishes a homing controller on
  ``/mbrl/homing_controller`` (``mbrl_ros.control.homing``, as the episode manager does:
  ``robot_episodes.EpisodeSequencer``) from where the arm is to the condition's pose
  (``initial_position``; [] = one condition, the pose at the first joint state); the sample
  starts at the first state at which the arm has settled there (the homing controller is then
  cut at that stamp) and lasts T control periods of joint-state stamps, whatever their rate and
  origin. Joint states at the robot's rate and the executor's send-time-tagged commands are
  resampled onto the controller's grid (``trajopt.stream_sample``); with
  ``robot_compensates_gravity`` false the executor adds g(q) to every command and the trainer
  takes it off again, so the samples are the controller's own torques on a weightless arm (and
  the initial controller holds with zero feedforward). A sample with a hole (a state gap, a
  stale command) is dropped and counted (``dropped_samples``); a homing that does not settle
  within ``homing_timeout`` (after ``homing_retries`` new tries) or joint states that stop for
  ``reset_timeout`` end the run with an error. Start and end of every sample go to
  /mbrl/episode_events. ``target`` [] samples a reachable target around each condition's pose.
  On the lockstep simulator (``lockstep`` true) the homing controller is released only up to
  the earliest state at which the arm could have settled (the executor waits there for the
  trainer's decision), so the hand-over to a sample's controller at its start state is exact and
  a run is reproducible.

An update that fails (too few samples, a covariance that is not positive definite, η at its
bound, a controller beyond the executor's default bounds: ``plausibility.ControllerBounds``,
which the executor would refuse) is logged and counted on /diagnostics; no controller is
published from it and the next iteration samples the previous controller again (``lqr``: per
condition; ``mdgps``: the conditions before the failing one keep their update, the policy is
not trained that iteration).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from geometry_msgs.msg import PointStamped
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray
from std_srvs.srv import Trigger

from mbrl_ros.common.artifacts import write_file
from mbrl_ros.common.msgconv import JointSample, read_command, seconds_to_ns
from mbrl_ros.control.homing import HomingSettings, SettleDetector
from mbrl_ros.control.plausibility import ControllerBounds
from mbrl_ros.data.topics import (
    COMMANDS,
    CONTROLLER,
    EVENTS,
    POLICY,
    RESET_SERVICE,
    STATES,
    TARGET,
    EpisodeEvent,
    episode_event_json,
    read_episode_event,
)
from mbrl_ros.nodes.diagnostics import ERROR, OK, Diagnostics
from mbrl_ros.nodes.homing_sender import HomingSender
from mbrl_ros.nodes.intake import STATE_GATE_PARAMS, JointStateIntake, subscribe
from mbrl_ros.nodes.messages import (
    COMMAND_QOS,
    EVENT_QOS,
    LATCHED_QOS,
    STATE_QOS,
    TARGET_QOS,
    target_msg,
)
from mbrl_ros.nodes.params import ConfigError, Param, declare_params
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.policy.network import GoalPolicy, PolicyError, PolicySignature
from mbrl_ros.robot.description import RobotDescriptionError, home_position, load_robot
from mbrl_ros.robot.gravity import GravityModel
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.episodes import TargetRegionSettings
from mbrl_ros.tasks.insertion import InsertionCost
from mbrl_ros.tasks.insertion_scene import tool_scene
from mbrl_ros.tasks.reach import ReachCost
from mbrl_ros.tasks.robot_episodes import HOMING, EpisodeSequencer, Step
from mbrl_ros.trajopt.gps import (
    GPS,
    GPSConfig,
    IterationRecord,
    format_curve,
    initial_controller,
    initial_controllers,
    learning_curve,
    plot_curves,
)
from mbrl_ros.trajopt.kl_update import KLUpdateError
from mbrl_ros.trajopt.local_dynamics import FitError
from mbrl_ros.trajopt.mdgps import MDGPS, SStepConfig
from mbrl_ros.trajopt.stream_sample import SampleError, StreamSample

RESET = "reset"
LQR, MDGPS_ALGORITHM = "lqr", "mdgps"
REACH, INSERTION = "reach", "insertion"
HOLE_TOLERANCE = 1e-6  # m: how far the announced hole may be from the condition's
POLICY_FILE = "policy.safetensors"
RECENT_COMMANDS = 1000  # homing: commands kept for the next sample's start (the one in force)
PARAMS = (
    [
        Param("robot", "arm7", "robot description: a name in urdf/ (arm7, arm2) or a URDF path"),
        Param(
            "episode_source",
            RESET,
            "reset: the lockstep simulator's reset service and events; "
            "homing: the trainer homes the arm to the condition's pose before each sample",
            choices=(RESET, HOMING),
        ),
        Param(
            "initial_position",
            [],
            "the conditions' start poses (rad, robot joint order): n "
            "angles per condition, one condition after the other (K·n values for K conditions; "
            "K > 1 needs episode_source homing); reset: the simulator's reset pose; [] = one "
            "condition, reset: zero or mid-range, homing: the pose at the first joint state",
        ),
        Param(
            "target",
            [0.4, 0.0, 0.6],
            "end-effector target in the base frame (m): x, y, z for "
            "every condition, or 3 values per condition (3·K); [] = one sampled around each "
            "condition's pose (target_radius, target_min_height, seed + condition)",
        ),
        Param(
            "task",
            REACH,
            "reach: the end effector to the target; insertion: the peg (tool) into the hole "
            "whose top centre is the target (episode_source reset: the lockstep simulator with "
            "the same tool and scene)",
            choices=(REACH, INSERTION),
        ),
        Param("scene", "insertion", "insertion: the simulator's scene (a name in sim/ or a path)"),
        Param("tool", "peg", "insertion: the simulator's tool (a name in sim/ or a path)"),
        Param(
            "full_depth_tolerance",
            0.005,
            "insertion: a sample counts as inserted within this distance of the hole's floor (m)",
            (0.0, 1.0),
        ),
        Param(
            "algorithm",
            LQR,
            "lqr: a linear-Gaussian controller per condition (local models + "
            "KL-constrained LQR); mdgps: also one network policy trained from all conditions' "
            "samples (mirror-descent GPS), published on /mbrl/policy and written to output_dir",
            choices=(LQR, MDGPS_ALGORITHM),
        ),
        Param("policy_hidden", [64, 64], "mdgps: units per hidden layer of the policy network"),
        Param(
            "policy_train_steps", 1000, "mdgps: Adam steps of the policy per iteration", (1, 10**7)
        ),
        Param("policy_batch", 256, "mdgps: (state, action) pairs per Adam step", (1, 10**7)),
        Param("policy_lr", 1e-3, "mdgps: Adam learning rate of the policy", (1e-9, 10.0)),
        Param("torch_threads", 1, "CPU threads of the updates and the policy training", (1, 256)),
        Param(
            "lockstep",
            False,
            "homing on the lockstep simulator: the homing controller is "
            "released only up to the earliest state at which the arm could have settled, so the "
            "executor answers each sample's first state with the sample's controller (exactly "
            "reproducible runs)",
        ),
        Param(
            "robot_compensates_gravity",
            True,
            "homing: the robot cancels its own weight; false: "
            "the executor adds the URDF's g(q) to every command and the trainer takes it off",
        ),
        Param(
            "max_gap",
            0.01,
            "homing: the longest time between two joint states that a sample "
            "bridges by interpolation (s); a longer gap drops the sample",
            (1e-4, 1.0),
        ),
        Param(
            "command_timeout",
            0.1,
            "homing: the robot's stale-command rule (s): an interval in "
            "which the command in force is older drops the sample; 0 = none",
            (0.0, 60.0),
        ),
        Param("horizon", 100, "controller steps T per sample", (2, 100_000)),
        Param("samples", 5, "samples per iteration", (2, 10_000)),
        Param("iterations", 10, "GPS iterations", (1, 100_000)),
        Param(
            "control_period",
            0.01,
            "the arm's control period (s): the controller's step",
            (1e-4, 1.0),
        ),
        Param(
            "init_kp",
            0.2,
            "initial PD hold stiffness (fraction of effort limit per rad)",
            (0.0, 100.0),
        ),
        Param(
            "init_kd",
            0.02,
            "initial PD hold damping (fraction of effort limit per rad/s)",
            (0.0, 100.0),
        ),
        Param("init_std", 0.05, "initial exploration std (fraction of effort limit)", (1e-6, 10.0)),
        Param("w_l2", 100.0, "cost weight of ½ d² (d: end-effector distance, m)", (0.0, 1e9)),
        Param("w_log", 1.0, "cost weight of log(d² + alpha)", (0.0, 1e9)),
        Param("alpha", 1e-5, "alpha of the log term (m²)", (1e-12, 1e3)),
        Param("terminal_weight", 10.0, "weight of the last step's distance terms", (0.0, 1e9)),
        Param(
            "w_velocity", 0.5, "cost weight of ‖q̇_T‖² at the last step (arrive at rest)", (0.0, 1e9)
        ),
        Param("w_action", 1e-3, "cost weight of Σ (u / effort limit)² per step", (0.0, 1e9)),
        Param("w_limit", 1.0, "cost weight of the joint-limit margin penalty", (0.0, 1e9)),
        Param("reset_service", RESET_SERVICE, "std_srvs/Trigger service that resets the arm"),
        Param(
            "reset_timeout",
            5.0,
            "wall time to wait for a reset's announcement before asking again (s)",
            (0.1, 3600.0),
        ),
        Param(
            "output_dir",
            "",
            "folder for summary.txt, learning_curve.png (and mdgps: "
            "policy.safetensors); '' = gps_<UTC date and time>",
        ),
        Param(
            "diagnostics_period", 1.0, "wall seconds between /diagnostics messages", (0.0, 3600.0)
        ),
    ]
    + GPSConfig.params()
    + HomingSettings.params()  # homing: as the episode manager's
    + TargetRegionSettings.params()
    + STATE_GATE_PARAMS
)


class GPSTrainerNode(Node):
    """The trainer; ``node_kwargs`` go to rclpy's Node (parameter_overrides, context, ...)."""

    def __init__(self, **node_kwargs):
        super().__init__("gps_trainer", **node_kwargs)
        p = self.p = declare_params(self, PARAMS)
        self.homing_settings = HomingSettings.select(vars(p))
        self.region = TargetRegionSettings.select(vars(p))
        robot = self.robot = load_robot(p.robot)
        self.names = list(robot.joint_names)
        self.n = robot.n_joints
        self.homing_mode = p.episode_source == HOMING
        torch.set_num_threads(p.torch_threads)
        self.starts = condition_poses(p.initial_position, self.n, self.homing_mode)
        # [] in homing: one condition, at the first state; one pose: as many as targets
        self.K = max(len(self.starts), len(p.target) // 3 if len(self.starts) <= 1 else 1, 1)
        if p.target and len(p.target) not in (3, 3 * self.K):
            raise ConfigError(
                f"parameter 'target' = {p.target} must be 3 numbers (m), 3 per "
                f"condition ({3 * self.K} for {self.K}) or []"
            )
        self.insertion = p.task == INSERTION
        if self.insertion and (self.homing_mode or not p.target):
            raise ConfigError(
                "parameter 'task' = insertion needs episode_source reset and the holes as "
                "'target': the lockstep simulator moves its hole at resets (homing a peg out of "
                "one hole into another is not supported)"
            )
        self.hidden = policy_hidden(p.policy_hidden)
        self.T, self.dt_ns = p.horizon, seconds_to_ns(p.control_period)
        self.config = GPSConfig.select(vars(p))
        self.gravity = None
        if self.homing_mode and not p.robot_compensates_gravity:
            try:
                self.gravity = GravityModel(robot)
            except RobotDescriptionError as exc:
                raise ConfigError(str(exc)) from None
        # per condition: start pose (n,) rad, target (3,) m, cost, learner
        self.q0s, self.goals, self.costs, self.learners = [], [], [], []
        self.mdgps: MDGPS | None = None
        self.condition = 0  # the condition being sampled
        self.iteration = 0
        if self.starts or not self.homing_mode:  # homing without one: at the first state
            self._set_conditions(self.starts or [home_position(robot)])
        stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
        self.output_dir = Path(p.output_dir or f"gps_{stamp}")
        self.records: list[IterationRecord] = []
        self.policy_log: list[tuple[int, float, float]] = []  # (iteration, S-step loss, std)
        # insertion: (iteration, samples used, per condition the fraction fully inserted)
        self.inserted: list[tuple[int, int, list[float]]] = []
        self.batches = [[] for _ in range(self.K)]  # per condition: the iteration's (X, U)
        self.phase = "waiting"  # waiting → resetting | homing → sampling → … → done
        self.start_ns = None
        self.reset_stamp = None  # the announced stamp of the reset state being waited for
        self.reset_sent = 0.0  # wall (monotonic) time of the last reset request
        self.latest = None  # (stamp_ns, x) of the newest joint state
        self.latest_sample: JointSample | None = None  # and as received
        self.last_progress = 0.0  # wall (monotonic) time the current sample last advanced
        self.X = self.U = None
        self.failure = ""
        self.exit_status = 0
        # homing: the episode sequence, the sample being recorded, the newest commands
        self.sequencer: EpisodeSequencer | None = None
        self.sample: StreamSample | None = None
        self.recent_commands: deque = deque(maxlen=RECENT_COMMANDS)  # (tag, message)
        self.detector: SettleDetector | None = None  # the settling being waited for
        self.last_state_wall = time.monotonic()

        self.ctrl_pub = self.create_publisher(UInt8MultiArray, CONTROLLER, LATCHED_QOS)
        self.diag = Diagnostics(self, "gps trainer", self._report, p.diagnostics_period)
        self.intake = JointStateIntake(
            self, self.diag, robot, self.names, p, self._on_state, STATE_QOS
        )
        self.command_sub = subscribe(
            self,
            self.diag,
            Float64MultiArray,
            COMMANDS,
            COMMAND_QOS,
            self._on_command,
            lambda m: (read_command(m, self.n), m),
            "command",
        )
        if self.homing_mode:
            self.homing = HomingSender(self, robot, self.names, self.homing_settings)
            self.event_pub = self.create_publisher(String, EVENTS, EVENT_QOS)
        else:
            subscribe(
                self,
                self.diag,
                String,
                EVENTS,
                EVENT_QOS,
                self._on_event,
                lambda m: (read_episode_event(m), m.data),
                "event",
            )
            self.reset_client = self.create_client(Trigger, p.reset_service)
            self.target_pub = self.create_publisher(PointStamped, TARGET, TARGET_QOS)
        self.reset_future = None
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(0.05, self._tick, clock=wall)
        where = (
            f"from {np.round(self.q0s[0], 3).tolist()} rad"
            if len(self.starts) <= 1 and self.q0s
            else f"from {self.K} start poses"
            if self.q0s
            else "from the pose at the first joint state"
        )
        self.get_logger().info(
            f"{robot.name}: {p.task} {where}; {p.iterations} iterations × {self.K} condition"
            f"{'s' if self.K > 1 else ''} × {p.samples} samples of T = {self.T} steps; prior "
            f"{p.prior}; algorithm {p.algorithm}; samples start by {p.episode_source}; "
            f"output {self.output_dir}"
        )

    @property
    def q0(self) -> np.ndarray | None:
        """The start pose (n,) rad of the condition being sampled."""
        return self.q0s[self.condition] if self.q0s else None

    def _homing_target(self, episode: int, q: np.ndarray) -> np.ndarray:
        """The pose (n,) rad the arm homes to: the start pose of the condition being sampled."""
        if self.q0 is None:
            raise RuntimeError("gps_trainer: homing asked for a pose before the conditions are set")
        return self.q0

    def _set_conditions(self, poses: list[np.ndarray]) -> None:
        """Each condition's pose (n,) rad, target, cost and learner (initial controller), and
        for mdgps the policy."""
        p, robot = self.p, self.robot
        lim = robot.limits
        poses = poses * self.K if len(poses) == 1 else poses
        scene = tool_scene(robot, p.scene, p.tool) if self.insertion else None
        for q0 in poses:
            if np.any(q0 < lim.lower) or np.any(q0 > lim.upper):
                raise ConfigError(
                    f"parameter 'initial_position' = {p.initial_position}: pose "
                    f"{np.round(q0, 3).tolist()} rad is outside the joint limits"
                )
        effort = robot.limits.effort
        for m, q0 in enumerate(poses):
            try:
                target = (
                    np.asarray(
                        p.target[3 * m : 3 * m + 3] if len(p.target) > 3 else p.target, float
                    )
                    if p.target
                    else self.region.sampler(robot, q0, p.seed + m).sample()
                )
                weights = dict(
                    w_l2=p.w_l2,
                    w_log=p.w_log,
                    alpha=p.alpha,
                    terminal_weight=p.terminal_weight,
                    w_velocity=p.w_velocity,
                    w_action=p.w_action,
                    w_limit=p.w_limit,
                )
                cost: ReachCost | InsertionCost
                if scene is not None:
                    scene.set_hole(target)
                    cost = InsertionCost(robot, scene.peg_points, scene.hole, **weights)
                else:
                    cost = ReachCost(robot, target, **weights)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if self.homing_mode:  # the robot or the executor cancels the weight: no feedforward
                ctrl = initial_controller(
                    q0,
                    np.zeros(self.n),
                    self.T,
                    self.dt_ns,
                    p.init_kp * effort,
                    p.init_kd * effort,
                    p.init_std * effort,
                    self.names,
                )
            else:  # the known model (MuJoCo) gives the initial controller's gravity compensation
                known = ArmSimulator(
                    robot,
                    SimConfig(
                        control_period=p.control_period,
                        # one substep per control period, or the fewest of at most 0.05 s (the
                        # model is used for its gravity torque only, so the step size is moot)
                        physics_timestep=p.control_period / math.ceil(p.control_period / 0.05),
                        scene=None,
                    ),
                )
                ctrl = initial_controllers(known, [q0], self.T, p.init_kp, p.init_kd, p.init_std)[0]
            config = replace(self.config, seed=self.config.seed + m)
            self.q0s.append(q0)
            self.goals.append(np.asarray(target, float))
            self.costs.append(cost)
            self.learners.append(
                GPS(cost, [ctrl], config, self._final_metric(cost), self._check_controller)
            )
            if not p.target:
                self.get_logger().info(
                    f"condition {m}: target {np.round(target, 3).tolist()} "
                    f"m (sampled around {np.round(q0, 3).tolist()} rad)"
                )
        if p.algorithm == MDGPS_ALGORITHM:
            try:
                policy = GoalPolicy(
                    PolicySignature.for_joints(robot.name, self.names, p.control_period),
                    effort,
                    self.hidden,
                    seed=p.seed,
                )
            except PolicyError as exc:
                raise ConfigError(f"parameter 'policy_hidden': {exc}") from None
            self.mdgps = MDGPS(
                self.learners,
                np.stack(self.goals),
                policy,
                SStepConfig(p.policy_train_steps, p.policy_batch, p.policy_lr, p.seed),
            )

    def _check_controller(self, ctrl) -> None:
        """ValueError (MessageError) for a controller the executor's default bounds refuse."""
        ControllerBounds(self.robot.limits.effort, self.intake.gate).check(ctrl)

    @staticmethod
    def _final_metric(cost: ReachCost | InsertionCost):
        """The metric of a condition's samples (M,) m: the final end-effector distance (reach)
        or the peg tip's final depth in the hole (insertion)."""

        def final_metric(X) -> np.ndarray:
            if isinstance(cost, InsertionCost):
                return cost.insertion_depth(X[:, -1])
            with torch.no_grad():
                return cost.distance2(torch.as_tensor(X))[..., -1].sqrt().numpy()

        return final_metric

    def _full_depth(self, m: int) -> float:
        """Insertion: the depth (m) that counts as fully inserted in condition m."""
        cost = self.costs[m]
        assert isinstance(cost, InsertionCost)
        return cost.hole.depth - self.p.full_depth_tolerance

    def _metric_format(self) -> tuple[str, float, str]:
        """(what, scale, unit) of the metric in progress lines, tables and plots."""
        if self.insertion:
            return "final depth", 1000.0, "mm"
        return "final distance", 100.0, "cm"

    # -- episode driving -------------------------------------------------------------------------
    def _tick(self) -> None:
        if self.homing_mode:
            self._homing_tick()
            return
        if self.reset_future is not None and self.reset_future.done():
            result, self.reset_future = self.reset_future.result(), None
            if result is None or not result.success:
                self._stop(
                    f"reset via {self.p.reset_service} failed: "
                    f"{getattr(result, 'message', 'no response')}"
                )
            return
        if self.phase == "waiting" and self._graph_ready():
            self._reset()
        elif (
            self.phase == "resetting"
            and self.reset_stamp is None
            and time.monotonic() - self.reset_sent > self.p.reset_timeout
        ):
            self.diag.warn(
                "reset_retries",
                f"no reset announced within {self.p.reset_timeout:g} s: asking again",
            )
            self._reset()
        elif (
            self.phase == "sampling"
            and time.monotonic() - self.last_progress > self.p.reset_timeout
        ):
            missing_x = np.flatnonzero(np.isnan(self.X[:, 0])).tolist()
            missing_u = np.flatnonzero(np.isnan(self.U[:, 0])).tolist()
            self.diag.warn(
                "sample_restarts",
                f"sample stalled for {self.p.reset_timeout:g} s "
                f"without states {missing_x[:5]} / commands "
                f"{missing_u[:5]}: starting it again",
            )
            self._reset()

    def _graph_ready(self) -> bool:
        """The sim's reset service and state publisher and the executor (command publisher,
        controller subscriber) are matched: a reset state cannot go unanswered."""
        return (
            self.reset_client.service_is_ready()
            and self.count_publishers(STATES) > 0
            and self.count_publishers(EVENTS) > 0
            and self.count_publishers(COMMANDS) > 0
            and self.count_subscribers(CONTROLLER) > 0
        )

    def _reset(self) -> None:
        self.phase, self.reset_stamp = "resetting", None
        self.reset_sent = time.monotonic()
        if self.insertion:  # the hole of the condition to sample, stamped before the reset
            stamp = self.latest[0] if self.latest else 0
            base = self.robot.link_names[0]
            self.target_pub.publish(target_msg(stamp, base, self.goals[self.condition]))
        self.reset_future = self.reset_client.call_async(Trigger.Request())

    def _on_event(self, item: tuple[EpisodeEvent, str]) -> None:
        event, text = item
        if event.kind != "reset" or self.phase != "resetting":
            return
        if self.insertion:
            hole = announced_hole(text)
            goal = self.goals[self.condition]
            if hole is None or np.abs(hole - goal).max() > HOLE_TOLERANCE:
                self.diag.warn(
                    "hole_retries",
                    f"reset announced the hole at {hole if hole is None else hole.tolist()}, "
                    f"not condition {self.condition}'s {goal.tolist()} m: resetting again",
                )
                self._reset()
                return
        self.reset_stamp = event.stamp_ns
        if self.latest is not None and self.latest[0] == event.stamp_ns:
            self._start_sample(*self.latest)

    def _on_state(self, s: JointSample) -> None:
        x = np.concatenate([s.position, s.velocity])
        self.latest, self.latest_sample = (s.stamp_ns, x), s
        if self.homing_mode:
            self._on_homing_state(s)
        elif self.phase == "resetting" and s.stamp_ns == self.reset_stamp:
            self._start_sample(s.stamp_ns, x)
        elif self.phase == "sampling":
            t = self._index(s.stamp_ns)
            if t is not None and 1 <= t <= self.T:
                self.X[t] = x
                self.last_progress = time.monotonic()
                self._maybe_complete()

    def _on_command(self, command: tuple[tuple[np.ndarray, int | None], Float64MultiArray]) -> None:
        (torque, tag), msg = command
        if self.homing_mode:
            self._on_homing_command(tag, msg)
            return
        if self.phase != "sampling":
            return
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
            self.diag.warn(
                "off_grid",
                f"stamp {stamp_ns} ns is not on the {self.dt_ns} ns grid "
                f"from {self.start_ns} ns: is control_period the arm's?",
            )
            return None
        return offset // self.dt_ns

    def _start_sample(self, stamp_ns: int, x: np.ndarray) -> None:
        if np.abs(x[: self.n] - self.q0).max() > 1e-3 or np.abs(x[self.n :]).max() > 1e-3:
            self.diag.warn(
                "start_mismatch",
                f"reset state {np.round(x[: self.n], 3).tolist()} "
                f"rad is not initial_position at rest",
            )
        self.phase, self.start_ns = "sampling", stamp_ns
        self.last_progress = time.monotonic()
        self.X = np.full((self.T + 1, 2 * self.n), np.nan)
        self.U = np.full((self.T, self.n), np.nan)
        self.X[0] = x
        ctrl = self.learners[self.condition].controller(0).restamp(stamp_ns)
        self.ctrl_pub.publish(UInt8MultiArray(data=list(ctrl.to_bytes({"planner": "gps"}))))

    def _maybe_complete(self) -> None:
        if np.isnan(self.X).any() or np.isnan(self.U).any():
            return
        self._add_sample(self.X, self.U)
        if self.phase != "done":
            self._reset()

    def _add_sample(self, X: np.ndarray, U: np.ndarray) -> None:
        """A whole sample into its condition's batch; once full, the next condition is sampled,
        and after the last one every condition is updated."""
        batch = self.batches[self.condition]
        batch.append((X, U))
        self.diag.count("samples")
        if len(batch) < self.p.samples:
            return
        if self.condition + 1 < self.K:
            self.condition += 1
            return
        batches = [(np.stack([x for x, _ in b]), np.stack([u for _, u in b])) for b in self.batches]
        self.batches, self.condition = [[] for _ in range(self.K)], 0
        self._update(batches)

    # -- homing (no simulator resets) ------------------------------------------------------------
    def _homing_tick(self) -> None:
        if self.phase == "waiting" and self._homing_graph_ready():
            self.phase = "homing"  # the sequence starts at the newest joint state (a lockstep
            self.last_state_wall = time.monotonic()  # sim waits for its answer) or the next
            if self.latest_sample is not None:
                self._on_homing_state(self.latest_sample)
        elif (
            self.phase in ("homing", "sampling")
            and time.monotonic() - self.last_state_wall > self.p.reset_timeout
        ):
            self._stop(
                f"no joint state on {self.intake.subscription.topic_name} for "
                f"{self.p.reset_timeout:g} s"
            )

    def _homing_graph_ready(self) -> bool:
        """The robot's states and the executor (commands, both controller topics) are matched:
        no homing or sample controller goes unheard."""
        return (
            self.intake.subscription.get_publisher_count() > 0
            and self.command_sub.get_publisher_count() > 0
            and self.ctrl_pub.get_subscription_count() > 0
            and self.homing.pub.get_subscription_count() > 0
        )

    def _on_homing_state(self, s: JointSample) -> None:
        self.last_state_wall = time.monotonic()
        if not self.q0s:
            try:
                self._set_conditions([np.array(s.position, float)])
            except ConfigError as exc:
                self._stop(f"the pose at start-up as the condition: {exc}")
                return
        if self.phase not in ("homing", "sampling"):
            return
        if self.sample is not None:
            self.sample.add_sample(s)
            self._sample_if_done()
            if self.phase == "done":
                return
        if self.sequencer is None:
            self.sequencer = EpisodeSequencer(
                2**62,
                self.T * self.dt_ns,
                HOMING,
                self._homing_target,
                self._settle_detector,
                self.p.homing_retries,
            )
        for step in self.sequencer.on_state(s.stamp_ns, s.position, s.velocity):
            self._do(step, s)
            if self.phase == "done":
                return
        if self.p.lockstep and self.phase == "homing":
            self.homing.release(self._homing_validity(s.stamp_ns))

    def _on_homing_command(self, tag: int | None, msg: Float64MultiArray) -> None:
        if tag is None:  # not the executor's: no time of application to resample with
            self.diag.warn("untagged_commands", "an untagged command: not used")
            return
        self.recent_commands.append((tag, msg))
        if self.sample is not None:
            self.sample.add_command(msg)
            self._sample_if_done()

    def _settle_detector(self, goal: np.ndarray) -> SettleDetector:
        self.detector = self.homing_settings.settle_detector(goal, self.names)
        return self.detector

    def _homing_validity(self, stamp_ns: int) -> int:
        """Lockstep: the stamp (ns) until which the homing controller may answer states after
        the one at ``stamp_ns``: the earliest at which the arm could have settled (the executor
        then waits there for the trainer's decision), so a sample's first state is always
        answered by its own controller."""
        d = self.detector
        if d is None:
            raise RuntimeError("gps_trainer: homing validity asked for with no settling awaited")
        since = d.inside_since if d.inside_since is not None else stamp_ns + self.dt_ns
        return max(since + d.dwell_ns, stamp_ns + 1)

    def _do(self, step: Step, s: JointSample) -> None:
        """Carry out a step of the homing sequence (``robot_episodes``)."""
        if step.kind == "home":
            self.phase = "homing"
            self.homing.home(s, step.goal, s.stamp_ns + 1 if self.p.lockstep else None)
            if step.message:
                self.diag.warn("homing_retries", f"sample {step.episode}: homing {step.message}")
        elif step.kind == "start":
            if self.sample is not None:
                self.diag.warn(
                    "dropped_samples",
                    "a sample was still incomplete when the next one started: dropped",
                )
            ctrl = self.learners[self.condition].controller(0).restamp(step.stamp_ns)
            self.ctrl_pub.publish(UInt8MultiArray(data=ctrl.to_bytes({"planner": "gps"})))
            self.homing.hand_over(step.stamp_ns)  # from this state on
            self.phase, self.start_ns = "sampling", step.stamp_ns
            # from the command in force at the start on (the node may have taken commands
            # sent after it before this state)
            first = max(
                [i for i, (t, _) in enumerate(self.recent_commands) if t <= step.stamp_ns],
                default=0,
            )
            self.sample = StreamSample(
                self.names,
                self.p.control_period,
                self.T,
                s,
                [m for _, m in list(self.recent_commands)[first:]],
                gravity=self.gravity,
                command_timeout=self.p.command_timeout or None,
                max_gap=self.p.max_gap,
            )
            self._event("start", step)
        elif step.kind == "end":
            self._event("end", step)
        elif step.kind == "failed":
            self._stop(f"sample {step.episode}: {step.message}")

    def _event(self, kind: str, step: Step) -> None:
        self.event_pub.publish(
            String(
                data=episode_event_json(kind, step.episode, step.stamp_ns, source=self.get_name())
            )
        )

    def _sample_if_done(self) -> None:
        """The current sample, once decided: into the batch, or dropped with the reason."""
        if self.sample is None or not self.sample.done:
            return
        sample, self.sample = self.sample, None
        try:
            X, U = sample.arrays()
        except SampleError as exc:
            self.diag.warn("dropped_samples", f"sample dropped: {exc}")
            return
        self._add_sample(X, U)

    def _update(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Every condition's update from its samples (X (S, T+1, 2n), U (S, T, n)); mdgps: then
        the policy's training."""
        it = self.iteration
        if self.insertion:  # the samples' success, before the update (as their final metric)
            self.inserted.append(
                (
                    it + 1,
                    sum(g.samples_used for g in self.learners) + sum(len(X) for X, _ in batches),
                    [
                        float(np.mean(cost.insertion_depth(X[:, -1]) >= self._full_depth(m)))
                        for m, (cost, (X, _)) in enumerate(zip(self.costs, batches))
                    ],
                )
            )
        if self.mdgps is not None:
            self._mdgps_update(it, batches)
        else:
            for m, (gps, (X, U)) in enumerate(zip(self.learners, batches)):
                gps.iteration = it
                try:
                    self._log_record(m, gps.update(0, X, U))
                except (FitError, KLUpdateError, ValueError) as exc:
                    self._update_failed(it, m, exc)
        self.iteration = it + 1
        # the joint-state watchdog does not count the update's own time (callbacks waited)
        self.last_state_wall = time.monotonic()
        if self.iteration >= self.p.iterations:
            self._finish()

    def _require_mdgps(self) -> MDGPS:
        """The MDGPS learner, which exists once the conditions are set with trainer 'mdgps'."""
        if self.mdgps is None:
            raise RuntimeError("gps_trainer: an MDGPS step before the MDGPS learner was made")
        return self.mdgps

    def _mdgps_update(self, it: int, batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """C-step of every condition against the policy's linearisation, then the S-step."""
        mdgps = self._require_mdgps()
        if mdgps.var is None:  # the policy's input normalisation from the first samples
            mdgps.policy.set_normalisation(
                np.concatenate([X[:, :-1].reshape(-1, X.shape[2]) for X, _ in batches]),
                np.stack(self.goals),
            )
        mdgps.iteration = it
        done = len(self.records)
        try:
            result = mdgps.iterate(batches)
        except (FitError, KLUpdateError, ValueError, FloatingPointError) as exc:
            self._update_failed(it, None, exc)
            return
        for m, rec in enumerate(result.records):
            self._log_record(m, rec)
        std = float(np.mean(result.policy_std))
        self.policy_log.append((it + 1, result.s_step_loss, std))
        self.get_logger().info(
            f"iteration {it + 1}/{self.p.iterations}: policy trained on "
            f"{sum(len(X) for X, _ in batches)} samples, S-step loss {result.s_step_loss:.4g}, "
            f"policy std {std:.3g} N·m ({len(self.records) - done} conditions updated)"
        )

    def _log_record(self, m: int, rec: IterationRecord) -> None:
        """Condition m's update record, with the samples of all conditions; its progress line."""
        rec = replace(
            rec,
            iteration=self.iteration,
            condition=m,
            samples_used=sum(g.samples_used for g in self.learners),
        )
        self.records.append(rec)
        self.failure = ""
        where = f", condition {m}" if self.K > 1 else ""
        what, scale, unit = self._metric_format()
        self.get_logger().info(
            f"iteration {self.iteration + 1}/{self.p.iterations}{where}: cost {rec.cost:.2f}, "
            f"KL {rec.kl:.2f} nats, ε {rec.epsilon:.2f}"
            + ("" if rec.kl_converged else " (η search ran out: best controller inside it)")
            + f", η {rec.eta:.3g}, step × {rec.step_mult:.2f}, {what} "
            f"{scale * rec.final_metric:.2f} {unit}, {rec.samples_used} samples"
        )

    def _update_failed(self, it: int, m: int | None, exc: Exception) -> None:
        self.diag.count("failed_updates")
        where = f", condition {m}" if m is not None and self.K > 1 else ""
        what = (
            "no controller published"
            if self.mdgps is None
            else "the policy not trained this iteration"
        )
        self.get_logger().error(f"iteration {it + 1}{where}: update failed, {what}: {exc}")
        self.failure = str(exc)

    def _finish(self) -> None:
        self.phase = "done"
        if self.mdgps is None:  # the arm is in the last condition
            final = self.learners[-1].controller(0).restamp(self.latest[0] if self.latest else 0)
            self.ctrl_pub.publish(UInt8MultiArray(data=list(final.to_bytes({"planner": "gps"}))))
        if not self.records:
            self._stop("no iteration succeeded")
            return
        what, scale, unit = self._metric_format()
        rows = learning_curve(self.records, higher_is_better=self.insertion)
        table = format_curve(rows, scale, unit)
        if self.inserted:
            table += "\n\ninserted to full depth (fraction of the iteration's samples)\n" + (
                f"{'iter':>4} {'samples':>7} "
                + " ".join(f"{f'c{m}':>6}" for m in range(self.K))
                + "\n"
                + "\n".join(
                    f"{it:>4} {used:>7} " + " ".join(f"{v:>6.2f}" for v in fractions)
                    for it, used, fractions in self.inserted
                )
            )
        if self.policy_log:
            table += (
                "\n\npolicy (mdgps)\n"
                + f"{'iter':>4} {'S-step loss':>12} {'std N·m':>8}\n"
                + "\n".join(f"{i:>4} {loss:>12.4g} {std:>8.3g}" for i, loss, std in self.policy_log)
            )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "summary.txt").write_text(table + "\n")
        p = self.p
        curves = (
            {f"prior {p.prior}": rows}
            if self.K == 1
            else {
                f"condition {m}": learning_curve(
                    [r for r in self.records if r.condition == m], self.insertion
                )
                for m in range(self.K)
            }
        )
        plot_curves(
            curves,
            self.output_dir / "learning_curve.png",
            f"GPS {p.task} ({p.robot}), {self.K} condition{'s' if self.K > 1 else ''} × "
            f"{p.samples} samples per iteration, {p.algorithm}",
            goal=scale * self._full_depth(0) if self.insertion else 2.0,
            metric_scale=scale,
            unit=unit,
            metric=what,
        )
        wrote = "summary.txt and learning_curve.png"
        if self.mdgps is not None:
            self._publish_policy(rows)
            wrote = "summary.txt, learning_curve.png and " + POLICY_FILE
        self.get_logger().info(
            f"done: {len(rows)} iterations, {what} {scale * rows[-1]['final']:.2f} {unit}\n"
            f"{table}\nwrote {self.output_dir}/{wrote}"
        )
        self.context.try_shutdown()

    def _publish_policy(self, rows: list[dict]) -> None:
        """The trained policy to output_dir and, latched, to /mbrl/policy (waiting up to 5 s for
        the matched readers to have it before the node stops)."""
        policy = self._require_mdgps().policy
        policy.info = {
            "trainer": "gps_trainer mdgps",
            "iterations": len(rows),
            "samples": rows[-1]["samples"],
            "targets": [g.tolist() for g in self.goals],
            "starts": [q.tolist() for q in self.q0s],
            ("final_depth_m" if self.insertion else "final_distance_m"): rows[-1]["per_condition"],
        }
        data = policy.to_bytes()
        write_file(self.output_dir / POLICY_FILE, data)
        pub = self.create_publisher(UInt8MultiArray, POLICY, LATCHED_QOS)
        pub.publish(UInt8MultiArray(data=data))
        pub.wait_for_all_acked(Duration(seconds=5.0))
        self.get_logger().info(
            f"policy published on {pub.topic_name} ({pub.get_subscription_count()} subscribers)"
        )

    def _stop(self, problem: str) -> None:
        self.get_logger().error(problem)
        self.failure, self.phase, self.exit_status = problem, "done", 1
        self.context.try_shutdown()

    def _report(self) -> tuple[int, str, dict]:
        values = {
            "iteration": self.iteration,
            "phase": self.phase,
            "conditions": self.K,
            "condition": self.condition,
            "samples_used": sum(g.samples_used for g in self.learners),
        }
        if self.records:
            r = self.records[-1]
            values.update(
                {
                    "cost": r.cost,
                    "kl": r.kl,
                    "epsilon": r.epsilon,
                    "eta": r.eta,
                    "final_distance": r.final_metric,
                }
            )
        if self.failure:
            return ERROR, self.failure, values
        return OK, f"iteration {self.iteration}/{self.p.iterations}", values


def announced_hole(text: str) -> np.ndarray | None:
    """The ``hole`` (3,) m of a reset event's JSON text, or None if it has none."""
    hole = json.loads(text).get("hole")
    if not isinstance(hole, list) or len(hole) != 3:
        return None
    try:
        out = np.asarray(hole, dtype=float)
    except (TypeError, ValueError):
        return None
    return out if np.all(np.isfinite(out)) else None


def condition_poses(values: list[float], n: int, homing: bool) -> list[np.ndarray]:
    """'initial_position' (K·n rad, one pose after the other) → K poses (n,); ConfigError naming
    the parameter unless the count is a multiple of n and, with resets, at most one pose."""
    if len(values) % n:
        raise ConfigError(
            f"parameter 'initial_position' has {len(values)} values: it must be "
            f"{n} angles per condition (a multiple of {n}) or []"
        )
    poses = [np.asarray(values[i : i + n], dtype=float) for i in range(0, len(values), n)]
    if len(poses) > 1 and not homing:
        raise ConfigError(
            f"parameter 'initial_position' gives {len(poses)} conditions: several "
            f"conditions need episode_source 'homing' (the simulator's reset "
            f"service has one pose)"
        )
    return poses


def policy_hidden(values: list[float]) -> tuple[int, ...]:
    """'policy_hidden' → layer sizes; ConfigError naming it unless 1.. positive integers."""
    if not values or not all(float(v).is_integer() and v >= 1 for v in values):
        raise ConfigError(
            f"parameter 'policy_hidden' = {values} must be one or more positive "
            f"integers (units per hidden layer)"
        )
    return tuple(int(v) for v in values)


def main(args=None) -> int:
    return run_node(lambda: GPSTrainerNode(), "gps_trainer", args)


if __name__ == "__main__":
    sys.exit(main())
