"""rosbag2 bags (metadata version 9, MCAP storage) written and read with ``rosbags``.

A bag is a folder holding ``metadata.yaml`` and one or more MCAP files ``<name>_<k>.mcap``, as
``ros2 bag record -s mcap`` writes it; ``ros2 bag info/play`` read these bags unchanged. Message
definitions and type hashes come from the interface files installed on this machine, else from
rosbags' ROS 2 Kilted type store (``interfaces``); each MCAP channel carries its QoS profiles and
``topic_type_hash``, each message its log (receive) and publish (send) time, and metadata.yaml
the ROS distribution of the environment (``ROS_DISTRO``).

* ``BagWriter``: CDR bytes written as received, log times made monotone, files split by size or
  duration, ``checkpoint`` makes everything so far durable; the bag folder is created with the
  first message and a bag left without messages is removed. On a write error (disk full) the
  current file is rolled back to its last checkpoint and finished in space kept in reserve, and a
  ``BagError`` says what the bag holds.
* ``BagReader``: messages in log-time order or in recorded (file) order, deserialised or raw;
  errors name the bag and file.
* ``repair_bag``: after a crash (SIGKILL, power loss) rewrites each unfinished file from every
  message it can salvage, keeping the original beside it as ``<file>.orig``, and rebuilds
  ``metadata.yaml``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import yaml
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    MessageDefinition,
    MessageDefinitionFormat,
    Qos,
)
from rosbags.rosbag2 import Reader as Reader2
from rosbags.rosbag2.errors import ReaderError
from rosbags.rosbag2.metadata import dump_qos_v9, parse_qos
from rosbags.rosbag2.reader import DirectoryReader
from rosbags.rosbag2.storage_mcap import Channel, McapReader, Schema
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from mbrl_ros.data.errors import BagError
from mbrl_ros.data.interfaces import UnknownType, definition, kilted, ros_distro
from mbrl_ros.data.mcap_files import (
    HASH_KEY,
    QOS_KEY,
    McapFile,
    McapSalvage,
    RawMessage,
    channel_metadata,
    rosbag2_ext,
)
from mbrl_ros.data.topics import resolve

VERSION = 9
RESERVE_NAME = ".space_reserve"  # disk space kept free while recording, to finish the bag
RESERVE_MIN = 64 * 1024


typestore = kilted  # the readers' fallback for bags without definitions


def known_type(msgtype: str) -> bool:
    """Whether ``msgtype`` (e.g. 'sensor_msgs/msg/JointState') can be recorded: installed on
    this machine or a ROS 2 Kilted type."""
    try:
        definition(msgtype)
    except UnknownType:
        return False
    return True


@dataclass(frozen=True)
class TopicInfo:
    name: str
    type: str
    count: int
    qos: tuple[Qos, ...] = ()
    type_hash: str = ""


@dataclass(frozen=True)
class FileInfo:
    name: str
    start_ns: int
    end_ns: int
    count: int


def qos_text(qos: Sequence[Qos]) -> str:
    """Offered QoS profiles as rosbag2 (v9) stores them in an MCAP channel record."""
    return yaml.safe_dump(dump_qos_v9(list(qos)), sort_keys=False).strip()


def metadata_document(
    files: Sequence[FileInfo],
    topics: Sequence[TopicInfo],
    custom_data: dict[str, str] | None = None,
) -> dict:
    """The ``rosbag2_bagfile_information`` of metadata.yaml (version 9) for these files/topics."""
    used = [f for f in files if f.count]
    start = min((f.start_ns for f in used), default=0)
    end = max((f.end_ns for f in used), default=0)
    return {
        "rosbag2_bagfile_information": {
            "version": VERSION,
            "storage_identifier": "mcap",
            "duration": {"nanoseconds": end - start},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": sum(f.count for f in files),
            "topics_with_message_count": [
                {
                    "topic_metadata": {
                        "name": t.name,
                        "type": t.type,
                        "serialization_format": "cdr",
                        "offered_qos_profiles": dump_qos_v9(list(t.qos)),
                        "type_description_hash": t.type_hash,
                    },
                    "message_count": t.count,
                }
                for t in topics
            ],
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [f.name for f in files],
            "files": [
                {
                    "path": f.name,
                    "starting_time": {"nanoseconds_since_epoch": f.start_ns if f.count else 0},
                    "duration": {"nanoseconds": f.end_ns - f.start_ns if f.count else 0},
                    "message_count": f.count,
                }
                for f in files
            ],
            "custom_data": dict(custom_data or {}),
            "ros_distro": ros_distro(),
        }
    }


def write_metadata(
    bag: Path,
    files: Sequence[FileInfo],
    topics: Sequence[TopicInfo],
    custom_data: dict[str, str] | None = None,
) -> None:
    """Write ``bag``/metadata.yaml atomically."""
    text = yaml.safe_dump(metadata_document(files, topics, custom_data), sort_keys=False)
    tmp = bag / "metadata.yaml.tmp"
    tmp.write_text(text)
    os.replace(tmp, bag / "metadata.yaml")


def _connection(
    cid: int, topic: str, msgtype: str, msgdef: MessageDefinition, digest: str, qos: Sequence[Qos]
) -> Connection:
    return Connection(
        cid, topic, msgtype, msgdef, digest, 0, ConnectionExtRosbag2("cdr", list(qos)), None
    )


def _add_connection(file: McapFile, conn: Connection) -> None:
    if all(s.name != conn.msgtype for s in file.schemas):
        file.add_msgtype(conn)
    file.add_connection(conn, qos_text(rosbag2_ext(conn).offered_qos_profiles))


def _close_file(file: McapFile, conns: Iterable[Connection]) -> tuple[FileInfo, dict[str, int]]:
    """Finish ``file`` (its own copy of the rosbag2 metadata goes into the MCAP metadata record);
    returns its FileInfo and message count per topic."""
    conns = list(conns)
    counts = {c.topic: file.channel_stats.get(c.id, 0) for c in conns}
    info = FileInfo(
        file.path.name, file.message_start_time, file.message_end_time, file.message_count
    )
    topics = [
        TopicInfo(
            c.topic,
            c.msgtype,
            counts[c.topic],
            tuple(rosbag2_ext(c).offered_qos_profiles),
            c.digest,
        )
        for c in conns
    ]
    meta = metadata_document([info], topics)["rosbag2_bagfile_information"]
    file.close(VERSION, yaml.safe_dump(meta, sort_keys=False).strip())
    return info, counts


class BagWriter:
    """A bag to be recorded at ``path`` (a folder that must not exist yet).

    The folder and its first file are created with the first message, so a writer that never
    writes leaves nothing behind; a bag that ends up without messages (nothing flushed before a
    write error) is removed. Log times are in ns and made monotone: a message whose log time is
    before the previous message's is written at the previous log time (``clamped_log_times``
    counts them), so readers in log-time order see the messages in recorded order.

    ``split_bytes`` / ``split_ns`` (0 = off): start a new file once the current one reaches this
    size (bytes) or spans this much log time (ns). Every OSError (a full disk) stops the writer:
    the current file is cut back to its last checkpoint and finished, metadata.yaml is written,
    and BagError says what is kept. The space to finish comes from a reserve file in the bag
    folder (``.space_reserve``), grown at each checkpoint to cover the summary still to write
    and deleted when the writer stops.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        split_bytes: int = 0,
        split_ns: int = 0,
        custom_data: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"bag {self.path} exists already; choose a new path")
        parent = next(p for p in self.path.absolute().parents if p.exists())
        if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
            raise BagError(
                f"cannot create bag folder {self.path}: {parent} is not a writable folder"
            )
        self.split_bytes, self.split_ns = int(split_bytes), int(split_ns)
        self.custom_data = dict(custom_data or {})
        self.clamped_log_times = 0
        self._last_log_ns = 0
        self._connections: dict[str, Connection] = {}
        self._done: list[tuple[FileInfo, dict[str, int]]] = []  # finished files, topic counts
        self._file: McapFile | None = None
        self._created = False
        self._closed = False
        self._reserve, self._reserved = self.path / RESERVE_NAME, 0

    # -- state -----------------------------------------------------------------------------------
    @property
    def files(self) -> list[str]:
        current = [self._file.path.name] if self._file else []
        return [info.name for info, _ in self._done] + current

    @property
    def message_count(self) -> int:
        return sum(i.count for i, _ in self._done) + (self._file.message_count if self._file else 0)

    @property
    def durable_count(self) -> int:
        """Messages on disk that survive a crash (finished files + the last checkpoint)."""
        return sum(i.count for i, _ in self._done) + (
            self._file.checkpoint_count if self._file else 0
        )

    @property
    def size_bytes(self) -> int:
        return sum((self.path / i.name).stat().st_size for i, _ in self._done) + (
            self._file.size if self._file else 0
        )

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def exists(self) -> bool:
        """Whether the bag folder is on disk (created by a message and not removed as empty)."""
        return self._created

    def has_topic(self, topic: str) -> bool:
        return resolve(topic) in self._connections

    # -- writing ---------------------------------------------------------------------------------
    def add_topic(self, topic: str, msgtype: str, qos: Sequence[Qos] = ()) -> None:
        """Register ``topic`` with its message type and the QoS profiles its publishers offer (a
        relative name is written fully qualified in the root namespace, as ROS names it there)."""
        self._check_open()
        topic = resolve(topic)
        if topic in self._connections:
            raise BagError(f"bag {self.path}: topic {topic} is already registered")
        try:
            msgdef, digest = definition(msgtype)
        except UnknownType as exc:
            raise BagError(f"topic {topic}: {exc}; it cannot be recorded") from None
        conn = _connection(len(self._connections) + 1, topic, msgtype, msgdef, digest, qos)
        self._connections[topic] = conn
        f = self._file
        if f is not None:
            self._guard(lambda: _add_connection(f, conn))

    def write(self, topic: str, log_ns: int, data: bytes, publish_ns: int | None = None) -> None:
        """Append one serialised (CDR) message of a registered topic at log time ``log_ns``
        (raised to the previous message's log time if it is earlier), published by its sender at
        ``publish_ns`` (the DDS source timestamp; None or negative: the log time)."""
        self._check_open()
        conn = self._connections.get(resolve(topic))
        if conn is None:
            raise BagError(f"bag {self.path}: topic {topic} is not registered")
        if log_ns < self._last_log_ns:
            self.clamped_log_times += 1
            log_ns = self._last_log_ns
        if not self._created:
            self._guard(self._create)
        f = self._current_file()
        if f.message_count and (
            (self.split_bytes and f.size >= self.split_bytes)
            or (self.split_ns and log_ns - f.message_start_time >= self.split_ns)
        ):
            self._guard(self._next_file)
        publish = log_ns if publish_ns is None or publish_ns < 0 else publish_ns
        self._guard(lambda: self._current_file().write(conn, log_ns, data, publish))
        self._last_log_ns = log_ns

    def checkpoint(self) -> None:
        """Make every message written so far durable (close the pending chunk, flush, fsync)."""
        self._check_open()
        if self._file is None:
            return
        self._guard(self._file.checkpoint)
        self._guard(self._grow_reserve)

    def close(self) -> None:
        """Finish the current file and write metadata.yaml. Idempotent."""
        if self._closed:
            return
        self._closed = True
        f = self._file
        if f is None:
            return
        self._guard(lambda: self._done.append(_close_file(f, self._connections.values())))
        self._file = None
        self._reserve.unlink(missing_ok=True)
        self._guard(self._write_metadata)

    # -- internals -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise BagError(f"bag {self.path} is closed")

    def _current_file(self) -> McapFile:
        """The file being written (opened with the first message, None once closed)."""
        if self._file is None:
            raise BagError(f"bag {self.path} has no file open")
        return self._file

    def _create(self) -> None:
        try:
            self.path.mkdir(parents=True)
        except FileExistsError:
            raise BagError(f"bag {self.path} exists already; choose a new path") from None
        self._created = True
        self._open_file()
        self._grow_reserve()

    def _grow_reserve(self) -> None:
        """Keep at least twice the bytes still needed to finish (summary, metadata.yaml) free."""
        need = max(
            RESERVE_MIN,
            2
            * (
                self._current_file().summary_bound()
                + 2048
                + 512 * len(self._connections)
                + 256 * len(self._done)
            ),
        )
        if need > self._reserved:
            with self._reserve.open("ab") as f:
                f.write(bytes(need - self._reserved))
                f.flush()
                os.fsync(f.fileno())
            self._reserved = need

    def _open_file(self) -> None:
        self._file = McapFile(self.path / f"{self.path.name}_{len(self._done)}.mcap")
        for conn in self._connections.values():
            _add_connection(self._file, conn)

    def _next_file(self) -> None:
        self._done.append(_close_file(self._current_file(), self._connections.values()))
        self._file = None
        self._write_metadata()
        self._open_file()

    def _write_metadata(self) -> None:
        topics = [
            TopicInfo(
                t,
                c.msgtype,
                sum(k.get(t, 0) for _, k in self._done),
                tuple(rosbag2_ext(c).offered_qos_profiles),
                c.digest,
            )
            for t, c in self._connections.items()
        ]
        write_metadata(self.path, [i for i, _ in self._done], topics, self.custom_data)

    def _remove(self) -> None:
        """Delete the files of a bag without messages and its folder (created by this writer)."""
        names = [
            p.name
            for p in self.path.iterdir()
            if p.name.startswith(f"{self.path.name}_") and p.suffix == ".mcap"
        ]
        for name in names + ["metadata.yaml", "metadata.yaml.tmp", RESERVE_NAME]:
            with suppress(OSError):
                (self.path / name).unlink()
        with suppress(OSError):
            self.path.rmdir()
        self._created = self.path.exists()

    def _guard(self, action) -> None:
        """Run a write action; on OSError stop writing, keep what is durable, raise BagError."""
        try:
            action()
        except OSError as exc:
            raise BagError(self._stop_after_error(exc)) from None

    def _stop_after_error(self, exc: OSError) -> str:
        self._closed = True
        self._reserve.unlink(missing_ok=True)
        f, self._file = self._file, None
        unfinished = 0
        if f is not None:
            try:
                f.rollback()
                self._done.append(_close_file(f, self._connections.values()))
            except OSError:
                with suppress(OSError):
                    f.rollback()
                f.abort()
                unfinished = f.checkpoint_count
        kept = sum(i.count for i, _ in self._done) + unfinished
        head = f"cannot write bag {self.path}: {exc.strerror or exc}; recording stopped."
        if kept == 0 and self._created:
            self._done.clear()
            self._remove()
            left = (
                f"nothing had been flushed; the folder {self.path} could not be removed"
                if self._created
                else "nothing had been flushed, so no bag is left behind"
            )
            return f"{head} The bag is empty: {left}"
        if not self._created:
            return f"{head} No bag was created"
        try:
            self._write_metadata()
            complete = not unfinished
        except OSError:
            complete = False
        state = (
            "the bag is complete and readable"
            if complete
            else f"finish it with `mbrl-ros bag repair {self.path}` once there is space"
        )
        return f"{head} The bag keeps {kept} messages (everything up to the last flush); {state}"


class BagReader:
    """A bag opened for reading (use as a context manager). Message types come from the
    definitions stored in the bag, with the Kilted type store as fallback."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        if not self.path.is_dir():
            raise BagError(f"{self.path} is not a rosbag2 bag (a folder with metadata.yaml)")
        if not (self.path / "metadata.yaml").is_file():
            raise BagError(
                f"bag {self.path} has no metadata.yaml (recording interrupted?); "
                f"run `mbrl-ros bag repair {self.path}`"
            )
        self._reader = AnyReader([self.path], default_typestore=typestore())
        try:
            self._reader.open()
        except READ_ERRORS as exc:
            raise BagError(self._describe(exc)) from None
        bag = self._reader.readers[0]
        # a folder with metadata.yaml, so rosbags opened it with its rosbag2 directory reader
        assert isinstance(bag, Reader2) and isinstance(bag.storage, DirectoryReader)
        counts: dict[str, int] = {}
        for c in self._reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
        self.topics = {
            c.topic: TopicInfo(
                c.topic,
                c.msgtype,
                counts[c.topic],
                tuple(rosbag2_ext(c).offered_qos_profiles),
                c.digest,
            )
            for c in self._reader.connections
        }
        self.files = [
            FileInfo(
                f["path"],
                f["starting_time"]["nanoseconds_since_epoch"],
                f["starting_time"]["nanoseconds_since_epoch"] + f["duration"]["nanoseconds"],
                f["message_count"],
            )
            for f in bag.storage.files
        ]
        self.message_count = bag.message_count
        self.start_ns = bag.start_time if self.message_count else 0
        self.end_ns = bag.end_time - 1 if self.message_count else 0

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._reader.stack is not None:
            self._reader.close()

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def require(self, topic: str, msgtype: str) -> None:
        """BagError unless the bag has ``topic`` (relative: in the root namespace) with type
        ``msgtype``."""
        topic = resolve(topic)
        info = self.topics.get(topic)
        if info is None:
            raise BagError(
                f"bag {self.path} has no topic {topic} ({msgtype}); its topics: "
                f"{sorted(self.topics) or 'none'}"
            )
        if info.type != msgtype:
            raise BagError(
                f"bag {self.path}: topic {topic} has type {info.type}, expected {msgtype}"
            )

    @overload
    def messages(
        self,
        topics: Collection[str] | None = None,
        *,
        raw: Literal[True],
        recorded_order: bool = False,
    ) -> Iterator[tuple[str, int, bytes]]: ...

    @overload
    def messages(
        self, topics: Collection[str] | None = None, raw: bool = False, recorded_order: bool = False
    ) -> Iterator[tuple[str, int, Any]]: ...

    def messages(
        self, topics: Collection[str] | None = None, raw: bool = False, recorded_order: bool = False
    ) -> Iterator[tuple[str, int, Any]]:
        """(topic, log time ns, message) in log-time order, or with ``recorded_order`` in the
        order they were written (file by file, record by record: the order the recorder received
        them, whatever their log times say); ``raw``: CDR bytes instead (``decode`` them).
        Relative names in ``topics`` are in the root namespace; topics come out fully qualified."""
        wanted = None if topics is None else {resolve(t) for t in topics}
        conns = [c for c in self._reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        try:
            source = (
                self._recorded({c.topic for c in conns})
                if recorded_order
                else self._reader.messages(connections=conns)
            )
            for conn, log_ns, data in source:
                yield conn.topic, log_ns, bytes(data) if raw else self.decode(conn.topic, data)
        except READ_ERRORS as exc:
            raise BagError(self._describe(exc)) from None

    def decode(self, topic: str, data: bytes) -> Any:
        """The message of ``topic`` serialised in ``data`` (CDR), a rosbags message dataclass;
        rosbags' errors pass through."""
        return self._reader.deserialize(data, self.topics[resolve(topic)].type)

    def _recorded(self, topics: set[str]) -> Iterator[tuple[Connection, int, bytes]]:
        for info in self.files:
            reader = McapReader(self.path / info.name)
            reader.open()
            try:
                yield from reader.messages_scan(
                    [c for c in reader.connections if c.topic in topics]
                )
            finally:
                reader.close()

    def _describe(self, exc: Exception) -> str:
        damaged = [
            p.name for p in sorted(self.path.glob("*.mcap"), key=_split_index) if _file_problem(p)
        ]
        where = f" (file {', '.join(damaged)})" if damaged else ""
        return (
            f"bag {self.path} is damaged or incomplete{where}: {str(exc).rstrip('.')}. If the "
            f"recording was interrupted, run `mbrl-ros bag repair {self.path}`"
        )


READ_ERRORS = (AnyReaderError, ReaderError, OSError, ValueError, KeyError, IndexError)


def _file_problem(path: Path) -> str | None:
    """Why rosbags cannot open the MCAP file ``path``, or None."""
    reader = McapReader(path)
    try:
        reader.open()
    except READ_ERRORS as exc:
        return str(exc)
    reader.close()
    return None


# -- repair --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileRepair:
    """What ``repair_bag`` did to one file: status "intact", "repaired" or "unreadable";
    ``messages`` salvaged, ``dropped_bytes`` after the last intact record (a cut-off chunk's
    salvaged messages among them), ``backup``: the original's name (repaired files)."""

    name: str
    status: str
    messages: int
    dropped_bytes: int = 0
    problem: str | None = None
    backup: str | None = None


def _split_index(path: Path) -> tuple[int, str]:
    m = re.search(r"_(\d+)\.mcap$", path.name)
    return (int(m.group(1)) if m else -1, path.name)


def _type_hash(msgtype: str, msgdef: MessageDefinition, metadata: dict[str, str]) -> str:
    """The hash a channel stated, else the hash of the definition stored in the file."""
    if metadata.get(HASH_KEY):
        return metadata[HASH_KEY]
    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg(msgdef.data, msgtype))
    return store.hash_rihs01(msgtype)


def _rewrite(path: Path, tmp: Path) -> None:
    """Write every record ``McapSalvage`` recovers from ``path`` into a finished MCAP ``tmp``."""
    tmp.unlink(missing_ok=True)
    out = McapFile(tmp)
    conns: dict[int, Connection] = {}
    schemas: dict[str, Schema] = {}
    try:
        for rec in McapSalvage(path).records():
            if isinstance(rec, Schema):
                schemas[rec.name] = rec
            elif isinstance(rec, Channel):
                schema = schemas[rec.schema]
                fmt = (
                    MessageDefinitionFormat.IDL
                    if schema.encoding == "ros2idl"
                    else MessageDefinitionFormat.MSG
                )
                msgdef = MessageDefinition(fmt, schema.data)
                metadata = channel_metadata(rec.metadata)
                qos = parse_qos(metadata.get(QOS_KEY, ""))
                conns[rec.id] = _connection(
                    rec.id,
                    rec.topic,
                    rec.schema,
                    msgdef,
                    _type_hash(rec.schema, msgdef, metadata),
                    qos,
                )
                _add_connection(out, conns[rec.id])
            else:
                out.write(conns[rec.channel_id], rec.log_time, rec.data, rec.publish_time)
        _close_file(out, conns.values())
    except BaseException:
        out.abort()
        tmp.unlink(missing_ok=True)
        raise


def _keep_original(path: Path) -> Path:
    """Keep ``path`` as ``<name>.orig`` (``.orig.1``, ... if taken) beside it, byte for byte."""
    backup, k = path.with_name(path.name + ".orig"), 0
    while backup.exists():
        k += 1
        backup = path.with_name(f"{path.name}.orig.{k}")
    try:
        os.link(path, backup)  # the same bytes, no copy
    except OSError:  # a file system without hard links
        shutil.copy2(path, backup)
    return backup


def _repair_file(path: Path) -> FileRepair:
    """Check ``path``; if its end is missing or damaged, rewrite it from every message that can
    be salvaged, keeping the original as a backup. BagError (original untouched) if the rewritten
    file would hold fewer messages than were salvaged."""
    check = McapSalvage(path)
    count = sum(1 for rec in check.records() if isinstance(rec, RawMessage))
    problem = check.problem if not check.complete else _file_problem(path)
    if problem is None:
        return FileRepair(path.name, "intact", count)
    if check.intact_end == 0:
        return FileRepair(path.name, "unreadable", 0, path.stat().st_size, check.problem)
    tmp = path.with_name(path.name + ".repair")
    _rewrite(path, tmp)
    reader = McapReader(tmp)
    try:
        reader.open()
        written = reader.metadata.message_count
        reader.close()
    except READ_ERRORS as exc:
        written, problem = -1, f"{problem}; the rewritten file is unreadable: {exc}"
    if written < count:
        tmp.unlink(missing_ok=True)
        raise BagError(
            f"bag {path.parent}: repair of {path.name} would keep {max(written, 0)} "
            f"of the {count} messages salvaged ({problem}); the file is left "
            "untouched"
        )
    dropped = 0 if check.complete else path.stat().st_size - check.intact_end
    backup = _keep_original(path)
    os.replace(tmp, path)
    return FileRepair(path.name, "repaired", count, dropped, problem, backup.name)


def _old_custom_data(bag: Path) -> dict[str, str]:
    try:
        info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return dict(info.get("custom_data") or {})
    except (OSError, yaml.YAMLError, TypeError, KeyError, ValueError):
        return {}


def repair_bag(path: str | os.PathLike) -> list[FileRepair]:
    """Make a bag whose recording was interrupted readable: rewrite every MCAP file that lacks its
    summary (or ends in a damaged record) from every message that can be salvaged, keeping the
    original beside it as ``<file>.orig``, then rebuild metadata.yaml from the files. Unreadable
    files are left untouched and not listed. Returns one FileRepair per file."""
    bag = Path(path)
    if not bag.is_dir():
        raise BagError(f"bag {bag} is not a folder")
    paths = sorted(bag.glob("*.mcap"), key=_split_index)
    if not paths:
        raise BagError(f"bag {bag} has no .mcap files")
    custom = _old_custom_data(bag)
    (bag / RESERVE_NAME).unlink(missing_ok=True)
    report = [_repair_file(p) for p in paths]
    files: list[FileInfo] = []
    topics: dict[str, TopicInfo] = {}
    for p, r in zip(paths, report):
        if r.status == "unreadable":
            continue
        reader = McapReader(p)
        try:
            reader.open()
        except READ_ERRORS as exc:
            raise BagError(
                f"bag {bag}: file {p.name} is still unreadable after repair: {exc}"
            ) from None
        m = reader.metadata
        files.append(
            FileInfo(
                p.name,
                m.start_time if m.message_count else 0,
                m.end_time - 1 if m.message_count else 0,
                m.message_count,
            )
        )
        for c in reader.connections:
            old = topics.get(c.topic)
            topics[c.topic] = TopicInfo(
                c.topic,
                c.msgtype,
                c.msgcount + (old.count if old else 0),
                tuple(rosbag2_ext(c).offered_qos_profiles),
                old.type_hash
                if old
                else _type_hash(
                    c.msgtype, c.msgdef, channel_metadata(reader.channels[c.id].metadata)
                ),
            )
        reader.close()
    write_metadata(bag, files, list(topics.values()), custom)
    return report
