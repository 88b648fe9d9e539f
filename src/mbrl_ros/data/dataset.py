"""A dataset of transitions (s, a, s'): arrays, episodes, train/validation split by episode,
normalisation statistics, and files in the artifact format (safetensors + JSON, never pickle).

Arrays: states (N, dx), actions (N, du), next_states (N, dx) as float64; episodes (N,) and stamps
(N,) as int64 (stamp = the JointState stamp of s, ns). ``state_names`` names the dx columns
(``position/<joint>``, ``velocity/<joint>``, then any features such as ``ee/x``); actions are
torques in N·m in ``joint_names`` order; ``dt`` is the control period in s.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from mbrl_ros.artifacts import ArtifactError, Schema, TensorSpec, decode, encode, read_file, \
    write_file
from mbrl_ros.data.errors import DataError

DATASET_SCHEMA = Schema(
    "mbrl_ros.dataset", 1,
    {"states": TensorSpec(("N", "dx")), "actions": TensorSpec(("N", "du")),
     "next_states": TensorSpec(("N", "dx")), "episodes": TensorSpec(("N",), "int64"),
     "stamps": TensorSpec(("N",), "int64")},
    dim_limits={"dx": 4096, "du": 1024},
    required_meta=("joint_names", "dt", "state_names"))


def joint_state_names(joint_names: Sequence[str]) -> tuple[str, ...]:
    """Column names of the joint part of the state: positions then velocities."""
    return tuple(f"position/{j}" for j in joint_names) + tuple(f"velocity/{j}" for j in joint_names)


@dataclass(frozen=True)
class NormStats:
    """Mean and standard deviation of states (dx,), actions (du,) and state changes Δs = s' − s
    (dx,); standard deviations are at least the floor, so constant columns normalise to 0."""

    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray
    delta_mean: np.ndarray
    delta_std: np.ndarray

    def tensors(self, prefix: str = "norm/") -> dict[str, np.ndarray]:
        """Named arrays for an artifact (``norm/state_mean``, ...)."""
        return {prefix + f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str = "norm/") -> "NormStats":
        return cls(**{f.name: np.asarray(tensors[prefix + f.name], float) for f in fields(cls)})


@dataclass(frozen=True, eq=False)
class Dataset:
    states: np.ndarray
    actions: np.ndarray
    next_states: np.ndarray
    episodes: np.ndarray
    stamps: np.ndarray
    joint_names: tuple[str, ...]
    dt: float
    state_names: tuple[str, ...]
    sources: tuple[str, ...] = ()

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for name in ("states", "actions", "next_states"):
            put(name, np.asarray(getattr(self, name), dtype=np.float64))
        for name in ("episodes", "stamps"):
            put(name, np.asarray(getattr(self, name), dtype=np.int64))
        put("joint_names", tuple(self.joint_names))
        put("state_names", tuple(self.state_names))
        put("sources", tuple(self.sources))
        put("dt", float(self.dt))
        n, dx, du = len(self.states), len(self.state_names), len(self.joint_names)
        expected = {"states": (n, dx), "actions": (n, du), "next_states": (n, dx),
                    "episodes": (n,), "stamps": (n,)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise DataError(f"dataset: {name} has shape {getattr(self, name).shape}, "
                                f"expected {shape} ({dx} state names, {du} joints)")
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise DataError(f"dataset: dt = {self.dt} s must be positive")
        for name in ("states", "actions", "next_states"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise DataError(f"dataset: {name} has non-finite values")

    @classmethod
    def empty(cls, joint_names: Sequence[str], dt: float, state_names: Sequence[str]) -> "Dataset":
        dx, du = len(state_names), len(joint_names)
        return cls(np.zeros((0, dx)), np.zeros((0, du)), np.zeros((0, dx)), np.zeros(0, np.int64),
                   np.zeros(0, np.int64), tuple(joint_names), dt, tuple(state_names))

    def __len__(self) -> int:
        return len(self.states)

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(f"effort/{j}" for j in self.joint_names)

    @property
    def episode_ids(self) -> np.ndarray:
        return np.unique(self.episodes)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ids)

    @property
    def deltas(self) -> np.ndarray:
        """s' − s, (N, dx)."""
        return self.next_states - self.states

    def select(self, index) -> "Dataset":
        """The rows picked by a boolean mask or an index array, in that order."""
        return Dataset(self.states[index], self.actions[index], self.next_states[index],
                       self.episodes[index], self.stamps[index], self.joint_names, self.dt,
                       self.state_names, self.sources)

    def with_state_columns(self, names: Sequence[str], extra: np.ndarray,
                           extra_next: np.ndarray) -> "Dataset":
        """This dataset with feature columns ``names`` (N, k) appended to states and next states."""
        return Dataset(np.hstack([self.states, extra]), self.actions,
                       np.hstack([self.next_states, extra_next]), self.episodes, self.stamps,
                       self.joint_names, self.dt, self.state_names + tuple(names), self.sources)

    @classmethod
    def from_rollout(cls, states: np.ndarray, actions: np.ndarray, episode: int,
                     joint_names: Sequence[str], dt: float,
                     state_names: Sequence[str] | None = None, source: str = "sim") -> "Dataset":
        """The transitions of one rollout, states (T+1, dx) and actions (T, du), as episode
        ``episode``, stamped as the simulator's automatic episodes are (episode e starts at
        e·(T+1)·dt). ``state_names``: default [q, q̇] of ``joint_names``."""
        T = len(actions)
        dt_ns = int(round(dt * 1e9))
        names = tuple(joint_names)
        return cls(states[:-1], actions, states[1:], np.full(T, episode),
                   (episode * (T + 1) + np.arange(T)) * dt_ns, names, dt,
                   tuple(state_names) if state_names is not None else joint_state_names(names),
                   (source,))

    @staticmethod
    def concat(parts: Sequence["Dataset"], renumber: bool = False) -> "Dataset":
        """Rows of ``parts`` in order. ``renumber``: give each part's episodes new ids after the
        previous part's (for datasets from different bags); otherwise ids are kept (for pieces of
        one stream). Parts must agree on joints, dt and state layout."""
        if not parts:
            raise DataError("no datasets to concatenate")
        first = parts[0]
        for i, p in enumerate(parts[1:], 1):
            for what, a, b in (("joint names", p.joint_names, first.joint_names),
                               ("state layout", p.state_names, first.state_names)):
                if a != b:
                    raise DataError(f"dataset {i} has {what} {list(a)}, dataset 0 has {list(b)}")
            if abs(p.dt - first.dt) > 1e-9 * first.dt:
                raise DataError(f"dataset {i} has dt = {p.dt} s, dataset 0 has {first.dt} s")
        episodes, offset = [], 0
        for p in parts:
            ids = p.episodes
            if renumber:
                ids = np.unique(ids, return_inverse=True)[1].astype(np.int64) + offset
                offset += p.n_episodes
            episodes.append(ids)
        sources = tuple(dict.fromkeys(s for p in parts for s in p.sources))
        return Dataset(np.concatenate([p.states for p in parts]),
                       np.concatenate([p.actions for p in parts]),
                       np.concatenate([p.next_states for p in parts]), np.concatenate(episodes),
                       np.concatenate([p.stamps for p in parts]), first.joint_names, first.dt,
                       first.state_names, sources)

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """(train, validation) with whole episodes in each; round(val_fraction·E) of the E episodes
        (at least one, at most E − 1) drawn with ``seed`` go to validation."""
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"val_fraction {val_fraction} must be in [0, 1)")
        ids = self.episode_ids
        if val_fraction == 0.0:
            return self, self.select(np.zeros(len(self), bool))
        if len(ids) < 2:
            raise DataError(f"cannot split {len(ids)} episode(s) into training and validation; "
                            "record more episodes or use a validation fraction of 0")
        n_val = int(np.clip(round(val_fraction * len(ids)), 1, len(ids) - 1))
        val_ids = np.random.default_rng(seed).permutation(ids)[:n_val]
        in_val = np.isin(self.episodes, val_ids)
        return self.select(~in_val), self.select(in_val)

    def stats(self, floor: float = 1e-6) -> NormStats:
        """Normalisation statistics of this dataset (population std, at least ``floor``)."""
        if len(self) == 0:
            raise DataError("normalisation statistics of an empty dataset")
        mean_std = lambda x: (x.mean(0), np.maximum(x.std(0), floor))  # noqa: E731
        return NormStats(*mean_std(self.states), *mean_std(self.actions), *mean_std(self.deltas))

    # -- files -----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return encode(DATASET_SCHEMA, {"states": self.states, "actions": self.actions,
                                       "next_states": self.next_states,
                                       "episodes": self.episodes, "stamps": self.stamps},
                      {"joint_names": list(self.joint_names), "dt": self.dt,
                       "state_names": list(self.state_names),
                       "action_names": list(self.action_names), "sources": list(self.sources)})

    @classmethod
    def from_bytes(cls, data: bytes) -> "Dataset":
        tensors, meta = decode(data, DATASET_SCHEMA)
        names, dt, state_names = meta["joint_names"], meta["dt"], meta["state_names"]
        for key, value in (("joint_names", names), ("state_names", state_names),
                           ("sources", meta.get("sources", []))):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DataError(f"dataset metadata '{key}' must be a list of strings")
        if isinstance(dt, bool) or not isinstance(dt, (int, float)):
            raise DataError(f"dataset metadata 'dt' = {dt!r} must be a number")
        return cls(tensors["states"], tensors["actions"], tensors["next_states"],
                   tensors["episodes"], tensors["stamps"], tuple(names), float(dt),
                   tuple(state_names), tuple(meta.get("sources", [])))

    def save(self, path: str | os.PathLike) -> None:
        """Write a .safetensors file atomically."""
        write_file(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Dataset":
        """Read and validate a dataset file; DataError naming the file if it is not one."""
        try:
            data = read_file(path)
            return cls.from_bytes(data)
        except (ArtifactError, DataError) as exc:
            raise DataError(f"{path}: {exc}") from None
