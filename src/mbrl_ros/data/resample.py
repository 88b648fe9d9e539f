"""Transitions from real joint-state streams: resampling onto the model's control period.

A real arm publishes joint states at its own rate (100–1000 Hz, jittered, some dropped, stamped
with wall-clock time) and the executor tags each command with the time it sent it: the command is
in force on the robot from its tag until the next command's tag (zero-order hold). ``Resampler``
turns such streams into grid states and interval actions and feeds them to a
``TransitionBuilder`` (grid states, and commands tagged with grid stamps), so episodes, events,
the decision rules and ``undecided()`` keep their one implementation. Same input interface as the
builder (``feed``, ``add_state``, ``add_sample``, ``add_command``, ``add_event``, ``finish``,
``take``); commands must be tagged (an untagged command has no known time of application).

The rules, for grid stamps t_k = t0 + k·period (ns; t0 = the segment's first state stamp, and a
"reset"/"start" event at b re-anchors the grid so that b is a grid stamp):

* grid state at t: q by cubic Hermite interpolation between the bracketing states a ≤ t ≤ b
  using their velocities as slopes (exact while the acceleration is constant, error O(h⁴) for
  smooth motion), qd by linear interpolation (the Hermite cubic's slope would divide position
  noise by the step h, 1–10 ms: a 1e-5 rad encoder step would become a 0.01 rad/s velocity error).
* action of [t_k, t_k+1): the time-weighted mean of the commands in force over it. With a
  ``GravityModel`` (the robot does not compensate gravity) each command first loses g(q(τ)), q
  interpolated at its tag τ (clamped to the first state of the segment for a tag before it).
* the interval breaks the chain (the builder gets no command for t_k, or no state at a grid stamp
  whose bracket is a gap) when: a source step that overlaps it is longer than ``max_gap`` (default
  2.5 × the median of the segment's last 64 source steps: one dropped state at a steady rate
  passes, two do not; but at least a quarter of the control period, over which the Hermite
  interpolation is still accurate: a loaded robot PC's 5–10 ms hiccups at 500 Hz pass) —
  "state_gap"; no command was sent before t_k — "no_command"; a command in
  force is older than ``command_timeout`` (the robot's own stale-command rule) — "stale_command".
* an interval is decided once a state at or after t_k+1 has come and a command tagged at or after
  t_k+1 (commands come in order from one publisher), or ``command_wait`` states at or after t_k+1
  without one. An event re-anchors the grid only if it comes before the first state stamped at or
  after its stamp (as for the builder, an event published before that state is in time).
* a stamp that goes backwards restarts everything (the builder's StampOrderError, a new segment
  and episode); a repeated stamp is dropped; a command tagged before the previous one is dropped
  ("command_order"); one tagged before the oldest undecided interval is counted ("late_command":
  the intervals before were decided without it) and in force from there on.

``counts`` are the builder's (over grid states), ``resample_counts`` the resampler's own reasons.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import Counter, deque
from collections.abc import Sequence

import numpy as np

from mbrl_ros.common.msgconv import JointSample, MessageError, read_command, seconds_to_ns
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.data.errors import StampOrderError
from mbrl_ros.data.topics import TopicNames, read_episode_event
from mbrl_ros.data.transitions import MessageStream, TransitionBuilder
from mbrl_ros.robot.gravity import JointGravity

GAP_FACTOR = 2.5  # default max_gap: this many times the median source step,
MIN_GAP = 0.25  # but at least this fraction of the control period
RATE_WINDOW = 64  # source steps in the running median


def hermite(t: float, a: JointSample, b: JointSample) -> tuple[np.ndarray, np.ndarray]:
    """(q, qd) at stamp ``t`` (ns) with a.stamp ≤ t ≤ b.stamp: q cubic Hermite (slopes qd),
    qd linear."""
    h = (b.stamp_ns - a.stamp_ns) * 1e-9
    if h <= 0:
        return a.position, a.velocity
    s = (t - a.stamp_ns) / (b.stamp_ns - a.stamp_ns)
    s2, s3 = s * s, s * s * s
    q = (
        (2 * s3 - 3 * s2 + 1) * a.position
        + (s3 - 2 * s2 + s) * h * a.velocity
        + (3 * s2 - 2 * s3) * b.position
        + (s3 - s2) * h * b.velocity
    )
    return q, (1 - s) * a.velocity + s * b.velocity


class Resampler(MessageStream):
    """Joint states at any rate and sent-time-tagged commands → transitions at ``period`` (s).

    ``gravity``: a ``mbrl_ros.robot.gravity.GravityModel`` of a robot with exactly these joints (any
    order) to subtract g(q) from the commands; ``max_gap`` (s) None = automatic (module doc);
    ``command_timeout`` (s) None = commands never expire."""

    def __init__(
        self,
        joint_names: Sequence[str],
        period: float,
        *,
        topics: TopicNames = TopicNames(),
        gravity=None,
        max_gap: float | None = None,
        command_timeout: float | None = None,
        command_wait: int = 1000,
    ):
        self.builder = TransitionBuilder(joint_names, period, topics=topics)
        if max_gap is not None and not (np.isfinite(max_gap) and max_gap > 0):
            raise ValueError(f"max_gap {max_gap} s must be positive")
        if command_timeout is not None and not (
            np.isfinite(command_timeout) and command_timeout > 0
        ):
            raise ValueError(f"command_timeout {command_timeout} s must be positive")
        if command_wait < 1:
            raise ValueError(f"command_wait {command_wait} must be ≥ 1 (states)")
        self.joint_names, self.dt, self.topics = self.builder.joint_names, period, topics
        self._n = len(self.joint_names)
        self._period = seconds_to_ns(period)
        self._max_gap = None if max_gap is None else seconds_to_ns(max_gap)
        self._timeout = None if command_timeout is None else seconds_to_ns(command_timeout)
        self.command_wait = command_wait
        self._gravity = None if gravity is None else JointGravity(gravity, self.joint_names)
        self.resample_counts: Counter = Counter()
        self._reset()

    def _reset(self) -> None:
        self._states: list[JointSample] = []
        self._stamps: list[int] = []
        self._step_ok: list[bool] = []  # the step into state i is within the gap limit
        self._steps: deque[int] = deque()  # the last RATE_WINDOW source steps
        self._sorted: list[int] = []
        self._cmds: list[list] = []  # [tag, torque, torque minus gravity or None]
        self._boundaries: list[int] = []  # reset/start stamps not reached by the grid yet
        self._t: int | None = None  # the oldest undecided grid stamp

    @property
    def counts(self) -> Counter:
        return self.builder.counts

    @property
    def source_period(self) -> float | None:
        """Median source step of the segment's last states (s), None before two states."""
        return self._sorted[len(self._sorted) // 2] * 1e-9 if self._sorted else None

    # -- input -----------------------------------------------------------------------------------
    def add_sample(self, s: JointSample) -> None:
        """A joint state in ``joint_names`` order. Raises StampOrderError."""
        if self._stamps:
            last = self._stamps[-1]
            if s.stamp_ns == last:
                self.resample_counts["repeated_state"] += 1
                return
            if s.stamp_ns < last:
                self.resample_counts["stamp_backwards"] += 1
                self._decide_ready(final=True)
                self._reset()
                self._append(s)
                self._start_grid(s)  # the builder raises StampOrderError if its grid passed s
                raise StampOrderError(
                    f"joint state stamp {s.stamp_ns} ns goes backwards from {last} ns"
                )
        self._append(s)
        if self._t is None:
            self._start_grid(s)
        self._decide_ready()

    def add_command(self, msg) -> None:
        """A std_msgs/Float64MultiArray command tagged with its send time. Raises MessageError
        for a malformed or untagged command."""
        torque, tag = read_command(msg, self._n)
        if tag is None:
            raise MessageError(
                "command has no stamp tag: resampling needs the time each command was applied"
            )
        if self._cmds and tag < self._cmds[-1][0]:
            self.resample_counts["command_order"] += 1
            return
        if self._t is not None and tag < self._t:  # too late for the intervals before _t
            self.resample_counts["late_command"] += 1
        self._cmds.append([tag, torque, None])
        self._decide_ready()

    def add_event(self, msg) -> None:
        """A std_msgs/String episode event. Raises MessageError if malformed."""
        event = read_episode_event(msg)
        if event.kind != "end" and (self._t is None or event.stamp_ns > self._t):
            insort(self._boundaries, event.stamp_ns)
        self.builder.add_event(msg)

    def finish(self) -> None:
        """End of the stream: decide every interval whose states have come, then the builder's
        waiting transitions."""
        self._decide_ready(final=True)
        self.builder.finish()

    def undecided(self, before_ns: int) -> int:
        """Transitions into grid states before ``before_ns`` that are not decided yet."""
        pending = 0 if self._t is None else max(0, -(-(before_ns - self._t) // self._period) - 1)
        return self.builder.undecided(before_ns) + pending

    def take(self) -> Dataset:
        """The transitions decided since the last ``take``."""
        return self.builder.take()

    # -- internals -------------------------------------------------------------------------------
    def _append(self, s: JointSample) -> None:
        ok = True
        if self._stamps:
            step = s.stamp_ns - self._stamps[-1]
            limit = (
                self._max_gap
                if self._max_gap is not None
                else (
                    max(GAP_FACTOR * self._sorted[len(self._sorted) // 2], MIN_GAP * self._period)
                    if self._sorted
                    else None
                )
            )
            ok = limit is None or step <= limit
            self._steps.append(step)
            insort(self._sorted, step)
            if len(self._steps) > RATE_WINDOW:
                del self._sorted[bisect_left(self._sorted, self._steps.popleft())]
        self._states.append(s)
        self._stamps.append(s.stamp_ns)
        self._step_ok.append(ok)

    def _start_grid(self, s: JointSample) -> None:
        self._t = s.stamp_ns
        self._boundaries = [b for b in self._boundaries if b > s.stamp_ns]
        self.builder.add_sample(s)

    def _next_stamp(self, t: int) -> int:
        nxt = t + self._period
        while self._boundaries and self._boundaries[0] <= t:
            self._boundaries.pop(0)
        return min(nxt, self._boundaries[0]) if self._boundaries else nxt

    def _in_force(self, t: int) -> int | None:
        """Index in _cmds of the command in force at t (the last tagged ≤ t), or None."""
        i = bisect_right(self._cmds, t, key=lambda c: c[0]) - 1
        return i if i >= 0 else None

    def _decide_ready(self, final: bool = False) -> None:
        while self._t is not None:
            t0 = self._t
            t1 = self._next_stamp(t0)
            i1 = bisect_left(self._stamps, t1)
            if i1 == len(self._stamps):
                return  # no state at or after t1 yet
            if (
                not final
                and not (self._cmds and self._cmds[-1][0] >= t1)
                and len(self._stamps) - i1 < self.command_wait
            ):
                return
            self._decide(t0, t1, i1)
            self._t = t1
            self._trim(t1)

    def _decide(self, t0: int, t1: int, i1: int) -> None:
        """Decide [t0, t1): the builder gets its command (if the interval is good) and the
        state at t1 (if its bracket is)."""
        i0 = bisect_right(self._stamps, t0) - 1
        reason = None
        if t1 - t0 != self._period:
            reason = "short_interval"  # before a re-anchored boundary: the builder's gap
        elif not all(self._step_ok[i0 + 1 : i1 + 1]):
            reason = "state_gap"
        else:
            action, reason = self._action(t0, t1)
        if reason is None:
            assert action is not None  # _action gives a torque exactly when it gives no reason
            self.builder.add_torque(action, t0)
        else:
            self.resample_counts[reason] += 1
        exact = self._stamps[i1] == t1
        if exact or self._step_ok[i1]:
            a = self._states[i1 if exact else i1 - 1]
            q, qd = hermite(t1, a, self._states[i1])
            self.builder.add_sample(JointSample(t1, q, qd, np.full(self._n, np.nan)))

    def _action(self, t0: int, t1: int) -> tuple[np.ndarray | None, str | None]:
        """Time-weighted mean of the commands in force over [t0, t1), or (None, reason)."""
        i = self._in_force(t0)
        if i is None:
            return None, "no_command"
        pieces = []  # (ns in force within [t0, t1), torque)
        while i < len(self._cmds) and self._cmds[i][0] < t1:
            tag = self._cmds[i][0]
            end = min(self._cmds[i + 1][0], t1) if i + 1 < len(self._cmds) else t1
            if self._timeout is not None and end - tag > self._timeout:
                return None, "stale_command"
            pieces.append((end - max(tag, t0), self._torque(i)))
            i += 1
        if len(pieces) == 1:  # one command over the whole interval: exactly it
            return pieces[0][1], None
        return sum(w * u for w, u in pieces) / (t1 - t0), None

    def _torque(self, i: int) -> np.ndarray:
        cmd = self._cmds[i]
        if self._gravity is None:
            return cmd[1]
        if cmd[2] is None:
            j = bisect_left(self._stamps, cmd[0])
            a, b = (
                (self._states[0], self._states[0])
                if j == 0
                else (self._states[j - 1], self._states[min(j, len(self._states) - 1)])
            )
            q = hermite(min(cmd[0], b.stamp_ns), a, b)[0]
            cmd[2] = cmd[1] - self._gravity(q)
        return cmd[2]

    def _trim(self, t: int) -> None:
        """Forget states and commands that no undecided interval (from ``t``, ns) needs."""
        i0 = bisect_right(self._stamps, t) - 1
        if i0 > 256:
            del self._states[:i0], self._stamps[:i0], self._step_ok[:i0]
        c = self._in_force(t)
        if c is not None and c > 256:
            del self._cmds[:c]
