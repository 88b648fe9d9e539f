"""StreamSample: a GPS sample from a jittered 500 Hz stream with send-time-tagged commands equals
the grid states of the known motion and the time-weighted mean of the commands in force over each
interval (computed here by summing over 1 µs); a hole in the stream is named, never used."""

import numpy as np
import pytest

from mbrl_ros.common.msgconv import JointSample
from mbrl_ros.nodes.messages import command_msg
from mbrl_ros.trajopt.stream_sample import SampleError, StreamSample

NAMES = ("a", "b")
PERIOD, T = 0.01, 20
START = 1_700_000_000_123_456_789  # a wall-clock stamp
A, B, C = np.array([0.3, -0.2]), np.array([0.5, 0.1]), np.array([-0.4, 0.8])


def state(t_ns: int) -> JointSample:
    """The constant-acceleration motion q = A + B τ + C τ² (τ s after START): Hermite-exact."""
    tau = (t_ns - START) * 1e-9
    return JointSample(t_ns, A + B * tau + C * tau * tau, B + 2 * C * tau, np.zeros(2))


def stream(rng, drop=None):
    """States every 2 ms ± 0.2 ms from START to 1.03 s later; commands sent 0.3-1.5 ms after
    each state (whole µs after START); the command in force at START was sent 1 ms before it."""
    stamps = [START] + [START + int(k * 2e6 + rng.normal(0, 2e5)) for k in range(1, 116)]
    if drop is not None:
        stamps = [s for s in stamps if not drop[0] < s < drop[1]]
    cmds = [(START - 1_000_000, rng.normal(size=2))]
    cmds += [
        (START + 1000 * ((s - START + int(rng.uniform(3e5, 1.5e6))) // 1000), rng.normal(size=2))
        for s in stamps
    ]  # on whole µs from START: summed exactly
    return stamps, cmds


def expected_actions(cmds):
    """Mean over each [t_k, t_k+1) of the command in force, summed over 1 µs steps."""
    tags = np.array([c[0] for c in cmds])
    out = []
    for k in range(T):
        t = START + k * 10_000_000 + np.arange(0, 10_000_000, 1000)
        idx = np.searchsorted(tags, t, side="right") - 1
        out.append(np.mean([cmds[i][1] for i in idx], axis=0))
    return np.array(out)


def run(stamps, cmds):
    sample = StreamSample(
        NAMES, PERIOD, T, state(stamps[0]), before=[command_msg(cmds[0][1], cmds[0][0])]
    )
    for s, (tag, u) in zip(stamps[1:], cmds[1:]):  # each state, then the answer to the one before
        sample.add_sample(state(s))
        sample.add_command(command_msg(u, tag))
    return sample


def test_grid_states_and_interval_means():
    stamps, cmds = stream(np.random.default_rng(0))
    sample = run(stamps, cmds)
    assert sample.done
    X, U = sample.arrays()
    grid = [state(START + k * 10_000_000) for k in range(T + 1)]
    np.testing.assert_allclose(
        X, [np.concatenate([g.position, g.velocity]) for g in grid], atol=1e-12
    )
    np.testing.assert_allclose(U, expected_actions(cmds), atol=1e-9)


def test_not_done_before_the_end_and_holes_are_named():
    stamps, cmds = stream(np.random.default_rng(1))
    short = run(stamps[:60], cmds[:60])  # 0.12 s of a 0.2 s sample
    assert not short.done
    with pytest.raises(SampleError, match="not complete"):
        short.arrays()
    gap = (START + 50_000_000, START + 70_000_000)  # 20 ms without states
    stamps, cmds = stream(np.random.default_rng(1), drop=gap)
    holed = run(stamps, cmds)
    assert holed.done
    with pytest.raises(SampleError, match=r"intervals dropped \(first \[4, 5, 6"):
        holed.arrays()
