"""Goal-conditioned network policies u = π(x, target) for the arm, and their artifact.

Input: the joint state x = [q (n) rad, q̇ (n) rad/s] and the end-effector target (3,) m in the
base frame, each normalised by mean and standard deviation stored with the policy. Hidden layers
with ``tanh`` or ``silu``; the output is squashed to the effort limits, u = effort · tanh(z)
(N·m), so every torque the network produces is within them (the safety layer clamps anyway).
The network computes in float64 (it is small; the model rollouts it is trained through cast as
they need).

Artifact (``POLICY_SCHEMA``, safetensors via ``mbrl_ros.common.artifacts``; never pickled): the
layer weights ``net/<i>/weight`` (out, in) and ``net/<i>/bias`` (out,), the normalisation
``norm/state_mean``, ``norm/state_std`` (dx,), ``norm/target_mean``, ``norm/target_std`` (3,) and
``effort`` (du,); metadata robot name, joint names, state names, dt (s), hidden sizes and
activation. ``GoalPolicy.from_bytes`` validates all of it and, given the robot it is meant for,
refuses a policy of another robot, other joints, another observation layout or control period.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from mbrl_ros.common.artifacts import ArtifactError, Schema, TensorSpec, decode, encode
from mbrl_ros.data.dataset import joint_state_names
from mbrl_ros.policy.errors import PolicyError

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "silu": torch.nn.functional.silu,
}
TARGET_DIM = 3
MAX_HIDDEN = 4096
MAX_LAYERS = 16

POLICY_SCHEMA = Schema(
    "mbrl_ros/policy",
    1,
    {
        "norm/state_mean": TensorSpec(("dx",)),
        "norm/state_std": TensorSpec(("dx",)),
        "norm/target_mean": TensorSpec((TARGET_DIM,)),
        "norm/target_std": TensorSpec((TARGET_DIM,)),
        "effort": TensorSpec(("du",)),
    },
    dim_limits={"dx": 2048, "du": 1024},
    required_meta=("robot", "joint_names", "state_names", "dt", "hidden", "activation"),
    extra_tensors=True,
    extra_dtypes=("float64",),
)


@dataclass(frozen=True)
class PolicySignature:
    """What a policy acts for: the robot's name, its joints (torque order), the state columns of
    its input (``position/<joint>`` then ``velocity/<joint>``) and the control period dt (s)."""

    robot: str
    joint_names: tuple[str, ...]
    state_names: tuple[str, ...]
    dt: float

    @classmethod
    def for_joints(cls, robot: str, joint_names: Sequence[str], dt: float) -> PolicySignature:
        """The signature of a policy on [q, q̇] of ``joint_names``."""
        names = tuple(joint_names)
        return cls(robot, names, joint_state_names(names), float(dt))

    def check(self, robot: str, joint_names: Sequence[str], dt: float | None = None) -> None:
        """PolicyError unless this policy is for ``robot``, exactly ``joint_names`` in that order
        and (if given) control period ``dt`` s."""
        if robot != self.robot:
            raise PolicyError(f"policy is for robot '{self.robot}', not '{robot}'")
        if tuple(joint_names) != self.joint_names:
            raise PolicyError(
                f"policy is for joints {list(self.joint_names)} in that order, "
                f"not {list(joint_names)}"
            )
        if dt is not None and abs(dt - self.dt) > 1e-9:
            raise PolicyError(
                f"policy was trained for a control period of {self.dt:g} s, not {dt:g} s"
            )


def _tensor_name(key: str) -> str:
    """A layer's state-dict key ("0.weight") → its artifact tensor name ("net/0/weight")."""
    return "net/" + key.replace(".", "/")


def _fit_stats(values: np.ndarray, floor: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    return values.mean(0), np.maximum(values.std(0), floor)


class GoalPolicy(torch.nn.Module):
    """u = effort · tanh(MLP([(x − μ_x)/σ_x, (target − μ_g)/σ_g])). ``effort`` (du,) N·m;
    ``hidden``: units per hidden layer; ``seed`` sets the initial weights (the last layer starts
    small, so the first torques are near zero). Normalisation starts at mean 0, std 1 and is set
    from data with ``set_normalisation``."""

    state_mean: torch.Tensor  # buffers (float64)
    state_std: torch.Tensor
    target_mean: torch.Tensor
    target_std: torch.Tensor
    effort: torch.Tensor

    def __init__(
        self,
        signature: PolicySignature,
        effort,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        seed: int = 0,
    ):
        super().__init__()
        if signature.state_names != joint_state_names(signature.joint_names):
            raise PolicyError(
                f"policy input must be the joint positions then velocities of "
                f"{list(signature.joint_names)}; got state columns "
                f"{list(signature.state_names)}"
            )
        if activation not in ACTIVATIONS:
            raise PolicyError(f"activation '{activation}' is not one of {sorted(ACTIVATIONS)}")
        hidden = tuple(hidden)
        if not 1 <= len(hidden) <= MAX_LAYERS or not all(
            isinstance(h, (int, np.integer)) and 1 <= h <= MAX_HIDDEN for h in hidden
        ):
            raise PolicyError(
                f"hidden = {list(hidden)} must be 1..{MAX_LAYERS} layer sizes in 1..{MAX_HIDDEN}"
            )
        effort = np.asarray(effort, dtype=np.float64)
        du, dx = len(signature.joint_names), len(signature.state_names)
        if effort.shape != (du,) or not np.all(np.isfinite(effort)) or np.any(effort <= 0):
            raise PolicyError(
                f"effort must be {du} finite positive limits (N·m), got {effort.tolist()}"
            )
        self.signature, self.hidden, self.activation = (
            signature,
            tuple(int(h) for h in hidden),
            activation,
        )
        self._act = ACTIVATIONS[activation]
        self.info: dict = {}  # free-form JSON carried in the artifact (e.g. a training summary)
        gen = torch.Generator().manual_seed(int(seed))
        sizes = [dx + TARGET_DIM, *self.hidden, du]
        self.layers = torch.nn.ModuleList()
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layer = torch.nn.Linear(a, b, dtype=torch.float64)
            bound = (0.01 if i == len(sizes) - 2 else 1.0) / math.sqrt(a)
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.zero_()
            self.layers.append(layer)
        f64 = torch.float64
        self.register_buffer("state_mean", torch.zeros(dx, dtype=f64))
        self.register_buffer("state_std", torch.ones(dx, dtype=f64))
        self.register_buffer("target_mean", torch.zeros(TARGET_DIM, dtype=f64))
        self.register_buffer("target_std", torch.ones(TARGET_DIM, dtype=f64))
        self.register_buffer("effort", torch.tensor(effort, dtype=f64))

    @property
    def dx(self) -> int:
        return len(self.signature.state_names)

    @property
    def du(self) -> int:
        return len(self.signature.joint_names)

    def set_normalisation(self, states, targets) -> None:
        """Input statistics from states (N, dx) and targets (M, 3) (std floored at 1e-6)."""
        states, targets = np.asarray(states, np.float64), np.asarray(targets, np.float64)
        if (
            states.ndim != 2
            or states.shape[1] != self.dx
            or targets.ndim != 2
            or targets.shape[1] != TARGET_DIM
            or not len(states)
            or not len(targets)
        ):
            raise PolicyError(
                f"normalisation needs states (N, {self.dx}) and targets (M, 3), "
                f"got {states.shape} and {targets.shape}"
            )
        if not (np.all(np.isfinite(states)) and np.all(np.isfinite(targets))):
            raise PolicyError("normalisation data has non-finite values")
        with torch.no_grad():
            for (mean, std), names in (
                (_fit_stats(states), ("state_mean", "state_std")),
                (_fit_stats(targets), ("target_mean", "target_std")),
            ):
                getattr(self, names[0]).copy_(torch.as_tensor(mean))
                getattr(self, names[1]).copy_(torch.as_tensor(std))

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Torques (..., du) N·m for states x (..., ≥ dx; the first dx columns are used) and
        targets (..., 3), batch shapes broadcast; the dtype of ``x``."""
        shape = torch.broadcast_shapes(x.shape[:-1], target.shape[:-1])
        xs = (x[..., : self.dx].to(torch.float64) - self.state_mean) / self.state_std
        gs = (target.to(torch.float64) - self.target_mean) / self.target_std
        h = torch.cat([xs.expand(*shape, -1), gs.expand(*shape, -1)], dim=-1)
        for layer in self.layers[:-1]:
            h = self._act(layer(h))
        return (self.effort * torch.tanh(self.layers[-1](h))).to(x.dtype)

    def frozen(self) -> FrozenPolicy:
        """A numpy copy of the current weights, for acting at the control rate."""
        return FrozenPolicy(self)

    # -- artifact -----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Artifact bytes (``self.info`` travels in the metadata)."""
        sig = self.signature
        tensors = {_tensor_name(k): v.detach() for k, v in self.layers.state_dict().items()}
        tensors |= {
            "norm/state_mean": self.state_mean,
            "norm/state_std": self.state_std,
            "norm/target_mean": self.target_mean,
            "norm/target_std": self.target_std,
            "effort": self.effort,
        }
        meta = {
            "robot": sig.robot,
            "joint_names": list(sig.joint_names),
            "state_names": list(sig.state_names),
            "dt": sig.dt,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "info": self.info,
        }
        return encode(POLICY_SCHEMA, tensors, meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> GoalPolicy:
        """The policy in artifact ``data``; ArtifactError naming what is wrong if the bytes are
        not a valid policy. Check that it fits the robot it will run on with
        ``policy.signature.check``."""
        tensors, meta = decode(data, POLICY_SCHEMA)
        name = POLICY_SCHEMA.name
        robot_name, names, states = meta["robot"], meta["joint_names"], meta["state_names"]
        if not isinstance(robot_name, str) or not robot_name:
            raise ArtifactError(f"{name}: metadata 'robot' must be a non-empty string")
        for key, value in (("joint_names", names), ("state_names", states)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ArtifactError(f"{name}: metadata '{key}' must be a list of strings")
        step = meta["dt"]
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0:
            raise ArtifactError(f"{name}: metadata 'dt' = {step!r} must be a positive number")
        signature = PolicySignature(robot_name, tuple(names), tuple(states), float(step))
        if signature.state_names != joint_state_names(signature.joint_names):
            raise ArtifactError(
                f"{name}: observation layout {list(states)} is not supported "
                f"(a policy reads the joint positions then velocities of "
                f"{list(names)})"
            )
        if len(set(names)) != len(names) or tensors["effort"].shape != (len(names),):
            raise ArtifactError(
                f"{name}: {len(names)} joint names (distinct) must match "
                f"'effort' of shape {list(tensors['effort'].shape)}"
            )
        hidden, activation = meta["hidden"], meta["activation"]
        if not isinstance(hidden, list) or not all(
            isinstance(h, int) and not isinstance(h, bool) for h in hidden
        ):
            raise ArtifactError(f"{name}: metadata 'hidden' must be a list of integers")
        # the layer shapes the metadata implies must be the tensors there, checked before any
        # network is built (so a small artifact cannot make the decoder allocate a large one)
        sizes = [len(states) + TARGET_DIM, *hidden, len(names)]
        expected: dict[str, tuple[int, ...]] = {}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            expected |= {f"net/{i}/weight": (b, a), f"net/{i}/bias": (b,)}
        got = {k: tuple(v.shape) for k, v in tensors.items() if k.startswith("net/")}
        extra = sorted(set(tensors) - set(expected) - set(POLICY_SCHEMA.tensors))
        if got != expected or extra:
            raise ArtifactError(
                f"{name}: network tensors {got} (and unknown {extra}) do not "
                f"match hidden sizes {hidden}: expected {expected}"
            )
        try:
            policy = cls(signature, tensors["effort"], hidden, activation)
        except PolicyError as exc:
            raise ArtifactError(f"{name}: {exc}") from None
        for key in ("norm/state_std", "norm/target_std"):
            if not np.all(tensors[key] > 0):
                raise ArtifactError(f"{name}: '{key}' must be positive")
        with torch.no_grad():
            policy.layers.load_state_dict(
                {
                    k[4:].replace("/", "."): torch.as_tensor(v)
                    for k, v in tensors.items()
                    if k.startswith("net/")
                }
            )
            for key in ("state_mean", "state_std", "target_mean", "target_std"):
                getattr(policy, key).copy_(torch.as_tensor(tensors[f"norm/{key}"]))
        info = meta.get("info")
        policy.info = info if isinstance(info, dict) else {}
        return policy


def _silu(h: np.ndarray) -> np.ndarray:
    return h * 0.5 * (1.0 + np.tanh(0.5 * h))  # h·sigmoid(h), without exp overflow


_NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"tanh": np.tanh, "silu": _silu}


class FrozenPolicy:
    """The forward pass of a ``GoalPolicy`` in numpy, on a copy of its weights at the time of
    ``GoalPolicy.frozen()``: the path that runs at the control rate (training needs torch's
    autograd; one torch call costs ~100 µs against ~6 µs here for arm2's 2×64 network,
    ``benchmarks/policies.py``). Equal to ``GoalPolicy.forward`` to rounding (tested)."""

    def __init__(self, policy: GoalPolicy):
        self.signature = policy.signature
        self._act = _NUMPY_ACTIVATIONS[policy.activation]

        def copy(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().copy()

        linear = cast("list[torch.nn.Linear]", list(policy.layers))  # (ModuleList is untyped)
        self._layers = [(copy(layer.weight), copy(layer.bias)) for layer in linear]
        self._in_mean = np.concatenate([copy(policy.state_mean), copy(policy.target_mean)])
        self._in_std = np.concatenate([copy(policy.state_std), copy(policy.target_std)])
        self.effort = copy(policy.effort)

    def act(self, q, qd, target) -> np.ndarray:
        """Torque (du,) N·m for joint positions q, velocities q̇ (n,) and a target (3,) m (numpy
        arrays; non-finite inputs or overflowing weights give non-finite torques, which the
        safety layer turns into the hold)."""
        h = (np.concatenate([q, qd, target]) - self._in_mean) / self._in_std
        for weight, bias in self._layers[:-1]:
            h = self._act(weight @ h + bias)
        weight, bias = self._layers[-1]
        return self.effort * np.tanh(weight @ h + bias)
