"""The graph's topics (DESIGN.md §4) and the episode events published on ``/mbrl/episode_events``.

Episode events are std_msgs/String whose data is a JSON object
``{"event": "reset"|"start"|"end", "episode": int, "stamp_ns": int, ...}``. ``stamp_ns`` is the
stamp of the first joint state the event applies to: a reset or start begins a new episode at that
state; an end means states from that stamp on belong to no episode (until the next reset/start).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from mbrl_ros.msgconv import MessageError

STATES = "/joint_states"
COMMANDS = "/effort_controller/commands"
EVENTS = "/mbrl/episode_events"
CLOCK = "/clock"
IMAGES = "/camera/image_raw"         # sensor_msgs/Image of the simulator's camera (rgb8)
CAMERA_INFO = "/camera/camera_info"  # its sensor_msgs/CameraInfo, same stamps

# Message types of the topics the graph defines, so a recorder can subscribe before a publisher
# appears (no message of a late publisher is lost).
KNOWN_TYPES: dict[str, str] = {
    STATES: "sensor_msgs/msg/JointState",
    COMMANDS: "std_msgs/msg/Float64MultiArray",
    "/mbrl/target": "geometry_msgs/msg/PointStamped",
    "/mbrl/controller": "std_msgs/msg/UInt8MultiArray",
    CLOCK: "rosgraph_msgs/msg/Clock",
    EVENTS: "std_msgs/msg/String",
    IMAGES: "sensor_msgs/msg/Image",
    CAMERA_INFO: "sensor_msgs/msg/CameraInfo",
}
RECORDED_BY_DEFAULT = (STATES, COMMANDS, "/mbrl/target", "/mbrl/controller", CLOCK, EVENTS,
                       IMAGES, CAMERA_INFO)  # the camera's: only where a camera publishes

EVENT_KINDS = ("reset", "start", "end")


@dataclass(frozen=True)
class TopicNames:
    """Where a transition builder finds joint states, commands and episode events (and the
    image observations, where asked for)."""

    states: str = STATES
    commands: str = COMMANDS
    events: str = EVENTS
    images: str = IMAGES


@dataclass(frozen=True)
class EpisodeEvent:
    kind: str
    episode: int
    stamp_ns: int


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
    for name, value in (("stamp_ns", stamp), ("episode", episode)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise MessageError(f"episode event '{name}' = {value!r} is not an integer")
    if stamp < 0:
        raise MessageError(f"episode event stamp_ns {stamp} is negative")
    return EpisodeEvent(kind, episode, stamp)


def episode_event_json(kind: str, episode: int, stamp_ns: int, **extra) -> str:
    """The JSON text of an episode event (the ``data`` of the std_msgs/String)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"episode event kind {kind!r} is not one of {list(EVENT_KINDS)}")
    return json.dumps({"event": kind, "episode": int(episode), "stamp_ns": int(stamp_ns), **extra})
