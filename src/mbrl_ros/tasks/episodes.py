"""Episodes of a reaching task (pure core): reachable targets, scoring, the summary table and the
learning-curve plot that the episode manager prints and writes.

Targets are end-effector points of random joint configurations (so every target is reachable),
kept inside a workspace box, or (per robot, from a RobotConfig) drawn around the home pose above
the base; start poses are drawn around the home pose. Training and held-out targets come from
separate seeds, so held-out targets are never used while learning.

``EpisodeSettings`` (the run's episodes and targets) and ``TargetRegionSettings`` (targets around
a pose) are what the episode manager declares as parameters (the GPS trainer the latter) and
offline drivers (``experiments.versions``) build directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mbrl_ros.common.settings import ConfigError, Settings, setting
from mbrl_ros.robot.config import RobotConfig, joint_box
from mbrl_ros.robot.description import RobotDescription
from mbrl_ros.robot.kinematics import ForwardKinematics


@dataclass(frozen=True)
class EpisodeClock:
    """The simulator's automatic episodes in stamps: N = ``steps`` control steps of
    ``period_ns`` each; episode e's states k = 0..N are stamped (e·(N+1) + k)·period_ns (a reset
    advances time by one period)."""

    steps: int
    period_ns: int

    @property
    def episode_ns(self) -> int:
        return (self.steps + 1) * self.period_ns

    def locate(self, stamp_ns: int) -> tuple[int, int]:
        """(episode e, step k) of the state stamped ``stamp_ns`` (rounded to the nearest step)."""
        e, offset = divmod(stamp_ns + self.period_ns // 2, self.episode_ns)
        return int(e), int(offset // self.period_ns)

    def starts_episode(self, stamp_ns: int) -> bool:
        """Whether the state is the first of an episode after the first one."""
        e, k = self.locate(stamp_ns)
        return e > 0 and k == 0

    def states_left(self, stamp_ns: int) -> int:
        """States of the episode from this one on, this one included (N + 1 − k)."""
        return self.steps + 1 - self.locate(stamp_ns)[1]

    def start_ns(self, episode: int) -> int:
        """Stamp of episode ``episode``'s first state."""
        return episode * self.episode_ns


class TargetSampler:
    """Reachable end-effector targets (3,) m in the base frame, seeded: the end effector of joint
    configurations drawn uniformly in ``joints`` = (low, high), each (n,) rad (default: the
    limits minus ``margin`` × range, continuous joints within ±π), kept when inside ``box`` =
    (min xyz, max xyz) m (±inf for an open side). ``around_home`` builds it from a RobotConfig."""

    def __init__(
        self,
        robot: RobotDescription,
        box: tuple[np.ndarray, np.ndarray],
        seed: int,
        margin: float = 0.1,
        max_tries: int = 10_000,
        joints: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.fk = ForwardKinematics(robot)
        if joints is None:
            lower = np.where(np.isfinite(robot.limits.lower), robot.limits.lower, -np.pi)
            upper = np.where(np.isfinite(robot.limits.upper), robot.limits.upper, np.pi)
            joints = (lower + margin * (upper - lower), upper - margin * (upper - lower))
        self.lower, self.upper = (np.asarray(j, float) for j in joints)
        if (
            self.lower.shape != (robot.n_joints,)
            or self.upper.shape != (robot.n_joints,)
            or not np.all(self.lower <= self.upper)
        ):
            raise ValueError(
                f"joint bounds {self.lower.tolist()}..{self.upper.tolist()} are not "
                f"{robot.n_joints} intervals"
            )
        self.box = (np.asarray(box[0], float), np.asarray(box[1], float))
        if np.any(self.box[0] >= self.box[1]):
            raise ValueError(f"target box {self.box[0].tolist()}..{self.box[1].tolist()} is empty")
        self.rng = np.random.default_rng(seed)
        self.max_tries = max_tries

    @classmethod
    def around(
        cls,
        robot: RobotDescription,
        home,
        radius: float,
        min_height: float,
        margin: float,
        seed: int,
        max_tries: int = 10_000,
    ) -> TargetSampler:
        """Targets of configurations within ``home`` (n,) rad ± ``radius`` rad inside the limits
        minus ``margin`` rad, end effector at least ``min_height`` m above the base."""
        box = (np.array([-np.inf, -np.inf, min_height]), np.full(3, np.inf))
        return cls(
            robot, box, seed, max_tries=max_tries, joints=joint_box(robot, home, radius, margin)
        )

    @classmethod
    def around_home(
        cls, robot: RobotDescription, config: RobotConfig, seed: int, max_tries: int = 10_000
    ) -> TargetSampler:
        """``around`` with ``config``'s home (which must be set), target_radius,
        target_min_height and limit_margin."""
        return cls.around(
            robot,
            config.home_pose(),
            config.target_radius,
            config.target_min_height,
            config.limit_margin,
            seed,
            max_tries,
        )

    def sample_with_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """One target (3,) m and the joint configuration (n,) rad that reaches it; ValueError if
        none of ``max_tries`` configurations puts the end effector in the box."""
        for _ in range(max(1, self.max_tries // 100)):
            q = self.rng.uniform(self.lower, self.upper, (100, len(self.lower)))
            p = self.fk.ee_position(torch.as_tensor(q)).numpy()
            inside = np.all((p >= self.box[0]) & (p <= self.box[1]), axis=1)
            if inside.any():
                return p[np.argmax(inside)], q[np.argmax(inside)]
        raise ValueError(
            f"no reachable end-effector point found in the target box "
            f"{self.box[0].tolist()}..{self.box[1].tolist()} from joint "
            f"configurations in {self.lower.round(3).tolist()}.."
            f"{self.upper.round(3).tolist()} rad"
        )

    def sample(self) -> np.ndarray:
        """One target (3,) m (``sample_with_pose`` without the pose)."""
        return self.sample_with_pose()[0]

    def clip(self, target: np.ndarray) -> np.ndarray:
        """``target`` clipped into the workspace box."""
        return np.clip(target, self.box[0], self.box[1])


class StartPoseSampler:
    """Seeded episode start poses (n,) rad: uniform within ``home`` (n,) rad ± ``radius`` rad
    inside the limits minus ``margin`` rad (``robot_config.joint_box``). Episode e's pose
    depends only on (seed, e), so a retried or skipped episode does not shift the later ones.
    ``from_config`` takes home, start_radius and limit_margin from a RobotConfig."""

    def __init__(self, robot: RobotDescription, home, radius: float, margin: float, seed: int):
        self.low, self.high = joint_box(robot, home, radius, margin)
        self.seed = int(seed)

    @classmethod
    def from_config(
        cls, robot: RobotDescription, config: RobotConfig, seed: int
    ) -> StartPoseSampler:
        return cls(robot, config.home_pose(), config.start_radius, config.limit_margin, seed)

    def pose(self, episode: int) -> np.ndarray:
        return np.random.default_rng((self.seed, int(episode))).uniform(self.low, self.high)


@dataclass(frozen=True)
class TargetRegionSettings(Settings):
    """Targets (and start poses) around a home pose, inside the joint limits minus a margin."""

    target_radius: float = setting(
        0.6,
        "homing, service: targets are end-effector points of poses within ± this around home (rad)",
        (0.0, 6.3),
    )
    target_min_height: float = setting(
        0.1, "homing, service: targets at least this high above the base (m)", (-10.0, 10.0)
    )
    limit_margin: float = setting(
        0.1,
        "start poses and target poses stay this far inside the joint limits (rad)",
        (0.0, 3.2),
    )

    def sampler(self, robot: RobotDescription, home, seed: int) -> TargetSampler:
        """``TargetSampler.around`` ``home`` (n,) rad with these settings."""
        return TargetSampler.around(
            robot, home, self.target_radius, self.target_min_height, self.limit_margin, seed
        )


@dataclass(frozen=True)
class EpisodeSettings(Settings):
    """A learning run's episodes: how many on training and on held-out targets in which order
    (``schedule``), how long, what counts as success, and where the targets come from (a box or
    one fixed target for the simulator's automatic episodes, else a ``TargetRegionSettings``
    region around ``home``)."""

    episode_steps: int = setting(
        200, "control steps per episode (clock: the simulator's value)", (1, 10**7)
    )
    train_episodes: int = setting(10, "episodes on training targets", (0, 100000))
    eval_every: int = setting(
        0, "a held-out episode after every k training episodes; 0 = none", (0, 100000)
    )
    final_eval_episodes: int = setting(10, "held-out episodes at the end", (0, 100000))
    success_tolerance: float = setting(
        0.02, "final end-effector distance that counts as success (m)", (1e-4, 1.0)
    )
    target_box_min: list = setting(
        [0.2, -0.5, 0.2], "clock: workspace box for targets, min corner (m)", (-10.0, 10.0)
    )
    target_box_max: list = setting(
        [0.7, 0.5, 0.8], "clock: workspace box for targets, max corner (m)", (-10.0, 10.0)
    )
    target: list = setting(
        [],
        "clock: the same end-effector target (m, x y z) for every episode; [] = sampled in the box",
        (-10.0, 10.0),
    )
    home: list = setting(
        [],
        "homing, service: home pose (rad, robot joint order); [] = the pose at start-up",
        (-10.0, 10.0),
    )
    start_radius: float = setting(
        0.2, "homing: start poses uniform within ± this around home (rad)", (0.0, 3.2)
    )
    train_seed: int = setting(1, "seed of the training targets (and start poses)", (0, 2**31 - 1))
    eval_seed: int = setting(1000, "seed of the held-out targets", (0, 2**31 - 1))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target and len(self.target) != 3:
            raise ConfigError(f"parameter 'target' = {self.target} needs 3 values (m)")
        if len(self.target_box_min) != 3 or len(self.target_box_max) != 3:
            raise ConfigError("parameters 'target_box_min' and 'target_box_max' need 3 values")
        if not self.schedule():
            raise ConfigError("no episodes to run: set 'train_episodes' or 'final_eval_episodes'")

    def schedule(self) -> list[bool]:
        """held_out flag of each episode in order."""
        out = []
        for i in range(self.train_episodes):
            out.append(False)
            if self.eval_every and (i + 1) % self.eval_every == 0:
                out.append(True)
        return out + [True] * self.final_eval_episodes

    @property
    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """The target box (min xyz, max xyz) m."""
        return np.array(self.target_box_min, float), np.array(self.target_box_max, float)

    def box_targets(self, robot: RobotDescription) -> list[np.ndarray]:
        """Each episode's target (3,) m in ``schedule`` order: ``target``, or sampled in the box
        (training and held-out targets from their own seeds); ValueError if the box is empty or
        out of reach."""
        if self.target:
            return [np.array(self.target, float)] * len(self.schedule())
        return self._targets(lambda seed: TargetSampler(robot, self.box, seed))

    def uniform_targets(self) -> list[np.ndarray]:
        """Each episode's target (3,) m in ``schedule`` order drawn uniformly in the box, whether
        the end effector reaches it or not (e.g. hole positions: the peg reaches them, not the
        end effector); a box may be flat (min = max along an axis). ValueError if inverted.
        ``target``, if set, for every episode."""
        if self.target:
            return [np.array(self.target, float)] * len(self.schedule())
        low, high = (np.asarray(v, float) for v in self.box)
        if np.any(low > high):
            raise ValueError(f"target box {low.tolist()}..{high.tolist()} has min > max")
        rngs = {
            False: np.random.default_rng(self.train_seed),
            True: np.random.default_rng(self.eval_seed),
        }
        return [rngs[held_out].uniform(low, high) for held_out in self.schedule()]

    def region_targets(
        self, robot: RobotDescription, home, region: TargetRegionSettings
    ) -> list[np.ndarray]:
        """Each episode's target (3,) m in ``schedule`` order, around ``home`` (n,) rad."""
        return self._targets(lambda seed: region.sampler(robot, home, seed))

    def _targets(self, sampler: Callable[[int], TargetSampler]) -> list[np.ndarray]:
        samplers = {False: sampler(self.train_seed), True: sampler(self.eval_seed)}
        return [samplers[held_out].sample() for held_out in self.schedule()]

    def start_poses(
        self, robot: RobotDescription, home, region: TargetRegionSettings
    ) -> StartPoseSampler:
        """The episodes' start poses around ``home`` (n,) rad (``start_radius``, the region's
        limit margin, ``train_seed``)."""
        return StartPoseSampler(
            robot, home, self.start_radius, region.limit_margin, self.train_seed
        )


@dataclass
class EpisodeResult:
    """Score of one episode: distances (m) of the end effector to the target."""

    episode: int
    held_out: bool
    target: list[float]
    final_distance: float
    mean_distance: float
    success: bool
    robot_seconds: float  # cumulative sim time of robot data at the episode's end
    data_size: int = 0  # transitions the latest model was trained on
    model_version: int = -1
    val_error: float = float("nan")
    plan_rate_hz: float = float("nan")


def score(
    episode: int,
    held_out: bool,
    target: np.ndarray,
    distances: np.ndarray,
    tolerance: float,
    robot_seconds: float,
    **info,
) -> EpisodeResult:
    """EpisodeResult from the per-step end-effector distances (T,) m of an episode."""
    if len(distances) == 0:
        raise ValueError(f"episode {episode} has no states to score")
    final = float(distances[-1])
    return EpisodeResult(
        episode,
        held_out,
        [float(v) for v in target],
        final,
        float(np.mean(distances)),
        final <= tolerance,
        robot_seconds,
        **info,
    )


def progress_line(r: EpisodeResult, tolerance: float, learner: bool = True) -> str:
    """One status line per episode; ``learner``: the graph fits models and plans (its model
    version and plan rate are shown; a rate not yet known is left out)."""
    kind = "held-out" if r.held_out else "train"
    fields = [f"episode {r.episode:3d} {kind:8s}", f"data {r.robot_seconds:6.1f} s"]
    if learner:
        fields.append(
            f"model v{r.model_version} ({r.data_size} tr, val {r.val_error:.3g})"
            if r.model_version >= 0
            else "no model yet (π0)"
        )
        if np.isfinite(r.plan_rate_hz):
            fields.append(f"plan {r.plan_rate_hz:5.1f} Hz")
    fields += [
        f"final {100 * r.final_distance:5.1f} cm, mean {100 * r.mean_distance:5.1f} cm",
        f"{'SUCCESS' if r.success else 'miss'} (tol {100 * tolerance:g} cm)",
    ]
    return " | ".join(fields)


@dataclass
class Summary:
    results: list[EpisodeResult] = field(default_factory=list)

    def held_out(self) -> list[EpisodeResult]:
        return [r for r in self.results if r.held_out]

    def table(self, tolerance: float) -> str:
        """Markdown table of every episode plus the held-out success rate."""
        rows = [
            "| episode | targets | robot data (s) | final (cm) | mean (cm) | success |",
            "|---:|---|---:|---:|---:|:---:|",
        ]
        rows += [
            f"| {r.episode} | {'held-out' if r.held_out else 'train'} | "
            f"{r.robot_seconds:.1f} | {100 * r.final_distance:.1f} | "
            f"{100 * r.mean_distance:.1f} | {'yes' if r.success else 'no'} |"
            for r in self.results
        ]
        ho = self.held_out()
        if ho:
            rate = np.mean([r.success for r in ho])
            rows.append(
                f"\nheld-out success: {100 * rate:.0f} % of {len(ho)} (tolerance "
                f"{100 * tolerance:g} cm), mean final distance "
                f"{100 * np.mean([r.final_distance for r in ho]):.1f} cm"
            )
        return "\n".join(rows)

    def plot(self, path: Path, tolerance: float, title: str) -> Path:
        """PNG learning curve: final distance per episode against seconds of robot data."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for held_out, style in ((False, "o-"), (True, "s")):
            rs = [r for r in self.results if r.held_out == held_out]
            if rs:
                ax.plot(
                    [r.robot_seconds for r in rs],
                    [100 * r.final_distance for r in rs],
                    style,
                    label="held-out targets" if held_out else "training targets",
                )
        ax.axhline(100 * tolerance, color="gray", ls="--", label="success tolerance")
        ax.set_xlabel("robot data (s of sim time)")
        ax.set_ylabel("final end-effector distance (cm)")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def records(self) -> list[dict]:
        return [asdict(r) for r in self.results]
