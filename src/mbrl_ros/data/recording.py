"""Which received messages an episode recording keeps, so that a bag holds exactly the requested
episodes, each complete (no segment without commands, none cut short).

The recorder offers every message it receives, with the stamp it carries (joint-state header
stamp, command tag, /clock time, episode-event stamp; None for messages without one, such as
targets or controllers), and writes the messages ``offer`` returns. Stamps are ns of the robot's
time base (sim time in a simulation). Episodes are stamp windows:

* episode k begins at the stamp b_k of a "reset" or "start" event and holds the stamps
  b_k ≤ t ≤ b_k + ``length_ns`` (all stamps from b_k when the length is None); the next start
  event (from b_{k+1} on) or an "end" event (after its stamp) ends it sooner. It is over when the
  first joint state stamped ≥ b_k + length_ns arrives, or with that event: ``between_episodes``
  then tells a recorder that starts episodes itself (a reset service) to start the next.
* the first episode begins at the first start event received after every ``required`` topic has
  delivered a message: each of those subscriptions is matched with its publisher before the
  episode begins, so none of its messages can be missing.
* topics are delivered independently: an episode's first states can arrive before its event.
  Stamped messages received before the first episode, or past the end of the last one begun
  while more are wanted, are held (the last ``preroll`` of them); those of episode k are kept when
  it begins. A start event is taken only if no stamped message at or after its stamp has been
  let go: events that arrive late (DDS matched the recorder's subscription with the publisher's
  writer before the reverse, and delivers the events published meanwhile in a burst) begin
  their episodes only when they can be recorded whole; otherwise the recording waits for the
  next event.
* a stamped message is kept when its stamp lies in an episode, whenever it arrives; a message
  without a stamp when it arrives while an episode is running.
* without a length, the start event that ends the last episode is kept too: messages of the next
  episode that arrived before it were kept (their episode's end was not known yet), and the event
  marks the boundary for readers of the bag.
* the recording is complete once the last episode is over and every stamp stream that had a
  message kept (``streams``: states, commands, clock; events are rare), and every ``required``
  one whether or not it had, has delivered a message stamped after the episode: a topic is
  delivered in order, so nothing of the episode is still in flight (events can overtake a
  backlog of states; the episodes they end are not recorded until those states are in).
  ``waiting_for`` names the streams that have not.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

STARTS = ("reset", "start")

# (topic, log time ns, serialised message[, publish time ns]): BagWriter.write's arguments
Message = tuple[str, int, bytes] | tuple[str, int, bytes, int]


@dataclass
class _Episode:
    start: int
    end: int | None  # first stamp after the episode (exclusive); None: not known yet
    over: bool = False


class EpisodeRecording:
    """The episode windows of a recording of ``episodes`` episodes (see the module docstring)."""

    def __init__(
        self,
        episodes: int,
        *,
        states: str,
        required: Collection[str],
        streams: Collection[str],
        length_ns: int | None = None,
        preroll: int = 1000,
    ):
        if episodes < 1:
            raise ValueError(f"episodes = {episodes} must be at least 1")
        if length_ns is not None and length_ns <= 0:
            raise ValueError(f"episode length {length_ns} ns must be positive")
        self.episodes = episodes
        self.states = states
        self.required = frozenset(required)
        self.streams = frozenset(streams)
        self.length_ns = length_ns
        self._seen: set[str] = set()
        self._held: deque[tuple[Message, int]] = deque(maxlen=preroll)
        self._let_go = -1  # the latest stamp of a message neither kept nor held
        self._episodes: list[_Episode] = []
        self._active: set[str] = set()  # streams with a message kept
        self._passed: set[str] = set()  # streams past the end of the last episode

    # -- state -----------------------------------------------------------------------------------
    @property
    def started(self) -> int:
        """Episodes begun so far."""
        return len(self._episodes)

    @property
    def running(self) -> bool:
        """An episode has begun and is not over."""
        return bool(self._episodes) and not self._episodes[-1].over

    @property
    def between_episodes(self) -> bool:
        """An episode is over and another is wanted."""
        return 0 < len(self._episodes) < self.episodes and not self.running

    @property
    def ended(self) -> bool:
        """The last requested episode is over (its messages may still be in flight)."""
        return len(self._episodes) == self.episodes and not self.running

    @property
    def waiting_for(self) -> list[str]:
        """Streams that have not yet delivered past the last episode (once it is over)."""
        return sorted((self._active | self.required) - self._passed) if self.ended else []

    @property
    def complete(self) -> bool:
        """Every message of every episode is in: the recording can stop."""
        return self.ended and not self.waiting_for

    def can_start(self) -> bool:
        """Every required topic has delivered: an episode begun now is recorded complete."""
        return self.required <= self._seen

    # -- messages --------------------------------------------------------------------------------
    def offer(
        self,
        topic: str,
        log_ns: int,
        data: bytes,
        stamp: int | None,
        event: str | None = None,
        publish_ns: int | None = None,
    ) -> list[Message]:
        """A received message; ``event``: its kind if it is a valid episode event; ``publish_ns``:
        when its sender published it (kept with it). Returns the messages to write now, in the
        order received."""
        msg = (topic, log_ns, data) if publish_ns is None else (topic, log_ns, data, publish_ns)
        can_start = self.can_start()
        self._seen.add(topic)
        if not self._episodes:
            if stamp is None or not (event in STARTS and can_start and stamp > self._let_go):
                self._hold(msg, stamp)
                return []
            self._begin(stamp)
            return self._release(stamp) + self._kept(msg, stamp)
        last = self._episodes[-1]
        if event is not None and stamp is not None and stamp > max(last.start, self._let_go):
            boundary = event in STARTS and last.end is None and len(self._episodes) == self.episodes
            if self._on_event(event, stamp):
                return self._release(stamp) + self._kept(msg, stamp)
            if boundary:
                return [msg]  # ends the last episode, whose length was not known: see above
        elif (
            self.length_ns is not None
            and topic == self.states
            and stamp is not None
            and stamp >= last.start + self.length_ns
        ):
            last.over = True
        if (
            stamp is not None
            and last.end is not None
            and stamp >= last.end
            and len(self._episodes) < self.episodes
        ):
            self._hold(msg, stamp)  # of a next episode, if its event is still in flight
            return []
        return self._kept(msg, stamp)

    # -- internals -------------------------------------------------------------------------------
    def _begin(self, stamp: int) -> None:
        end = None if self.length_ns is None else stamp + self.length_ns + 1
        self._episodes.append(_Episode(stamp, end))

    def _on_event(self, kind: str, stamp: int) -> bool:
        """Apply an event after the last episode's start; whether a new episode began."""
        last = self._episodes[-1]
        bound = stamp + 1 if kind == "end" else stamp
        if last.end is None or bound < last.end:
            last.end = bound
        last.over = True
        if kind in STARTS and len(self._episodes) < self.episodes:
            self._begin(stamp)
            return True
        return False

    def _hold(self, msg: Message, stamp: int | None) -> None:
        """Keep a stamped message received before the episode it may belong to has begun."""
        if stamp is None:
            return
        if len(self._held) == self._held.maxlen:
            self._let_go = max(self._let_go, self._held[0][1])
        self._held.append((msg, stamp))

    def _release(self, start: int) -> list[Message]:
        """The held messages of the episode that has just begun at ``start``; those after it stay
        held (the next episode's event may be in flight too)."""
        held, self._held = list(self._held), deque(maxlen=self._held.maxlen)
        out = []
        for m, s in held:
            if s < start:
                self._let_go = max(self._let_go, s)
            elif self._keep(m[0], s):
                out.append(m)
            else:
                self._hold(m, s)
        return out

    def _kept(self, msg: Message, stamp: int | None) -> list[Message]:
        if self._keep(msg[0], stamp):
            return [msg]
        if stamp is not None:
            self._let_go = max(self._let_go, stamp)
        return []

    def _keep(self, topic: str, stamp: int | None) -> bool:
        if stamp is None:
            return self.running
        end = self._episodes[-1].end if self.ended else None  # known once the last is over
        if end is not None and stamp >= end:
            self._passed.add(topic)
        for ep in reversed(self._episodes):
            if stamp >= ep.start:
                inside = ep.end is None or stamp < ep.end
                if inside and topic in self.streams:
                    self._active.add(topic)
                return inside
        return False
