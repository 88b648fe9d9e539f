"""Episodes on a robot without resets (pure core): homing → settle → run → end → homing …, and
the reset-service variant, on synthetic joint-state streams with wall-clock stamps, jitter and
any origin."""

import numpy as np
import pytest

from mbrl_ros.control.homing import SettleDetector
from mbrl_ros.tasks.robot_episodes import EpisodeSequencer

T0 = 1_796_400_000_123_456_789  # a wall-clock stamp (ns), not 0
MS = 1_000_000
NAMES = ("a", "b")


def settle(goal):
    return SettleDetector(goal, 0.01, 0.05, dwell=0.1, timeout=2.0, joint_names=NAMES)


def sequencer(source="homing", n=3, episode_s=0.5):
    goals = {e: np.array([0.1 * (e + 1), -0.2]) for e in range(n)}
    return EpisodeSequencer(
        n, int(episode_s * 1e9), source, lambda e, q: goals[e], settle, homing_retries=1
    ), goals


def drive(seq, q0, seconds, reach=True, seed=0):
    """Feed ~500 Hz jittered states; the arm approaches the current goal with a 50 ms time
    constant (or stays put with reach=False). Returns every step with the state's stamp."""
    rng = np.random.default_rng(seed)
    steps, q, goal, t = [], np.array(q0, float), None, T0
    while t < T0 + seconds * 1e9:
        qd = np.zeros(2) if goal is None or not reach else (goal - q) / 0.05
        for step in seq.on_state(t, q, qd):
            steps.append(step)
            if step.kind == "home":
                goal = step.goal
        dt = int(2 * MS + rng.normal(0, 0.2 * MS))
        if goal is not None and reach:
            q = goal + (q - goal) * np.exp(-dt * 1e-9 / 0.05)
        t += dt
    return steps


def test_homing_episodes_start_settled_and_last_their_length_from_any_stamp_origin():
    seq, goals = sequencer()
    steps = drive(seq, [0.5, 0.5], 10.0)
    kinds = [s.kind for s in steps]
    assert kinds == ["home", "start", "end"] * 3 and seq.phase == "done"
    for e in range(3):
        home, start, end = steps[3 * e : 3 * e + 3]
        assert home.episode == start.episode == end.episode == e
        np.testing.assert_array_equal(home.goal, goals[e])
        assert start.stamp_ns >= home.stamp_ns + 100 * MS  # dwell 0.1 s inside the tolerance
        assert end.stamp_ns - start.stamp_ns >= 500 * MS > end.stamp_ns - start.stamp_ns - 5 * MS
        assert start.stamp_ns in seq.starts
    assert steps[3].stamp_ns == steps[2].stamp_ns  # homing for episode 1 begins at the end


def test_a_homing_that_does_not_settle_is_retried_then_fails_naming_the_joint():
    seq, _ = sequencer()
    steps = drive(seq, [0.5, 0.5], 5.0, reach=False)
    assert [s.kind for s in steps] == ["home", "home", "failed"]
    assert steps[1].message.startswith("again (1 of 1): homing did not settle within 2 s")
    assert "did not settle within 2 s" in steps[2].message and "a 0.4 rad" in steps[2].message
    assert steps[2].stamp_ns - steps[1].stamp_ns >= 2_000 * MS and seq.phase == "failed"


def test_reset_service_episodes_start_at_rest_where_the_reset_put_the_arm():
    seq, _ = sequencer("service", n=1)
    assert [s.kind for s in seq.on_state(T0, np.zeros(2), np.zeros(2))] == ["reset"]
    assert seq.on_state(T0 + 2 * MS, np.zeros(2), np.zeros(2)) == []  # waiting for the answer
    assert seq.reset_done(True, "", T0 + 2 * MS) == []
    # a state from before the reset, then the arm at rest in its new pose
    assert seq.on_state(T0 + 4 * MS, np.zeros(2), np.zeros(2)) == []
    t, steps = T0 + 6 * MS, []
    while not steps:
        steps = seq.on_state(t, np.array([0.3, 0.1]), np.zeros(2))
        t += 2 * MS
    assert steps[0].kind == "start" and steps[0].stamp_ns == T0 + 106 * MS


def test_a_refused_reset_fails_with_the_services_reason():
    seq, _ = sequencer("service", n=1)
    seq.on_state(T0, np.zeros(2), np.zeros(2))
    (step,) = seq.reset_done(False, "robot in protective stop", T0)
    assert step.kind == "failed" and "robot in protective stop" in step.message


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="homing or service"):
        EpisodeSequencer(1, 10, "clock", lambda e, q: q, settle)
    with pytest.raises(ValueError, match="positive length"):
        EpisodeSequencer(1, 0, "homing", lambda e, q: q, settle)
