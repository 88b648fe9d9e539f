"""Resampler: real-robot streams (jittered 500 Hz wall-clock joint states with drops, commands
tagged with their send time) against the exact solution of a linear ODE under piecewise-constant
torque (scipy.linalg.expm), the closed-form time-weighted mean of the commands, GravityModel,
gaps, arrival order, and the plain builder on a lockstep stream."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm
from std_msgs.msg import String

from mbrl_ros.common.msgconv import MessageError
from mbrl_ros.data.errors import StampOrderError
from mbrl_ros.data.resample import Resampler
from mbrl_ros.data.topics import COMMANDS, EVENTS, STATES, episode_event_json
from mbrl_ros.data.transitions import TransitionBuilder
from mbrl_ros.nodes.messages import command_msg, joint_state_msg
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.gravity import GravityModel, JointGravity

NAMES = ("a", "b")
B = np.array([2.0, 0.5])  # q'' = B u (rad/s² per N·m), per joint
T0 = 1_764_000_000_123_456_789  # wall-clock stamp of the first state (ns)
PERIOD_NS = 10_000_000  # model control period


def robot_stream(
    seed: int,
    seconds: float = 2.0,
    rate: float = 500.0,
    jitter: float = 0.3e-3,
    drop: float = 0.05,
    command_every: float = 7e-3,
    names=NAMES,
    b=B,
    holes=(),
    v0: float = 0.5,
    t0: int = T0,
) -> dict:
    """A double integrator q'' = b·u under commands switching at random times, its exact state
    at the stamps of jittered joint states (some dropped, none in ``holes`` = [(from, to)] s)
    from stamp ``t0`` on, at rest at velocity ``v0`` before the first command.
    Returns stamps (ns), x (exact, (m, 2n)), commands [(tag ns, u)], and ``exact(t_ns)``."""
    rng = np.random.default_rng(seed)
    n = len(names)
    nominal = np.arange(0.0, seconds, 1.0 / rate)
    t = nominal + rng.uniform(-jitter, jitter, nominal.size)
    t[0] = 0.0
    keep = (rng.random(t.size) > drop) | (np.arange(t.size) == 0)
    for lo, hi in holes:
        keep &= ~((t > lo) & (t < hi))
    t = t[keep]
    tags = np.cumsum(rng.exponential(command_every, int(3 * seconds / command_every))) - 5e-3
    tags = tags[tags < seconds + 0.05]
    us = rng.normal(0.0, 3.0, (tags.size, n))
    stamps = t0 + np.round(t * 1e9).astype(np.int64)
    tag_ns = t0 + np.round(tags * 1e9).astype(np.int64)

    a_mat = np.zeros((2 * n + 1, 2 * n + 1))
    a_mat[:n, n : 2 * n] = np.eye(n)

    def exact(times_ns: np.ndarray) -> np.ndarray:
        """x(t) = (q, qd) from x(first tag) = (0.3, ..., -0.2; v0, ...) by expm per piece."""
        order = np.argsort(times_ns)
        out = np.empty((len(times_ns), 2 * n))
        x = np.concatenate([np.linspace(0.3, -0.2, n), np.full(n, v0), [1.0]])
        now, i = tag_ns[0], 0
        for j in order:
            target = times_ns[j]
            while True:
                end = min(target, tag_ns[i + 1]) if i + 1 < tag_ns.size else target
                m = a_mat.copy()
                m[n : 2 * n, -1] = b * us[i]
                x = expm(m * ((end - now) * 1e-9)) @ x
                now = end
                if end == target:
                    break
                i += 1
            out[j] = x[:-1]
        return out

    return {
        "stamps": stamps,
        "x": exact(stamps),
        "commands": list(zip(tag_ns, us)),
        "exact": exact,
        "tags": tag_ns,
        "u": us,
        "names": names,
        "b": b,
    }


def messages(stream: dict, events=()) -> list[tuple[str, object]]:
    """(topic, message) in time order: a command when sent, a state when stamped, an event
    (kind, stamp ns) just before the first state at or after its stamp."""
    n = len(stream["names"])
    timed = [
        (int(s), 1, STATES, joint_state_msg(int(s), stream["names"], x[:n], x[n:], np.zeros(n)))
        for s, x in zip(stream["stamps"], stream["x"])
    ]
    timed += [(int(tag), 0, COMMANDS, command_msg(u, int(tag))) for tag, u in stream["commands"]]
    for kind, stamp in events:
        first = stream["stamps"][np.searchsorted(stream["stamps"], stamp)]
        timed.append((int(first), 0, EVENTS, String(data=episode_event_json(kind, 1, stamp))))
    return [(topic, msg) for _, _, topic, msg in sorted(timed, key=lambda m: m[:2])]


def built(msgs, names):
    """The plain lockstep TransitionBuilder's transitions of (topic, message) pairs."""
    builder = TransitionBuilder(names, PERIOD_NS / 1e9)
    for topic, msg in msgs:
        builder.feed(topic, msg)
    builder.finish()
    return builder.take()


def resample(msgs, names=NAMES, **kwargs) -> tuple:
    r = Resampler(names, PERIOD_NS / 1e9, **kwargs)
    for topic, msg in msgs:
        r.feed(topic, msg)
    r.finish()
    return r.take(), r


def mean_command(stream: dict, t0: int, t1: int, torque=None) -> np.ndarray:
    """Closed form: Σ u_i · |[tag_i, tag_i+1) ∩ [t0, t1)| / (t1 - t0)."""
    tags, us = stream["tags"], stream["u"] if torque is None else torque
    total = np.zeros(us.shape[1])
    for i in range(tags.size):
        end = tags[i + 1] if i + 1 < tags.size else np.iinfo(np.int64).max
        total += us[i] * max(0, min(end, t1) - max(tags[i], t0))
    return total / (t1 - t0)


def interpolation_bound(stream: dict, t: int) -> np.ndarray:
    """Per state component, the largest error of Hermite q / linear qd at t between the
    bracketing states: zero while the acceleration is constant; each switch of it by Δa inside
    the bracket (step h) adds 1.2·h²·|Δa| to q and h·|Δa|/4 to qd (the interpolants of the
    kink ((t-τ)+)²·Δa/2 and its derivative)."""
    s = stream["stamps"]
    j = np.searchsorted(s, t)
    if s[j] == t:
        return np.full(2 * len(stream["names"]), 1e-9)
    lo, hi = s[j - 1], s[j]
    h = (hi - lo) * 1e-9
    inside = np.flatnonzero((stream["tags"] > lo) & (stream["tags"] < hi))
    jump = sum(
        (np.abs(stream["b"] * (stream["u"][i] - stream["u"][i - 1])) for i in inside),
        np.zeros(len(stream["names"])),
    )
    return np.concatenate([1.2 * h * h * jump, h * jump / 4]) + 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transitions_match_the_exact_solution_and_the_mean_command(seed):
    stream = robot_stream(seed)
    ds, r = resample(messages(stream))
    stamps = ds.stamps
    assert np.all((stamps - T0) % PERIOD_NS == 0)  # the grid from the first state's stamp
    assert len(ds) >= 150  # of 199 intervals; drops break a few
    assert r.resample_counts["state_gap"] == 199 - len(ds) - r.resample_counts["no_command"]
    exact_s, exact_next = stream["exact"](stamps), stream["exact"](stamps + PERIOD_NS)
    for k, t in enumerate(stamps):
        assert np.all(np.abs(ds.states[k] - exact_s[k]) <= interpolation_bound(stream, t))
        assert np.all(
            np.abs(ds.next_states[k] - exact_next[k]) <= interpolation_bound(stream, t + PERIOD_NS)
        )
        np.testing.assert_allclose(
            ds.actions[k], mean_command(stream, t, t + PERIOD_NS), rtol=1e-12, atol=1e-12
        )
    assert 1.9e-3 < r.source_period < 2.1e-3
    assert np.all(ds.episodes == 0)


def test_a_gap_in_the_states_breaks_the_chain_and_only_there():
    stream = robot_stream(3, drop=0.0, holes=[(0.5, 0.53)])
    ds, r = resample(messages(stream))
    hole = (T0 + int(0.5e9), T0 + int(0.53e9))
    overlaps = (ds.stamps < hole[1]) & (ds.stamps + PERIOD_NS > hole[0])
    assert not overlaps.any()
    assert r.resample_counts["state_gap"] >= 3
    assert len(ds) == 199 - r.resample_counts["state_gap"] - r.resample_counts["no_command"]
    assert (ds.stamps < hole[0]).sum() > 40 and (ds.stamps > hole[1]).sum() > 130


def test_explicit_max_gap_and_command_timeout():
    stream = robot_stream(4, drop=0.0)
    ds, r = resample(messages(stream), max_gap=1e-3)  # every 2 ms step is a gap
    assert len(ds) == 0 and r.resample_counts["state_gap"] == 199
    stream = robot_stream(4, drop=0.0, command_every=0.02)
    ds, r = resample(messages(stream), command_timeout=0.015)
    assert r.resample_counts["stale_command"] > 0
    tags = stream["tags"]
    for t in ds.stamps:  # every command in force over a kept interval is younger than 15 ms
        first = np.searchsorted(tags, t, side="right") - 1
        last = np.searchsorted(tags, t + PERIOD_NS, side="left") - 1
        ends = np.append(tags[first + 1 : last + 1], t + PERIOD_NS)
        assert np.all(ends - tags[first : last + 1] <= 15_000_000)


def test_gravity_is_subtracted_at_each_command_time():
    robot = load_robot("arm7")
    gravity = GravityModel(robot)
    names = tuple(reversed(robot.joint_names))  # a joint order other than the URDF's
    n = len(names)
    rng = np.random.default_rng(5)
    v = np.linspace(0.4, -0.3, n)  # constant velocity: Hermite is exact
    stamps = T0 + np.cumsum(rng.uniform(1.5e6, 2.5e6, 400)).astype(np.int64)
    tags = stamps[0] - 3_000_000 + np.cumsum(rng.uniform(2e6, 1.2e7, 100)).astype(np.int64)
    us = rng.normal(0, 2.0, (tags.size, n))
    q_at = lambda t: np.linspace(0.2, -0.4, n) + v * (t - stamps[0]) * 1e-9  # noqa: E731
    msgs = sorted(
        [
            (int(s), 1, STATES, joint_state_msg(int(s), names, q_at(s), v, np.zeros(n)))
            for s in stamps
        ]
        + [(int(t), 0, COMMANDS, command_msg(u, int(t))) for t, u in zip(tags, us)],
        key=lambda m: m[:2],
    )
    ds, _ = resample([m[2:] for m in msgs], names=names, gravity=gravity)
    assert len(ds) > 50
    # g in the URDF's joint order, at q(τ) (the first state's q for a tag before it)
    g = np.stack([gravity.torque(q_at(max(t, stamps[0]))[::-1])[::-1] for t in tags])
    stream = {"tags": tags, "u": us}
    for k, t in enumerate(ds.stamps):
        np.testing.assert_allclose(
            ds.actions[k], mean_command(stream, t, t + PERIOD_NS, us - g), rtol=1e-9, atol=1e-9
        )
    assert np.abs(g).max() > 0.1  # the arm's weight does matter here
    with pytest.raises(ValueError, match="all joints"):
        Resampler(names[:1], 0.01, gravity=gravity)


def test_arrival_order_does_not_change_the_result():
    stream = robot_stream(6, seconds=1.0)
    events = [("reset", T0 + 333_333_333), ("end", T0 + 700_000_000), ("start", T0 + 750_000_000)]
    ordered = messages(stream, events)
    reference, ref_r = resample(ordered)
    assert set(reference.episodes) == {0, 1, 2} and ref_r.counts["outside_episode"] >= 4
    assert np.any(reference.stamps == T0 + 333_333_333)  # the reset re-anchored the grid
    assert np.any(reference.stamps == T0 + 750_000_000)
    rng = np.random.default_rng(7)
    others = [m for m in ordered if m[0] != COMMANDS]  # states and events, in order
    commands = [m for m in ordered if m[0] == COMMANDS]
    sent_at = np.cumsum([m[0] != COMMANDS for m in ordered])[[m[0] == COMMANDS for m in ordered]]
    for _ in range(5):  # commands from 20 messages early to 60 late, in order; events in time
        at = np.maximum.accumulate(
            np.clip(sent_at + rng.integers(-20, 60, len(commands)), 0, len(others))
        )
        shuffled = []
        for i, msg in enumerate(others + [None]):
            shuffled += [commands[c] for c in np.flatnonzero(at == i)]
            shuffled += [msg] if msg is not None else []
        got, _ = resample(shuffled)
        for field in ("states", "actions", "next_states", "episodes", "stamps"):
            np.testing.assert_array_equal(getattr(got, field), getattr(reference, field))


def test_a_lockstep_stream_gives_the_plain_builders_transitions():
    rng = np.random.default_rng(8)
    msgs = []
    for k in range(300):
        stamp = T0 + k * PERIOD_NS
        if k in (100, 200):
            msgs.append((EVENTS, String(data=episode_event_json("reset", k // 100, stamp))))
        msgs.append(
            (
                STATES,
                joint_state_msg(stamp, NAMES, rng.normal(size=2), rng.normal(size=2), np.zeros(2)),
            )
        )
        if k != 150:  # one command lost
            msgs.append((COMMANDS, command_msg(rng.normal(size=2), stamp)))
    expected = built(msgs, NAMES)
    got, r = resample(msgs)
    # the lost command: the builder has no command for 150, the resampler holds 149's over it
    keep = expected.stamps != T0 + 150 * PERIOD_NS
    assert len(got) == len(expected) + 1 == 297
    g = got.stamps != T0 + 150 * PERIOD_NS
    for field in ("states", "actions", "next_states", "episodes", "stamps"):
        np.testing.assert_array_equal(getattr(got, field)[g], getattr(expected, field)[keep])


def test_bad_input():
    r = Resampler(NAMES, 0.01)
    with pytest.raises(MessageError, match="no stamp tag"):
        r.add_command(command_msg(np.zeros(2)))
    r.add_state(joint_state_msg(T0, NAMES, np.zeros(2), np.zeros(2), np.zeros(2)))
    r.add_state(joint_state_msg(T0 + 2_000_000, NAMES, np.zeros(2), np.zeros(2), np.zeros(2)))
    with pytest.raises(StampOrderError, match="goes backwards"):
        r.add_state(joint_state_msg(T0 - 1, NAMES, np.zeros(2), np.zeros(2), np.zeros(2)))
    r.add_command(command_msg(np.ones(2), T0))
    r.add_command(command_msg(np.ones(2), T0 - 5))
    assert r.resample_counts["command_order"] == 1
    for bad in (dict(max_gap=0.0), dict(command_timeout=-1.0), dict(command_wait=0)):
        with pytest.raises(ValueError):
            Resampler(NAMES, 0.01, **bad)


def test_lockstep_gravity_subtraction_is_the_resamplers():
    """On lockstep data (each command applied at its state) JointGravity.subtract takes g(q_k)
    off each action, the same as the resampler at each command's tag."""
    robot = load_robot("arm7")
    gravity = GravityModel(robot)
    names = tuple(reversed(robot.joint_names))
    rng = np.random.default_rng(9)
    msgs = []
    for k in range(60):
        stamp = T0 + k * PERIOD_NS
        msgs.append(
            (
                STATES,
                joint_state_msg(
                    stamp, names, rng.uniform(-1, 1, 7), rng.normal(size=7), np.zeros(7)
                ),
            )
        )
        msgs.append((COMMANDS, command_msg(rng.normal(size=7), stamp)))
    plain = built(msgs, names)
    lockstep = JointGravity(gravity, names).subtract(plain)
    g = np.stack([gravity.torque(s[:7][::-1])[::-1] for s in plain.states])
    np.testing.assert_allclose(lockstep.actions, plain.actions - g, rtol=1e-12, atol=1e-12)
    resampled, _ = resample(msgs, names=names, gravity=gravity)
    np.testing.assert_allclose(resampled.actions, lockstep.actions, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(resampled.states, plain.states)
