"""A dataset of transitions (s, a, s'): arrays, episodes, train/validation split by episode,
normalisation statistics, and files in the artifact format (safetensors + JSON, never pickle).

Arrays: states (N, dx), actions (N, du), next_states (N, dx) as float64; episodes (N,) and stamps
(N,) as int64 (stamp = the JointState stamp of s, ns). ``state_names`` names the dx columns
(``position/<joint>``, ``velocity/<joint>``, then any features such as ``ee/x``); actions are
torques in N·m in ``joint_names`` order; ``dt`` is the control period in s.

Image observations (optional, e.g. the simulator's camera): ``frames`` (M, H, W, 3) uint8 rgb,
each distinct camera frame once, and ``image_index`` / ``next_image_index`` (N,) int64 naming the
frame of s and of s' (within an episode the next state's frame is the next transition's: stored
once). ``images`` and ``next_images`` give the (N, H, W, 3) views.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from mbrl_ros.common.artifacts import (
    ArtifactError,
    Schema,
    TensorSpec,
    decode,
    encode,
    read_file,
    write_file,
)
from mbrl_ros.common.msgconv import seconds_to_ns
from mbrl_ros.data.errors import DataError

DATASET_SCHEMA = Schema(
    "mbrl_ros.dataset",
    1,  # images are optional: files without them are as before
    {
        "states": TensorSpec(("N", "dx")),
        "actions": TensorSpec(("N", "du")),
        "next_states": TensorSpec(("N", "dx")),
        "episodes": TensorSpec(("N",), "int64"),
        "stamps": TensorSpec(("N",), "int64"),
        "frames": TensorSpec(("M", "H", "W", 3), "uint8", required=False),
        "image_index": TensorSpec(("N",), "int64", required=False),
        "next_image_index": TensorSpec(("N",), "int64", required=False),
    },
    dim_limits={"dx": 4096, "du": 1024, "H": 4096, "W": 4096},
    required_meta=("joint_names", "dt", "state_names"),
)
DATASET_MAX_BYTES = 2**34  # a dataset file (images make them large); still checked on reading
IMAGE_TENSORS = ("frames", "image_index", "next_image_index")


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
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str = "norm/") -> NormStats:
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
    frames: np.ndarray | None = None
    image_index: np.ndarray | None = None
    next_image_index: np.ndarray | None = None

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
        expected = {
            "states": (n, dx),
            "actions": (n, du),
            "next_states": (n, dx),
            "episodes": (n,),
            "stamps": (n,),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise DataError(
                    f"dataset: {name} has shape {getattr(self, name).shape}, "
                    f"expected {shape} ({dx} state names, {du} joints)"
                )
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise DataError(f"dataset: dt = {self.dt} s must be positive")
        for name in ("states", "actions", "next_states"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise DataError(f"dataset: {name} has non-finite values")
        self._check_images(put, n)

    def _check_images(self, put, n: int) -> None:
        given = [getattr(self, name) is not None for name in IMAGE_TENSORS]
        if not any(given):
            return
        if not all(given):
            raise DataError(f"dataset: image observations need all of {list(IMAGE_TENSORS)}")
        frames = np.asarray(self.frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise DataError(
                f"dataset: frames must be uint8 (M, H, W, 3), got {frames.dtype} {frames.shape}"
            )
        put("frames", frames)
        for name in ("image_index", "next_image_index"):
            index = np.asarray(getattr(self, name))
            if index.shape != (n,) or not np.issubdtype(index.dtype, np.integer):
                raise DataError(
                    f"dataset: {name} must be ({n},) integers, got {index.dtype} {index.shape}"
                )
            if n and (index.min() < 0 or index.max() >= len(frames)):
                raise DataError(f"dataset: {name} points outside the {len(frames)} frames")
            put(name, index.astype(np.int64))

    @property
    def has_images(self) -> bool:
        return self.frames is not None

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(H, W, 3) of the image observations, or None."""
        if self.frames is None:
            return None
        h, w, c = self.frames.shape[1:]
        return h, w, c

    def _images(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """frames, image_index, next_image_index; DataError without images (``__post_init__``
        checks that all three or none are given)."""
        if self.frames is None or self.image_index is None or self.next_image_index is None:
            raise DataError("dataset has no image observations")
        return self.frames, self.image_index, self.next_image_index

    @property
    def images(self) -> np.ndarray:
        """Image of each s, (N, H, W, 3) uint8 (a copy); DataError without images."""
        return self._frames_at(self.image_index)

    @property
    def next_images(self) -> np.ndarray:
        """Image of each s', (N, H, W, 3) uint8 (a copy); DataError without images."""
        return self._frames_at(self.next_image_index)

    def _frames_at(self, index) -> np.ndarray:
        return self._images()[0][index]

    def _image_fields(self, index=slice(None)) -> dict:
        if not self.has_images:
            return {}
        frames, image_index, next_image_index = self._images()
        return {
            "frames": frames,
            "image_index": image_index[index],
            "next_image_index": next_image_index[index],
        }

    def with_images(
        self, frames: np.ndarray, image_index: np.ndarray, next_image_index: np.ndarray
    ) -> Dataset:
        """This dataset with image observations (see the module docstring)."""
        return Dataset(
            self.states,
            self.actions,
            self.next_states,
            self.episodes,
            self.stamps,
            self.joint_names,
            self.dt,
            self.state_names,
            self.sources,
            frames,
            image_index,
            next_image_index,
        )

    def compacted(self) -> Dataset:
        """The same transitions keeping only the frames they use (after ``select``)."""
        if not self.has_images:
            return self
        frames, image_index, next_image_index = self._images()
        used, inverse = np.unique(
            np.concatenate([image_index, next_image_index]), return_inverse=True
        )
        n = len(self)
        return self.with_images(frames[used], inverse[:n], inverse[n:])

    @classmethod
    def empty(cls, joint_names: Sequence[str], dt: float, state_names: Sequence[str]) -> Dataset:
        dx, du = len(state_names), len(joint_names)
        return cls(
            np.zeros((0, dx)),
            np.zeros((0, du)),
            np.zeros((0, dx)),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            tuple(joint_names),
            dt,
            tuple(state_names),
        )

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

    def select(self, index) -> Dataset:
        """The rows picked by a boolean mask or an index array, in that order."""
        return Dataset(
            self.states[index],
            self.actions[index],
            self.next_states[index],
            self.episodes[index],
            self.stamps[index],
            self.joint_names,
            self.dt,
            self.state_names,
            self.sources,
            **self._image_fields(index),
        )

    def with_state_columns(
        self, names: Sequence[str], extra: np.ndarray, extra_next: np.ndarray
    ) -> Dataset:
        """This dataset with feature columns ``names`` (N, k) appended to states and next states."""
        return Dataset(
            np.hstack([self.states, extra]),
            self.actions,
            np.hstack([self.next_states, extra_next]),
            self.episodes,
            self.stamps,
            self.joint_names,
            self.dt,
            self.state_names + tuple(names),
            self.sources,
            **self._image_fields(),
        )

    @classmethod
    def from_rollout(
        cls,
        states: np.ndarray,
        actions: np.ndarray,
        episode: int,
        joint_names: Sequence[str],
        dt: float,
        state_names: Sequence[str] | None = None,
        source: str = "sim",
        images: np.ndarray | None = None,
    ) -> Dataset:
        """The transitions of one rollout, states (T+1, dx) and actions (T, du), as episode
        ``episode``, stamped as the simulator's automatic episodes are (episode e starts at
        e·(T+1)·dt). ``state_names``: default [q, q̇] of ``joint_names``. ``images``: the
        (T+1, H, W, 3) uint8 camera frames of the states, if any."""
        T = len(actions)
        dt_ns = seconds_to_ns(dt)
        names = tuple(joint_names)
        seen = (
            {}
            if images is None
            else {
                "frames": images,
                "image_index": np.arange(T),
                "next_image_index": np.arange(1, T + 1),
            }
        )
        if images is not None and len(images) != T + 1:
            raise DataError(f"rollout of {T} actions needs {T + 1} images, got {len(images)}")
        return cls(
            states[:-1],
            actions,
            states[1:],
            np.full(T, episode),
            (episode * (T + 1) + np.arange(T)) * dt_ns,
            names,
            dt,
            tuple(state_names) if state_names is not None else joint_state_names(names),
            (source,),
            **seen,
        )

    @staticmethod
    def concat(parts: Sequence[Dataset], renumber: bool = False) -> Dataset:
        """Rows of ``parts`` in order. ``renumber``: give each part's episodes new ids after the
        previous part's (for datasets from different bags); otherwise ids are kept (for pieces of
        one stream). Parts must agree on joints, dt and state layout."""
        if not parts:
            raise DataError("no datasets to concatenate")
        first = parts[0]
        for i, p in enumerate(parts[1:], 1):
            for what, a, b in (
                ("joint names", p.joint_names, first.joint_names),
                ("state layout", p.state_names, first.state_names),
            ):
                if a != b:
                    raise DataError(f"dataset {i} has {what} {list(a)}, dataset 0 has {list(b)}")
            if abs(p.dt - first.dt) > 1e-9 * first.dt:
                raise DataError(f"dataset {i} has dt = {p.dt} s, dataset 0 has {first.dt} s")
            if p.image_shape != first.image_shape:
                raise DataError(
                    f"dataset {i} has images {p.image_shape}, dataset 0 has {first.image_shape}"
                )
        episodes, offset = [], 0
        for p in parts:
            ids = p.episodes
            if renumber:
                ids = np.unique(ids, return_inverse=True)[1].astype(np.int64) + offset
                offset += p.n_episodes
            episodes.append(ids)
        sources = tuple(dict.fromkeys(s for p in parts for s in p.sources))
        images = {}
        if first.has_images:
            frames = [p._images()[0] for p in parts]  # all parts have images of one shape
            offsets = np.cumsum([0] + [len(f) for f in frames])
            images = {"frames": np.concatenate(frames)} | {
                name: np.concatenate([getattr(p, name) + o for p, o in zip(parts, offsets)])
                for name in ("image_index", "next_image_index")
            }
        return Dataset(
            np.concatenate([p.states for p in parts]),
            np.concatenate([p.actions for p in parts]),
            np.concatenate([p.next_states for p in parts]),
            np.concatenate(episodes),
            np.concatenate([p.stamps for p in parts]),
            first.joint_names,
            first.dt,
            first.state_names,
            sources,
            **images,
        )

    def split(self, val_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
        """(train, validation) with whole episodes in each; round(val_fraction·E) of the E episodes
        (at least one, at most E − 1) drawn with ``seed`` go to validation."""
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"val_fraction {val_fraction} must be in [0, 1)")
        ids = self.episode_ids
        if val_fraction == 0.0:
            return self, self.select(np.zeros(len(self), bool))
        if len(ids) < 2:
            raise DataError(
                f"cannot split {len(ids)} episode(s) into training and validation; "
                "record more episodes or use a validation fraction of 0"
            )
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
        """The dataset file's bytes (unused frames left out)."""
        return encode(
            DATASET_SCHEMA,
            {
                "states": self.states,
                "actions": self.actions,
                "next_states": self.next_states,
                "episodes": self.episodes,
                "stamps": self.stamps,
                **self.compacted()._image_fields(),
            },
            {
                "joint_names": list(self.joint_names),
                "dt": self.dt,
                "state_names": list(self.state_names),
                "action_names": list(self.action_names),
                "sources": list(self.sources),
            },
            max_bytes=DATASET_MAX_BYTES,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Dataset:
        tensors, meta = decode(data, DATASET_SCHEMA, max_bytes=DATASET_MAX_BYTES)
        names, dt, state_names = meta["joint_names"], meta["dt"], meta["state_names"]
        for key, value in (
            ("joint_names", names),
            ("state_names", state_names),
            ("sources", meta.get("sources", [])),
        ):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DataError(f"dataset metadata '{key}' must be a list of strings")
        if isinstance(dt, bool) or not isinstance(dt, (int, float)):
            raise DataError(f"dataset metadata 'dt' = {dt!r} must be a number")
        return cls(
            tensors["states"],
            tensors["actions"],
            tensors["next_states"],
            tensors["episodes"],
            tensors["stamps"],
            tuple(names),
            float(dt),
            tuple(state_names),
            tuple(meta.get("sources", [])),
            *(tensors.get(name) for name in IMAGE_TENSORS),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write a .safetensors file atomically."""
        write_file(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Dataset:
        """Read and validate a dataset file; DataError naming the file if it is not one."""
        try:
            data = read_file(path, DATASET_MAX_BYTES)
            return cls.from_bytes(data)
        except (ArtifactError, DataError) as exc:
            raise DataError(f"{path}: {exc}") from None
