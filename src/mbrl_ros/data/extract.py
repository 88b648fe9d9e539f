"""Datasets from bags: the bag's joint states, commands and episode events, in log-time order,
through the same ``TransitionBuilder`` that live nodes use."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mbrl_ros.data.bags import BagReader, FileInfo, TopicInfo
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.data.errors import BagError, StampOrderError
from mbrl_ros.data.topics import COMMANDS, EVENTS, KNOWN_TYPES, STATES, TopicNames
from mbrl_ros.data.transitions import TransitionBuilder
from mbrl_ros.msgconv import MessageError, stamp_to_ns

Progress = Callable[[str, int, int], None]  # (bag, messages done, messages in total)
PROGRESS_EVERY = 5000
LAYOUT_SAMPLE = 200


@dataclass(frozen=True)
class Extraction:
    """A dataset and the builder's tally of rejected candidates and events, by reason."""

    dataset: Dataset
    counts: Counter


def _check_topics(bag: BagReader, topics: TopicNames) -> list[str]:
    bag.require(topics.states, KNOWN_TYPES[STATES])
    bag.require(topics.commands, KNOWN_TYPES[COMMANDS])
    wanted = [topics.states, topics.commands]
    if topics.events in bag.topics:
        bag.require(topics.events, KNOWN_TYPES[EVENTS])
        wanted.append(topics.events)
    return wanted


def bag_layout(bag: BagReader, topics: TopicNames = TopicNames()) -> tuple[tuple[str, ...], float]:
    """(joint names of the first joint state, control period in s = the median stamp step of the
    first joint states) of an open bag."""
    names, stamps = None, []
    for _, _, msg in bag.messages([topics.states]):
        names = names or tuple(msg.name)
        stamps.append(stamp_to_ns(msg.header.stamp))
        if len(stamps) >= LAYOUT_SAMPLE:
            break
    if names is None:
        raise BagError(f"bag {bag.path}: topic {topics.states} has no messages")
    steps = np.diff(np.array(stamps, dtype=np.int64))
    steps = steps[steps > 0]
    if len(steps) == 0:
        raise BagError(f"bag {bag.path}: too few distinct joint-state stamps on {topics.states} "
                       "to infer the control period; give it (dt)")
    return names, float(np.median(steps)) / 1e9


def dataset_from_bag(path: str | os.PathLike, *, joint_names: Sequence[str] | None = None,
                     dt: float | None = None, topics: TopicNames = TopicNames(),
                     gap_tolerance: float = 0.1, progress: Progress | None = None) -> Extraction:
    """Transitions of one bag. Joint names and dt default to those of the bag's joint states."""
    path = Path(path)
    with BagReader(path) as bag:
        wanted = _check_topics(bag, topics)
        if joint_names is None or dt is None:
            names, period = bag_layout(bag, topics)
            joint_names, dt = joint_names or names, dt or period
        builder = TransitionBuilder(joint_names, dt, topics=topics, gap_tolerance=gap_tolerance)
        total = sum(bag.topics[t].count for t in wanted)
        for i, (topic, log_ns, msg) in enumerate(bag.messages(wanted)):
            try:
                builder.feed(topic, msg)
            except (MessageError, StampOrderError) as exc:
                at = (log_ns - bag.start_ns) / 1e9
                raise BagError(f"bag {path}, topic {topic}, message {i} (log time {at:.3f} s "
                               f"into the bag): {exc}") from None
            if progress is not None and i % PROGRESS_EVERY == 0:
                progress(str(path), i, total)
        builder.finish()
        if progress is not None:
            progress(str(path), total, total)
    data = replace(builder.take(), sources=(path.name,))
    return Extraction(data, builder.counts)


def dataset_from_bags(paths: Sequence[str | os.PathLike], *,
                      joint_names: Sequence[str] | None = None, dt: float | None = None,
                      topics: TopicNames = TopicNames(), gap_tolerance: float = 0.1,
                      progress: Progress | None = None) -> Extraction:
    """Transitions of several bags, episodes renumbered so each bag's stay distinct. Without
    ``joint_names`` / ``dt`` every bag must have the joints and control period of the first."""
    if not paths:
        raise BagError("no bags given")
    parts, counts = [], Counter()
    first = None
    for path in paths:
        names, period = joint_names, dt
        if names is None or period is None:
            with BagReader(path) as bag:
                _check_topics(bag, topics)
                bag_names, bag_period = bag_layout(bag, topics)
            if first is None:
                first = (path, bag_names, bag_period)
            if names is None and sorted(bag_names) != sorted(first[1]):
                raise BagError(f"bag {path} has joints {list(bag_names)} but bag {first[0]} has "
                               f"{list(first[1])}; give the joint names to use")
            if period is None and abs(bag_period - first[2]) > 1e-6 * first[2]:
                raise BagError(f"bag {path} has control period {bag_period:g} s but bag "
                               f"{first[0]} has {first[2]:g} s; give dt")
            names, period = names or first[1], period or first[2]
        ex = dataset_from_bag(path, joint_names=names, dt=period, topics=topics,
                              gap_tolerance=gap_tolerance, progress=progress)
        parts.append(ex.dataset)
        counts.update(ex.counts)
    return Extraction(Dataset.concat(parts, renumber=True), counts)


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


def describe_bag(path: str | os.PathLike, *, joint_names: Sequence[str] | None = None,
                 dt: float | None = None, topics: TopicNames = TopicNames(),
                 gap_tolerance: float = 0.1, progress: Progress | None = None) -> BagDescription:
    path = Path(path)
    with BagReader(path) as bag:
        files, bag_topics = bag.files, bag.topics
        count, start, end = bag.message_count, bag.start_ns, bag.end_ns
        try:
            _check_topics(bag, topics)
            problem = None
        except BagError as exc:
            problem = str(exc)
    ex = None if problem else dataset_from_bag(path, joint_names=joint_names, dt=dt, topics=topics,
                                               gap_tolerance=gap_tolerance, progress=progress)
    return BagDescription(path, files, bag_topics, count, start, end, ex, problem)
