"""The graph's topic and service names (DESIGN.md §4), defined once, and the episode events
published on ``mbrl/episode_events``.

Names are relative, so a graph started in a namespace (``namespace:=/robot1``) keeps its traffic
under it (``/robot1/joint_states``); every name is a default that can be remapped. Two stay
absolute, as ROS expects: ``/clock`` (what every node's time source subscribes to with
``use_sim_time``) and ``/diagnostics`` (what diagnostic_updater publishes and the aggregator reads;
each status is named after its node with its namespace: ``robot1/mpc_planner: ...``).

Episode events are std_msgs/String whose data is a JSON object
``{"event": "reset"|"start"|"end", "episode": int, "stamp_ns": int, ...}``. ``stamp_ns`` is the
stamp of the first joint state the event applies to: a reset or start begins a new episode at that
state; an end means states from that stamp on belong to no episode (until the next reset/start).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields

from mbrl_ros.common.msgconv import MessageError

STATES = "joint_states"
COMMANDS = "effort_controller/commands"
EVENTS = "mbrl/episode_events"
TARGET = "mbrl/target"
CONTROLLER = "mbrl/controller"
HOMING_CONTROLLER = "mbrl/homing_controller"
PLANNER_HEARTBEAT = "mbrl/planner_heartbeat"
DYNAMICS_MODEL = "mbrl/dynamics_model"
MODEL_OFFSET = "mbrl/model_offset"  # offset-free MPC's model bias (mbrl_ros.dynamics.offset)
POLICY = "mbrl/policy"
SOLAR_MODEL = "mbrl/solar_model"  # SOLAR model artifacts (mbrl_ros.solar.model)
PLANNED_PATH = "mbrl/planned_path"
MARKERS = "mbrl/markers"
ROBOT_DESCRIPTION = "robot_description"  # relative, as robot_state_publisher publishes it
RESET_SERVICE = "arm_sim/reset"  # the simulator's ~/reset in the graph's namespace
CLOCK = "/clock"
IMAGES = "camera/image_raw"  # sensor_msgs/Image of the simulator's camera (rgb8)
CAMERA_INFO = "camera/camera_info"  # its sensor_msgs/CameraInfo, same stamps
DIAGNOSTICS = "/diagnostics"

# Message types of the topics the graph defines, so a recorder can subscribe before a publisher
# appears (no message of a late publisher is lost).
KNOWN_TYPES: dict[str, str] = {
    STATES: "sensor_msgs/msg/JointState",
    COMMANDS: "std_msgs/msg/Float64MultiArray",
    TARGET: "geometry_msgs/msg/PointStamped",
    CONTROLLER: "std_msgs/msg/UInt8MultiArray",
    CLOCK: "rosgraph_msgs/msg/Clock",
    EVENTS: "std_msgs/msg/String",
    IMAGES: "sensor_msgs/msg/Image",
    CAMERA_INFO: "sensor_msgs/msg/CameraInfo",
}
RECORDED_BY_DEFAULT = (
    STATES,
    COMMANDS,
    TARGET,
    CONTROLLER,
    CLOCK,
    EVENTS,
    IMAGES,
    CAMERA_INFO,
)  # the camera's: only where a camera publishes


NAMESPACE_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_namespace(text: str) -> str:
    """A graph's namespace, made absolute: ``"robot1"`` or ``"/robot1"`` → ``"/robot1"``,
    ``""`` or ``"/"`` → ``"/"``; ValueError naming the rule a bad one breaks (ROS 2's: tokens of
    letters, digits and underscores, not starting with a digit, separated by single slashes)."""
    body = text.strip("/") if text.startswith("/") else text
    if not body:
        return "/"
    for token in body.split("/"):
        if not NAMESPACE_TOKEN.fullmatch(token):
            raise ValueError(
                f"namespace {text!r} is not a ROS namespace: {token!r} must be "
                f"letters, digits and underscores, not starting with a digit"
            )
    if text.endswith("/"):
        raise ValueError(f"namespace {text!r} is not a ROS namespace: it ends with '/'")
    return "/" + body


def resolve(name: str, namespace: str = "/") -> str:
    """The fully qualified name of topic ``name`` in ``namespace`` (ROS 2 rules, without remapping
    or ``~``): ``resolve("joint_states", "/robot1")`` → ``"/robot1/joint_states"``; an absolute
    name is returned as it is. Bags hold fully qualified names."""
    if name.startswith("/"):
        return name
    return f"{namespace.rstrip('/')}/{name}"


EVENT_KINDS = ("reset", "start", "end")


@dataclass(frozen=True)
class TopicNames:
    """Where a transition builder finds joint states, commands and episode events (and the
    image observations, where asked for)."""

    states: str = STATES
    commands: str = COMMANDS
    events: str = EVENTS
    images: str = IMAGES

    def resolved(self, namespace: str = "/") -> TopicNames:
        """These names, fully qualified in ``namespace`` (as a bag recorded there holds them)."""
        return TopicNames(*(resolve(getattr(self, f.name), namespace) for f in fields(self)))


@dataclass(frozen=True)
class EpisodeEvent:
    kind: str
    episode: int
    stamp_ns: int


def _event_integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"episode event '{name}' = {value!r} is not an integer")
    return value


def read_episode_event(msg) -> EpisodeEvent:
    """std_msgs/String (duck-typed: ``.data``) → EpisodeEvent; MessageError if malformed."""
    try:
        obj = json.loads(msg.data)
    except (TypeError, ValueError):
        raise MessageError(f"episode event {str(msg.data)[:80]!r} is not JSON") from None
    if not isinstance(obj, dict):
        raise MessageError(f"episode event {str(msg.data)[:80]!r} is not a JSON object")
    kind, episode, stamp = obj.get("event"), obj.get("episode", -1), obj.get("stamp_ns")
    if kind not in EVENT_KINDS:
        raise MessageError(f"episode event kind {kind!r} is not one of {list(EVENT_KINDS)}")
    stamp, episode = _event_integer("stamp_ns", stamp), _event_integer("episode", episode)
    if stamp < 0:
        raise MessageError(f"episode event stamp_ns {stamp} is negative")
    return EpisodeEvent(kind, episode, stamp)


def episode_event_json(kind: str, episode: int, stamp_ns: int, **extra) -> str:
    """The JSON text of an episode event (the ``data`` of the std_msgs/String)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"episode event kind {kind!r} is not one of {list(EVENT_KINDS)}")
    return json.dumps({"event": kind, "episode": int(episode), "stamp_ns": int(stamp_ns), **extra})
