"""(s, a, s') transitions from joint states, torque commands and episode events.

One builder serves live topics (fed from rclpy callbacks) and bags (fed from rosbags
deserialisation): ``msgconv``'s readers are duck-typed and accept both kinds of message. Feed
messages in arrival order; take the transitions as a ``Dataset``.

The rules, for a transition from state s_k to the next state s_{k+1}:

* state: joint positions then velocities in ``joint_names`` order (rad, rad/s); stamps are the
  JointState header stamps (ns).
* action (N·m, ``joint_names`` order): a command tagged with stamp T (see ``msgconv``) is the action
  of the state stamped T, whatever order the topics arrive in (lockstep: the simulator applies
  exactly that command). Without a tag for s_k, the latest untagged command received before
  s_{k+1} arrived, held since (zero-order hold, as ros2_control applies commands), provided it was
  received after the last episode boundary before s_k.
* episodes: a "reset" or "start" event at stamp b makes the state at b the first of a new episode
  (a reset and a start at the same stamp are one boundary, whichever arrives first, and a
  boundary that arrives after the first decisions of the episode it begins is that episode's);
  an "end"
  event at e makes the state at e the last of its episode, and states after it belong to none.
* no transition when: s_{k+1} − s_k differs from dt by more than ``gap_tolerance``·dt (states
  missing or late); a reset/start b lies in s_k < b ≤ s_{k+1}; s_{k+1} lies after an "end" (s_k
  outside an episode, or an end in s_k ≤ e < s_{k+1}); no command applies (e.g. before the
  first command).
* a repeated stamp is dropped; a stamp that goes backwards raises StampOrderError and the builder
  starts a new segment (and episode) at that state.
* a transition is decided when the state after s_{k+1} has arrived and its tagged command too
  (unless the stream holds untagged commands only and one is held). Commands can come late in
  bulk (a subscription that was still connecting gets the ones it missed from the publisher's
  history), but in order (one publisher; DDS keeps its order): so a transition is decided without
  its command once a command for a later state that has arrived has come, or ``command_wait``
  (1000) more states have come without it. A command tagged more than ``command_wait`` periods
  after the newest state answers nothing that can come in time and is dropped
  ("future_command"). So the result does not depend on the order in which the three topics' messages
  are processed (a busy node takes one message per topic in turn): an event published before the
  state it applies to, and every command, are in time. ``undecided(before_ns)`` tells whether
  transitions into states before a stamp still wait (the fitter fits only when none does).

Episode ids: 0 until the first boundary, then +1 at every new reset/start stamp (and at a stamp
that goes backwards). ``counts`` tallies every rejected candidate by reason.
"""

from __future__ import annotations

import abc
from bisect import insort
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mbrl_ros.common.msgconv import JointSample, read_command, read_joint_state, seconds_to_ns
from mbrl_ros.data.dataset import Dataset, joint_state_names
from mbrl_ros.data.errors import StampOrderError
from mbrl_ros.data.topics import TopicNames, read_episode_event


@dataclass
class _Candidate:
    s: JointSample
    s_next: JointSample
    held: np.ndarray | None  # latest untagged command when s_next arrived
    held_after: int  # stamp of the latest state when that command arrived (ns)
    later: int = 0  # states that arrived after s_next


class MessageStream(abc.ABC):
    """Messages of the three topics (``self.topics``) into ``add_sample``, ``add_command`` and
    ``add_event`` (the transition builder's and the resampler's one way in)."""

    topics: TopicNames
    joint_names: tuple[str, ...]

    @abc.abstractmethod
    def add_sample(self, s: JointSample) -> None:
        """A joint state sample."""

    @abc.abstractmethod
    def add_command(self, msg) -> None:
        """A command message."""

    @abc.abstractmethod
    def add_event(self, msg) -> None:
        """An episode event message."""

    def feed(self, topic: str, msg) -> None:
        """Dispatch a message by topic name; other topics are ignored."""
        if topic == self.topics.states:
            self.add_state(msg)
        elif topic == self.topics.commands:
            self.add_command(msg)
        elif topic == self.topics.events:
            self.add_event(msg)

    def add_state(self, msg) -> None:
        """A sensor_msgs/JointState. Raises MessageError (malformed) or StampOrderError."""
        self.add_sample(read_joint_state(msg, self.joint_names))


class TransitionBuilder(MessageStream):
    """Aligns joint states and commands into (s, a, s') at the control period ``dt`` (s)."""

    def __init__(
        self,
        joint_names: Sequence[str],
        dt: float,
        *,
        topics: TopicNames = TopicNames(),
        gap_tolerance: float = 0.1,
        command_wait: int = 1000,
    ):
        if not joint_names or len(set(joint_names)) != len(joint_names):
            raise ValueError(f"joint_names {list(joint_names)} must be non-empty and unique")
        if not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"control period dt = {dt} s must be positive")
        if not 0.0 < gap_tolerance < 1.0:
            raise ValueError(f"gap_tolerance {gap_tolerance} must be in (0, 1) (fraction of dt)")
        if command_wait < 1:
            raise ValueError(f"command_wait {command_wait} must be ≥ 1 (states)")
        self.joint_names = tuple(joint_names)
        self.dt = float(dt)
        self.topics = topics
        self.command_wait = command_wait
        self.counts: Counter = Counter()
        self._dt_ns = seconds_to_ns(dt)
        self._tol_ns = gap_tolerance * self._dt_ns
        self._n = len(self.joint_names)
        self._state_names = joint_state_names(self.joint_names)
        self._prev: JointSample | None = None
        self._candidates: deque[_Candidate] = deque()
        self._held: np.ndarray | None = None
        self._held_after = -1
        self._tagged: dict[int, np.ndarray] = {}
        self._tagged_stream = False  # a tagged command has been seen
        # (stamp, arrival index, kind, counted late), not applied
        self._events: list[tuple[int, int, str, bool]] = []
        self._event_seq = 0
        self._last_boundary = -1  # stamp of the last applied event
        self._episode_start = -1  # stamp of the last applied reset/start
        self._first_decided: int | None = None  # s_k of the episode's first decision
        self._decided_until = -1
        self._episode = 0
        self._active = True
        self._rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, int, int]] = []

    # -- input -----------------------------------------------------------------------------------
    def add_sample(self, s: JointSample) -> None:
        """A joint state already read in ``joint_names`` order. Raises StampOrderError."""
        prev = self._prev
        if prev is not None:
            if s.stamp_ns == prev.stamp_ns:
                self.counts["repeated_state"] += 1
                return
            if s.stamp_ns < prev.stamp_ns:
                self._restart(s)
                raise StampOrderError(
                    f"joint state stamp {s.stamp_ns} ns goes backwards from {prev.stamp_ns} ns"
                )
            for c in self._candidates:
                c.later += 1
            if abs(s.stamp_ns - prev.stamp_ns - self._dt_ns) > self._tol_ns:
                self.counts["gap"] += 1
            else:
                self._candidates.append(_Candidate(prev, s, self._held, self._held_after))
        self._prev = s
        self._decide_ready()
        oldest = self._candidates[0].s.stamp_ns if self._candidates else s.stamp_ns
        for stamp in [t for t in self._tagged if t < oldest]:
            del self._tagged[stamp]

    def add_command(self, msg) -> None:
        """A std_msgs/Float64MultiArray torque command. Raises MessageError if malformed."""
        self.add_torque(*read_command(msg, self._n))

    def add_torque(self, torque: np.ndarray, tag: int | None) -> None:
        """A command already read: (n,) N·m and its stamp tag (ns) or None."""
        if tag is None:
            self._held = torque
            self._held_after = self._prev.stamp_ns if self._prev else -1
            return
        self._tagged_stream = True
        oldest = (
            self._candidates[0].s.stamp_ns
            if self._candidates
            else (self._prev.stamp_ns if self._prev else -1)
        )
        if tag < oldest:
            self.counts["late_command"] += 1
            return
        if self._prev is not None and tag > self._prev.stamp_ns + self.command_wait * self._dt_ns:
            self.counts["future_command"] += 1  # answers no state that can still come in time
            return
        self._tagged[tag] = torque
        self._decide_ready()

    def add_event(self, msg) -> None:
        """A std_msgs/String episode event. Raises MessageError if malformed."""
        event = read_episode_event(msg)
        self.counts[f"event_{event.kind}"] += 1
        late = event.stamp_ns <= self._decided_until
        self.counts["late_event"] += late
        self._event_seq += 1
        insort(self._events, (event.stamp_ns, self._event_seq, event.kind, late))

    def finish(self) -> None:
        """End of the stream: decide every waiting transition."""
        while self._candidates:
            self._decide(self._candidates.popleft())

    def undecided(self, before_ns: int) -> int:
        """Transitions into states stamped before ``before_ns`` that are not decided yet."""
        return sum(c.s_next.stamp_ns < before_ns for c in self._candidates)

    # -- output ----------------------------------------------------------------------------------
    def take(self) -> Dataset:
        """The transitions decided since the last ``take``."""
        rows, self._rows = self._rows, []
        if not rows:
            return Dataset.empty(self.joint_names, self.dt, self._state_names)
        s, a, s_next, episodes, stamps = zip(*rows)
        return Dataset(
            np.stack(s),
            np.stack(a),
            np.stack(s_next),
            np.array(episodes, dtype=np.int64),
            np.array(stamps, dtype=np.int64),
            self.joint_names,
            self.dt,
            self._state_names,
        )

    # -- internals -------------------------------------------------------------------------------
    def _restart(self, s: JointSample) -> None:
        # Events stamped after s are the old segment's; those up to s came (before s) for the
        # new one, and were late only by the old segment's clock.
        new = [e for e in self._events if e[0] <= s.stamp_ns]
        self._events = [e for e in self._events if e[0] > s.stamp_ns]
        self.finish()
        self.counts["stamp_backwards"] += 1
        self.counts["late_event"] -= sum(e[3] for e in new)
        self._prev, self._held, self._held_after = s, None, -1
        self._tagged.clear()
        self._events = new
        self._episode += 1
        self._active = True
        self._last_boundary = self._episode_start = self._decided_until = -1
        self._first_decided = None

    def _decide_ready(self) -> None:
        """Decide the oldest transitions whose next state has a successor and whose tagged
        command has come (or cannot be expected any more)."""
        while self._candidates:
            c = self._candidates[0]
            waits_for_tag = (
                c.s.stamp_ns not in self._tagged
                and not self._answered_after(c.s.stamp_ns)
                and (self._tagged_stream or c.held is None)
            )
            if c.later < 1 or (waits_for_tag and c.later < self.command_wait):
                return
            self._decide(self._candidates.popleft())

    def _answered_after(self, stamp_ns: int) -> bool:
        """Whether a command has come for a state after ``stamp_ns`` that has arrived (commands
        come in order: the one for ``stamp_ns`` will not come any more)."""
        newest = self._prev.stamp_ns if self._prev else -1
        return any(stamp_ns < t <= newest for t in self._tagged)

    def _apply_events(self, upto: int) -> None:
        while self._events and self._events[0][0] <= upto:
            stamp, _, kind, _ = self._events.pop(0)
            if kind == "end":
                if stamp < self._episode_start:
                    continue  # an end of an episode already followed by a new one: stale
                self._active = False
            else:
                # A new episode unless the boundary is the current one's own (a reset and a
                # start at one stamp, or one that comes after the first decisions it covers).
                if (
                    stamp != self._episode_start
                    and self._first_decided is not None
                    and self._first_decided < stamp
                ):
                    self._episode += 1
                    self._first_decided = None
                self._active = True
                self._episode_start = stamp
            self._last_boundary = stamp

    def _decide(self, c: _Candidate) -> None:
        a, b = c.s.stamp_ns, c.s_next.stamp_ns
        self._decided_until = b
        self._apply_events(a)
        if self._first_decided is None:
            self._first_decided = a
        action = self._tagged.pop(a, None)
        if action is None and c.held is not None and c.held_after >= self._last_boundary:
            action = c.held
        ahead = [(stamp, kind) for stamp, _, kind, _ in self._events if stamp <= b]
        if any(kind != "end" and stamp != self._episode_start for stamp, kind in ahead):
            self.counts["boundary"] += 1
        elif not self._active or any(kind == "end" and stamp < b for stamp, kind in ahead):
            self.counts["outside_episode"] += 1
        elif action is None:
            self.counts["no_command"] += 1
        else:
            self._rows.append(
                (
                    np.concatenate([c.s.position, c.s.velocity]),
                    action,
                    np.concatenate([c.s_next.position, c.s_next.velocity]),
                    self._episode,
                    a,
                )
            )
