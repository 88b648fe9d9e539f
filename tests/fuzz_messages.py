"""Malformed, absurd and adversarial messages for every topic of the graph (the fuzz suite).

Each generator takes a numpy Generator and returns one message; about one in eight is good, so a
node also sees good input between the bad. Artifacts that are well-formed but absurd are signed
(``adversary.signed``) so they reach the decoders' own checks rather than the checksum.
"""

from __future__ import annotations

import json

import numpy as np
import safetensors.numpy
from adversary import raw_controller, signed
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension, String, UInt8MultiArray

from mbrl_ros.common import artifacts

DEEP_JSON = "[" * 50_000 + "]" * 50_000
NASTY_TEXT = [
    "",
    "null",
    "[]",
    '"reset"',
    "{",
    "\x00\xff",
    "é" * 1000,
    "1e999",
    "NaN",
    '{"event": "reset"}',
    '{"event": "reset", "stamp_ns": "1"}',
    '{"event": "reset", "stamp_ns": -5}',
    '{"event": "pause", "stamp_ns": 1}',
    '{"event": "start", "stamp_ns": 1e30}',
    '{"event": "end", "stamp_ns": 1, "episode": true}',
    '{"event": "reset", "stamp_ns": ' + "9" * 5000 + "}",
    '{"event": "start", "stamp_ns": 5, "episode": {"a": [1, 2, {"b": null}]}}',
]


def _time(ns: int) -> Time:
    ns = int(ns)
    return Time(sec=int(np.clip(ns // 10**9, -(2**31), 2**31 - 1)), nanosec=int(ns % 10**9))


def joint_state(rng, names, lower, upper, now_ns: int, last_ns: int) -> JointState:
    """A joint state for joints ``names`` with limits ``lower``/``upper`` (n,), ``now_ns`` the
    receivers' clock and ``last_ns`` the newest good stamp sent."""
    n = len(names)
    q = rng.uniform(lower, upper)
    qd = rng.uniform(-1, 1, n)
    names, effort, stamp = list(names), np.zeros(n), now_ns
    kind = int(rng.integers(18))
    if kind == 1:
        i = int(rng.integers(n))
        names, q, qd, effort = (
            names[:i] + names[i + 1 :],
            np.delete(q, i),
            np.delete(qd, i),
            np.delete(effort, i),
        )
    elif kind == 2:
        names[-1] = names[0]
    elif kind == 3:
        q = q[:-1]
    elif kind == 4:
        (q, qd)[int(rng.integers(2))][int(rng.integers(n))] = rng.choice([np.nan, np.inf, -np.inf])
    elif kind == 5:
        q = np.full(n, rng.choice([1e308, -1e308]))
    elif kind == 6:
        qd = np.full(n, rng.choice([1e300, -1e300, 1e20]))
    elif kind == 7:
        names, q, qd, effort = [], np.zeros(0), np.zeros(0), np.zeros(0)
    elif kind == 8:
        effort = np.zeros(n + 3)
    elif kind == 9:
        names = ["".join(chr(int(c)) for c in rng.integers(32, 0x2FFF, 8)) for _ in range(n)]
    elif kind == 10:
        stamp = now_ns + 1000 * 10**9  # a spoofed stamp far ahead of the clock
    elif kind == 11:
        stamp = max(0, last_ns - int(rng.integers(1, 10**11)))  # going backwards
    elif kind == 12:
        stamp = (2**31 - 1) * 10**9
    elif kind == 13:
        stamp = last_ns  # the same stamp again
    elif kind == 14:
        q = upper + 1.0  # beyond the limits
    elif kind == 15:
        names = names + [f"extra{i}" for i in range(5000)]
        q, qd, effort = (np.concatenate([a, np.zeros(5000)]) for a in (q, qd, effort))
    elif kind == 16:
        stamp = -5 * 10**9
    msg = JointState(
        name=names,
        position=np.asarray(q, float).tolist(),
        velocity=np.asarray(qd, float).tolist(),
        effort=np.asarray(effort, float).tolist(),
    )
    msg.header.stamp = _time(stamp)
    return msg


def command(rng, n: int, last_ns: int) -> Float64MultiArray:
    """A torque command for ``n`` joints (good ones untagged or tagged with ``last_ns``)."""
    data = rng.uniform(-0.5, 0.5, n)
    label = None
    kind = int(rng.integers(12))
    if kind == 1:
        data = data[:-1]
    elif kind == 2:
        data[int(rng.integers(n))] = rng.choice([np.nan, np.inf])
    elif kind == 3:
        data = np.full(n, rng.choice([1e308, -1e308]))
    elif kind == 4:
        label = str(
            rng.choice(
                [
                    "stamp=abc",
                    "stamp=-5",
                    "stamp=" + "9" * 5000,
                    "stamp=1e9",
                    "stamp=",
                    "stamp= 7",
                    "stamp=0x10",
                ]
            )
        )
    elif kind == 5:
        data = np.zeros(0)
    elif kind == 6:
        data = rng.uniform(-1, 1, 10_000)
    elif kind == 7:
        label = f"stamp={last_ns}"
    elif kind == 8:
        label = f"stamp={2**80}"
    msg = Float64MultiArray(data=np.asarray(data, float).tolist())
    if label is not None:
        msg.layout.dim = [MultiArrayDimension(label=label, size=len(msg.data), stride=1)]
    return msg


def _mutated(rng, good: bytes) -> bytes:
    data = bytearray(good)
    kind = int(rng.integers(6))
    if kind == 0:
        for _ in range(int(rng.integers(1, 10))):
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        data = data[: int(rng.integers(len(data)))]
    elif kind == 2:
        data = bytearray(rng.bytes(int(rng.integers(0, 4000))))
    elif kind == 3:
        data[:8] = (2**62).to_bytes(8, "little")
    elif kind == 4:
        i = int(rng.integers(len(data)))
        data[i : i + 8] = rng.bytes(8)
    else:
        data = bytearray()
    return bytes(data)


def _resigned(good: bytes, **meta_changes) -> bytes:
    """``good`` with its metadata changed and a valid checksum (an adversary's artifact)."""
    _, meta = artifacts.read_header(good)
    tensors = safetensors.numpy.load(good)
    return signed(tensors, json.dumps(meta | meta_changes))


def controller(rng, good: bytes, names, dt_ns: int, now_ns: int) -> UInt8MultiArray:
    """A controller artifact for ``names`` at step ``dt_ns`` (``good``: a valid one)."""
    n, T = len(names), int(rng.integers(1, 30))
    kind = int(rng.integers(10))
    if kind == 0:
        data = good
    elif kind in (1, 2):  # well-formed, absurd numbers: 1e300, gains of 1e6, noise of 1e4
        scale = rng.choice([1e300, 1e6, 1e4])
        data = raw_controller(
            np.zeros((T, 2 * n)),
            rng.normal(0, scale, (T, n)),
            np.full((T, n, 2 * n), scale),
            np.zeros((T, n)),
            np.broadcast_to(np.eye(n) * scale, (T, n, n)),
            dt_ns=dt_ns,
            start_ns=now_ns,
            joint_names=names,
        )
    elif kind == 3:
        data = _resigned(good, joint_names=list(names[::-1]))
    elif kind == 4:
        data = _resigned(good, state_layout="q,qd,ee", dt_ns=-5)
    elif kind == 5:
        data = _resigned(good, start_ns=2**70, valid_until_ns="soon")
    else:
        data = _mutated(rng, good)
    return UInt8MultiArray(data=data)


def artifact(rng, good: bytes, allow_good: bool = True) -> UInt8MultiArray:
    """A model or policy artifact (``good``: a valid one, sent now and then if ``allow_good``)."""
    kind = int(rng.integers(0 if allow_good else 1, 10))
    if kind == 0:
        data = good
    elif kind == 1:
        data = _resigned(good, info={"version": "abc", "seen_until_ns": "x"})
    elif kind == 2:
        data = _resigned(good, info=[1, 2, 3])
    elif kind == 3:
        data = _resigned(good, info={"version": -3, "transitions": 1e300})
    elif kind == 4:
        data = _resigned(good, joint_names=["a", "b"], dt=-1.0, robot="other")
    elif kind == 5:
        data = _resigned(good, schema="mbrl_ros/lg_controller")
    else:
        data = _mutated(rng, good)
    return UInt8MultiArray(data=data)


def target(rng, now_ns: int) -> PointStamped:
    msg = PointStamped()
    point = rng.uniform(-0.3, 0.3, 3)
    stamp = int(rng.integers(0, max(1, now_ns)))
    kind = int(rng.integers(8))
    if kind == 1:
        point[int(rng.integers(3))] = rng.choice([np.nan, np.inf, -np.inf])
    elif kind == 2:
        point = np.full(3, rng.choice([1e308, -1e308]))
    elif kind == 3:
        point = np.array([100.0, 0.0, 0.0])
    elif kind == 4:
        stamp = -(10**9)
    elif kind == 5:
        stamp = (2**31 - 1) * 10**9
    msg.header.stamp = _time(stamp)
    msg.header.frame_id = "base_link" if kind != 6 else "\x00" * 1000
    msg.point.x, msg.point.y, msg.point.z = (float(v) for v in point)
    return msg


def episode_event(rng, last_ns: int) -> String:
    kind = int(rng.integers(len(NASTY_TEXT) + 3))
    if kind == 0:
        text = DEEP_JSON
    elif kind == 1:
        text = "x" * 100_000
    elif kind == 2:
        text = json.dumps(
            {
                "event": str(rng.choice(["reset", "start", "end"])),
                "episode": int(rng.integers(100)),
                "stamp_ns": int(rng.integers(0, max(1, last_ns))),
            }
        )
    else:
        text = NASTY_TEXT[kind - 3]
    return String(data=text)


def heartbeat(rng, now_ns: int) -> Header:
    msg = Header(frame_id=str(rng.choice(["mpc_planner", "", "\x00" * 100, "é" * 500])))
    msg.stamp = _time(int(rng.choice([now_ns, 0, (2**31 - 1) * 10**9])))
    return msg


def diagnostics(rng) -> DiagnosticArray:
    values = [
        KeyValue(
            key="plan_rate_hz",
            value=str(rng.choice(["abc", "nan", "inf", "1e999", "-5", "", "12.5", "\x00"])),
        )
    ]
    status = DiagnosticStatus(
        level=bytes([int(rng.integers(0, 4))]),
        name=str(rng.choice(["mpc_planner: planner", "mpc_planner:", "", "x" * 1000])),
        hardware_id="fuzz",
        values=values * int(rng.integers(1, 5)),
    )
    return DiagnosticArray(status=[status] * int(rng.integers(1, 4)))
