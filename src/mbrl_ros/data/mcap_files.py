"""MCAP files of a rosbag2 bag: rosbags' MCAP storage writer with checkpoints, channel metadata and
message times as rosbag2's MCAP plugin writes them, and a reader that salvages the intact records
of a file whose end is missing or damaged.

Layout written (rosbags): magic, header, then chunks (uncompressed, closed at 1 MiB or at each
checkpoint) each followed by its message indexes; ``close`` appends the summary (schemas, channels,
chunk indexes, statistics) and the footer. A process killed while writing leaves a file that ends
after its last complete chunk, or inside a record; ``McapSalvage`` reads such a file up to the last
intact record, and from a chunk cut off at the end it takes every complete message: all of them
from an uncompressed chunk (ours), those a stream decoder recovers from a zstd or lz4 chunk (as
``ros2 bag record`` writes them).
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import NamedTuple

import lz4.frame
from rosbags.interfaces import Connection, ConnectionExtRosbag2
from rosbags.rosbag2.enums import CompressionMode
from rosbags.rosbag2.errors import ReaderError
from rosbags.rosbag2.storage_mcap import (
    Channel,
    McapWriter,
    PendingChunk,
    Schema,
    decompress,
    write_channel,
    write_record,
    write_string,
)

try:  # the zstd module rosbags uses (Python 3.14+, or its backport)
    from compression import zstd
except ImportError:
    from backports import zstd

MAGIC = b"\x89MCAP0\r\n"
QOS_KEY, HASH_KEY = "offered_qos_profiles", "topic_type_hash"  # channel metadata, as rosbag2's
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END = (
    0x01,
    0x02,
    0x03,
    0x04,
    0x05,
    0x06,
    0x0F,
)


@dataclass(frozen=True)
class _Checkpoint:
    offset: int
    n_chunks: int
    channel_stats: dict[int, int]
    start: int
    end: int


def rosbag2_ext(connection: Connection) -> ConnectionExtRosbag2:
    """A connection's rosbag2 part (serialisation format, offered QoS); ValueError for a ROS 1
    connection (every bag here is a rosbag2 bag)."""
    if not isinstance(connection.ext, ConnectionExtRosbag2):
        raise ValueError(f"topic {connection.topic} is not a rosbag2 connection")
    return connection.ext


class McapFile(McapWriter):
    """One MCAP file written by rosbags' storage writer at an explicit path, with checkpoints.

    ``checkpoint()`` closes the pending chunk, flushes and fsyncs: what was written survives a
    crash of the process (or of the machine). After an OSError such as a full disk,
    ``rollback()`` truncates the file to the last checkpoint and forgets the later messages, so
    ``close`` can still finish a valid file when the summary fits in the space freed.
    """

    _checkpoint: _Checkpoint  # the last checkpoint (the first is taken in __init__)

    def __init__(self, path: Path):
        path = Path(path)
        # rosbags writes <dir>/<dir name>.mcap: let it create the file in a private folder next
        # to the target, then move it to its rosbag2 name (link + unlink: never overwrites).
        folder = Path(tempfile.mkdtemp(prefix=".mcap-", dir=path.parent))
        try:
            super().__init__(folder, CompressionMode.NONE)
            try:
                os.link(self.path, path)
            except OSError:
                self.bio.close()
                raise
            finally:
                self.path.unlink()
        finally:
            folder.rmdir()
        self.path = path
        try:
            self.checkpoint()
        except OSError:
            self.abort()
            path.unlink(missing_ok=True)
            raise

    @property
    def message_count(self) -> int:
        return sum(self.channel_stats.values())

    @property
    def size(self) -> int:
        """Bytes written so far, including the pending chunk."""
        return self.bio.tell() + self.chunk.bio.tell()

    @property
    def checkpoint_count(self) -> int:
        """Messages on disk as of the last checkpoint."""
        return sum(self._checkpoint.channel_stats.values())

    def summary_bound(self) -> int:
        """More than the bytes ``close`` writes after the data (summary, footer) when no chunk is
        pending."""
        definitions = sum(len(s.name) + len(s.data) + 32 for s in self.schemas) + sum(
            len(c.topic) + len(c.metadata) + 32 for c in self.channels
        )
        return (
            4096
            + 2 * definitions
            + 600 * len(self.channels)
            + len(self.chunks) * (96 + 10 * len(self.channels))
        )

    def add_connection(self, connection: Connection, offered_qos_profiles: str) -> None:
        """A channel for ``connection`` whose metadata holds its offered QoS profiles (rosbag2's
        YAML) and its type hash (``connection.digest``, RIHS01), as rosbag2 writes them."""
        metadata = BytesIO()
        for key, value in ((QOS_KEY, offered_qos_profiles), (HASH_KEY, connection.digest)):
            write_string(metadata, key)
            write_string(metadata, value)
        self.channels.append(
            Channel(
                connection.id,
                connection.msgtype,
                connection.topic,
                rosbag2_ext(connection).serialization_format,
                metadata.getvalue(),
            )
        )
        self.channel_stats[connection.id] = 0
        write_channel(self.chunk.bio, self.channels[-1], self.schemas)

    def write(
        self,
        connection: Connection,
        timestamp: int,
        data: bytes | memoryview,
        publish_ns: int | None = None,
    ) -> None:
        """One message record: log time ``timestamp`` (ns, when it was received) and publish
        time ``publish_ns`` (when its sender published it; None: the log time)."""
        self.message_start_time = min(timestamp, self.message_start_time)
        self.message_end_time = max(timestamp, self.message_end_time)
        self.channel_stats[connection.id] += 1
        chunk = self.chunk
        chunk.message_start_time = min(timestamp, chunk.message_start_time)
        chunk.message_end_time = max(timestamp, chunk.message_end_time)
        chunk.msgs[connection.id].append((timestamp, chunk.bio.tell()))
        record = BytesIO()
        record.write(
            struct.pack(
                "<HIQQ",
                connection.id,
                0,
                timestamp,
                timestamp if publish_ns is None else publish_ns,
            )
        )
        record.write(data)
        write_record(chunk.bio, OP_MESSAGE, record)
        if chunk.bio.tell() > 2**20:
            self.close_chunk()

    def checkpoint(self) -> None:
        if self.chunk.msgs:
            self.close_chunk()
        self.bio.flush()
        os.fsync(self.bio.fileno())
        self._checkpoint = _Checkpoint(
            self.bio.tell(),
            len(self.chunks),
            dict(self.channel_stats),
            self.message_start_time,
            self.message_end_time,
        )

    def rollback(self) -> None:
        cp = self._checkpoint
        with suppress(OSError):
            self.bio.close()
        # rosbags types bio as BufferedWriter; a BufferedRandom (it can truncate) does its job
        self.bio = self.path.open("r+b")  # type: ignore[assignment]
        self.bio.truncate(cp.offset)
        self.bio.seek(cp.offset)
        del self.chunks[cp.n_chunks :]
        self.channel_stats = {cid: cp.channel_stats.get(cid, 0) for cid in self.channel_stats}
        self.message_start_time, self.message_end_time = cp.start, cp.end
        self.chunk = PendingChunk(2**63 - 1, 0, BytesIO(), defaultdict(list))

    def close(self, version: int, metadata: str) -> None:
        """Write the summary and footer (``metadata``: the rosbag2 metadata YAML stored in the
        file) and make the file durable."""
        super().close(version, metadata)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def abort(self) -> None:
        """Close the file as it is (no summary); ``bag repair`` can finish it."""
        with suppress(OSError):
            self.bio.close()


class RawMessage(NamedTuple):
    channel_id: int
    log_time: int
    data: bytes
    publish_time: int


class _Cursor:
    """Little-endian fields of one record body; ValueError when the body is too short."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"record body ends {self.pos + n - len(self.data)} bytes early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def blob(self) -> bytes:
        return self.take(self.u32())

    def text(self) -> str:
        return self.blob().decode()

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)


class McapSalvage:
    """Reads an MCAP file front to back, yielding the Schema, Channel and RawMessage of every
    intact record and stopping at the first truncated or damaged one.

    A chunk cut off by the end of the file yields the complete records at its start that its
    compression lets a stream decoder recover (``partial_messages`` counts its messages).

    After iterating ``records()``: ``complete`` is True when the data section ended cleanly (the
    file was closed); otherwise ``problem`` says where and why reading stopped, and
    ``intact_end`` is the byte offset after the last intact record.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.complete = False
        self.problem: str | None = None
        self.intact_end = 0
        self.partial_messages = 0
        self._schema_names: dict[int, str] = {}
        self._channels: set[int] = set()

    def records(self) -> Iterator[Schema | Channel | RawMessage]:
        size = self.path.stat().st_size
        with self.path.open("rb") as f:
            if f.read(8) != MAGIC:
                self.problem = "not an MCAP file (bad magic bytes at the start)"
                return
            self.intact_end = offset = 8
            while True:
                head = f.read(9)
                if not head:
                    self.problem = (
                        f"file ends at byte {offset} without summary and footer "
                        "(the recording was interrupted)"
                    )
                    return
                if len(head) < 9:
                    self.problem = f"record header at byte {offset} is cut off"
                    return
                op, length = head[0], struct.unpack("<Q", head[1:])[0]
                if length > size - offset - 9:
                    self.problem = (
                        f"record at byte {offset} is cut off ({size - offset - 9} of "
                        f"{length} bytes present)"
                    )
                    if op == OP_CHUNK:
                        yield from self._cut_chunk(f.read())
                    return
                body = f.read(length)
                if op in (OP_DATA_END, OP_FOOTER):
                    self.complete = True
                    return
                try:
                    items = list(self._parse(op, body))
                except (ValueError, ReaderError, struct.error) as exc:
                    self.problem = f"record at byte {offset} is damaged: {exc}"
                    return
                yield from items
                self.intact_end = offset = f.tell()

    def _parse(self, op: int, body: bytes) -> Iterator[Schema | Channel | RawMessage]:
        c = _Cursor(body)
        if op == OP_SCHEMA:
            key, name, encoding, data = c.u16(), c.text(), c.text(), c.blob().decode()
            self._schema_names[key] = name
            yield Schema(key, name, encoding, data)
        elif op == OP_CHANNEL:
            key, schema_id = c.u16(), c.u16()
            topic, encoding, metadata = c.text(), c.text(), c.blob()
            if schema_id not in self._schema_names:
                raise ValueError(f"channel {topic} refers to unknown schema {schema_id}")
            self._channels.add(key)
            yield Channel(key, self._schema_names[schema_id], topic, encoding, metadata)
        elif op == OP_MESSAGE:
            channel, _, log_time, publish_time = c.u16(), c.u32(), c.u64(), c.u64()
            if channel not in self._channels:
                raise ValueError(f"message of unknown channel {channel}")
            yield RawMessage(channel, log_time, c.rest(), publish_time)
        elif op == OP_CHUNK:
            _, _, uncompressed, crc = c.u64(), c.u64(), c.u64(), c.u32()
            compression = c.text()
            records = _Cursor(decompress(c.take(c.u64()), compression, uncompressed, crc))
            while records.pos < len(records.data):
                inner_op, inner_len = records.take(1)[0], records.u64()
                yield from self._parse(inner_op, records.take(inner_len))

    def _cut_chunk(self, body: bytes) -> Iterator[Schema | Channel | RawMessage]:
        """The complete records at the start of a chunk whose end is missing (``body``: the bytes
        of the chunk record present), up to the first cut-off or damaged one."""
        try:
            c = _Cursor(body)
            c.take(28)  # start and end time, uncompressed size, CRC: of the whole chunk
            compression = c.text()
            c.u64()  # length of the records, most of them missing
            records = _Cursor(_decompress_start(c.rest(), compression))
        except ValueError:
            return
        while True:
            try:
                inner_op, inner_len = records.take(1)[0], records.u64()
                items = list(self._parse(inner_op, records.take(inner_len)))
            except (ValueError, struct.error):
                break
            self.partial_messages += sum(isinstance(i, RawMessage) for i in items)
            yield from items
        assert self.problem is not None  # the caller said the chunk is cut off
        self.problem += (
            f"; {self.partial_messages} complete messages of that chunk salvaged "
            f"({compression or 'uncompressed'})"
        )


def _decompress_start(data: bytes, compression: str) -> bytes:
    """What a stream decoder recovers from the start of a chunk's records (all of ``data`` when
    uncompressed); b"" for an unknown compression or damaged data."""
    if compression == "":
        return data
    decoders = {"zstd": zstd.ZstdDecompressor, "lz4": lz4.frame.LZ4FrameDecompressor}
    if compression not in decoders:
        return b""
    try:
        return decoders[compression]().decompress(data)
    except (zstd.ZstdError, RuntimeError, ValueError):
        return b""


def channel_metadata(metadata: bytes) -> dict[str, str]:
    """The string map stored in an MCAP channel record (rosbag2 keeps ``offered_qos_profiles``)."""
    c, out = _Cursor(metadata), {}
    while c.pos < len(c.data):
        out[c.text()] = c.text()
    return out
