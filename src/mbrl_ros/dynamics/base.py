"""The interface every dynamics model implements, and what they share.

A model predicts the next state s' from (s, a) as a Gaussian per state dimension. Learned models
work on normalised inputs and predict the normalised change Δs = s' − s; ``normalise_inputs`` and
``delta_to_next`` do that conversion once for all of them. Models travel as artifacts
(``mbrl_ros.common.artifacts``): each kind declares a Schema (``model_schema``) and registers
itself with ``register`` so ``model_from_bytes`` can rebuild any model from its bytes.

Shapes: s (..., dx), a (..., du); leading dimensions are batch dimensions and broadcast.
Units: the dataset's (rad, rad/s, N·m, and m for end-effector features).
"""

from __future__ import annotations

import abc
import copy
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from mbrl_ros.common.artifacts import ArtifactError, Schema, TensorSpec, decode, read_header
from mbrl_ros.data.dataset import Dataset, NormStats

Progress = Callable[[str], None]
Propagation = Literal["mean", "sample", "ts1", "tsinf"]


class ModelError(ValueError):
    """A model cannot be fit or used with the given data; the message says why."""


class FitStopped(ModelError):
    """A fit ended early because ``DynamicsModel.stop_fits`` was called; the model is left as it
    was before the fit."""


@dataclass(frozen=True)
class ModelSignature:
    """What a model was trained on: joints, state columns, control period (s)."""

    joint_names: tuple[str, ...]
    state_names: tuple[str, ...]
    dt: float

    @classmethod
    def of(cls, dataset: Dataset) -> ModelSignature:
        return cls(tuple(dataset.joint_names), tuple(dataset.state_names), float(dataset.dt))

    def meta(self) -> dict:
        return {
            "joint_names": list(self.joint_names),
            "state_names": list(self.state_names),
            "dt": self.dt,
        }

    @classmethod
    def from_meta(cls, meta: dict) -> ModelSignature:
        try:
            return cls(
                tuple(str(j) for j in meta["joint_names"]),
                tuple(str(s) for s in meta["state_names"]),
                float(meta["dt"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"model metadata lacks a valid signature: {exc}") from None

    def check(self, other: ModelSignature, what: str = "data") -> None:
        """ModelError if ``other`` (a dataset's or a robot's) differs from this model's."""
        if other.joint_names != self.joint_names:
            raise ModelError(
                f"model is for joints {list(self.joint_names)}, {what} has "
                f"{list(other.joint_names)}"
            )
        if other.state_names != self.state_names:
            raise ModelError(
                f"model state layout {list(self.state_names)} differs from the "
                f"{what}'s {list(other.state_names)}"
            )
        if abs(other.dt - self.dt) > 1e-9:
            raise ModelError(
                f"model control period {self.dt} s differs from the {what}'s {other.dt} s"
            )


@dataclass
class FitReport:
    """Outcome of ``fit``: training and validation loss per epoch/iteration, time (s), and
    whether training diverged and was rolled back."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    rolled_back: bool = False
    message: str = ""


class DynamicsModel(abc.ABC):
    """p(s' | s, a) = N(mean, diag(var)). Subclasses set ``kind``, ``min_transitions`` and
    ``SCHEMA`` (``model_schema``), implement ``fit``, ``predict``, ``to_bytes`` and ``from_bytes``
    (which starts with ``decode_artifact``)."""

    kind: ClassVar[str]
    SCHEMA: ClassVar[Schema]
    min_transitions: int = 1  # a class constant, or set per instance (physics, gmm)
    # s' = s + the de-normalised Δs of ``delta_to_next`` (the stats' delta_mean): ``with_offset``
    predicts_delta: ClassVar[bool] = True
    config: Any  # the kind's configuration dataclass
    _norm_tensors: dict[torch.dtype, dict[str, torch.Tensor]]

    def __init__(
        self,
        signature: ModelSignature,
        stats: NormStats | None = None,
        device: str | torch.device | None = None,
    ):
        self.signature, self.stats = signature, stats
        # Free-form JSON metadata carried in the artifact's "info" (e.g. the fitter's model
        # version, data size, validation error); every model writes and restores it.
        self.info: dict = {}
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._stop = threading.Event()

    # -- to implement ------------------------------------------------------------------------
    @abc.abstractmethod
    def fit(
        self, train: Dataset, val: Dataset | None = None, progress: Progress | None = None
    ) -> FitReport:
        """Fit to ``train`` (early stopping / model selection on ``val`` where used)."""

    @abc.abstractmethod
    def predict(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (..., dx) and variance (..., dx) of s'; differentiable in s and a."""

    # -- shared ------------------------------------------------------------------------------
    def stop_fits(self) -> None:
        """Stop this model's fits, from any thread: a running fit raises FitStopped at its next
        batch, epoch or evaluation (leaving the model as it was), and so does any later fit at
        its first (for a process that is shutting down)."""
        self._stop.set()

    def check_stop(self) -> None:
        """For the fits' loops: FitStopped once ``stop_fits`` was called."""
        if self._stop.is_set():
            raise FitStopped(f"{self.kind} fit stopped on request")

    @property
    def dx(self) -> int:
        return len(self.signature.state_names)

    @property
    def du(self) -> int:
        return len(self.signature.joint_names)

    def check_data(self, dataset: Dataset) -> None:
        """ModelError for data of other joints / layout, fewer than ``min_transitions``,
        non-finite values or constant input columns."""
        self.signature.check(ModelSignature.of(dataset))
        if len(dataset) < self.min_transitions:
            raise ModelError(
                f"{self.kind} model needs at least {self.min_transitions} "
                f"transitions, the dataset has {len(dataset)}"
            )
        for name, arr in (
            ("states", dataset.states),
            ("actions", dataset.actions),
            ("next_states", dataset.next_states),
        ):
            if not np.all(np.isfinite(arr)):
                raise ModelError(f"dataset {name} contain non-finite values")
        self.check_inputs_vary(dataset)

    def check_inputs_vary(self, dataset: Dataset, floor: float = 1e-6) -> None:
        """ModelError naming the state and action columns that are constant (std < ``floor``)
        in ``dataset``: a learned model cannot tell what they do, and normalising them would blow
        up any later variation."""
        names = dataset.state_names + dataset.action_names
        std = np.concatenate([dataset.states.std(0), dataset.actions.std(0)])
        flat = [n for n, v in zip(names, std) if not v >= floor]
        if flat:
            raise ModelError(
                f"{self.kind} model: input columns {flat} are constant in the "
                f"training data (std < {floor:g}); record data that moves them"
            )

    @property
    def stats(self) -> NormStats | None:
        """The normalisation statistics (None until fitted)."""
        return self._stats

    @stats.setter
    def stats(self, stats: NormStats | None) -> None:
        self._stats, self._norm_tensors = stats, {}

    def fitted_stats(self) -> NormStats:
        """The normalisation statistics; ModelError if the model is not fitted."""
        if self.stats is None:
            raise ModelError(f"{self.kind} model is not fitted")
        return self.stats

    def _norm(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The statistics as tensors of ``dtype`` on the model's device (converted once per
        dtype: the planners call this at every predicted step)."""
        stats = self.fitted_stats()
        if dtype not in self._norm_tensors:
            self._norm_tensors[dtype] = {
                k: torch.tensor(v, dtype=dtype, device=self.device)  # a copy: v may be read-only
                for k, v in vars(stats).items()
            }
        return self._norm_tensors[dtype]

    def normalise_inputs(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Concatenated normalised inputs (..., dx + du), broadcasting s and a."""
        n = self._norm(s.dtype)
        shape = torch.broadcast_shapes(s.shape[:-1], a.shape[:-1])
        s_n = (s - n["state_mean"]) / n["state_std"]
        a_n = (a - n["action_mean"]) / n["action_std"]
        return torch.cat([s_n.expand(*shape, -1), a_n.expand(*shape, -1)], dim=-1)

    def delta_to_next(
        self, s: torch.Tensor, delta_mean_n: torch.Tensor, delta_var_n: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised Δs mean and variance → mean and variance of s' = s + Δs."""
        n = self._norm(delta_mean_n.dtype)
        mean = s + n["delta_mean"] + n["delta_std"] * delta_mean_n
        return mean, delta_var_n * n["delta_std"] ** 2

    def with_offset(self, offset) -> DynamicsModel:
        """This model with every mean prediction s' shifted by ``offset`` (dx,), state units (the
        disturbance estimate of offset-free MPC, ``dynamics.offset``): a shallow copy sharing the
        parameters, whose normalised change Δs is taken around ``delta_mean + offset``, so every
        prediction path (propagation modes, batched rollouts) shifts alike and the Jacobians stay.
        ModelError for a kind that does not predict through ``delta_to_next``."""
        if not self.predicts_delta:
            raise ModelError(f"{self.kind} model predictions cannot take an offset")
        stats = self.fitted_stats()
        d = np.asarray(offset, dtype=np.float64)
        if d.shape != (self.dx,) or not np.all(np.isfinite(d)):
            raise ModelError(f"model offset must be {self.dx} finite values, got shape {d.shape}")
        shifted = copy.copy(self)
        shifted.stats = replace(stats, delta_mean=stats.delta_mean + d)
        return shifted

    def sample(
        self, s: torch.Tensor, a: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One draw of s' (..., dx) from the predictive Gaussian."""
        mean, var = self.predict(s, a)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + var.sqrt() * noise

    def propagate(
        self,
        s: torch.Tensor,
        a: torch.Tensor,
        mode: Propagation = "mean",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Next state for planners: the mean, or a sample. Ensembles add 'ts1' / 'tsinf'."""
        if mode == "mean":
            return self.predict(s, a)[0]
        if mode == "sample":
            return self.sample(s, a, generator)
        raise ModelError(f"{self.kind} model has no propagation mode '{mode}'")

    def mean_jacobians(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A (B, dx, dx) = ∂s'/∂s and B (B, dx, du) = ∂s'/∂a of the mean prediction at the rows
        of s (B, dx) and a (B, du).

        Any model: one forward pass over all rows as a batch, then the dx vector-Jacobian
        products of the unit directions e_i (the gradient of Σ_b f_i(s_b, a_b) holds row i of
        every A_b, B_b, as rows do not couple) batched into one reverse pass
        (``is_grads_batched``): ~100× faster than ``vmap(jacrev)`` per row for an ensemble, 1.6×
        faster than dx separate reverse passes. Models with a closed form override this."""
        with torch.enable_grad():
            x, u = s.detach().requires_grad_(), a.detach().requires_grad_()
            y = self.propagate(x, u, "mean")
            n = y.shape[-1]
            basis = torch.eye(n, dtype=y.dtype, device=y.device)[:, None, :].expand(n, *y.shape)
            A, B = torch.autograd.grad(
                y,
                (x, u),
                grad_outputs=basis,
                is_grads_batched=True,
                allow_unused=True,
                materialize_grads=True,
            )
        return A.transpose(0, 1), B.transpose(0, 1)

    def rollout(
        self,
        s0: torch.Tensor,
        actions: torch.Tensor,
        mode: Propagation = "mean",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """States (..., H + 1, dx) from s0 (..., dx) under actions (..., H, du)."""
        states = [s0]
        for t in range(actions.shape[-2]):
            states.append(self.propagate(states[-1], actions[..., t, :], mode, generator))
        return torch.stack(states, dim=-2)

    def rollout_policy(
        self, s0: torch.Tensor, policy: Callable[[int, torch.Tensor], torch.Tensor], horizon: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean prediction closed in a loop with ``policy(t, s) -> a``: states (B, H + 1, dx)
        and the policy's actions (B, H, du) from s0 (B, dx), H = ``horizon``. Without autograd
        (planners' line searches and forward passes)."""
        with torch.no_grad():
            states, actions = [s0], []
            for t in range(horizon):
                actions.append(policy(t, states[-1]))
                states.append(self.propagate(states[-1], actions[-1], "mean"))
            return torch.stack(states, 1), torch.stack(actions, 1)

    # -- artifacts -----------------------------------------------------------------------------
    def artifact_meta(self, **extra) -> dict:
        """Artifact metadata shared by every kind: signature, ``config`` (a dataclass) and
        ``info``, plus ``extra``."""
        return {**self.signature.meta(), "config": asdict(self.config), "info": self.info, **extra}

    @staticmethod
    def config_from_meta(schema_name: str, meta: dict, config_cls):
        """``config_cls`` rebuilt from artifact metadata; ArtifactError naming what is wrong."""
        raw = meta.get("config")
        names = {f.name for f in fields(config_cls)}
        if not isinstance(raw, dict) or set(raw) - names:
            raise ArtifactError(
                f"{schema_name}: metadata 'config' must be an object with keys from {sorted(names)}"
            )
        try:
            return replace(config_cls(), **raw)
        except (ModelError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{schema_name}: invalid config: {exc}") from None

    def restore_info(self, meta: dict) -> None:
        self.info = model_info(meta)

    @classmethod
    def decode_artifact(cls, data: bytes, device, config_cls) -> tuple[Any, dict, dict]:
        """What every ``from_bytes`` starts with: ``data`` decoded against ``cls.SCHEMA``, a model
        built from its signature, normalisation statistics and ``config_cls`` config, its info
        restored; (model, tensors, meta). ArtifactError if the statistics do not fit the
        signature or the model cannot be built from them."""
        tensors, meta = decode(data, cls.SCHEMA)
        name = cls.SCHEMA.name
        signature = ModelSignature.from_meta(meta)
        config = cls.config_from_meta(name, meta, config_cls)
        dx, du = len(signature.state_names), len(signature.joint_names)
        if tensors["norm/state_mean"].shape != (dx,) or tensors["norm/action_mean"].shape != (du,):
            raise ArtifactError(
                f"{name}: normalisation statistics do not match {dx} state columns and {du} joints"
            )
        try:
            # every kind's __init__ takes (signature, stats, device, config)
            model = cls(signature, NormStats.from_tensors(tensors), device, config)  # type: ignore[call-arg]
        except (ModelError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{name}: {exc}") from None
        model.restore_info(meta)
        return model, tensors, meta

    @abc.abstractmethod
    def to_bytes(self) -> bytes:
        """Artifact bytes (the kind's Schema; signature and norm stats included)."""

    @classmethod
    @abc.abstractmethod
    def from_bytes(cls, data: bytes, device=None) -> DynamicsModel:
        """Rebuild from artifact bytes; ArtifactError if they are not a valid model of this kind."""


# The normalisation statistics every model artifact holds (norm/<name>, NormStats), their dims.
NORM_DIMS = {
    "state_mean": "dx",
    "state_std": "dx",
    "action_mean": "du",
    "action_std": "du",
    "delta_mean": "dx",
    "delta_std": "dx",
}
MODEL_META = ("joint_names", "state_names", "dt", "config")


def model_schema(
    name: str,
    tensors: dict[str, TensorSpec],
    dim_limits: dict[str, int],
    extra_meta: tuple[str, ...] = (),
    **options,
) -> Schema:
    """The artifact schema of a model kind: its ``tensors`` beside the normalisation statistics,
    the signature and config metadata (MODEL_META) plus ``extra_meta``; ``options`` as Schema's."""
    norm = {f"norm/{k}": TensorSpec((d,)) for k, d in NORM_DIMS.items()}
    return Schema(
        name,
        1,
        {**norm, **tensors},
        dim_limits=dim_limits,
        required_meta=MODEL_META + extra_meta,
        **options,
    )


# Types of the entries of a model artifact's "info" that readers act on (the dynamics fitter's):
# counts (integers ≥ 0), stamps (integers, ns; -1 = none) and numbers (or null).
INFO_COUNTS = ("version", "transitions", "episodes")
INFO_STAMPS = ("stamp_ns", "seen_until_ns")
INFO_NUMBERS = ("val_rmse_1step", "val_loss", "fit_seconds")


def model_info(meta: dict) -> dict:
    """The ``info`` of model artifact metadata with the entries readers act on checked (see
    INFO_COUNTS, INFO_STAMPS, INFO_NUMBERS); ArtifactError naming a wrong one."""
    info = meta.get("info", {})
    if not isinstance(info, dict):
        raise ArtifactError(f"model info must be a JSON object, got {type(info).__name__}")
    for key in INFO_COUNTS + INFO_STAMPS:
        value = info.get(key, 0)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < (0 if key in INFO_COUNTS else -1)
        ):
            raise ArtifactError(
                f"model info '{key}' = {value!r} is not "
                f"{'a count' if key in INFO_COUNTS else 'a stamp (ns)'}"
            )
    for key in INFO_NUMBERS:
        value = info.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ArtifactError(f"model info '{key}' = {value!r} is not a number")
    return info


_REGISTRY: dict[str, type[DynamicsModel]] = {}


def register(schema_name: str):
    """Class decorator: artifacts of schema ``schema_name`` are rebuilt by this class."""

    def wrap(cls):
        _REGISTRY[schema_name] = cls
        return cls

    return wrap


def model_from_bytes(data: bytes, device=None) -> DynamicsModel:
    """Any registered model from its artifact bytes (dispatch on the schema name)."""
    _, meta = read_header(data)
    schema = meta.get("schema")
    cls = _REGISTRY.get(schema) if isinstance(schema, str) else None
    if cls is None:
        raise ArtifactError(
            f"artifact schema {meta.get('schema')!r} is not a dynamics model "
            f"(known: {sorted(_REGISTRY)})"
        )
    return cls.from_bytes(data, device=device)
