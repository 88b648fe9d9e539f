"""Datasets from bags: the bag's joint states, commands and episode events, in recorded order (the
order the recorder received them, whatever their log times), through the same
``TransitionBuilder`` that live nodes use, or (``Streams.resample``: bags of a real robot, joint
states at any rate, commands tagged with their send time) the same ``Resampler`` as the fitter's
``resample`` mode; ``Streams.gravity`` subtracts the URDF's g(q) from the commands of a robot that
does not compensate gravity (as the fitter does).

A bad message does not reject the bag: one that cannot be decoded or that the builder refuses as
malformed (a NaN joint state, a command of the wrong size, an episode event that is not JSON) is
skipped, and a joint-state stamp going backwards starts a new segment there (the builder's rule).
Both are counted by reason in ``Extraction.counts``, with the first occurrence in
``Extraction.skipped``.

An episode event that the recorder received after joint states stamped later than it (its
callbacks run in any order across topics) is read before them (``events_by_stamp``): the builder
applies events when it decides the transitions they bound, so read late it would merge two episodes
and keep the jump across the reset as a transition. Only states recorded at most
``EVENT_REORDER_MESSAGES`` messages before the event and stamped at most ``EVENT_REORDER_S`` after
it are passed over (a segment whose clock restarts is never mixed with the one before).

``images=True`` adds the camera's frames (``topics.images``) as image observations
(``data.images``: the frames stamped nearest to s and s'); transitions without both are dropped
(``no_image``).
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mbrl_ros.common.msgconv import MessageError, stamp_to_ns
from mbrl_ros.data.bags import BagReader, FileInfo, TopicInfo
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.data.errors import BagError, StampOrderError
from mbrl_ros.data.images import ImageFrames
from mbrl_ros.data.resample import Resampler
from mbrl_ros.data.topics import (
    COMMANDS,
    EVENTS,
    IMAGES,
    KNOWN_TYPES,
    STATES,
    TopicNames,
    read_episode_event,
)
from mbrl_ros.data.transitions import TransitionBuilder
from mbrl_ros.robot.gravity import JointGravity

Progress = Callable[[str, int, int], None]  # (bag, messages done, messages in total)
PROGRESS_EVERY = 5000
LAYOUT_SAMPLE = 200


STAMP_BACKWARDS = "stamp_backwards"  # the builder's count of segments restarted there
EVENT_REORDER_MESSAGES = 1000  # how far back (messages) a late event is moved at most
EVENT_REORDER_S = 1.0  # how much later (s of stamp) the states it is moved before may be


@dataclass(frozen=True)
class Skipped:
    """The first message skipped for a reason: its bag, log time (s from the start of the bag)
    and what was wrong."""

    bag: str
    at_s: float
    detail: str


@dataclass(frozen=True)
class Streams:
    """How commands and states become transitions: ``resample`` = the model's control period
    (s) to resample onto, None = one state per control period, each paired with the command
    tagged with its stamp (lockstep); ``gravity`` = a GravityModel to subtract, None = the robot
    compensates gravity; ``command_timeout`` (s, resampling): commands older are not in force."""

    resample: float | None = None
    gravity: object = None
    command_timeout: float | None = None

    def builder(
        self, joint_names: Sequence[str], dt: float, topics: TopicNames, gap_tolerance: float
    ):
        if self.resample is None:
            return TransitionBuilder(joint_names, dt, topics=topics, gap_tolerance=gap_tolerance)
        return Resampler(
            joint_names,
            self.resample,
            topics=topics,
            gravity=self.gravity,
            command_timeout=self.command_timeout,
        )

    def take(self, builder) -> tuple[Dataset, Counter]:
        """The builder's dataset (lockstep data: minus g(q_k) here) and its counts (the
        resampler's dropped intervals as ``interval_<reason>``)."""
        data, counts = builder.take(), Counter(builder.counts)
        if self.resample is None and self.gravity is not None:
            data = JointGravity(self.gravity, data.joint_names).subtract(data)
        if self.resample is not None:
            counts.update({f"interval_{k}": v for k, v in builder.resample_counts.items()})
        return data, counts


@dataclass(frozen=True)
class Extraction:
    """A dataset; ``counts``: the builder's tally of rejected candidates and events, and the
    messages skipped, by reason; ``skipped``: the first occurrence of each skip reason."""

    dataset: Dataset
    counts: Counter
    skipped: dict[str, Skipped] = field(default_factory=dict)


def _check_topics(bag: BagReader, topics: TopicNames, images: bool = False) -> list[str]:
    bag.require(topics.states, KNOWN_TYPES[STATES])
    bag.require(topics.commands, KNOWN_TYPES[COMMANDS])
    wanted = [topics.states, topics.commands]
    if topics.events in bag.topics:
        bag.require(topics.events, KNOWN_TYPES[EVENTS])
        wanted.append(topics.events)
    if images:
        bag.require(topics.images, KNOWN_TYPES[IMAGES])
        wanted.append(topics.images)
    return wanted


def bag_layout(
    bag: BagReader, topics: TopicNames = TopicNames(), *, need_period: bool = True
) -> tuple[tuple[str, ...], float | None]:
    """(joint names of the first joint state, control period in s = the median stamp step of the
    first joint states) of an open bag; the period is None when it cannot be inferred and
    ``need_period`` is False (BagError otherwise). Relative topic names are in the root
    namespace."""
    topics = topics.resolved()
    names, stamps = None, []
    for topic, _, data in bag.messages([topics.states], raw=True, recorded_order=True):
        try:
            msg = bag.decode(topic, data)
            stamp = stamp_to_ns(msg.header.stamp)
        except Exception:  # a damaged message (rosbags' parser raises many kinds): not sampled
            continue
        names = names or tuple(msg.name)
        stamps.append(stamp)
        if len(stamps) >= LAYOUT_SAMPLE:
            break
    if names is None:
        raise BagError(f"bag {bag.path}: topic {topics.states} has no messages")
    steps = np.diff(np.array(stamps, dtype=np.int64))
    steps = steps[steps > 0]
    if len(steps) == 0:
        if not need_period:
            return names, None
        raise BagError(
            f"bag {bag.path}: too few distinct joint-state stamps on {topics.states} "
            "to infer the control period; give it (dt)"
        )
    return names, float(np.median(steps)) / 1e9


Message = tuple[str, int, object]  # (topic, log time ns, decoded message or its decode error)


def _decoded(bag: BagReader, topics: list[str]) -> Iterator[Message]:
    """The messages of ``topics`` in recorded order, decoded (an undecodable one: the error)."""
    for topic, log_ns, cdr in bag.messages(topics, raw=True, recorded_order=True):
        try:
            yield topic, log_ns, bag.decode(topic, cdr)
        except Exception as exc:  # damaged CDR: rosbags' parser raises many kinds
            yield topic, log_ns, exc


def _stamp(topic: str, msg: object, topics: TopicNames) -> int | None:
    """The stamp (ns) of a readable joint state or episode event; None for anything else."""
    try:
        if topic == topics.states:
            return stamp_to_ns(msg.header.stamp)  # type: ignore[attr-defined]
        if topic == topics.events:
            return read_episode_event(msg).stamp_ns
    except Exception:  # malformed: the builder counts it when it is fed
        return None
    return None


def events_by_stamp(messages: Iterable[Message], topics: TopicNames) -> Iterator[Message]:
    """``messages`` with each episode event moved before the joint states recorded shortly
    before it that are stamped after it (see the module docstring); everything else keeps its
    recorded order."""
    window_ns = round(EVENT_REORDER_S * 1e9)
    held: deque[tuple[Message, int | None]] = deque()  # (message, stamp if a state)
    for item in messages:
        topic, _, msg = item
        stamp = _stamp(topic, msg, topics)
        if topic == topics.events and stamp is not None:
            at, newest = len(held), None
            while at > 0:
                prev, prev_stamp = held[at - 1]
                if prev[0] == topics.events:
                    break
                if prev_stamp is not None:
                    late = prev_stamp > stamp and prev_stamp - stamp <= window_ns
                    if not late or (newest is not None and prev_stamp > newest):
                        break  # stamped before the event, or a segment's clock restarted
                    newest = prev_stamp
                at -= 1
            held.insert(at, (item, None))
        else:
            held.append((item, stamp if topic == topics.states else None))
        while len(held) > EVENT_REORDER_MESSAGES:
            yield held.popleft()[0]
    while held:
        yield held.popleft()[0]


def dataset_from_bag(
    path: str | os.PathLike,
    *,
    joint_names: Sequence[str] | None = None,
    dt: float | None = None,
    topics: TopicNames = TopicNames(),
    gap_tolerance: float = 0.1,
    progress: Progress | None = None,
    streams: Streams = Streams(),
    images: bool = False,
) -> Extraction:
    """Transitions of one bag. Joint names and dt default to those of the bag's joint states
    (dt: the resampling period when resampling); relative topic names are in the root
    namespace (a bag holds fully qualified names). ``images``: with image observations."""
    path, topics = Path(path), topics.resolved()
    if streams.resample is not None:
        dt = streams.resample
    frames = ImageFrames() if images else None
    with BagReader(path) as bag:
        wanted = _check_topics(bag, topics, images)
        names, period = bag_layout(bag, topics, need_period=dt is None)
        missing = [j for j in joint_names or () if j not in names]
        if missing:
            raise BagError(
                f"bag {path} lacks joints {missing}: its joint states name {list(names)}"
            )
        joint_names, dt = joint_names or names, dt or period
        assert dt is not None  # bag_layout raises when it cannot infer a period it must
        builder = streams.builder(joint_names, dt, topics, gap_tolerance)
        kinds = {
            topics.states: "state",
            topics.commands: "command",
            topics.events: "event",
            topics.images: "image",
        }
        skipped: dict[str, Skipped] = {}
        total = sum(bag.topics[t].count for t in wanted)
        messages = events_by_stamp(_decoded(bag, wanted), topics)
        for i, (topic, log_ns, msg) in enumerate(messages):
            reason = None
            if isinstance(msg, Exception):  # damaged CDR: rosbags' parser raises many kinds
                reason, why = f"malformed_{kinds[topic]}", f"cannot be decoded ({msg!r})"
            else:
                try:
                    if frames is not None and topic == topics.images:
                        frames.add_msg(msg)
                    else:
                        builder.feed(topic, msg)
                except MessageError as exc:
                    reason, why = f"malformed_{kinds[topic]}", str(exc)
                except StampOrderError as exc:  # counted by the builder, which restarts there
                    reason, why = STAMP_BACKWARDS, f"{exc}; a new segment starts there"
            if reason is not None:
                if reason != STAMP_BACKWARDS:
                    builder.counts[reason] += 1
                skipped.setdefault(
                    reason, Skipped(path.name, (log_ns - bag.start_ns) / 1e9, f"{topic}: {why}")
                )
            if progress is not None and i % PROGRESS_EVERY == 0:
                progress(str(path), i, total)
        builder.finish()
        if progress is not None:
            progress(str(path), total, total)
    data, counts = streams.take(builder)
    if frames is not None:
        if not len(frames):
            raise BagError(f"bag {path}: no readable images on {topics.images}")
        data, dropped = frames.attach(data)
        counts.update(dropped)
    return Extraction(replace(data, sources=(path.name,)), counts, skipped)


def dataset_from_bags(
    paths: Sequence[str | os.PathLike],
    *,
    joint_names: Sequence[str] | None = None,
    dt: float | None = None,
    topics: TopicNames = TopicNames(),
    gap_tolerance: float = 0.1,
    progress: Progress | None = None,
    streams: Streams = Streams(),
    images: bool = False,
) -> Extraction:
    """Transitions of several bags, episodes renumbered so each bag's stay distinct. Without
    ``joint_names`` / ``dt`` every bag must have the joints and (unless resampling) the control
    period of the first."""
    if streams.resample is not None:
        dt = streams.resample
    if not paths:
        raise BagError("no bags given")
    parts: list[Dataset] = []
    counts: Counter[str] = Counter()
    skipped: dict[str, Skipped] = {}
    first = None
    for path in paths:
        names, period = joint_names, dt
        if names is None or period is None:
            with BagReader(path) as bag:
                _check_topics(bag, topics, images)
                bag_names, bag_period = bag_layout(bag, topics, need_period=period is None)
            if first is None:
                first = (path, bag_names, bag_period)
            if names is None and sorted(bag_names) != sorted(first[1]):
                raise BagError(
                    f"bag {path} has joints {list(bag_names)} but bag {first[0]} has "
                    f"{list(first[1])}; give the joint names to use"
                )
            if period is None:  # so every bag's period was needed: bag_layout gave floats
                assert bag_period is not None and first[2] is not None
                if abs(bag_period - first[2]) > 1e-6 * first[2]:
                    raise BagError(
                        f"bag {path} has control period {bag_period:g} s but bag "
                        f"{first[0]} has {first[2]:g} s; give dt"
                    )
            names, period = names or first[1], period or first[2]
        ex = dataset_from_bag(
            path,
            joint_names=names,
            dt=period,
            topics=topics,
            gap_tolerance=gap_tolerance,
            progress=progress,
            streams=streams,
            images=images,
        )
        parts.append(ex.dataset)
        counts.update(ex.counts)
        skipped = ex.skipped | skipped
    return Extraction(Dataset.concat(parts, renumber=True), counts, skipped)


@dataclass(frozen=True)
class BagDescription:
    """What ``mbrl-ros bag info`` prints: the bag's files and topics, and the transitions that
    can be extracted (or why none can)."""

    path: Path
    files: list[FileInfo]
    topics: dict[str, TopicInfo]
    message_count: int
    start_ns: int
    end_ns: int
    extraction: Extraction | None
    problem: str | None
    camera: CameraStream | None = None


@dataclass(frozen=True)
class CameraStream:
    """The bag's camera images: count, size of the first (pixels), its encoding and serialised
    size (bytes)."""

    count: int
    width: int
    height: int
    encoding: str
    message_bytes: int


def _camera_stream(bag: BagReader, topic: str) -> CameraStream | None:
    """The camera stream on ``topic``, or None if the bag has none (or none that can be read)."""
    info = bag.topics.get(topic)
    if info is None or info.type != KNOWN_TYPES[IMAGES]:
        return None
    for _, _, data in bag.messages([topic], raw=True):
        try:
            msg = bag.decode(topic, data)
        except Exception:  # a damaged message (rosbags' parser raises many kinds): try the next
            continue
        return CameraStream(
            info.count, int(msg.width), int(msg.height), str(msg.encoding), len(data)
        )
    return None


def describe_bag(
    path: str | os.PathLike,
    *,
    joint_names: Sequence[str] | None = None,
    dt: float | None = None,
    topics: TopicNames = TopicNames(),
    gap_tolerance: float = 0.1,
    progress: Progress | None = None,
    streams: Streams = Streams(),
) -> BagDescription:
    """The bag's files and topics, its camera stream if any, and the transitions (with image
    observations where the bag has a camera stream)."""
    path, topics = Path(path), topics.resolved()
    with BagReader(path) as bag:
        files, bag_topics = bag.files, bag.topics
        count, start, end = bag.message_count, bag.start_ns, bag.end_ns
        camera = _camera_stream(bag, topics.images)
        try:
            _check_topics(bag, topics)
            problem = None
        except BagError as exc:
            problem = str(exc)
    ex = (
        None
        if problem
        else dataset_from_bag(
            path,
            joint_names=joint_names,
            dt=dt,
            topics=topics,
            gap_tolerance=gap_tolerance,
            progress=progress,
            streams=streams,
            images=camera is not None,
        )
    )
    return BagDescription(path, files, bag_topics, count, start, end, ex, problem, camera)
