"""``mbrl-ros bag info BAG``, ``mbrl-ros bag repair BAG``, ``mbrl-ros bag images BAG -o PNG`` and
``mbrl-ros dataset BAG... -o FILE [--images]``.

Each command module of ``mbrl-ros`` exposes ``add_arguments(parser, command)`` and
``run(args) -> int``; errors are raised as ValueError (BagError, DataError) and printed as one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

from mbrl_ros.cli.args import check_bags, check_output, load_robot_arg, namespace_name, number
from mbrl_ros.data.bags import BagReader, repair_bag
from mbrl_ros.data.errors import DataError
from mbrl_ros.data.extract import (
    BagDescription,
    Extraction,
    Streams,
    dataset_from_bags,
    describe_bag,
)
from mbrl_ros.data.images import contact_sheet, read_bag_frames
from mbrl_ros.data.topics import COMMANDS, EVENT_KINDS, EVENTS, IMAGES, STATES, TopicNames


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    if command == "bag":
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        info = sub.add_parser(
            "info",
            help="topics, counts, duration, episodes, transitions",
            description="Topics, message counts, duration, episodes and the "
            "(s, a, s') transitions that can be extracted.",
        )
        info.add_argument("bag", help="bag folder (rosbag2, MCAP storage)")
        _extraction_arguments(info)
        repair = sub.add_parser(
            "repair",
            help="finish a bag whose recording was interrupted",
            description="Rewrite unfinished MCAP files from their intact "
            "records and rebuild metadata.yaml.",
        )
        repair.add_argument("bag", help="bag folder")
        images = sub.add_parser(
            "images",
            help="the camera's images as one PNG contact sheet",
            description="Tile the bag's camera images (in log-time order) into one PNG.",
        )
        images.add_argument("bag", help="bag folder")
        images.add_argument(
            "-o", "--output", required=True, metavar="PNG", help="PNG file to write"
        )
        images.add_argument("--images-topic", default=IMAGES)
        images.add_argument(
            "--every", type=number(int, ge=1), default=1, metavar="N", help="every N-th image"
        )
        images.add_argument(
            "--count", type=number(int, ge=1, le=4096), default=64, help="at most this many images"
        )
        images.add_argument("--columns", type=number(int, ge=1, le=256), default=8)
        images.add_argument("--force", action="store_true", help="overwrite PNG if it exists")
    else:
        parser.add_argument("bags", nargs="+", metavar="BAG", help="bag folders")
        parser.add_argument(
            "-o",
            "--output",
            required=True,
            metavar="FILE",
            help="dataset file to write (.safetensors)",
        )
        _extraction_arguments(parser)
        parser.add_argument(
            "--ee-features",
            metavar="ROBOT",
            help="append the end-effector position of ROBOT (arm7, arm2 or a URDF) to the state",
        )
        parser.add_argument(
            "--images",
            action="store_true",
            help="add the camera's images (--images-topic) as image "
            "observations of s and s' (uint8, each frame stored once)",
        )
        parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def _extraction_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--joints",
        nargs="+",
        metavar="NAME",
        help="joints, in state and command order (default: the first joint state's names)",
    )
    parser.add_argument(
        "--dt",
        type=number(float, gt=0),
        help="control period in s (default: the median joint-state stamp step)",
    )
    parser.add_argument(
        "--gap-tolerance",
        type=number(float, gt=0, lt=1),
        default=0.1,
        help="largest |stamp step − dt| of a transition, as a fraction of dt",
    )
    parser.add_argument("--states-topic", default=STATES)
    parser.add_argument("--commands-topic", default=COMMANDS)
    parser.add_argument("--events-topic", default=EVENTS)
    parser.add_argument(
        "--images-topic",
        default=IMAGES,
        help="camera images (sensor_msgs/Image) for image observations",
    )
    parser.add_argument(
        "--namespace",
        default="/",
        type=namespace_name,
        help="namespace the graph ran in: relative topic names are resolved in it (default: /)",
    )
    add_stream_arguments(parser)


def add_stream_arguments(parser: argparse._ActionsContainer, robot: bool = True) -> None:
    """Options for bags of a real robot (``stream_options`` reads them) on ``parser`` (a parser
    or an argument group); ``robot``: add ``--robot`` (a command that has its own leaves it
    out)."""
    parser.add_argument(
        "--resample",
        type=number(float, gt=0),
        metavar="PERIOD",
        help="resample joint states at any rate onto this control period (s); "
        "the action is the mean of the commands in force (each from its "
        "send-time tag): bags of a real robot",
    )
    parser.add_argument(
        "--command-timeout",
        type=number(float, gt=0),
        metavar="S",
        help="with --resample: a command older than S s is no longer in force "
        "(the robot's stale-command rule; default: never)",
    )
    parser.add_argument(
        "--robot-compensates-gravity",
        choices=("true", "false"),
        default="true",
        help="false: subtract the gravity torque g(q) of --robot's URDF from the commands",
    )
    if robot:
        parser.add_argument(
            "--robot",
            help="the arm (a name in urdf/ or a URDF path): for --robot-compensates-gravity false",
        )


def stream_options(args: argparse.Namespace) -> Streams:
    """The Streams of ``add_stream_arguments``' options; ValueError naming a bad combination."""
    if args.command_timeout is not None and args.resample is None:
        raise ValueError("--command-timeout needs --resample")
    if args.resample is not None and getattr(args, "dt", None) is not None:
        raise ValueError("--dt and --resample: give one control period")
    gravity = None
    if args.robot_compensates_gravity == "false":
        if not args.robot:
            raise ValueError(
                "--robot-compensates-gravity false needs --robot (the URDF whose "
                "gravity torque to subtract)"
            )
        from mbrl_ros.robot.gravity import GravityModel

        gravity = GravityModel(load_robot_arg(args.robot, "--robot"))
    return Streams(args.resample, gravity, args.command_timeout)


class _ProgressLines:
    """Status lines on stderr, at most one every ``period`` s (and a last one at 100 % once any
    was printed)."""

    def __init__(self, period: float = 2.0):
        self.period, self.last, self.printed = period, time.monotonic(), False

    def __call__(self, bag: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.period and not (done == total and self.printed):
            return
        self.last, self.printed = now, True
        print(
            f"[{bag}] {done}/{total} messages ({100 * done / max(total, 1):.0f}%)",
            file=sys.stderr,
            flush=True,
        )


def _options(args: argparse.Namespace) -> dict:
    if args.robot and args.robot_compensates_gravity == "true":
        raise ValueError("--robot is only used with --robot-compensates-gravity false")
    return dict(
        joint_names=args.joints,
        dt=args.dt,
        gap_tolerance=args.gap_tolerance,
        topics=TopicNames(
            args.states_topic, args.commands_topic, args.events_topic, args.images_topic
        ).resolved(args.namespace),
        progress=_ProgressLines(),
        streams=stream_options(args),
    )


def run(args: argparse.Namespace) -> int:
    if args.command == "dataset":
        return _dataset(args)
    if args.action == "info":
        print(format_description(describe_bag(args.bag, **_options(args))))
        return 0
    if args.action == "images":
        return _images(args)
    return _repair(args.bag)


def _stamp(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def _rejections(ex: Extraction) -> str:
    skip = {f"event_{k}" for k in EVENT_KINDS} | set(ex.skipped)
    items = sorted((k, v) for k, v in ex.counts.items() if k not in skip)
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in items) or "none"


def skipped_lines(ex: Extraction) -> list[str]:
    """One line per reason a message was skipped: the count and the first occurrence."""
    return [
        f"skipped: {reason.replace('_', ' ')}: {ex.counts[reason]} message(s), the first in "
        f"{first.bag} at {first.at_s:.3f} s: {first.detail}"
        for reason, first in sorted(ex.skipped.items())
    ]


def format_description(d: BagDescription) -> str:
    duration = (d.end_ns - d.start_ns) / 1e9
    size = sum((d.path / f.name).stat().st_size for f in d.files if (d.path / f.name).exists())
    lines = [
        f"bag:          {d.path}",
        f"files:        {len(d.files)} MCAP ({size / 2**20:.2f} MiB): "
        + ", ".join(f.name for f in d.files),
        f"duration:     {duration:.3f} s"
        + (f" (from {_stamp(d.start_ns)})" if d.message_count else ""),
        f"messages:     {d.message_count}",
        "topics:",
    ]
    width = max((len(t) for t in d.topics), default=0)
    for name, t in sorted(d.topics.items()):
        rate = f"{t.count / duration:8.1f} Hz" if duration > 0 and t.count > 1 else ""
        lines.append(f"  {name:<{width}}  {t.type:<34} {t.count:>9} msgs {rate}")
    if d.camera is not None:
        c = d.camera
        hz = c.count / duration if duration > 0 and c.count > 1 else 0.0
        lines.append(
            f"camera:       {c.count} images {c.width}×{c.height} {c.encoding}, "
            f"{c.message_bytes / 1024:.1f} KiB each"
            + (f", {hz * c.message_bytes / 2**20:.2f} MiB/s at {hz:.1f} Hz" if hz else "")
        )
    if d.extraction is None:
        lines.append(f"transitions:  none: {d.problem}")
        return "\n".join(lines)
    ds, counts = d.extraction.dataset, d.extraction.counts
    events = ", ".join(f"{counts[f'event_{k}']} {k}" for k in EVENT_KINDS)
    lines += [
        f"joints:       {len(ds.joint_names)}: {' '.join(ds.joint_names)}",
        f"control period: {ds.dt * 1e3:g} ms",
        f"episode events: {events}",
        f"episodes:     {ds.n_episodes} with transitions",
        f"transitions:  {len(ds)} extractable (state dim {len(ds.state_names)}, action dim "
        f"{len(ds.joint_names)})",
    ]
    if ds.frames is not None:
        h, w, _ = ds.frames.shape[1:]
        lines.append(f"images:       {len(ds.frames)} frames {w}×{h} rgb as observations of s, s'")
    lines += [f"not extracted: {_rejections(d.extraction)}"] + skipped_lines(d.extraction)
    return "\n".join(lines)


def _repair(bag: str) -> int:
    report = repair_bag(bag)
    for r in report:
        line = f"{r.name}: {r.status}, {r.messages} messages"
        if r.status != "intact":
            line += f" ({r.dropped_bytes} bytes dropped: {r.problem})"
        if r.backup:
            line += f"; the original is kept as {r.backup}"
        print(line)
    with BagReader(bag) as reader:
        print(
            f"bag {bag}: metadata.yaml rebuilt; {reader.message_count} messages in "
            f"{len(reader.files)} file(s), {reader.duration_ns / 1e9:.3f} s"
        )
    return 1 if any(r.status == "unreadable" for r in report) else 0


def _dataset(args: argparse.Namespace) -> int:
    out = check_output(args.output, "-o", args.force)
    check_bags(args.bags)
    robot = load_robot_arg(args.ee_features, "--ee-features") if args.ee_features else None
    options = _options(args)
    t0 = time.perf_counter()
    ex = dataset_from_bags(args.bags, images=args.images, **options)
    elapsed = time.perf_counter() - t0
    data = ex.dataset
    if robot is not None:
        from mbrl_ros.data.features import add_ee_features

        data = add_ee_features(data, robot)
    if len(data) == 0:
        raise DataError(
            f"no transitions in {', '.join(args.bags)} (not extracted: {_rejections(ex)})"
        )
    data.save(out)
    print(
        f"{out}: {len(data)} transitions, {data.n_episodes} episodes from {len(args.bags)} "
        f"bag(s); state dim {len(data.state_names)}, action dim {len(data.joint_names)}, "
        f"dt {data.dt * 1e3:g} ms; extracted at {len(data) / max(elapsed, 1e-9):.0f} "
        f"transitions/s; not extracted: {_rejections(ex)}"
    )
    if data.frames is not None:
        h, w, _ = data.frames.shape[1:]
        print(
            f"images: {len(data.frames)} frames {w}×{h} rgb (uint8), "
            f"{data.frames.nbytes / 2**20:.2f} MiB"
        )
    for line in skipped_lines(ex):
        print(line)
    return 0


def _images(args: argparse.Namespace) -> int:
    out = check_output(args.output, "-o", args.force)
    check_bags([args.bag])
    stamps, frames = read_bag_frames(args.bag, args.images_topic, args.every, args.count)
    from matplotlib.image import imsave

    imsave(out, contact_sheet(frames, min(args.columns, len(frames))), format="png")
    h, w, _ = frames.shape[1:]
    print(
        f"{out}: {len(frames)} images {w}×{h} from {args.bag} ({args.images_topic}), stamps "
        f"{stamps[0] / 1e9:.3f} s to {stamps[-1] / 1e9:.3f} s, every {args.every}"
    )
    return 0
