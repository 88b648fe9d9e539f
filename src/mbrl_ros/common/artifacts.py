"""The artifact codec: named arrays + JSON metadata as safetensors bytes (DESIGN.md §4).

Controllers, dynamics models, datasets and policies all travel and are stored this way. Layout:
a safetensors blob whose ``__metadata__`` holds one key, ``"mbrl_ros"``, with a JSON object
``{"schema": <name>, "version": <int>, ...}``. Each kind of artifact declares a ``Schema``: its
tensors with dtypes and (symbolic) shapes, limits on the dimensions, required metadata keys and
the newest version this code understands.

``decode`` trusts nothing: it checks the total size and the header before any tensor is read,
then schema name, version (older than ``min_version`` or newer than ``version`` is rejected),
tensor names, dtypes, shapes and their consistency, dimension limits, finiteness and magnitudes
(|value| ≤ ``Schema.max_abs``, so no finite-but-absurd number such as 1e300 gets through), and
the checksum: the reserved tensor ``__sha256__`` (32 bytes) holds the SHA-256 of the metadata text
and of every other tensor's name, dtype, shape and bytes, so a flipped bit anywhere is caught. It
never unpickles: safetensors holds raw little-endian numbers only. Errors are ``ArtifactError`` with
a message naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.numpy

META_KEY = "mbrl_ros"
CHECKSUM_TENSOR = "__sha256__"  # a tensor, not metadata: safetensors orders tensors, not metadata
DEFAULT_MAX_ABS = 1e9  # no quantity of an arm (SI units), network weight or statistic is larger
MAX_ARTIFACT_BYTES = 64 * 2**20
MAX_HEADER_BYTES = 1 * 2**20
DEFAULT_DIM_LIMIT = 2**24
MAX_NDIM = 8

# numpy dtype name ↔ safetensors dtype code
_CODES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}
_NAMES = {code: name for name, code in _CODES.items()}
_FLOAT = {"float64", "float32", "float16"}


class ArtifactError(ValueError):
    """An artifact's bytes or contents are invalid; the message says what is wrong."""


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: shape as ints (fixed) or names (symbolic dims shared across the tensors
    of an artifact, e.g. ("T", "du")), dtype name, and whether it must be present."""

    shape: tuple[int | str, ...]
    dtype: str = "float64"
    required: bool = True


@dataclass(frozen=True)
class Schema:
    """What an artifact kind holds. ``version`` is the version written (and the newest read);
    ``extra_tensors``: also accept unlisted tensors (e.g. network weights) of ``extra_dtypes``;
    ``max_abs``: the largest magnitude a float tensor may hold."""

    name: str
    version: int
    tensors: Mapping[str, TensorSpec]
    dim_limits: Mapping[str, int] = field(default_factory=dict)
    required_meta: tuple[str, ...] = ()
    min_version: int = 1
    extra_tensors: bool = False
    extra_dtypes: tuple[str, ...] = ("float64", "float32")
    max_abs: float = DEFAULT_MAX_ABS


def _check_layout(schema: Schema, entries: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
    """Names, dtypes and shapes of ``entries`` (name → (dtype name, shape)) against ``schema``."""
    missing = [n for n, s in schema.tensors.items() if s.required and n not in entries]
    if missing:
        raise ArtifactError(f"{schema.name}: missing tensors {missing}")
    dims: dict[str, int] = {}
    for name, (dtype, shape) in entries.items():
        spec = schema.tensors.get(name)
        if spec is None and not schema.extra_tensors:
            raise ArtifactError(
                f"{schema.name}: unexpected tensor '{name}' (expected {sorted(schema.tensors)})"
            )
        allowed = (spec.dtype,) if spec is not None else schema.extra_dtypes
        if dtype not in allowed:
            raise ArtifactError(
                f"{schema.name}: tensor '{name}' has dtype {dtype}, expected {' or '.join(allowed)}"
            )
        if spec is None:
            if len(shape) > MAX_NDIM or any(d > DEFAULT_DIM_LIMIT for d in shape):
                raise ArtifactError(
                    f"{schema.name}: tensor '{name}' shape {list(shape)} is too large"
                )
            continue
        if len(shape) != len(spec.shape):
            raise ArtifactError(
                f"{schema.name}: tensor '{name}' has shape {list(shape)}, "
                f"expected {len(spec.shape)} dims {list(spec.shape)}"
            )
        for size, want in zip(shape, spec.shape):
            if isinstance(want, int):
                if size != want:
                    raise ArtifactError(
                        f"{schema.name}: tensor '{name}' has shape {list(shape)}"
                        f", expected {list(spec.shape)}"
                    )
                continue
            limit = schema.dim_limits.get(want, DEFAULT_DIM_LIMIT)
            if size > limit:
                raise ArtifactError(
                    f"{schema.name}: dimension {want} = {size} of tensor "
                    f"'{name}' exceeds the limit {limit}"
                )
            if dims.setdefault(want, size) != size:
                raise ArtifactError(
                    f"{schema.name}: tensor '{name}' has {want} = {size} but "
                    f"another tensor has {want} = {dims[want]}"
                )


def _check_values(schema: Schema, tensors: Mapping[str, np.ndarray]) -> None:
    """Float tensors finite and within ±``schema.max_abs``."""
    for name, a in tensors.items():
        if a.dtype.name not in _FLOAT or not a.size:
            continue
        if not np.all(np.isfinite(a)):
            raise ArtifactError(f"{schema.name}: tensor '{name}' has non-finite values")
        biggest = float(np.max(np.abs(a)))
        if biggest > schema.max_abs:
            raise ArtifactError(
                f"{schema.name}: tensor '{name}' holds {biggest:.3g}, beyond "
                f"the bound ±{schema.max_abs:.3g}"
            )


def checksum(meta_text: str, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    """(32,) uint8 SHA-256 of the metadata text and each tensor's name, dtype, shape and bytes
    (the checksum tensor itself excluded)."""
    digest = hashlib.sha256(meta_text.encode("utf-8"))
    for name in sorted(set(tensors) - {CHECKSUM_TENSOR}):
        a = np.ascontiguousarray(tensors[name])
        digest.update(json.dumps([name, a.dtype.name, list(a.shape)]).encode("utf-8"))
        digest.update(a.tobytes())
    return np.frombuffer(digest.digest(), dtype=np.uint8).copy()


def _as_numpy(value, dtype: str | None) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value, dtype=dtype))


def encode(
    schema: Schema,
    tensors: Mapping[str, object],
    meta: Mapping[str, object],
    max_bytes: int = MAX_ARTIFACT_BYTES,
) -> bytes:
    """Artifact bytes of ``tensors`` (name → numpy array or torch tensor, converted to the
    schema's dtype) and ``meta`` (JSON-serialisable; "schema" and "version" are added).
    Raises ArtifactError if the result would not pass ``decode`` (with ``max_bytes``)."""
    if "schema" in meta or "version" in meta:
        raise ArtifactError("meta must not set 'schema' or 'version'; the schema does")
    missing = [k for k in schema.required_meta if k not in meta]
    if missing:
        raise ArtifactError(f"{schema.name}: missing metadata {missing}")
    arrays = {
        name: _as_numpy(value, getattr(schema.tensors.get(name), "dtype", None))
        for name, value in tensors.items()
        if name != CHECKSUM_TENSOR
    }  # written anew
    _check_layout(schema, {n: (a.dtype.name, a.shape) for n, a in arrays.items()})
    _check_values(schema, arrays)
    try:
        header = json.dumps(
            {"schema": schema.name, "version": schema.version, **meta}, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{schema.name}: metadata is not plain JSON: {exc}") from None
    data = safetensors.numpy.save(
        arrays | {CHECKSUM_TENSOR: checksum(header, arrays)}, metadata={META_KEY: header}
    )
    if len(data) > max_bytes:
        raise ArtifactError(
            f"{schema.name}: artifact is {len(data)} bytes, over the limit {max_bytes}"
        )
    return data


def _reject_constant(name: str):
    raise ArtifactError(f"metadata contains {name}")


def read_header(data: bytes, max_bytes: int = MAX_ARTIFACT_BYTES) -> tuple[dict, dict]:
    """(safetensors header without ``__metadata__``, our metadata dict) after checking sizes and
    JSON; reads no tensor data."""
    header, _, meta = _read_header(data, max_bytes)
    return header, meta


def _read_header(data: bytes, max_bytes: int) -> tuple[dict, str, dict]:
    """``read_header`` plus the metadata text (as the checksum covers it)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ArtifactError(f"artifact must be bytes, got {type(data).__name__}")
    size = len(data)
    if size > max_bytes:
        raise ArtifactError(f"artifact is {size} bytes, over the limit {max_bytes}")
    if size < 8:
        raise ArtifactError(f"artifact is {size} bytes, too short for a safetensors header")
    n = int.from_bytes(bytes(data[:8]), "little")
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise ArtifactError(f"safetensors header claims {n} bytes; the artifact has {size - 8}")
    try:
        header = json.loads(bytes(data[8 : 8 + n]).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactError(f"safetensors header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ArtifactError("safetensors header is not a JSON object")
    raw = header.pop("__metadata__", None)
    if not isinstance(raw, dict) or not isinstance(raw.get(META_KEY), str):
        raise ArtifactError(f"not an mbrl_ros artifact: no '{META_KEY}' metadata")
    try:
        meta = json.loads(raw[META_KEY], parse_constant=_reject_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactError(f"artifact metadata is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ArtifactError("artifact metadata is not a JSON object")
    return header, raw[META_KEY], meta


def decode(
    data: bytes, schema: Schema, max_bytes: int = MAX_ARTIFACT_BYTES
) -> tuple[dict[str, np.ndarray], dict]:
    """Validated (tensors as numpy arrays, metadata) of artifact ``data`` of kind ``schema``."""
    header, meta_text, meta = _read_header(data, max_bytes)
    entry = header.pop(CHECKSUM_TENSOR, None)
    if not isinstance(entry, dict) or (entry.get("dtype"), entry.get("shape")) != ("U8", [32]):
        raise ArtifactError(
            f"artifact has no '{CHECKSUM_TENSOR}' checksum (written by an older "
            "mbrl_ros, or not by mbrl_ros): refused"
        )
    name, version = meta.get("schema"), meta.get("version")
    if name != schema.name:
        raise ArtifactError(f"artifact schema is {name!r}, expected {schema.name!r}")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ArtifactError(f"{schema.name}: version must be an integer, got {version!r}")
    if version > schema.version:
        raise ArtifactError(
            f"{schema.name}: version {version} is newer than this code reads "
            f"({schema.version}); update mbrl_ros"
        )
    if version < schema.min_version:
        raise ArtifactError(
            f"{schema.name}: version {version} is older than the oldest "
            f"supported ({schema.min_version})"
        )
    missing = [k for k in schema.required_meta if k not in meta]
    if missing:
        raise ArtifactError(f"{schema.name}: missing metadata {missing}")
    entries = {}
    for tname, entry in header.items():
        if not isinstance(entry, dict):
            raise ArtifactError(f"{schema.name}: header entry '{tname}' is not an object")
        dtype, shape = entry.get("dtype"), entry.get("shape")
        if dtype not in _NAMES:
            raise ArtifactError(f"{schema.name}: tensor '{tname}' has unknown dtype {dtype!r}")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_NDIM
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise ArtifactError(f"{schema.name}: tensor '{tname}' has invalid shape {shape!r}")
        entries[tname] = (_NAMES[dtype], tuple(shape))
    _check_layout(schema, entries)
    try:
        tensors = safetensors.numpy.load(bytes(data))
    except Exception as exc:  # safetensors raises its own error types for corrupt data
        raise ArtifactError(f"{schema.name}: corrupt tensor data: {exc}") from None
    if not np.array_equal(checksum(meta_text, tensors), tensors.pop(CHECKSUM_TENSOR)):
        raise ArtifactError(
            f"{schema.name}: checksum mismatch: the artifact was corrupted or altered"
        )
    _check_values(schema, tensors)
    return tensors, meta


def write_file(path: str | os.PathLike, data: bytes) -> Path:
    """Write artifact bytes atomically (a reader never sees a half-written file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_file(path: str | os.PathLike, max_bytes: int = MAX_ARTIFACT_BYTES) -> bytes:
    """Artifact bytes of a file, refusing files over ``max_bytes`` before reading them."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise ArtifactError(f"{path}: {size} bytes, over the artifact limit {max_bytes}")
    return path.read_bytes()
