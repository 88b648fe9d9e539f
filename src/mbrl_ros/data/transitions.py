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
* no transition when: s_{k+1} − s_k differs from dt by more than ``gap_tolerance``·dt (states
  missing or late); an episode boundary b (event stamp) lies in s_k < b ≤ s_{k+1}; s_k lies outside
  an episode (after an "end" event); no command applies (e.g. before the first command).
* a repeated stamp is dropped; a stamp that goes backwards raises StampOrderError and the builder
  starts a new segment (and episode) at that state.
* a transition is decided when the state after s_{k+1} arrives (or at ``finish``), so an episode
  event or a tagged command that arrives shortly after s_{k+1} on its own topic still counts.

Episode ids: 0 until the first boundary, then +1 at every reset or start event (and at a stamp
that goes backwards). ``counts`` tallies every rejected candidate by reason.
"""
from __future__ import annotations

from bisect import insort
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mbrl_ros.data.dataset import Dataset, joint_state_names
from mbrl_ros.data.errors import StampOrderError
from mbrl_ros.data.topics import TopicNames, read_episode_event
from mbrl_ros.msgconv import JointSample, read_command, read_joint_state


@dataclass(frozen=True)
class _Candidate:
    s: JointSample
    s_next: JointSample
    held: np.ndarray | None   # latest untagged command when s_next arrived
    held_after: int           # stamp of the latest state when that command arrived (ns)


class TransitionBuilder:
    """Aligns joint states and commands into (s, a, s') at the control period ``dt`` (s)."""

    def __init__(self, joint_names: Sequence[str], dt: float, *, topics: TopicNames = TopicNames(),
                 gap_tolerance: float = 0.1):
        if not joint_names or len(set(joint_names)) != len(joint_names):
            raise ValueError(f"joint_names {list(joint_names)} must be non-empty and unique")
        if not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"control period dt = {dt} s must be positive")
        if not 0.0 < gap_tolerance < 1.0:
            raise ValueError(f"gap_tolerance {gap_tolerance} must be in (0, 1) (fraction of dt)")
        self.joint_names = tuple(joint_names)
        self.dt = float(dt)
        self.topics = topics
        self.counts: Counter = Counter()
        self._dt_ns = int(round(dt * 1e9))
        self._tol_ns = gap_tolerance * self._dt_ns
        self._n = len(self.joint_names)
        self._state_names = joint_state_names(self.joint_names)
        self._prev: JointSample | None = None
        self._pending: _Candidate | None = None
        self._held: np.ndarray | None = None
        self._held_after = -1
        self._tagged: dict[int, np.ndarray] = {}
        self._events: list[tuple[int, int, str]] = []  # (stamp, arrival index, kind), not applied
        self._event_seq = 0
        self._last_boundary = -1
        self._decided_until = -1
        self._episode = 0
        self._active = True
        self._rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, int, int]] = []

    # -- input -----------------------------------------------------------------------------------
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
        s = read_joint_state(msg, self.joint_names)
        prev = self._prev
        if prev is not None:
            if s.stamp_ns == prev.stamp_ns:
                self.counts["repeated_state"] += 1
                return
            if s.stamp_ns < prev.stamp_ns:
                self._restart(s)
                raise StampOrderError(f"joint state stamp {s.stamp_ns} ns goes backwards from "
                                      f"{prev.stamp_ns} ns")
            self._decide_pending()
            if abs(s.stamp_ns - prev.stamp_ns - self._dt_ns) > self._tol_ns:
                self.counts["gap"] += 1
            else:
                self._pending = _Candidate(prev, s, self._held, self._held_after)
        self._prev = s
        oldest = self._pending.s.stamp_ns if self._pending else s.stamp_ns
        for stamp in [t for t in self._tagged if t < oldest]:
            del self._tagged[stamp]

    def add_command(self, msg) -> None:
        """A std_msgs/Float64MultiArray torque command. Raises MessageError if malformed."""
        torque, tag = read_command(msg, self._n)
        if tag is None:
            self._held = torque
            self._held_after = self._prev.stamp_ns if self._prev else -1
            return
        oldest = self._pending.s.stamp_ns if self._pending else (
            self._prev.stamp_ns if self._prev else -1)
        if tag < oldest:
            self.counts["late_command"] += 1
            return
        self._tagged[tag] = torque

    def add_event(self, msg) -> None:
        """A std_msgs/String episode event. Raises MessageError if malformed."""
        event = read_episode_event(msg)
        self.counts[f"event_{event.kind}"] += 1
        if event.stamp_ns <= self._decided_until:
            self.counts["late_event"] += 1
        self._event_seq += 1
        insort(self._events, (event.stamp_ns, self._event_seq, event.kind))

    def finish(self) -> None:
        """End of the stream: decide the last pending transition."""
        self._decide_pending()

    # -- output ----------------------------------------------------------------------------------
    def take(self) -> Dataset:
        """The transitions decided since the last ``take``."""
        rows, self._rows = self._rows, []
        if not rows:
            return Dataset.empty(self.joint_names, self.dt, self._state_names)
        s, a, s_next, episodes, stamps = zip(*rows)
        return Dataset(np.stack(s), np.stack(a), np.stack(s_next),
                       np.array(episodes, dtype=np.int64), np.array(stamps, dtype=np.int64),
                       self.joint_names, self.dt, self._state_names)

    # -- internals -------------------------------------------------------------------------------
    def _restart(self, s: JointSample) -> None:
        self._decide_pending()
        self.counts["stamp_backwards"] += 1
        self._prev, self._held, self._held_after = s, None, -1
        self._tagged.clear()
        self._events.clear()
        self._episode += 1
        self._active = True
        self._last_boundary = self._decided_until = -1

    def _apply_events(self, upto: int) -> None:
        while self._events and self._events[0][0] <= upto:
            stamp, _, kind = self._events.pop(0)
            if kind == "end":
                self._active = False
            else:
                self._episode += 1
                self._active = True
            self._last_boundary = stamp

    def _decide_pending(self) -> None:
        c, self._pending = self._pending, None
        if c is None:
            return
        a, b = c.s.stamp_ns, c.s_next.stamp_ns
        self._decided_until = b
        self._apply_events(a)
        action = self._tagged.pop(a, None)
        if action is None and c.held is not None and c.held_after >= self._last_boundary:
            action = c.held
        if self._events and self._events[0][0] <= b:
            self.counts["boundary"] += 1
        elif not self._active:
            self.counts["outside_episode"] += 1
        elif action is None:
            self.counts["no_command"] += 1
        else:
            self._rows.append((np.concatenate([c.s.position, c.s.velocity]), action,
                               np.concatenate([c.s_next.position, c.s_next.velocity]),
                               self._episode, a))
