"""Episodes on a robot without the simulator's automatic resets (pure core).

Between episodes the arm is brought to the next episode's start pose, either by *homing* (the
episode manager publishes a homing controller that the executor tracks, and the episode starts
once the arm has settled at the start pose) or by a reset service of the robot (the episode
starts at the first state at rest after the service answered). An episode then lasts
``episode_ns`` of joint-state stamps, whatever their rate and origin (wall-clock stamps on a
robot, sim time on the package's simulator).

``EpisodeSequencer.on_state`` takes each joint state and returns what the node must do now, as
``Step`` values: ``home`` (publish a homing controller from the current pose to ``goal``),
``reset`` (call the reset service), ``start``, ``end``, ``failed`` (with a message naming what did
not settle). A homing that does not settle is started again from where the arm is
(``homing_retries`` times; the step's message says why) before the run fails. The node owns the
messages; the sequence is testable without ROS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mbrl_ros.control.homing import SettleDetector

HOMING, SERVICE = "homing", "service"


@dataclass(frozen=True)
class Step:
    """What the node does for a state: ``kind`` home | reset | start | end | failed, for episode
    ``episode``, at stamp ``stamp_ns``; ``goal`` (n,) rad for home; ``message`` for failed."""

    kind: str
    episode: int
    stamp_ns: int
    goal: np.ndarray | None = None
    message: str = ""


@dataclass
class EpisodeSequencer:
    """home/reset → run ``episode_ns`` → home/reset → … for ``n_episodes`` episodes.

    ``start_pose(e, q)`` gives episode e's start pose (n,) rad (``q``: the pose at that moment);
    ``settle(goal)`` a fresh SettleDetector for a goal pose (after a reset service: the pose of
    the first state after its answer)."""

    n_episodes: int
    episode_ns: int
    source: str
    start_pose: Callable[[int, np.ndarray], np.ndarray]
    settle: Callable[[np.ndarray], SettleDetector]
    homing_retries: int = 1  # homings from where the arm is after one did not settle
    episode: int = 0
    phase: str = "idle"  # idle | homing | resetting | settling | running | done | failed
    starts: list[int] = field(default_factory=list)  # start stamp of each episode begun (ns)
    _detector: SettleDetector | None = None
    _since: int | None = None  # service: stamp of the first state after the answer
    _retries: int = 0  # homings of this episode after the first

    def __post_init__(self):
        if self.source not in (HOMING, SERVICE):
            raise ValueError(f"episode source {self.source!r} must be {HOMING} or {SERVICE}")
        if self.n_episodes < 1 or self.episode_ns <= 0:
            raise ValueError(
                f"need ≥ 1 episode of positive length, got {self.n_episodes} of "
                f"{self.episode_ns} ns"
            )

    def on_state(self, stamp_ns: int, q: np.ndarray, qd: np.ndarray) -> list[Step]:
        """The steps due at this joint state (stamps in order; the node drops others)."""
        if self.phase == "idle":
            return self._prepare(stamp_ns, q)
        if self.phase == "settling" and (
            self._detector is None
            or np.any(np.abs(q - self._detector.goal) > self._detector.position_tol)
        ):
            # after a reset: at rest where the reset put the arm (a state that was in flight
            # before the reset, or the arm still moving, starts the wait again there; the
            # time-out counts from the answer)
            self._detector = self.settle(np.array(q, float))
            if self._since is None:
                self._since = stamp_ns
        if self.phase in ("homing", "settling"):
            detector = self._detector
            assert detector is not None  # set where homing begins and just above for settling
            done = detector.update(stamp_ns, q, qd)
            if detector.timed_out or (
                not done
                and self._since is not None
                and stamp_ns - self._since >= detector.timeout_ns
            ):
                if self.phase == "homing" and self._retries < self.homing_retries:
                    self._retries += 1  # e.g. the arm was bumped: home again from where it is
                    why, goal = detector.message, detector.goal
                    self._detector = self.settle(goal)
                    return [
                        Step(
                            "home",
                            self.episode,
                            stamp_ns,
                            goal=goal,
                            message=f"again ({self._retries} of {self.homing_retries}): {why}",
                        )
                    ]
                self.phase = "failed"
                return [Step("failed", self.episode, stamp_ns, message=detector.message)]
            if done:
                self.phase = "running"
                self.starts.append(stamp_ns)
                return [Step("start", self.episode, stamp_ns)]
            return []
        if self.phase == "running" and stamp_ns >= self.starts[-1] + self.episode_ns:
            steps = [Step("end", self.episode, stamp_ns)]
            self.episode += 1
            if self.episode == self.n_episodes:
                self.phase = "done"
                return steps
            return steps + self._prepare(stamp_ns, q)
        return []

    def reset_done(self, ok: bool, message: str, stamp_ns: int) -> list[Step]:
        """The reset service answered (``stamp_ns``: the newest state's stamp): from the next
        state on, the episode starts once the arm is at rest."""
        if self.phase != "resetting":
            return []
        if not ok:
            self.phase = "failed"
            return [
                Step(
                    "failed",
                    self.episode,
                    stamp_ns,
                    message=f"the reset service refused: {message or 'no reason given'}",
                )
            ]
        self.phase, self._detector, self._since = "settling", None, None
        return []

    def _prepare(self, stamp_ns: int, q: np.ndarray) -> list[Step]:
        if self.source == SERVICE:
            self.phase = "resetting"
            return [Step("reset", self.episode, stamp_ns)]
        goal = np.asarray(self.start_pose(self.episode, np.asarray(q, float)), float)
        self.phase, self._retries = "homing", 0
        self._detector = self.settle(goal)
        return [Step("home", self.episode, stamp_ns, goal=goal)]

    @property
    def running(self) -> bool:
        return self.phase == "running"
