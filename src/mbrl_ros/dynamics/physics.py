"""Physics-parameter dynamics: the arm's own MuJoCo model (built from its URDF) with a few physical
parameters identified from recorded transitions — the lecture's "hand-engineer a dynamics
representation using knowledge of physics, and fit just a few parameters".

Identified parameters (any subset, ``PhysicsConfig.identify``): per joint the viscous damping
(N·m·s/rad), the friction loss (N·m) and the armature (reflected motor inertia, kg·m²); per moving
link a mass scale that multiplies its mass and rotational inertia. Method: nonlinear least squares
(scipy.optimize.least_squares, trust-region reflective with bounds: values ≥ 0, mass scales in
[0.1, 10]) on the one-step prediction error of the next positions and velocities, each column
divided by the std of its change Δs; the model is stepped for one control period per transition
with ``mujoco.rollout`` (multi-threaded with ``threads`` > 1). The predictive variance is the
per-column variance of the training residuals. Parameters that act only in a fixed combination
are not separately identifiable (e.g. in a planar arm, link 1's mass scale and joint 1's armature
both only add inertia about joint 1); the fit then finds one member of the family, whose
predictions — and joint-space inertia M(q) — are right. ``fit`` writes the parameters into the
model as it searches: refit a separate instance while another thread predicts.

``predict`` is differentiable: the backward pass chains MuJoCo's finite-difference transition
Jacobians (``mjd_transitionFD``) over the physics steps of the control period.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import mujoco
import numpy as np
import torch
from mujoco import rollout as mj_rollout
from scipy.optimize import least_squares

from mbrl_ros.common.artifacts import ArtifactError, Schema, TensorSpec, encode
from mbrl_ros.data.dataset import Dataset, NormStats, joint_state_names
from mbrl_ros.dynamics.base import (
    DynamicsModel,
    FitReport,
    FitStopped,
    ModelError,
    ModelSignature,
    Progress,
    model_schema,
    register,
)
from mbrl_ros.robot.description import RobotDescriptionError, build_mujoco_model, load_robot

KINDS = ("damping", "frictionloss", "armature", "mass_scale")
MASS_SCALE_BOUNDS = (0.1, 10.0)


@dataclass(frozen=True)
class PhysicsConfig:
    """``robot``: URDF name or path; ``identify``: parameter kinds to fit; ``max_transitions``:
    random subset used for identification; ``max_evaluations``: least-squares function
    evaluations; ``threads``: MuJoCo rollout threads; ``gravity_compensation``: the robot
    cancels its own weight (must match the arm the data came from)."""

    robot: str = "arm7"
    scene: str | None = "scene"
    physics_timestep: float = 0.002
    gravity_compensation: bool = False
    identify: tuple[str, ...] = KINDS
    max_transitions: int = 2000
    max_evaluations: int = 30
    threads: int = 1
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "identify", tuple(self.identify))
        unknown = [k for k in self.identify if k not in KINDS]
        if unknown or not self.identify:
            raise ModelError(
                f"physics setting identify = {list(self.identify)} must be a "
                f"non-empty subset of {list(KINDS)}"
            )
        if not isinstance(self.gravity_compensation, bool):
            raise ModelError(
                f"physics setting gravity_compensation = "
                f"{self.gravity_compensation!r} must be true or false"
            )
        for name in ("max_transitions", "max_evaluations", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(f"physics setting {name} = {value!r} must be an integer ≥ 1")
        if not (
            isinstance(self.physics_timestep, (int, float))
            and math.isfinite(self.physics_timestep)
            and self.physics_timestep > 0
        ):
            raise ModelError(
                f"physics setting physics_timestep = {self.physics_timestep!r} must be positive"
            )


class _Simulator:
    """The MuJoCo model of a robot with settable physical parameters, stepping batches."""

    def __init__(self, config: PhysicsConfig, dt: float):
        try:
            self.robot = load_robot(config.robot)
            self.model = build_mujoco_model(
                self.robot, config.scene, config.physics_timestep, config.gravity_compensation
            )
        except (FileNotFoundError, RobotDescriptionError, ValueError) as exc:
            raise ModelError(f"physics model: cannot build robot '{config.robot}': {exc}") from None
        self.urdf_sha256 = hashlib.sha256(self.robot.urdf_path.read_bytes()).hexdigest()
        ratio = dt / config.physics_timestep
        self.n_substeps = int(round(ratio))
        if self.n_substeps < 1 or abs(ratio - self.n_substeps) > 1e-6 * ratio:
            raise ModelError(
                f"control period {dt} s is not a whole multiple of the physics "
                f"timestep {config.physics_timestep} s"
            )
        n = self.robot.n_joints
        self.links = [
            self.model.jnt_bodyid[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, j)]
            for j in self.robot.joint_names
        ]
        self.nominal_mass = self.model.body_mass.copy()
        self.nominal_inertia = self.model.body_inertia.copy()
        self.names, lower, upper, nominal = [], [], [], []
        for kind in config.identify:
            if kind == "mass_scale":
                self.names += [f"mass_scale/{self.model.body(b).name}" for b in self.links]
                lower += [MASS_SCALE_BOUNDS[0]] * n
                upper += [MASS_SCALE_BOUNDS[1]] * n
                nominal += [1.0] * n
            else:
                self.names += [f"{kind}/{j}" for j in self.robot.joint_names]
                lower += [0.0] * n
                upper += [np.inf] * n
                nominal += list(getattr(self.model, f"dof_{kind}")[:n])
        self.lower, self.upper = np.array(lower), np.array(upper)
        self.nominal = np.array(nominal)
        self.threads = config.threads
        self.datas = [mujoco.MjData(self.model) for _ in range(config.threads)]
        self.state_size = mujoco.mj_stateSize(self.model, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self.params = self.nominal.copy()

    def set_params(self, values: np.ndarray) -> None:
        """Write parameter values (P,) into the MuJoCo model."""
        n = self.robot.n_joints
        for i, name in enumerate(self.names[::n]):
            chunk = values[i * n : (i + 1) * n]
            kind = name.split("/")[0]
            if kind == "mass_scale":
                self.model.body_mass[self.links] = self.nominal_mass[self.links] * chunk
                self.model.body_inertia[self.links] = (
                    self.nominal_inertia[self.links] * chunk[:, None]
                )
            else:
                getattr(self.model, f"dof_{kind}")[:n] = chunk
        mujoco.mj_setConst(self.model, self.datas[0])
        self.params = np.array(values, dtype=float)

    def initial_states(self, s: np.ndarray) -> np.ndarray:
        """Full physics states (B, nstate) with qpos, qvel from s (B, 2n), at rest otherwise."""
        n = self.robot.n_joints
        data = self.datas[0]
        mujoco.mj_resetData(self.model, data)
        template = np.empty(self.state_size)
        mujoco.mj_getState(self.model, data, template, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        states = np.tile(template, (len(s), 1))
        states[:, 1 : 1 + n] = s[:, :n]  # after time: qpos, then qvel
        states[:, 1 + self.model.nq : 1 + self.model.nq + n] = s[:, n:]
        return states

    def step(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Next states (B, 2n) after one control period from s (B, 2n) under torques a (B, n)."""
        if len(s) == 0:
            return np.zeros_like(s)
        n = self.robot.n_joints
        control = np.repeat(a[:, None, :], self.n_substeps, axis=1)
        out, _ = mj_rollout.rollout(
            self.model, self.datas, self.initial_states(s), control, nstep=self.n_substeps
        )
        last = out[:, -1]
        return np.concatenate(
            [last[:, 1 : 1 + n], last[:, 1 + self.model.nq : 1 + self.model.nq + n]], axis=1
        )

    def jacobians(self, s: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """∂s'/∂s (B, 2n, 2n) and ∂s'/∂a (B, 2n, n) by chaining the finite-difference transition
        Jacobians of the physics steps of one control period."""
        n, nv = self.robot.n_joints, self.model.nv
        data = self.datas[0]
        js, ja = np.zeros((len(s), 2 * n, 2 * n)), np.zeros((len(s), 2 * n, n))
        a_step = np.zeros((2 * nv, 2 * nv))
        b_step = np.zeros((2 * nv, self.model.nu))
        keep = np.r_[0:n, nv : nv + n]
        for i in range(len(s)):
            mujoco.mj_setState(
                self.model,
                data,
                self.initial_states(s[i : i + 1])[0],
                mujoco.mjtState.mjSTATE_FULLPHYSICS,
            )
            data.ctrl[:n] = a[i]
            total_s, total_a = np.eye(2 * nv), np.zeros((2 * nv, self.model.nu))
            for _ in range(self.n_substeps):
                mujoco.mjd_transitionFD(self.model, data, 1e-6, True, a_step, b_step, None, None)
                total_s, total_a = a_step @ total_s, a_step @ total_a + b_step
                mujoco.mj_step(self.model, data)
            js[i] = total_s[np.ix_(keep, keep)]
            ja[i] = total_a[keep][:, :n]
        return js, ja


class _Step(torch.autograd.Function):
    """s' = MuJoCo step of (s, a); backward by chained finite-difference Jacobians."""

    @staticmethod
    def forward(ctx, s, a, sim):
        ctx.sim = sim
        ctx.save_for_backward(s, a)
        return torch.as_tensor(
            sim.step(s.detach().cpu().numpy(), a.detach().cpu().numpy()),
            dtype=s.dtype,
            device=s.device,
        )

    @staticmethod
    def backward(ctx, grad):
        s, a = ctx.saved_tensors
        js, ja = ctx.sim.jacobians(s.detach().cpu().numpy(), a.detach().cpu().numpy())
        g = grad.detach().cpu().numpy()
        gs = np.einsum("bi,bij->bj", g, js)
        ga = np.einsum("bi,bij->bj", g, ja)
        return (
            torch.as_tensor(gs, dtype=s.dtype, device=s.device),
            torch.as_tensor(ga, dtype=a.dtype, device=a.device),
            None,
        )


def _schema() -> Schema:
    return model_schema(
        "mbrl_ros.dynamics.physics",
        {"params": TensorSpec(("P",)), "residual_var": TensorSpec(("dx",))},
        {"dx": 1024, "du": 512, "P": 2048},
        extra_meta=("robot", "urdf_sha256", "param_names"),
    )


@register("mbrl_ros.dynamics.physics")
class PhysicsModel(DynamicsModel):
    """Kind 'physics'. ``params`` (P,) with ``param_names`` ('damping/<joint>', ...,
    'mass_scale/<link>'); ``residual_var`` (dx,) in state units². The state must be exactly the
    joint positions and velocities of the robot's joints."""

    kind = "physics"
    predicts_delta = False  # a MuJoCo step
    SCHEMA = _schema()

    def __init__(
        self,
        signature: ModelSignature,
        stats: NormStats | None = None,
        device=None,
        config: PhysicsConfig | None = None,
    ):
        super().__init__(signature, stats, device)
        self.config = config or PhysicsConfig()
        self.sim = _Simulator(self.config, signature.dt)
        robot_joints = self.sim.robot.joint_names
        if tuple(signature.joint_names) != tuple(robot_joints):
            raise ModelError(
                f"physics model robot '{self.sim.robot.name}' has joints "
                f"{list(robot_joints)}, the model signature "
                f"{list(signature.joint_names)}"
            )
        if tuple(signature.state_names) != joint_state_names(robot_joints):
            raise ModelError(
                "physics model predicts joint positions and velocities only; the "
                f"state layout {list(signature.state_names)} has other columns"
            )
        self.min_transitions = max(10, len(self.sim.names))
        self.residual_var: np.ndarray | None = None

    @property
    def param_names(self) -> list[str]:
        return list(self.sim.names)

    @property
    def params(self) -> dict[str, float]:
        """Current parameter values by name."""
        return dict(zip(self.sim.names, self.sim.params.tolist()))

    def predict(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (..., 2n) = the MuJoCo step; variance = the training residual variance."""
        if self.residual_var is None:
            raise ModelError("physics model is not fitted")
        shape = torch.broadcast_shapes(s.shape[:-1], a.shape[:-1])
        s2 = s.expand(*shape, -1).reshape(-1, s.shape[-1])
        a2 = a.expand(*shape, -1).reshape(-1, a.shape[-1])
        if not (bool(torch.isfinite(s2).all()) and bool(torch.isfinite(a2).all())):
            raise ModelError("physics model: states and actions must be finite")
        mean = _Step.apply(s2, a2, self.sim).reshape(*shape, -1)
        var = torch.as_tensor(self.residual_var, dtype=s.dtype, device=s.device)
        return mean, var.expand_as(mean)

    def fit(
        self,
        train: Dataset,
        val: Dataset | None = None,
        progress: Progress | None = None,
        warm_start: bool = False,
    ) -> FitReport:
        """Least-squares identification from the URDF's parameters or (``warm_start``: a fitted
        model only) the current ones. If it fails or gives non-finite values, the model is left
        as it was."""
        t0 = time.perf_counter()
        self.check_data(train)
        if val is not None and len(val):
            self.signature.check(ModelSignature.of(val), "validation data")
        if warm_start and self.residual_var is None:
            raise ModelError("warm start needs a fitted model")
        rng = np.random.default_rng(self.config.seed)
        idx = rng.permutation(len(train))[: self.config.max_transitions]
        s, a, nxt = train.states[idx], train.actions[idx], train.next_states[idx]
        stats = train.stats()
        scale = stats.delta_std
        saved = self.sim.params.copy()
        x0 = np.clip(saved if warm_start else self.sim.nominal, self.sim.lower, self.sim.upper)
        report = FitReport()

        def residuals(values):
            self.check_stop()
            self.sim.set_params(values)
            r = ((self.sim.step(s, a) - nxt) / scale).ravel()
            cost = float(np.mean(r**2))
            report.train_loss.append(cost)
            if progress is not None:
                progress(f"physics: evaluation {len(report.train_loss)}, normalised MSE {cost:.4g}")
            return r if np.all(np.isfinite(r)) else np.full_like(r, 1e6)

        try:
            result = least_squares(
                residuals,
                x0,
                bounds=(self.sim.lower, self.sim.upper),
                x_scale="jac",
                max_nfev=self.config.max_evaluations,
                method="trf",
            )
            ok = bool(np.all(np.isfinite(result.x)))
        except FitStopped:
            self.sim.set_params(saved)
            raise
        except (ValueError, mujoco.FatalError) as exc:
            ok, result = False, exc
        if ok:
            self.sim.set_params(result.x)
            pred = self.sim.step(s, a)
            ok = bool(np.all(np.isfinite(pred)))
        if not ok:
            self.sim.set_params(saved)
            report.rolled_back = True
            report.message = f"identification failed ({result}); the model is unchanged"
        else:
            self.stats = stats
            self.residual_var = np.maximum((pred - nxt).var(0), 1e-12)
            report.message = (
                f"identified {len(self.sim.names)} parameters in {result.nfev} "
                f"evaluations; normalised MSE {np.mean(result.fun**2):.4g}"
            )
            if val is not None and len(val):
                err = (self.sim.step(val.states, val.actions) - val.next_states) / scale
                report.val_loss.append(float(np.mean(err**2)))
                report.message += f", validation {report.val_loss[-1]:.4g}"
        report.seconds = time.perf_counter() - t0
        if progress is not None:
            progress(f"physics: {report.message}")
        return report

    def to_bytes(self) -> bytes:
        if self.residual_var is None:
            raise ModelError("physics model is not fitted")
        meta = self.artifact_meta(
            robot=self.sim.robot.name,
            urdf_sha256=self.sim.urdf_sha256,
            param_names=self.param_names,
        )
        return encode(
            self.SCHEMA,
            {
                **self.fitted_stats().tensors(),
                "params": self.sim.params,
                "residual_var": self.residual_var,
            },
            meta,
        )

    @classmethod
    def from_bytes(cls, data: bytes, device=None) -> PhysicsModel:
        """Rebuild on the robot named in the artifact; refused if that robot's URDF differs
        from the one the parameters were identified for."""
        model, tensors, meta = cls.decode_artifact(data, device, PhysicsConfig)
        if meta["robot"] != model.sim.robot.name or meta["urdf_sha256"] != model.sim.urdf_sha256:
            raise ArtifactError(
                f"{cls.SCHEMA.name}: parameters were identified for robot "
                f"'{meta['robot']}' (URDF sha256 "
                f"{str(meta['urdf_sha256'])[:12]}…), "
                f"this machine's '{model.sim.robot.name}' URDF differs "
                f"(sha256 {model.sim.urdf_sha256[:12]}…)"
            )
        if meta["param_names"] != model.param_names or tensors["residual_var"].shape != (model.dx,):
            raise ArtifactError(
                f"{cls.SCHEMA.name}: parameters {meta['param_names']} do not "
                f"match the model's {model.param_names}"
            )
        params = tensors["params"]
        if np.any(params < model.sim.lower) or np.any(params > model.sim.upper):
            raise ArtifactError(f"{cls.SCHEMA.name}: parameter values outside their bounds")
        model.sim.set_params(tensors["params"])
        model.residual_var = tensors["residual_var"]
        return model
