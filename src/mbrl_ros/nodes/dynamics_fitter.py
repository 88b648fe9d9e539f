"""Node ``dynamics_fitter``: learns f(s, a) from the live arm and publishes the model.

* Builds (s, a, s') transitions from ``/joint_states``, ``/effort_controller/commands`` and
  ``/mbrl/episode_events`` with the same ``TransitionBuilder`` the offline tools use; optionally
  starts from a dataset file (``dataset``).
* Once ``min_transitions`` are there, and then after every ``refit_every`` new transitions, it fits
  the model in a background thread (the callbacks never wait for it; a lock guards the data;
  a fit that falls due while another runs starts when that one ends), warm-starting network
  models from the previous weights when ``warm_start``. Episodes are split into training and
  held-out validation data (the tail of the stream while there is only one episode).
* ``resample`` (real robots, real-time graphs): joint states at any rate with wall-clock stamps
  and commands tagged with their send time are resampled onto ``control_period``
  (``data.resample.Resampler``: the action is the time-weighted mean of the commands in force);
  fits go by the counts alone (``episode_steps`` must be 0). Without it (lockstep) the builder
  pairs each state with the command tagged with its stamp, and a stream at another rate than
  ``control_period`` gives no transitions (its steps are all gaps).
* ``robot_compensates_gravity`` false: g(q) of the URDF is subtracted from every recorded command
  (at the command's time when resampling, at the state it answers otherwise), so the model
  learns the weightless arm that the executor's commands (which add g(q)) drive.
* With the simulator's automatic episodes (``episode_steps`` = N, as on the sim), fits start only
  at episode ends: at the first joint state of an episode once every transition of the one
  before is decided (their commands have arrived), when the counts above are met. A lockstep
  planner that waits for the model of the episodes before it (``mpc_planner wait_for_model``)
  then makes the whole learning run independent of machine speed and load; so does a failed fit,
  after which the last good model is published again with ``seen_until_ns`` moved on.
* Every successful fit is published on ``/mbrl/dynamics_model`` (std_msgs/UInt8MultiArray,
  transient local: a late planner gets the latest) as a model artifact whose metadata ``info``
  holds ``version``, ``transitions``, ``episodes``, ``val_rmse_1step``, ``fit_seconds``,
  ``stamp_ns`` (newest transition) and ``seen_until_ns`` (the newest joint state when the fit
  took its data: every transition it decided is in the fit). A fit that diverges is rolled back
  and never published. ``max_fit_seconds`` = 0 bounds fits by epochs only (lockstep graphs).
* ``offset_window`` > 0 (offset-free MPC, ``dynamics.offset``): with every new transition the
  last published model's mean one-step residual over the newest episode's transitions within
  that window goes to ``/mbrl/model_offset`` (std_msgs/String JSON, for the planner's
  ``model_offset``), tagged with the model's version.
* /diagnostics: model version, age, data size, validation loss and error, fit time; when
  resampling also the source joint-state rate and the intervals dropped by reason.
* Run control: ``~/pause`` (std_srvs/SetBool) stops and resumes learning (``_on_pause``);
  ``~/save_model`` (std_srvs/Trigger) writes the last published model to ``model_path``;
  ``min_transitions``, ``refit_every`` and ``val_fraction`` can be set at run time.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import torch

# The first optimizer imports torch._dynamo (seconds under load): imported here, a fit thread
# asked to stop is never stuck in that import.
import torch._dynamo  # noqa: F401
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray
from std_srvs.srv import SetBool

from mbrl_ros.common.msgconv import JointSample, MessageError, seconds_to_ns
from mbrl_ros.data.dataset import Dataset, joint_state_names
from mbrl_ros.data.errors import DataError, StampOrderError
from mbrl_ros.data.resample import Resampler
from mbrl_ros.data.topics import (
    COMMANDS,
    DYNAMICS_MODEL,
    EVENTS,
    MODEL_OFFSET,
    STATES,
    TopicNames,
)
from mbrl_ros.data.transitions import TransitionBuilder
from mbrl_ros.dynamics.base import (
    DynamicsModel,
    FitStopped,
    ModelError,
    ModelSignature,
    model_from_bytes,
)
from mbrl_ros.dynamics.catalog import NETWORK_KINDS, FitterSettings
from mbrl_ros.dynamics.evaluation import evaluate, holdout_split
from mbrl_ros.dynamics.offset import OffsetEstimator
from mbrl_ros.nodes.diagnostics import ERROR, OK, WARN, Diagnostics
from mbrl_ros.nodes.intake import STATE_GATE_PARAMS, JointStateIntake, subscribe
from mbrl_ros.nodes.messages import COMMAND_QOS, EVENT_QOS, LATCHED_QOS, STATE_QOS
from mbrl_ros.nodes.params import ConfigError, Param, declare_params, select_joints
from mbrl_ros.nodes.run_control import add_save_service, save_path_param
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.robot.description import RobotDescriptionError, load_robot
from mbrl_ros.robot.gravity import GravityModel, JointGravity
from mbrl_ros.tasks.episodes import EpisodeClock

# The builder's counts of candidate transitions it rejected (logged with each fit).
REJECTIONS = ("gap", "boundary", "outside_episode", "no_command", "late_command", "late_event")
# The resampler's intervals dropped, by reason, and commands it could not use.
RESAMPLE_DROPS = (
    "state_gap",
    "no_command",
    "stale_command",
    "short_interval",
    "late_command",
    "command_order",
    "repeated_state",
)

PARAMS = [
    Param("robot", "arm7", "robot description: a name in urdf/ or a URDF path"),
    Param("gravity_compensation", False, "physics model: the arm cancels its own weight"),
    Param("joint_names", [], "joints of the model, in state and command order; [] = all"),
    Param("control_period", 0.01, "time between joint states / commands (s)", (1e-4, 1.0)),
    Param(
        "resample",
        False,
        "resample joint states at any rate (wall-clock stamps, commands "
        "tagged with their send time) onto control_period: real robots",
    ),
    Param(
        "command_timeout",
        0.1,
        "resample: a command older than this (s) is no longer in "
        "force (the robot's stale-command rule); 0 = never",
        (0.0, 3600.0),
    ),
    Param(
        "robot_compensates_gravity",
        True,
        "false: subtract the URDF's gravity torque g(q) from the recorded commands",
    ),
    *FitterSettings.params(),
    Param("dataset", "", "dataset file to start from (mbrl-ros dataset); '' = live data only"),
    Param(
        "episode_steps",
        0,
        "the simulator's automatic episode length (control steps): fit "
        "only at episode ends; 0 = by the counts alone",
        (0, 10**7),
    ),
    Param("device", "", "torch device; '' = cuda if available, else cpu"),
    Param(
        "torch_threads",
        0,
        "CPU threads of a fit; 0 = torch's default (leave cores to the "
        "callbacks and other nodes with a small number)",
        (0, 1024),
    ),
    Param(
        "fit_niceness",
        0,
        "nice value added to the fit thread (Linux; with torch_threads 1 "
        "the fit runs in it): in real time a fit must not starve the "
        "planner and the executor of CPU; 0 = the node's priority",
        (0, 19),
    ),
    save_path_param("model"),
    Param("model_topic", DYNAMICS_MODEL, "topic of the model artifacts"),
    Param(
        "offset_window",
        0.0,
        "offset-free MPC: publish the last model's mean one-step residual over the newest "
        "episode's transitions within this much robot time (s) on offset_topic with every new "
        "transition; 0 = off",
        (0.0, 60.0),
    ),
    Param("offset_topic", MODEL_OFFSET, "topic of the model offsets (std_msgs/String JSON)"),
    Param("states_topic", STATES, "joint states"),
    Param("commands_topic", COMMANDS, "torque commands"),
    Param("events_topic", EVENTS, "episode events"),
] + STATE_GATE_PARAMS
CLOSE_TIMEOUT_S = 1.0  # close(): the most it waits for a running fit to stop


def lower_thread_priority(niceness: int) -> None:
    """Add ``niceness`` to the calling thread's nice value (Linux schedules threads separately:
    PRIO_PROCESS on a thread id is per thread); nothing for 0 or where the OS has no
    setpriority."""
    if niceness and hasattr(os, "setpriority"):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)


class DynamicsFitterNode(Node):
    """The fitter; ``node_kwargs`` go to rclpy's Node (parameter_overrides, context...)."""

    def __init__(self, **node_kwargs):
        super().__init__("dynamics_fitter", **node_kwargs)
        p = self.p = declare_params(self, PARAMS)
        if p.torch_threads:
            torch.set_num_threads(p.torch_threads)
        robot = load_robot(p.robot)
        names, _ = select_joints(robot, p.joint_names)
        signature = ModelSignature(tuple(names), joint_state_names(names), p.control_period)
        self._start: Dataset | None = None
        if p.dataset:
            try:
                start = Dataset.load(p.dataset)
                signature.check(ModelSignature.of(start), f"dataset file {p.dataset}")
            except (DataError, ModelError, OSError) as exc:
                raise ConfigError(f"parameter 'dataset': {exc}") from None
            self._start = start
        try:
            self.model = FitterSettings.select(vars(p)).new_model(
                signature, p.device or None, p.robot, p.gravity_compensation
            )
        except ModelError as exc:
            raise ConfigError(f"parameter 'model': {exc}") from None
        self.topics = TopicNames(p.states_topic, p.commands_topic, p.events_topic)
        if p.resample and p.episode_steps:
            raise ConfigError(
                f"parameter 'episode_steps' = {p.episode_steps}: the lockstep "
                "simulator's automatic episodes; with resample (real-time "
                "streams) fits go by the counts alone: set it to 0"
            )
        gravity = joint_gravity = None
        if not p.robot_compensates_gravity:
            try:
                gravity = GravityModel(robot)
                joint_gravity = JointGravity(gravity, names)  # all the robot's joints?
            except (RobotDescriptionError, ValueError) as exc:
                raise ConfigError(f"parameter 'robot_compensates_gravity' = false: {exc}") from None
        if p.resample:
            self.builder = Resampler(
                names,
                p.control_period,
                topics=self.topics,
                gravity=gravity,
                command_timeout=p.command_timeout or None,
            )
        else:
            self.builder = TransitionBuilder(names, p.control_period, topics=self.topics)
        self._lockstep_gravity = None if p.resample else joint_gravity
        # a robot's streams: every state and command at 500 Hz or more (see nodes.runner)
        self.events_executor = p.resample
        self._lock = threading.Lock()  # guards _parts, the counts and the status
        self._parts = [Dataset.empty(names, p.control_period, signature.state_names)]
        self._new = self._total = len(self._start) if self._start is not None else 0
        self._attempts = 0  # fits started (a failed one waits for new data)
        self._fitting = False  # a fit thread runs
        self._paused = False  # ~/pause: no fit starts (data is still taken)
        self._seen_until = -1  # stamp of the newest joint state (ns)
        self._at_episode_start = False  # it starts an automatic episode, data complete
        self._episodes = EpisodeClock(p.episode_steps, seconds_to_ns(p.control_period))
        self._closing = False
        self._fit_thread: threading.Thread | None = None
        self.version = 0
        self.published_at: float | None = None
        self.last_fit: dict = {}
        self._last_blob: bytes | None = None  # the last model published
        self._rejected: dict[str, int] = {}  # the builder's rejections, at the last fit
        self._short_at = -1  # the episode start last reported short of data
        self.failure: str | None = None
        self.pub = self.create_publisher(UInt8MultiArray, p.model_topic, LATCHED_QOS)
        self.offsets = (
            OffsetEstimator(seconds_to_ns(p.offset_window)) if p.offset_window > 0 else None
        )
        self._offset_model: tuple[DynamicsModel, int] | None = None  # a copy, not being fitted
        if self.offsets is not None:
            self.offset_pub = self.create_publisher(String, p.offset_topic, 10)
        self.diag = Diagnostics(self, "dynamics fitter", self._report)
        self.intake = JointStateIntake(
            self, self.diag, robot, names, p, self._on_state, STATE_QOS, topic=p.states_topic
        )
        subscribe(
            self,
            self.diag,
            Float64MultiArray,
            p.commands_topic,
            COMMAND_QOS,
            lambda m: self._feed(p.commands_topic, m),
            what="command",
        )
        subscribe(
            self,
            self.diag,
            String,
            p.events_topic,
            EVENT_QOS,
            lambda m: self._feed(p.events_topic, m),
            what="event",
        )
        self.create_service(SetBool, "~/pause", self._on_pause)
        add_save_service(self, "model", lambda: self._last_blob)
        self.get_logger().info(
            f"fitting a {p.model} model of joints {names}"
            + (
                f", starting from {len(self._start)} transitions of {p.dataset}"
                if p.dataset
                else ""
            )
        )
        self._maybe_fit()

    # -- data ------------------------------------------------------------------------------------
    def _feed(self, topic: str, msg) -> None:
        """A command or an episode event (which can complete waiting transitions)."""
        try:
            self.builder.feed(topic, msg)
        except MessageError as exc:
            self.diag.warn("rejected_message", f"{topic}: {exc}")
            return
        self._collect()

    def _on_state(self, s: JointSample) -> None:
        try:
            self.builder.add_sample(s)
        except StampOrderError as exc:  # after the clock jumped back: a new segment
            self.diag.warn("new_segment", f"{exc}: a new segment starts")
        with self._lock:
            self._seen_until = s.stamp_ns
        self._collect()

    def _collect(self) -> None:
        """Take the newly decided transitions; note whether every transition into a state before
        the newest one is decided (data complete up to it), then fit if due."""
        new = self.builder.take()
        if self._lockstep_gravity is not None and len(new):
            new = self._lockstep_gravity.subtract(new)
        if self.offsets is not None and len(new):
            self._publish_offset(new)
        complete = self.builder.undecided(self._seen_until) == 0
        with self._lock:
            if len(new):
                self._parts.append(new)
                self._new += len(new)
                self._total += len(new)
            # the first state of an episode: the episode before it is complete once decided
            self._at_episode_start = (
                complete
                and bool(self.p.episode_steps)
                and self._episodes.starts_episode(self._seen_until)
            )
            if self._at_episode_start or not self.p.episode_steps:
                self._rejected = self._rejections()
            short = (
                self._at_episode_start
                and not self._attempts
                and self._seen_until != self._short_at
                and self._total < max(self.p.min_transitions, self.model.min_transitions)
            )
            if short:
                self._short_at = self._seen_until
        if short:  # once per episode start before the first fit: the data so far
            self.get_logger().info(
                f"episode start at {self._seen_until * 1e-9:.2f} s: {self._total} transitions, "
                f"the first fit needs {self.p.min_transitions}; not transitions: "
                f"{self._rejected or 'none'}"
            )
        self._maybe_fit()

    def _publish_offset(self, new: Dataset) -> None:
        """Add the new transitions to the offset window and publish the last model's residual
        on it (once a model is published and the window holds enough transitions)."""
        assert self.offsets is not None
        self.offsets.add(new)
        with self._lock:
            frozen = self._offset_model
        if frozen is None:
            return
        estimate = self.offsets.estimate(*frozen)
        if estimate is not None:
            self.offset_pub.publish(String(data=estimate.to_json()))

    def _rejections(self) -> dict[str, int]:
        """The builder's rejected candidates and the resampler's dropped intervals, by reason."""
        out = {k: v for k, v in self.builder.counts.items() if k in REJECTIONS and v}
        if self.p.resample:
            out |= {
                f"resample {k}": v
                for k, v in self.builder.resample_counts.items()
                if k in RESAMPLE_DROPS and v
            }
        return out

    def dataset(self) -> Dataset:
        """The start dataset (its own episodes) and all live transitions so far."""
        with self._lock:
            live = Dataset.concat(self._parts, renumber=False)
            self._parts = [live]
        return live if self._start is None else Dataset.concat([self._start, live], renumber=True)

    # -- fitting ---------------------------------------------------------------------------------
    def _maybe_fit(self) -> None:
        if self._claim_fit():
            self._fit_thread = threading.Thread(
                target=self._fit_while_due, name="dynamics_fit", daemon=True
            )
            self._fit_thread.start()

    def _claim_fit(self) -> bool:
        """Whether a fit is due and no other runs; if so, count it as started."""
        with self._lock:
            due = (
                self._new >= self.p.refit_every
                if self._attempts
                else self._total >= max(self.p.min_transitions, self.model.min_transitions)
            )
            if self.p.episode_steps and not self._at_episode_start:
                due = False
            if self._closing or self._fitting or self._paused or not due:
                return False
            self._new = 0
            self._attempts += 1
            self._fitting = True
            return True

    def _fit_while_due(self) -> None:
        """The fit thread: fit, then again while a fit fell due meanwhile."""
        lower_thread_priority(self.p.fit_niceness)
        while True:
            self._fit()
            with self._lock:
                self._fitting = False
            if not self._claim_fit():
                return

    def _fit(self) -> None:
        with self._lock:
            seen_until = self._seen_until  # the data below holds all it decided
            rejected = self._rejected
        data = self.dataset()
        try:
            train, val = holdout_split(data, self.p.val_fraction, self.p.seed)
            kwargs = (
                {"warm_start": True}
                if (self.p.warm_start and self.version and self.p.model in NETWORK_KINDS)
                else {}
            )
            report = self.model.fit(train, val if len(val) else None, **kwargs)
            if report.rolled_back:
                raise ModelError(report.message)
            error = evaluate(self.model, val if len(val) else train, (1,)).rmse(1)
            info = {
                "version": self.version + 1,
                "transitions": len(data),
                "episodes": data.n_episodes,
                "val_rmse_1step": error,
                "val_loss": min(report.val_loss) if report.val_loss else None,
                "fit_seconds": report.seconds,
                "stamp_ns": int(data.stamps.max()),
                "seen_until_ns": seen_until,
            }
            self.model.info = info
            blob = self.model.to_bytes()
        except FitStopped:  # close() asked for it: the node is shutting down
            return
        except (ValueError, RuntimeError) as exc:  # ModelError, DataError, torch errors
            with self._lock:
                self.failure = f"fit on {len(data)} transitions failed, model not published: {exc}"
            self.diag.warn("failed_fit", self.failure)
            self._republish(seen_until)
            return
        if self._closing:
            return
        frozen = None
        if self.offsets is not None:  # the residuals of the model as published, not as fitted on
            frozen = (model_from_bytes(blob, device=self.model.device), info["version"])
        with self._lock:  # before the model goes out: a transition that comes after a subscriber
            # has it gets an offset for it (the fit thread runs niced and may wait long here)
            self.version, self.published_at, self.failure = info["version"], time.monotonic(), None
            self.last_fit, self._last_blob = info, blob
            self._offset_model = frozen or self._offset_model
        self.pub.publish(UInt8MultiArray(data=blob))
        self.get_logger().info(
            f"model v{self.version}: {len(data)} transitions, {data.n_episodes} episodes, "
            f"1-step validation RMSE {error:.4g}, fitted in {report.seconds:.1f} s "
            f"({report.message}); not transitions: {rejected or 'none'}"
        )

    def _republish(self, seen_until: int) -> None:
        """After a failed fit: the last good model again (also the one fitted from now on), its
        ``seen_until_ns`` moved on, so a planner waiting for a model of the data up to
        ``seen_until`` goes on with it at once (in lockstep, as on every run)."""
        if self._last_blob is None or self._closing:
            return
        self.model = model_from_bytes(self._last_blob, device=self.model.device)
        self.model.info = self.model.info | {"seen_until_ns": seen_until, "refit_failed": True}
        self._last_blob = self.model.to_bytes()
        self.pub.publish(UInt8MultiArray(data=self._last_blob))
        self.get_logger().warning(
            f"model v{self.version} published again for the data up to "
            f"{seen_until} ns (the refit failed)"
        )

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response):
        """``~/pause``: true stops learning (no fit starts; a running one finishes and publishes;
        transitions are still collected; the planners go on with the last model), false resumes
        (a fit that fell due meanwhile starts at once)."""
        with self._lock:
            self._paused = request.data
        response.success = True
        response.message = (
            f"learning paused at model v{self.version}; data is still collected"
            if request.data
            else "learning resumed"
        )
        self.get_logger().info(f"~/pause: {response.message}")
        if not request.data:
            self._maybe_fit()
        return response

    # -- status ----------------------------------------------------------------------------------
    def _report(self) -> tuple[int, str, dict]:
        with self._lock:
            size = self._total
            values = {
                "model": self.p.model,
                "model_version": self.version,
                "transitions": size,
                "paused": self._paused,
                **{f"builder {k}": v for k, v in sorted(self.builder.counts.items())},
            }
            if self.p.resample:
                period = self.builder.source_period
                values["source_rate_hz"] = round(1.0 / period, 1) if period else 0.0
                values["resampled_transitions"] = size - (
                    len(self._start) if self._start is not None else 0
                )
                values.update(
                    {f"dropped {k}": v for k, v in sorted(self.builder.resample_counts.items())}
                )
            if self.published_at is not None:
                values["model_age_s"] = time.monotonic() - self.published_at
                values.update(
                    {
                        k: v
                        for k, v in self.last_fit.items()
                        if k in ("val_rmse_1step", "val_loss", "fit_seconds")
                    }
                )
            failure, version, paused = self.failure, self.version, self._paused
        if failure:
            return (WARN if version else ERROR), failure, values
        if paused:
            return OK, f"learning paused at model v{version}: {size} transitions", values
        if not version:
            return OK, f"collecting data: {size} transitions", values
        return OK, f"model v{version} published", values

    def close(self) -> None:
        """Stop: no fit starts or publishes from now on, a running one stops at its next batch
        (``stop_fits``) and its thread is joined, at most CLOSE_TIMEOUT_S, so that no fit runs
        while the process exits."""
        with self._lock:
            self._closing = True
        self.model.stop_fits()
        thread = self._fit_thread
        if thread is not None:
            thread.join(CLOSE_TIMEOUT_S)
            if thread.is_alive():
                print(
                    f"[dynamics_fitter] the fit did not stop within {CLOSE_TIMEOUT_S:g} s",
                    file=sys.stderr,
                    flush=True,
                )


def main(args=None) -> int:
    return run_node(lambda: DynamicsFitterNode(), "dynamics_fitter", args)


if __name__ == "__main__":
    sys.exit(main())
