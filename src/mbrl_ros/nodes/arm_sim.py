"""Simulator node ``arm_sim``: a MuJoCo arm that stands in for the real one on ROS 2.

Publishes ``/joint_states`` (joints in ``joint_names`` order), ``/clock`` and the arm's URDF on
``/robot_description`` (std_msgs/String, transient local, as robot_state_publisher does), applies
``/effort_controller/commands`` (torques in ``joint_names`` order), offers ``~/reset``
(std_srvs/Trigger) and reports on ``/diagnostics``.

* lockstep: publish the state of step k, wait for the command for step k (tagged with that state's
  stamp, or untagged), step one control period, publish step k+1. A command that is malformed gets
  the safe hold for that step; if no command comes within ``lockstep_timeout`` (wall s), the safe
  hold is applied and the timeout reported. Stepping starts once a command publisher and
  ``min_state_subscribers`` joint-state subscribers are matched (``wait_for_peers``). The result
  does not depend on machine speed.
* realtime: the physics follows the wall clock (times ``real_time_factor``); the latest valid
  command is held (zero-order hold) until ``command_timeout`` passes, then the safe hold applies.
* hardware: behaves like a ros2_control robot (joint_state_broadcaster + an effort forward command
  controller), not like a simulator: a loop thread measures the arm every ``control_period``
  (default 2 ms) with Gaussian timing jitter (``state_jitter``), stamps the state with the wall
  clock (``time.time_ns()``), drops it with ``drop_probability`` instead of publishing it, and
  applies the latest command (zero-order hold, tags ignored) from the next cycle on; a command
  older than ``command_timeout`` or a malformed one means ZERO torque (no safe hold), and the arm
  has weight unless ``gravity_compensation``. The physics follows the wall clock exactly
  (``ArmSimulator.advance``). No ``/clock``, no ``~/reset``, no episode events, no sim time.

Camera (``camera`` true; lockstep and realtime): with every joint state the node renders the fixed
MuJoCo camera ``camera_name`` of the scene offscreen (``mbrl_ros.simulator.camera``) and publishes
it on ``/camera/image_raw`` (sensor_msgs/Image, rgb8) and ``/camera/camera_info``
(sensor_msgs/CameraInfo) with the joint state's stamp, just before the state. The scene's target
marker follows ``/mbrl/target`` (the target that holds at the state's stamp), so the images show the
goal. With ``wait_for_target`` and automatic episodes in lockstep the first state waits for the
first episode's target, so no frame is rendered before the goal is known (the 'solar' graph).

Tool (``tool``, e.g. ``peg`` with ``scene`` ``insertion``; lockstep and realtime): the arm holds the
tool at its end effector and the scene's block ``hole`` (``tasks.insertion_scene``) is moved at each
reset so that the hole's top centre is the ``/mbrl/target`` that holds at the reset state's stamp
(else the newest one): the conditions of peg insertion are hole positions, moved only while the arm
is put back to its reset pose, never under the peg. The reset event carries the hole's top centre
(``hole``, m), so a trainer can check the hole is where it asked. With automatic episodes
(``episode_steps`` > 0) in lockstep the first state also waits for its target (the episode
manager sends every episode's at start-up) and the hole is placed for it, so episode 0 has its
own hole. The arm has weight (the tool is not in the URDF the compensation would use).

A reset advances sim time by one control period without physics, so a command computed for the
state before the reset is stale and cannot be applied to the state after it. With
``episode_steps`` = N > 0 the sim resets by itself: an episode is N control steps, its terminal
state is published, and the command answering the terminal state triggers the reset instead of a
step. Episode e then starts at stamp e·(N+1)·control_period, so episode boundaries (and targets
published ahead of them) are deterministic in lockstep.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from mbrl_ros.common.msgconv import MessageError, command_tag, read_command, seconds_to_ns
from mbrl_ros.control.plausibility import TargetGate
from mbrl_ros.data.topics import (
    CAMERA_INFO,
    CLOCK,
    COMMANDS,
    EVENTS,
    IMAGES,
    ROBOT_DESCRIPTION,
    STATES,
)
from mbrl_ros.nodes.diagnostics import OK, WARN, Diagnostics
from mbrl_ros.nodes.intake import subscribe
from mbrl_ros.nodes.messages import (
    COMMAND_QOS,
    EVENT_QOS,
    LATCHED_QOS,
    STATE_QOS,
    camera_info_msg,
    clock_msg,
    image_msg,
    joint_state_msg,
    time_msg,
)
from mbrl_ros.nodes.params import ConfigError, Param, declare_params, select_joints
from mbrl_ros.nodes.runner import run_node
from mbrl_ros.nodes.targets import TargetSchedule, subscribe_targets
from mbrl_ros.robot.description import load_robot
from mbrl_ros.simulator.camera import SOLAR_CAMERA, Camera, CameraError
from mbrl_ros.simulator.simulation import ArmSimulator, CommandHold, SimConfig
from mbrl_ros.tasks.insertion_scene import InsertionSimulator, tool_scene

MODE_PERIODS = {"lockstep": 0.01, "realtime": 0.01, "hardware": 0.002}  # control_period 0 → s
MAX_CATCH_UP_S = 0.25  # hardware: a loop stalled longer skips the rest instead of simulating it

PARAMS = [
    Param("robot", "arm7", "robot description: a name in urdf/ (arm7, arm2, arm6) or a URDF path"),
    Param("scene", "scene", "MuJoCo scene parts: a name in sim/ or an MJCF path"),
    Param(
        "tool",
        "",
        "a tool at the end effector ('' = none; a name in sim/, e.g. peg, or an MJCF path): "
        "the scene's block 'hole' then follows /mbrl/target at each reset (peg insertion)",
    ),
    Param(
        "joint_names",
        [],
        "order of the torques in a command and of the joints in "
        "/joint_states; [] = the robot's joint order",
    ),
    Param(
        "mode",
        "lockstep",
        "lockstep (deterministic), realtime (wall clock) or hardware (like "
        "a ros2_control robot: wall-clock stamps, jitter, drops, zero torque on stale commands)",
        choices=("lockstep", "realtime", "hardware"),
    ),
    Param(
        "control_period",
        0.0,
        "time between joint states / commands (s); 0 = the mode's "
        "default: 0.01, hardware 0.002 (a 500 Hz ros2_control loop)",
        (0.0, 1.0),
    ),
    Param(
        "state_jitter",
        0.0002,
        "hardware: standard deviation of each state's time around its "
        "period's schedule (s; clipped to half a period)",
        (0.0, 0.1),
    ),
    Param(
        "drop_probability",
        0.002,
        "hardware: probability that a measured state is not published",
        (0.0, 0.5),
    ),
    Param(
        "lockstep_timeout",
        1.0,
        "wall time to wait for a command before the safe hold (s)",
        (1e-3, 600.0),
    ),
    Param(
        "wait_for_peers",
        True,
        "lockstep: start stepping once a command publisher and "
        "'min_state_subscribers' joint-state subscribers are matched",
    ),
    Param(
        "wait_for_target",
        False,
        "lockstep with episode_steps > 0 (refused otherwise): the first state also waits for "
        "the first episode's /mbrl/target, so the camera's first frames draw it (always so "
        "with a tool)",
    ),
    Param(
        "min_state_subscribers",
        1,
        "lockstep: joint-state subscribers to wait for (every node "
        "of the graph that must see every state)",
        (1, 1000),
    ),
    Param(
        "command_timeout",
        0.1,
        "realtime, hardware: wall age after which a command is dropped "
        "(s; realtime: safe hold, hardware: zero torque)",
        (1e-3, 60.0),
    ),
    Param("real_time_factor", 1.0, "realtime: sim seconds per wall second", (0.01, 100.0)),
    # the simulator's settings; control_period is the node's own (0 = the mode's default)
    *(p for p in SimConfig.params() if p.name != "control_period"),
    Param(
        "episode_steps",
        0,
        "control steps per episode before an automatic reset; 0 = none",
        (0, 10**9),
    ),
    Param(
        "duration",
        0.0,
        "stop after this much sim time (s; hardware: wall time); 0 = run until stopped",
        (0.0, 1e7),
    ),
    Param("status_period", 0.0, "wall seconds between status lines; 0 = none", (0.0, 3600.0)),
    Param("command_topic", COMMANDS, "topic of the torque commands"),
    Param(
        "camera",
        False,
        "lockstep, realtime: publish the camera's rgb8 image and camera info "
        "with every joint state (offscreen rendering: OSMesa or EGL without a display)",
    ),
    Param("camera_name", SOLAR_CAMERA, "camera: a camera of the scene"),
    Param("camera_width", 64, "camera: image width (pixels)", (1, 4096)),
    Param("camera_height", 64, "camera: image height (pixels)", (1, 4096)),
]


class ArmSimNode(Node):
    """The simulator node; ``node_kwargs`` go to rclpy's Node (parameter_overrides, context...)."""

    def __init__(self, **node_kwargs):
        super().__init__("arm_sim", **node_kwargs)
        p = self.p = declare_params(self, PARAMS)
        p.control_period = p.control_period or MODE_PERIODS[p.mode]
        if p.mode == "hardware":
            _check_hardware_params(p, self.get_parameter("use_sim_time").value)
        robot = load_robot(p.robot)
        names, self.command_order = select_joints(robot, p.joint_names)  # command i → joint
        if sorted(names) != sorted(robot.joint_names):
            raise ConfigError(
                f"parameter 'joint_names' = {names} must list every joint of "
                f"{robot.name} once: {list(robot.joint_names)}"
            )
        self.state_names = names
        if p.wait_for_target and (p.mode != "lockstep" or not p.episode_steps):
            raise ConfigError(
                "parameter 'wait_for_target' = True needs mode lockstep and episode_steps > 0 "
                f"(got mode {p.mode!r}, episode_steps {p.episode_steps}): the first episode's "
                "target is what it waits for"
            )
        if p.tool and p.mode == "hardware":
            raise ConfigError(
                f"parameter 'tool' = {p.tool!r} needs mode lockstep or realtime: the hole moves "
                "at resets, and the hardware mode has none"
            )
        try:
            config = SimConfig.select(vars(p))
            self.sim = (
                tool_scene(robot, p.scene, p.tool, config)
                if p.tool
                else ArmSimulator(robot, config)
            )
        except ConfigError:
            raise
        except ValueError as exc:  # period/timestep mismatch, initial position
            raise ConfigError(str(exc)) from None
        self.robot = robot
        self.period_ns = seconds_to_ns(p.control_period)
        self.step_index = 0  # time index; advances on steps and on resets
        self.episode = 0
        self.episode_step = 0
        self.pending_stamp: int | None = None
        self.pending_since = 0.0
        self.latest_command: np.ndarray | None = None
        self.latest_command_wall = 0.0
        self.latest_tag = -1
        self.exit_status = 0
        self.answered = False  # a command (or a safe hold) has been applied in lockstep
        self._sent: tuple = ()  # last clock and state messages, for re-sending
        self._sent_at = 0.0
        self._window = _StatusWindow(robot.n_joints)

        self.state_pub = self.create_publisher(JointState, STATES, STATE_QOS)
        self.description_pub = self.create_publisher(String, ROBOT_DESCRIPTION, LATCHED_QOS)
        self.description_pub.publish(String(data=robot.urdf_path.read_text()))
        self.diag = Diagnostics(self, "simulator", self._report)
        subscribe(
            self,
            self.diag,
            Float64MultiArray,
            p.command_topic,
            COMMAND_QOS,
            self._on_command,
            what="command",
        )
        self.targets: TargetSchedule | None = None  # /mbrl/target, for the camera or the hole
        if p.camera or p.tool or p.wait_for_target:
            self.targets = TargetSchedule(TargetGate.for_robot(robot))
            subscribe_targets(self, self.diag, self.targets)
        self.camera = _CameraPublisher(self) if p.camera else None
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.wall_start: float | None = None
        self.hardware: _HardwareLoop | None = None
        if p.mode == "hardware":
            self.hardware = _HardwareLoop(self)
        else:
            self.clock_pub = self.create_publisher(ClockMsg, CLOCK, 10)
            self.event_pub = self.create_publisher(String, EVENTS, EVENT_QOS)
            self.create_service(Trigger, "~/reset", self._on_reset)
        if p.mode == "lockstep":
            self.create_timer(min(0.01, p.lockstep_timeout / 4), self._lockstep_tick, clock=wall)
        elif p.mode == "realtime":
            self.create_timer(p.control_period, self._realtime_tick, clock=wall)
        if p.status_period > 0:
            self.create_timer(p.status_period, self._status_line, clock=wall)
        self.get_logger().info(
            f"{robot.name}: {robot.n_joints} joints, {p.mode} at {1 / p.control_period:.0f} Hz "
            f"({self.sim.n_substeps} physics steps of {p.physics_timestep * 1e3:g} ms)"
        )
        if self.hardware is not None:
            self.hardware.start()

    def close(self) -> None:
        if self.hardware is not None:
            self.hardware.stop()
        if self.camera is not None:
            self.camera.close()

    # -- time and publishing -------------------------------------------------------------------
    @property
    def stamp_ns(self) -> int:
        return self.step_index * self.period_ns

    def _state_msg(self, stamp_ns: int, s) -> JointState:
        """The measured state ``s`` (robot order) as a JointState in ``joint_names`` order."""
        order = self.command_order
        return joint_state_msg(
            stamp_ns, self.state_names, s.position[order], s.velocity[order], s.effort[order]
        )

    def _publish_state(self) -> None:
        s = self.sim.measure()
        stamp = self.stamp_ns
        if self.camera is not None:
            self.camera.publish(stamp)
        self._sent = (clock_msg(stamp), self._state_msg(stamp, s))
        self._send()
        self._window.add(s.position)
        self.pending_stamp, self.pending_since = stamp, time.monotonic()

    def _send(self) -> None:
        self.clock_pub.publish(self._sent[0])
        self.state_pub.publish(self._sent[1])
        self._sent_at = time.monotonic()

    def _advance(self, torque_robot_order: np.ndarray) -> None:
        self.answered = True
        if self.p.episode_steps and self.episode_step >= self.p.episode_steps:
            self._reset()  # the terminal state's command starts the next episode
            return
        self.sim.step(torque_robot_order)
        self.step_index += 1
        self.episode_step += 1
        if self.p.duration > 0 and self.stamp_ns >= self.p.duration * 1e9:
            self._finish()
            return
        self._publish_state()

    def _finish(self) -> None:
        self.pending_stamp = None
        self._status_line()
        self.get_logger().info(f"duration {self.p.duration:g} s of sim time reached; stopping")
        self.context.try_shutdown()

    # -- commands ------------------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        n = self.robot.n_joints
        if self.hardware is not None:
            self.hardware.on_command(msg)
            return
        try:
            tag = command_tag(msg)
        except MessageError as exc:
            self.diag.warn("rejected_command", f"command rejected: {exc}")
            self._hold_after_bad_command(None)
            return
        try:
            data, _ = read_command(msg, n)
        except MessageError as exc:
            self.diag.warn("rejected_command", f"command rejected: {exc}")
            self._hold_after_bad_command(tag)
            return
        torque = np.empty(n)
        torque[self.command_order] = data
        if self.p.mode == "lockstep":
            if self.pending_stamp is None:
                self.diag.warn("early_command", "command before the first state: ignored")
                return
            if tag is not None and tag != self.pending_stamp:
                self.diag.warn(
                    "stale_command",
                    f"command for stamp {tag} ns rejected: waiting for {self.pending_stamp} ns",
                )
                return
            self.diag.count("commands_applied")
            self._advance(torque)
        else:
            if tag is not None and (tag <= self.latest_tag or tag > self.stamp_ns):
                self.diag.warn(
                    "stale_command",
                    f"command for stamp {tag} ns rejected (latest "
                    f"{self.latest_tag}, now {self.stamp_ns})",
                )
                self.latest_command = None
                return
            self.latest_tag = tag if tag is not None else self.latest_tag
            self.latest_command, self.latest_command_wall = torque, time.monotonic()
            self.diag.count("commands_applied")

    def _hold_after_bad_command(self, tag: int | None) -> None:
        """A malformed command gets the safe hold: for this step (lockstep) or until the next
        valid command (realtime)."""
        if self.p.mode == "realtime":
            self.latest_command = None
        elif self.pending_stamp is not None and tag in (None, self.pending_stamp):
            self.diag.count("safe_holds")
            self._advance(self.sim.hold_torque())

    # -- scheduling ----------------------------------------------------------------------------
    def _peers_ready(self) -> bool:
        """A command publisher is there and the state publisher is matched with enough
        subscriptions (matched: they will get the first state); with automatic episodes and a
        tool or ``wait_for_target`` the first episode's target has come."""
        waits_for_target = self.p.wait_for_target or self._hole_follows_episodes
        return (
            self.count_publishers(self.p.command_topic) > 0
            and self.state_pub.get_subscription_count() >= self.p.min_state_subscribers
            and not (waits_for_target and self._first_target() is None)
        )

    @property
    def _hole_follows_episodes(self) -> bool:
        return isinstance(self.sim, InsertionSimulator) and self.p.episode_steps > 0

    def _first_target(self) -> np.ndarray | None:
        """The /mbrl/target that holds at the current stamp, else the newest (3,) m; None
        before the first."""
        assert self.targets is not None
        target = self.targets.at(self.stamp_ns)
        return target if target is not None else self.targets.newest

    def _lockstep_tick(self) -> None:
        if self.pending_stamp is None:
            if self.wall_start is None and (not self.p.wait_for_peers or self._peers_ready()):
                self.wall_start = time.monotonic()
                if self._hole_follows_episodes:
                    self._place_hole()
                self._publish_state()
            return
        if not self.answered and time.monotonic() - self._sent_at > 0.25:
            self._send()
        if time.monotonic() - self.pending_since > self.p.lockstep_timeout:
            self.diag.warn(
                "lockstep_timeouts",
                f"no command for stamp {self.pending_stamp} ns "
                f"within {self.p.lockstep_timeout:g} s: safe hold",
            )
            self.diag.count("safe_holds")
            self._advance(self.sim.hold_torque())

    def _realtime_tick(self) -> None:
        now = time.monotonic()
        if self.wall_start is None:
            self.wall_start = now
            self._publish_state()
            return
        due = int((now - self.wall_start) * self.p.real_time_factor / self.p.control_period)
        behind = due - self.step_index
        if behind > 10:  # too far behind the wall clock: skip ahead instead of bursting
            self.diag.count("overruns")
            self.wall_start += (behind - 1) * self.p.control_period / self.p.real_time_factor
            behind = 1
        for _ in range(max(0, behind)):
            if (
                self.latest_command is None
                or now - self.latest_command_wall > self.p.command_timeout
            ):
                if self.latest_command is not None:
                    self.diag.warn(
                        "command_timeouts",
                        f"command older than {self.p.command_timeout:g} s: safe hold",
                    )
                    self.latest_command = None
                self.diag.count("safe_holds")
                torque = self.sim.hold_torque()
            else:
                torque = self.latest_command
            self._advance(torque)
            if self.pending_stamp is None:  # finished
                return

    # -- reset, status ---------------------------------------------------------------------------
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._reset()
        response.success = True
        response.message = (
            f"reset to episode {self.episode} at sim time {self.stamp_ns / 1e9:.3f} s"
        )
        return response

    def _reset(self) -> None:
        """New episode: reset the arm (and with a tool move the hole to the target), advance time
        one period, announce it, publish the state."""
        self.episode += 1
        self.episode_step = 0
        self.step_index += 1
        extra = {}
        if isinstance(self.sim, InsertionSimulator):
            extra["hole"] = self._place_hole().tolist()
        self.sim.reset(randomize=True)
        self.latest_command = None
        self.diag.count("resets")
        self.event_pub.publish(
            String(
                data=json.dumps(
                    {
                        "event": "reset",
                        "episode": self.episode,
                        "stamp_ns": self.stamp_ns,
                        "source": self.get_name(),
                    }
                    | extra
                )
            )
        )
        if self.pending_stamp is not None or self.p.mode == "realtime":
            self._publish_state()

    def _place_hole(self) -> np.ndarray:
        """Tool: move the hole to the target that holds now (if any); its top centre (3,) m."""
        assert isinstance(self.sim, InsertionSimulator)
        hole = self._first_target()
        if hole is not None:
            self.sim.set_hole(hole)
        return self.sim.hole.top

    def _report(self) -> tuple[int, str, dict]:
        if self.hardware is not None:
            return self.hardware.report()
        w = self._window
        rate, rtf = w.rates(self.step_index, self.p.control_period)
        problems = self.diag.counters["lockstep_timeouts"] + self.diag.counters["rejected_command"]
        level = WARN if problems else OK
        camera = self.camera.report() if self.camera is not None else {}
        return (
            level,
            f"{self.p.mode}, {rate:.0f} steps/s",
            {
                "sim_time_s": self.stamp_ns / 1e9,
                "steps_per_s": rate,
                "real_time_factor": rtf,
                "episode": self.episode,
                **camera,
            },
        )

    def _status_line(self) -> None:
        if self.hardware is not None:
            self.get_logger().info(self.hardware.status_line())
            return
        w = self._window
        rate, rtf = w.rates(self.step_index, self.p.control_period)
        c = self.diag.counters
        ranges = " ".join(f"{lo:+.0f}..{hi:+.0f}" for lo, hi in zip(*w.ranges_deg()))
        self.get_logger().info(
            f"t={self.stamp_ns / 1e9:7.2f} s | {rate:6.0f} steps/s | RTF {rtf:5.2f} | "
            f"cmds {c['commands_applied']} ok {c['rejected_command'] + c['stale_command']} bad "
            f"{c['lockstep_timeouts'] + c['command_timeouts']} timeouts | q range (deg) {ranges}"
        )
        w.restart(self.step_index)


class _CameraPublisher:
    """The ``camera`` option: renders the scene's camera for each published state and publishes
    Image and CameraInfo with the state's stamp; moves the scene's target marker to the target
    of ``/mbrl/target`` that holds at that stamp."""

    def __init__(self, node: ArmSimNode):
        p = node.p
        if p.mode == "hardware":
            raise ConfigError(
                "parameter 'camera' = True needs mode lockstep or realtime: the "
                "hardware mode stands in for a robot's control loop (no camera)"
            )
        try:
            self.camera = Camera(node.sim.model, p.camera_name, p.camera_width, p.camera_height)
        except CameraError as exc:
            raise ConfigError(f"parameter 'camera' = True: {exc}") from None
        self.node, self.sim = node, node.sim
        self.frame_id = f"{p.camera_name}_camera_optical_frame"
        self.info = camera_info_msg(
            0, self.frame_id, p.camera_width, p.camera_height, self.camera.intrinsics()
        )
        self.image_pub = node.create_publisher(Image, IMAGES, STATE_QOS)
        self.info_pub = node.create_publisher(CameraInfo, CAMERA_INFO, STATE_QOS)
        assert node.targets is not None  # the node subscribes for its camera
        self.targets = node.targets
        self.has_target = True
        self.frames, self.render_s = 0, 0.0

    def publish(self, stamp_ns: int) -> None:
        target = self.targets.at(stamp_ns)
        if target is not None and self.has_target:
            try:
                self.sim.set_target(target)
            except ValueError as exc:  # a scene without the marker: images without a target
                self.has_target = False
                self.node.get_logger().warning(f"the target is not drawn: {exc}")
        start = time.perf_counter()
        rgb = self.sim.render(self.camera)
        self.render_s += time.perf_counter() - start
        self.frames += 1
        self.info.header.stamp = time_msg(stamp_ns)
        self.image_pub.publish(image_msg(stamp_ns, self.frame_id, rgb))
        self.info_pub.publish(self.info)

    def report(self) -> dict:
        return {
            "camera_frames": self.frames,
            "camera_render_ms": 1e3 * self.render_s / max(self.frames, 1),
        }

    def close(self) -> None:
        self.camera.close()


def _check_hardware_params(p, use_sim_time: bool) -> None:
    """ConfigError for settings a ros2_control robot does not have."""
    for bad, text in (
        (use_sim_time, "'use_sim_time' = True: it stamps with the wall clock"),
        (p.episode_steps, f"'episode_steps' = {p.episode_steps}: it has no resets"),
        (
            p.real_time_factor != 1.0,
            f"'real_time_factor' = {p.real_time_factor}: it runs at the wall clock's pace",
        ),
    ):
        if bad:
            raise ConfigError(f"mode 'hardware' is a robot, so parameter {text}")


class _HardwareLoop:
    """Mode 'hardware': the robot's control loop in its own thread (see the module docstring).

    Cycle k wakes at start + k·period + jitter, advances the physics to the wall clock under the
    torque written in the cycle before, measures and publishes (or drops) the state stamped with
    the wall clock, then takes the latest command as the torque to write. Cycles that the thread
    missed (a loaded machine) are skipped and counted, not bunched."""

    def __init__(self, node: ArmSimNode):
        self.node, p = node, node.p
        n = node.robot.n_joints
        self.period = p.control_period
        self.hold = CommandHold(n, p.command_timeout)
        self.rng = np.random.default_rng([p.seed, 1])  # timing; the sim has its own noise rng
        self._stop = threading.Event()
        self._finished = node.create_guard_condition(node._finish)
        self._thread = threading.Thread(target=self._run, name="arm_sim_hardware", daemon=True)
        self._lock = threading.Lock()  # the counters below, the status window
        self.stats = {
            "states_published": 0,
            "states_dropped": 0,
            "missed_cycles": 0,
            "command_timeouts": 0,
            "zero_torque_s": 0.0,
        }
        self.last_stamp = 0
        self.start_wall = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def on_command(self, msg: Float64MultiArray) -> None:
        """A command from /effort_controller/commands (executor thread)."""
        node = self.node
        try:
            data, _ = read_command(msg, node.robot.n_joints)
        except MessageError as exc:
            node.diag.warn("rejected_command", f"command rejected: {exc}; zero torque")
            self.hold.clear()
            return
        torque = np.empty_like(data)
        torque[node.command_order] = data
        self.hold.set(torque, time.monotonic())
        node.diag.count("commands_applied")

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001 - the robot stops publishing; the node says why
            self.node.diag.fault(f"hardware loop stopped: {exc}")

    def _loop(self) -> None:
        node, sim, period = self.node, self.node.sim, self.period
        jitter, drop = node.p.state_jitter, node.p.drop_probability
        start = last = self.start_wall = time.monotonic()
        torque, in_force = np.zeros(node.robot.n_joints), False
        k = 0
        while True:
            k += 1
            offset = (
                float(np.clip(self.rng.normal(0.0, jitter), -period / 2, period / 2))
                if jitter > 0
                else 0.0
            )
            if self._stop.wait(max(0.0, start + k * period + offset - time.monotonic())):
                return
            now = time.monotonic()
            missed = int((now - start) / period) - k
            elapsed = min(now - last, MAX_CATCH_UP_S)
            sim.advance(torque, elapsed)
            last = now
            state = sim.measure()
            stamp = self.last_stamp = max(time.time_ns(), self.last_stamp + 1)
            dropped = drop > 0 and self.rng.random() < drop
            if not dropped:
                node.state_pub.publish(node._state_msg(stamp, state))
            torque, now_in_force = self.hold.torque(now)
            with self._lock:
                s = self.stats
                s["states_dropped" if dropped else "states_published"] += 1
                s["missed_cycles"] += max(0, missed)
                s["zero_torque_s"] += 0.0 if in_force else elapsed
                s["command_timeouts"] += in_force and not now_in_force
                node._window.add(state.position)
            in_force = now_in_force
            k += max(0, missed)
            if node.p.duration > 0 and now - start >= node.p.duration:
                self._finished.trigger()
                return

    def _counts(self) -> tuple[dict, float, float]:
        """A copy of the counters, the states per wall second since the last status line and the
        wall time since the start (s)."""
        with self._lock:
            w = self.node._window
            rate, _ = w.rates(self.stats["states_published"], self.period)
            return dict(self.stats), rate, time.monotonic() - self.start_wall

    def report(self) -> tuple[int, str, dict]:
        stats, rate, elapsed = self._counts()
        c = self.node.diag.counters
        level = WARN if c["rejected_command"] or c["callback_errors"] else OK
        return (
            level,
            f"hardware, {rate:.0f} states/s",
            {
                "wall_time_s": elapsed,
                "states_per_s": rate,
                "last_stamp_ns": self.last_stamp,
                **stats,
            },
        )

    def status_line(self) -> str:
        stats, rate, elapsed = self._counts()
        c = self.node.diag.counters
        w = self.node._window
        with self._lock:
            ranges = " ".join(f"{lo:+.0f}..{hi:+.0f}" for lo, hi in zip(*w.ranges_deg()))
            w.restart(stats["states_published"])
        return (
            f"t={elapsed:7.2f} s | {rate:6.0f} states/s | cmds {c['commands_applied']} ok "
            f"{c['rejected_command']} bad {stats['command_timeouts']} timeouts | zero torque "
            f"{stats['zero_torque_s']:.2f} s | dropped {stats['states_dropped']} missed "
            f"{stats['missed_cycles']} | q range (deg) {ranges}"
        )


class _StatusWindow:
    """Step rate, real-time factor and joint ranges since the last status line."""

    def __init__(self, n: int):
        self.n = n
        self.restart(0)

    def restart(self, step_index: int) -> None:
        self.t0, self.k0 = time.monotonic(), step_index
        self.lo, self.hi = np.full(self.n, np.inf), np.full(self.n, -np.inf)

    def add(self, q: np.ndarray) -> None:
        np.minimum(self.lo, q, out=self.lo)
        np.maximum(self.hi, q, out=self.hi)

    def rates(self, step_index: int, period: float) -> tuple[float, float]:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        steps = (step_index - self.k0) / elapsed
        return steps, steps * period

    def ranges_deg(self) -> tuple[np.ndarray, np.ndarray]:
        if not np.isfinite(self.lo).all():
            return np.zeros(self.n), np.zeros(self.n)
        return np.degrees(self.lo), np.degrees(self.hi)


def main(args=None) -> int:
    return run_node(lambda: ArmSimNode(), "arm_sim", args)


if __name__ == "__main__":
    sys.exit(main())
