"""The artifact codec: bit-exact round trips, and every kind of malformed artifact rejected with a
clear ArtifactError (never another exception, never unpickling)."""

import functools
import json
import pickle
import struct

import numpy as np
import pytest
import safetensors.numpy
import torch
from adversary import signed

from mbrl_ros.common import artifacts
from mbrl_ros.common.artifacts import ArtifactError, Schema, TensorSpec
from mbrl_ros.control.controller import CONTROLLER_SCHEMA, LinearGaussianController

NAMES = ["j0", "j1", "j2"]


def make_controller(T=5, n=3, seed=0, cov=True):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((T, n, n))
    return LinearGaussianController(
        rng.standard_normal((T, 2 * n)),
        rng.standard_normal((T, n)),
        rng.standard_normal((T, n, 2 * n)),
        rng.standard_normal((T, n)),
        A @ np.swapaxes(A, 1, 2) + 0.1 * np.eye(n) if cov else None,
        dt_ns=2_000_000,
        start_ns=123_456_789_012,
        joint_names=NAMES[:n],
    )


def split(data: bytes) -> tuple[dict, bytes]:
    """(safetensors header dict, tensor bytes) of an artifact."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(header: dict, body: bytes, sign: bool = True) -> bytes:
    """Header and tensor bytes as an artifact; ``sign``: with the checksum of what it holds (where
    its tensors load), as an adversary who knows the format would write it."""
    text = json.dumps(header).encode()
    data = struct.pack("<Q", len(text)) + text + body
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not sign or not isinstance(meta, dict) or artifacts.META_KEY not in meta:
        return data
    try:
        tensors = safetensors.numpy.load(data)
    except Exception:  # a broken body: nothing to sign
        return data
    return signed(tensors, meta[artifacts.META_KEY])


def with_meta(data: bytes, **changes) -> bytes:
    """The artifact with its JSON metadata changed (None deletes a key)."""
    header, body = split(data)
    meta = json.loads(header["__metadata__"][artifacts.META_KEY])
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    header["__metadata__"][artifacts.META_KEY] = json.dumps(meta)
    return join(header, body)


def test_controller_round_trip_is_bit_exact():
    for cov in (True, False):
        c = make_controller(cov=cov)
        data = c.to_bytes({"planner": "test", "iteration": 3})
        d = LinearGaussianController.from_bytes(data, joint_names=NAMES)
        for name in ("x_hat", "u_hat", "K", "k", "cov"):
            a, b = getattr(c, name), getattr(d, name)
            assert a.dtype == b.dtype == np.float64
            assert a.tobytes() == b.tobytes(), name  # bit for bit, -0.0 and all
        assert (d.dt_ns, d.start_ns, d.joint_names, d.state_layout) == (
            c.dt_ns,
            c.start_ns,
            tuple(NAMES),
            "q,qd",
        )
        assert d.to_bytes({"planner": "test", "iteration": 3}) == data  # deterministic bytes
        meta = artifacts.read_header(data)[1]
        assert meta["schema"] == "mbrl_ros/lg_controller" and meta["version"] == 1
        assert meta["info"] == {"planner": "test", "iteration": 3}
        assert ("cov" in split(data)[0]) == cov  # a deterministic controller stores no Σ


def test_generic_codec_float32_torch_and_extra_tensors():
    schema = Schema(
        "test/model",
        2,
        {"w": TensorSpec(("n", 4), "float32"), "b": TensorSpec(("n",), "float32")},
        required_meta=("normalisation",),
        extra_tensors=True,
    )
    w = torch.randn(3, 4)
    tensors = {"w": w, "b": np.arange(3, dtype=np.float32), "layer.7.weight": np.ones((2, 2))}
    data = artifacts.encode(schema, tensors, {"normalisation": {"mean": [0.5]}})
    out, meta = artifacts.decode(data, schema)
    assert out["w"].dtype == np.float32 and out["w"].tobytes() == w.numpy().tobytes()
    assert out["layer.7.weight"].dtype == np.float64
    assert meta["normalisation"] == {"mean": [0.5]} and meta["version"] == 2
    with pytest.raises(ArtifactError, match="dtype int64"):
        artifacts.encode(
            schema, tensors | {"extra": np.zeros(2, dtype=np.int64)}, {"normalisation": {}}
        )
    with pytest.raises(ArtifactError, match="missing metadata"):
        artifacts.encode(schema, tensors, {})
    with pytest.raises(ArtifactError, match="plain JSON"):
        artifacts.encode(schema, tensors, {"normalisation": float("nan")})
    with pytest.raises(ArtifactError, match="must not set"):
        artifacts.encode(schema, tensors, {"normalisation": 1, "version": 9})


def test_files_are_written_atomically_and_size_checked(tmp_path):
    data = make_controller().to_bytes()
    path = artifacts.write_file(tmp_path / "c.safetensors", data)
    assert artifacts.read_file(path) == data
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]
    with pytest.raises(ArtifactError, match="over the artifact limit"):
        artifacts.read_file(path, max_bytes=len(data) - 1)


def edit_meta_text(data: bytes, old: str, new: str, sign: bool = True) -> bytes:
    header, body = split(data)
    text = header["__metadata__"][artifacts.META_KEY]
    assert old in text
    header["__metadata__"][artifacts.META_KEY] = text.replace(old, new)
    return join(header, body, sign)


@functools.lru_cache(maxsize=1)
def _bad_artifacts():
    c = make_controller()
    good = c.to_bytes()
    header, body = split(good)
    cases = {
        "empty": (b"", "too short"),
        "not bytes": ("text", "must be bytes"),
        "random bytes": (np.random.default_rng(0).bytes(500), "header claims"),
        "truncated body": (good[:-40], "corrupt tensor data"),
        "truncated header": (good[:30], "header claims"),
        "absurd header length": (struct.pack("<Q", 2**62) + good[8:], "header claims"),
        "header not JSON": (struct.pack("<Q", 4) + b"{{{{" + body, "not valid JSON"),
        "header not an object": (join([1, 2], b""), "not a JSON object"),  # type: ignore[arg-type]
        "no metadata": (
            join({k: v for k, v in header.items() if k != "__metadata__"}, body),
            "not an mbrl_ros artifact",
        ),
        "pickle": (pickle.dumps({"x_hat": np.zeros(3)}), "header claims"),
        "wrong schema": (
            with_meta(good, schema="mbrl_ros/dynamics_model"),
            "schema is 'mbrl_ros/dynamics_model'",
        ),
        "newer version": (with_meta(good, version=2), "newer than this code reads"),
        "older version": (with_meta(good, version=0), "older than the oldest"),
        "version not int": (with_meta(good, version="1"), "must be an integer"),
        "version bool": (with_meta(good, version=True), "must be an integer"),
        "missing meta": (with_meta(good, dt_ns=None), "missing metadata"),
        "dt_ns float": (with_meta(good, dt_ns=0.002), "dt_ns must be an integer"),
        "dt_ns zero": (with_meta(good, dt_ns=0), "dt_ns must be a positive integer"),
        "negative start": (with_meta(good, start_ns=-5), "start_ns"),
        "wrong joint names": (with_meta(good, joint_names=["a", "b", "c"]), "differ from"),
        "reordered joints": (with_meta(good, joint_names=["j1", "j0", "j2"]), "differ from"),
        "joint names not strings": (with_meta(good, joint_names=[1, 2, 3]), "list of strings"),
        "NaN constant in meta": (
            edit_meta_text(good, '"dt_ns": 2000000', '"dt_ns": NaN'),
            "metadata contains NaN",
        ),
    }
    # tensor-level problems, written directly with safetensors as an adversary would
    arrays = {"x_hat": c.x_hat, "u_hat": c.u_hat, "K": c.K, "k": c.k, "cov": c.cov}
    meta = json.dumps(
        {
            "schema": CONTROLLER_SCHEMA.name,
            "version": 1,
            "joint_names": NAMES,
            "dt_ns": c.dt_ns,
            "start_ns": c.start_ns,
            "state_layout": "q,qd",
        }
    )

    def build(**tensors):
        return signed({k: v for k, v in (arrays | tensors).items() if v is not None}, meta)

    def flipped(offset_from_end: int) -> bytes:
        data = bytearray(good)
        data[-offset_from_end] ^= 0x10
        return bytes(data)

    cases |= {
        "missing tensor": (build(K=None), "missing tensors"),
        "unexpected tensor": (build(extra=np.zeros(2)), "unexpected tensor 'extra'"),
        "float32": (build(K=c.K.astype(np.float32)), "dtype float32, expected float64"),
        "wrong rank": (build(k=c.k[None]), "expected 2 dims"),
        "inconsistent T": (build(k=c.k[:-1]), "has T = 4 but another tensor has T = 5"),
        "shape vs joints": (
            build(
                u_hat=np.zeros((5, 2)),
                k=np.zeros((5, 2)),
                K=np.zeros((5, 2, 6)),
                cov=np.zeros((5, 2, 2)),
            ),
            "3 joint_names for du=2",
        ),
        "non-finite": (build(K=np.where(c.K > 1.5, np.inf, c.K)), "non-finite"),
        "NaN cov": (build(cov=np.full_like(c.cov, np.nan)), "non-finite"),
        "non-symmetric cov": (build(cov=c.cov + np.triu(np.ones((3, 3)), 1)), "not symmetric"),
        "absurd T": (
            build(
                x_hat=np.zeros((100_001, 6)),
                u_hat=np.zeros((100_001, 3)),
                k=np.zeros((100_001, 3)),
                K=np.zeros((100_001, 3, 6)),
                cov=None,
            ),
            "exceeds the limit 100000",
        ),
        "finite but absurd": (
            build(u_hat=np.full_like(c.u_hat, 1e300)),
            "'u_hat' holds 1e\\+300, beyond the bound",
        ),
        "a flipped bit in a tensor": (flipped(3), "checksum mismatch"),
        "altered metadata": (
            edit_meta_text(
                good, '"start_ns": 123456789012', '"start_ns": 123456789013', sign=False
            ),
            "checksum mismatch",
        ),
        "no checksum": (
            safetensors.numpy.save(arrays, metadata={artifacts.META_KEY: meta}),
            "no '__sha256__' checksum",
        ),
    }
    return cases


@pytest.mark.parametrize("case", list(_bad_artifacts()))
def test_malformed_artifacts_are_rejected_with_a_clear_message(case):
    data, match = _bad_artifacts()[case]
    with pytest.raises(ArtifactError, match=match):
        LinearGaussianController.from_bytes(data, joint_names=NAMES)


def test_size_limit_is_checked_before_parsing():
    data = make_controller().to_bytes()
    with pytest.raises(ArtifactError, match="over the limit"):
        LinearGaussianController.from_bytes(data, max_bytes=len(data) - 1)


def test_a_pickle_in_the_payload_is_never_executed(tmp_path):
    """A pickle smuggled in as tensor bytes or metadata is data, not code."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    blob = pickle.dumps(Exploit())
    good = make_controller().to_bytes()
    header, body = split(good)
    header["__metadata__"]["pickle"] = blob.hex()
    for data in (
        blob,
        join(header, body),
        good[: -len(blob)] + blob,
        with_meta(good, info={"pickle": blob.decode("latin1")}),
    ):
        try:
            LinearGaussianController.from_bytes(data, joint_names=NAMES)
        except ArtifactError:
            pass
    assert not marker.exists()


def test_random_mutations_never_escape_as_other_errors():
    """2,000 bit flips, byte overwrites, truncations and splices of a valid artifact: each raises
    ArtifactError or (a change the format ignores, e.g. the header's padding) decodes to exactly
    the original controller: the checksum lets no corrupted number through."""
    rng = np.random.default_rng(42)
    good = make_controller(T=4).to_bytes()
    accepted = 0
    for _ in range(2000):
        data = bytearray(good)
        kind = rng.integers(4)
        if kind == 0:
            for _ in range(rng.integers(1, 8)):
                i = rng.integers(len(data))
                data[i] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            i = rng.integers(len(data))
            data[i : i + 4] = rng.bytes(4)
        elif kind == 2:
            data = data[: rng.integers(len(data))]
        else:
            i = rng.integers(len(data))
            data = data[:i] + rng.bytes(int(rng.integers(1, 16))) + data[i:]
        try:
            c = LinearGaussianController.from_bytes(bytes(data), joint_names=NAMES)
        except ArtifactError:
            continue
        accepted += 1
        assert c.to_bytes() == good
    assert accepted < 100
