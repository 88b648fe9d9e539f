"""The model kinds by name, for the command line and the fitter node: which module defines each,
which exist in this install, how to make a new one and how to load any from its artifact; the
fitter's settings (``FitterSettings``: which model, how it is trained, when it is refitted),
declared by the fitter node and built offline by ``experiments.versions``."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields, replace

import torch

from mbrl_ros.common.settings import Settings, setting
from mbrl_ros.dynamics.base import (
    _REGISTRY,
    DynamicsModel,
    ModelError,
    ModelSignature,
    model_from_bytes,
)

# kind → module whose import registers the class with that ``kind``
MODEL_MODULES = {
    "ensemble": "mbrl_ros.dynamics.ensemble",
    "mlp": "mbrl_ros.dynamics.ensemble",
    "gp": "mbrl_ros.dynamics.gp",
    "sparse-gp": "mbrl_ros.dynamics.gp",
    "gmm": "mbrl_ros.dynamics.gmm",
    "physics": "mbrl_ros.dynamics.physics",
}
NETWORK_KINDS = ("ensemble", "mlp")


def _import(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return False
    return True


def _classes() -> dict[str, type[DynamicsModel]]:
    for module in dict.fromkeys(MODEL_MODULES.values()):
        _import(module)
    return {cls.kind: cls for cls in _REGISTRY.values()}


def available_kinds() -> list[str]:
    """The kinds of MODEL_MODULES whose class exists in this install."""
    classes = _classes()
    return [k for k in MODEL_MODULES if k in classes]


def model_class(kind: str) -> type[DynamicsModel]:
    """The class of model ``kind``; ModelError naming the kinds that exist otherwise."""
    cls = _classes().get(kind)
    if cls is None:
        known = "" if kind in MODEL_MODULES else f" (kinds: {', '.join(MODEL_MODULES)})"
        raise ModelError(
            f"model kind '{kind}' is not available in this install{known}; "
            f"available: {', '.join(available_kinds())}"
        )
    return cls


def new_model(
    kind: str,
    signature: ModelSignature,
    device: str | torch.device | None = None,
    robot: str | None = None,
    gravity_compensation: bool = False,
    **network_options,
) -> DynamicsModel:
    """An unfitted model of ``kind``. ``robot`` (name or URDF path) is the physics model's arm,
    ``gravity_compensation`` whether that arm cancels its own weight; ``network_options``
    (EnsembleConfig fields: members, hidden, layers, max_epochs, ...) apply to the network kinds
    only; None values are ignored."""
    cls = model_class(kind)
    options = {k: v for k, v in network_options.items() if v is not None}
    if kind == "physics":
        from mbrl_ros.dynamics.physics import PhysicsConfig, PhysicsModel

        assert issubclass(cls, PhysicsModel)  # the class registered as kind "physics"
        config = PhysicsConfig(gravity_compensation=gravity_compensation)
        return cls(
            signature, device=device, config=replace(config, robot=robot) if robot else config
        )
    if kind not in NETWORK_KINDS:
        return cls(signature, device=device)
    from mbrl_ros.dynamics.ensemble import EnsembleConfig, EnsembleModel, MLPModel

    assert issubclass(cls, EnsembleModel)  # NETWORK_KINDS are ensemble.py's classes
    names = {f.name for f in fields(EnsembleConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ModelError(f"unknown network options {unknown} (known: {sorted(names)})")
    defaults = {"members": 1, "bootstrap": False} if cls is MLPModel else {}
    return cls(signature, device=device, config=EnsembleConfig(**{**defaults, **options}))


def load_model(data: bytes, device: str | torch.device | None = None) -> DynamicsModel:
    """Any model of an available kind from its artifact bytes."""
    _classes()
    return model_from_bytes(data, device)


# FitterSettings fields that are EnsembleConfig fields of the same name
NETWORK_OPTIONS = ("members", "hidden", "layers", "max_epochs", "patience", "seed")


@dataclass(frozen=True)
class FitterSettings(Settings):
    """What the dynamics fitter fits and when: the model kind, the network options (network kinds
    only), the validation split and the refit schedule."""

    model: str = setting("ensemble", "model kind", choices=tuple(MODEL_MODULES))
    min_transitions: int = setting(
        500,
        "first fit once this many transitions are there (and at least the model's minimum)",
        (1, 10**9),
        runtime=True,
    )
    refit_every: int = setting(1000, "new transitions between fits", (1, 10**9), runtime=True)
    val_fraction: float = setting(
        0.2,
        "fraction of episodes held out for early stopping and the validation error",
        (0.0, 0.9),
        runtime=True,
    )
    warm_start: bool = setting(
        True,
        "network models: continue from the previous weights (and the "
        "first fit's input normalisation); false = a fresh fit each time",
    )
    members: int = setting(5, "network models: ensemble members (mlp: use 1)", (1, 100))
    hidden: int = setting(200, "network models: units per hidden layer", (1, 4096))
    layers: int = setting(3, "network models: hidden layers", (1, 16))
    max_epochs: int = setting(100, "network models: most epochs per fit", (1, 100000))
    patience: int = setting(
        10, "network models: epochs without improvement before a fit stops", (1, 100000)
    )
    max_fit_seconds: float = setting(
        300.0,
        "network models: time budget of one fit (s); 0 = none "
        "(max_epochs bounds it: lockstep runs must not depend on "
        "the machine's speed)",
        (0.0, 1e6),
    )
    seed: int = setting(0, "seed of the split and the training", (0, 2**31 - 1))

    def new_model(
        self,
        signature: ModelSignature,
        device: str | torch.device | None = None,
        robot: str | None = None,
        gravity_compensation: bool = False,
    ) -> DynamicsModel:
        """An unfitted model of this kind (``new_model``, which applies the network options to
        the network kinds only)."""
        options = {k: getattr(self, k) for k in NETWORK_OPTIONS}
        return new_model(
            self.model,
            signature,
            device,
            robot,
            gravity_compensation,
            max_seconds=self.max_fit_seconds,
            **options,
        )
