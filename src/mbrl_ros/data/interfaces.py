"""Message definitions and type hashes for recording, as rosbag2 stores them: from the interface
files installed on this machine (``share/<package>/msg/<Name>.msg`` and the ``.json`` type
description that holds its RIHS01 hash, in every prefix of ``AMENT_PREFIX_PATH`` and in the prefix
of the package's Python module), so any type a publisher on this machine uses can be recorded;
types not installed come from rosbags' ROS 2 Kilted type store.
"""

from __future__ import annotations

import importlib.util
import json
import os
from functools import cache, lru_cache
from pathlib import Path

from rosbags.interfaces import MessageDefinition, MessageDefinitionFormat
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore


class UnknownType(LookupError):
    """A message type neither installed nor in rosbags' store."""


@lru_cache(maxsize=1)
def kilted() -> Typestore:
    """rosbags' type store of ROS 2 Kilted message definitions."""
    return get_typestore(Stores.ROS2_KILTED)


def _prefixes(package: str) -> list[Path]:
    """Install prefixes that may hold ``package``'s interface files."""
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        prefixes.append(Path(location).parents[3])  # <prefix>/lib/pythonX.Y/site-packages/<pkg>
    return prefixes


def interface_file(msgtype: str, suffix: str) -> Path | None:
    """The installed ``<Name><suffix>`` (".msg", ".json") of ``msgtype`` ('pkg/msg/Name')."""
    parts = msgtype.split("/")
    if len(parts) != 3 or not all(parts):
        return None
    package, kind, name = parts
    for prefix in _prefixes(package):
        path = prefix / "share" / package / kind / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def _installed_hash(msgtype: str) -> str | None:
    path = interface_file(msgtype, ".json")
    try:
        hashes = json.loads(path.read_text())["type_hashes"] if path else []
        return next((h["hash_string"] for h in hashes if h["type_name"] == msgtype), None)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _register(store: Typestore, msgtype: str) -> None:
    """Put ``msgtype`` and the types it nests into ``store``: installed definitions where they
    exist, rosbags' Kilted ones otherwise."""
    if msgtype in store.fielddefs:
        return
    path = interface_file(msgtype, ".msg")
    if path is not None:
        try:
            types = get_types_from_msg(path.read_text(), msgtype)
        except Exception as exc:  # rosbags' parser raises its own errors
            raise UnknownType(f"{msgtype}: cannot read {path} ({exc})") from None
    elif msgtype in kilted().fielddefs:
        types = {msgtype: kilted().fielddefs[msgtype]}
    else:
        raise UnknownType(f"{msgtype} is neither installed on this machine nor a ROS 2 Kilted type")
    for _, field in types[msgtype][1]:
        nested = _nested_name(field)
        if nested:
            _register(store, nested)
    store.register(types)


def _nested_name(field) -> str | None:
    """The message type a parsed field refers to (directly or as elements), if any."""
    kind, detail = field
    if kind.name == "NAME":
        return detail
    if kind.name in ("ARRAY", "SEQUENCE"):
        return _nested_name(detail[0])
    return None


@cache
def definition(msgtype: str) -> tuple[MessageDefinition, str]:
    """(ros2msg definition with every nested type, RIHS01 type hash) of ``msgtype``, as rosbag2
    writes them into an MCAP schema and channel. UnknownType if it cannot be found."""
    store = get_typestore(Stores.EMPTY)
    _register(store, msgtype)
    text, _ = store.generate_msgdef(msgtype, ros_version=2)
    digest = _installed_hash(msgtype) or store.hash_rihs01(msgtype)
    return MessageDefinition(MessageDefinitionFormat.MSG, text), digest


def ros_distro() -> str:
    """The ROS distribution of this environment (``ROS_DISTRO``; kilted, the wheels', if unset)."""
    return os.environ.get("ROS_DISTRO", "").strip() or "kilted"
