"""One guided-policy-search sample from a real arm's streams (pure core).

On a robot a sample starts at the state at which the arm has settled at the condition's pose
(stamp ``start_ns``, any time base) and runs T control periods of joint-state stamps. Joint
states come at the robot's rate and commands are tagged with the time they were sent
(``msgconv.command_tag``), so ``StreamSample`` resamples them onto the controller's grid
t_k = start_ns + k·period with the fitter's ``data.resample.Resampler`` (one implementation of
the rules): X[k] the state at t_k, U[k] the command in force over [t_k, t_k+1) (time-weighted
mean; minus g(q) with a ``gravity`` model when the executor added it: the controller's own
output on a weightless arm). A sample whose grid has a hole (a state gap, no command, a stale
command) cannot be used: ``arrays`` raises SampleError naming the dropped intervals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mbrl_ros.common.msgconv import JointSample, seconds_to_ns
from mbrl_ros.data.errors import StampOrderError
from mbrl_ros.data.resample import Resampler


class SampleError(ValueError):
    """The streams do not give a whole sample (the message says what is missing)."""


class StreamSample:
    """X (T+1, 2n) rad, rad/s and U (T, n) N·m of one sample of ``T`` steps of ``period`` s from
    the settled state ``start``; ``before``: commands (std_msgs/Float64MultiArray, send-time
    tagged) received before it, oldest first (the one in force at the start is among them);
    ``gravity``, ``command_timeout``, ``max_gap`` (s): the Resampler's."""

    def __init__(
        self,
        joint_names: Sequence[str],
        period: float,
        T: int,
        start: JointSample,
        before=(),
        gravity=None,
        command_timeout: float | None = None,
        max_gap: float | None = None,
    ):
        if T < 1:
            raise ValueError(f"a sample needs T ≥ 1 steps, got {T}")
        self.T, self.start_ns = T, start.stamp_ns
        self.period_ns = seconds_to_ns(period)
        self.end_ns = self.start_ns + T * self.period_ns
        self.resampler = Resampler(
            joint_names, period, gravity=gravity, max_gap=max_gap, command_timeout=command_timeout
        )
        self.problem = ""  # why the sample cannot be whole (set on a broken stream)
        self._newest = start.stamp_ns
        for msg in before:
            self.add_command(msg)
        self.add_sample(start)

    def add_sample(self, s: JointSample) -> None:
        """A joint state in ``joint_names`` order."""
        if self.done:
            return
        try:
            self.resampler.add_sample(s)
        except StampOrderError as exc:
            self.problem = str(exc)
        self._newest = max(self._newest, s.stamp_ns)

    def add_command(self, msg) -> None:
        """A send-time-tagged command; MessageError if malformed or untagged."""
        if self.done:
            return
        self.resampler.add_command(msg)

    @property
    def done(self) -> bool:
        """Every interval of the sample is decided (or the stream broke)."""
        return bool(self.problem) or (
            self._newest >= self.end_ns and self.resampler.undecided(self.end_ns + 1) == 0
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, U) once ``done``; SampleError if the sample is not whole."""
        if not self.done:
            raise SampleError(
                f"the sample is not complete: states up to {self._newest} ns of {self.end_ns} ns"
            )
        if self.problem:
            raise SampleError(self.problem)
        data = self.resampler.take()
        k = (data.stamps - self.start_ns) // self.period_ns
        keep = np.flatnonzero((data.stamps >= self.start_ns) & (k < self.T))
        keep = keep[np.argsort(k[keep])]
        missing = sorted(set(range(self.T)) - set(k[keep].tolist()))
        if missing:
            raise SampleError(
                f"{len(missing)} of {self.T} intervals dropped (first "
                f"{missing[:5]}): {self._reasons()}"
            )
        return np.concatenate([data.states[keep], data.next_states[keep[-1:]]]), data.actions[keep]

    def _reasons(self) -> dict:
        return dict(self.resampler.resample_counts) | dict(self.resampler.counts)
