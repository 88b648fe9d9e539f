"""Time-varying linear-Gaussian controllers: the interface between every planner and the executor.

    u_t = K_t (x_t − x̂_t) + k_t + û_t + ε_t,   ε_t ~ N(0, Σ_t),   t = 0..T−1

Step t applies from ``start_ns + t·dt_ns`` (integer nanoseconds, the clock of the joint-state
stamps) for one ``dt_ns``, and only before ``valid_until_ns`` (≤ the end; a planner that replans
states that its plan is stale after the next replan is due, the executor holds from then on). The
lecture's three versions are special cases: open loop (K = 0, k = 0, Σ = 0: random shooting, CEM),
feedback (Σ = 0: iLQR), Gaussian (GPS: Σ_t = Q_uu⁻¹, maximum entropy). The state x (dx) is laid out
as ``state_layout`` names, e.g. ``"q,qd"`` = joint positions then velocities in ``joint_names``
order; u (du) is joint torques (N·m).

Controllers are immutable; arrays are read-only. The artifact form (safetensors bytes) is
``to_bytes`` / ``from_bytes``; Σ's factor and inverse are always recomputed, never read from a file.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from mbrl_ros.common import artifacts

# A stamp this close below a step boundary counts as that step (stamps from float seconds).
TIME_TOLERANCE_NS = 1_000
MAX_STEPS = 100_000
STATE_LAYOUT_QQD = "q,qd"

CONTROLLER_SCHEMA = artifacts.Schema(
    name="mbrl_ros/lg_controller",
    version=1,
    tensors={
        "x_hat": artifacts.TensorSpec(("T", "dx")),
        "u_hat": artifacts.TensorSpec(("T", "du")),
        "K": artifacts.TensorSpec(("T", "du", "dx")),
        "k": artifacts.TensorSpec(("T", "du")),
        "cov": artifacts.TensorSpec(("T", "du", "du"), required=False),
    },
    dim_limits={"T": MAX_STEPS, "dx": 4096, "du": 1024},
    required_meta=("joint_names", "dt_ns", "start_ns", "state_layout"),
)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


def _factor_psd(cov: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(T, du, du) symmetric PSD → (lower-triangular L with L Lᵀ = Σ, log det Σ (T,), all PD).

    Singular steps get a triangular factor from an eigendecomposition (QR of √Λ Vᵀ) and
    log det = −inf; ValueError if a Σ_t is not symmetric positive semidefinite.
    """
    T, du, _ = cov.shape
    scale = 1.0 + np.abs(cov).max(axis=(1, 2))
    asym = np.abs(cov - np.swapaxes(cov, 1, 2)).max(axis=(1, 2))
    bad = np.flatnonzero(asym > 1e-9 * scale)
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] is not symmetric (asymmetry {asym[bad[0]]:.3g})")
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    if not np.any(cov):
        return np.zeros_like(cov), np.full(T, -np.inf), False
    try:
        chol = np.linalg.cholesky(cov)
        return chol, 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1), True
    except np.linalg.LinAlgError:
        pass
    chol = np.zeros_like(cov)
    logdet = np.empty(T)
    for t in range(T):
        try:
            chol[t] = np.linalg.cholesky(cov[t])
            logdet[t] = 2.0 * np.log(np.diag(chol[t])).sum()
            continue
        except np.linalg.LinAlgError:
            pass
        w, v = np.linalg.eigh(cov[t])
        if w.min() < -1e-9 * scale[t]:
            raise ValueError(
                f"{name}[{t}] is not positive semidefinite (smallest eigenvalue {w.min():.3g})"
            )
        w = np.where(w > 1e-12 * max(w.max(), 0.0), w, 0.0)  # rounding noise of zero modes
        root = np.sqrt(w)[:, None] * v.T  # rootᵀ root = Σ
        chol[t] = np.asarray(np.linalg.qr(root, mode="r")).T  # root = Q R  →  Σ = Rᵀ R
        logdet[t] = -np.inf
    return chol, logdet, False


class LinearGaussianController:
    """u_t ~ N(K_t (x − x̂_t) + k_t + û_t, Σ_t) for t = 0..T−1, from ``start_ns`` every ``dt_ns``.

    Arrays: x_hat (T, dx), u_hat (T, du), K (T, du, dx), k (T, du), cov (T, du, du) symmetric PSD
    (zeros: deterministic). Derived: ``chol`` (T, du, du) lower triangular with chol·cholᵀ = Σ,
    ``logdet`` (T,) (−inf where Σ_t is singular), ``positive_definite`` (every Σ_t),
    ``inv_cov`` (T, du, du) or None unless positive definite. Raises ValueError naming the first
    inconsistent field. ``valid_until_ns``: the first stamp at which the controller must not be
    used any more (None: its end).
    """

    def __init__(
        self,
        x_hat,
        u_hat,
        K,
        k=None,
        cov=None,
        *,
        dt_ns: int,
        start_ns: int = 0,
        joint_names: Sequence[str] = (),
        state_layout: str = STATE_LAYOUT_QQD,
        valid_until_ns: int | None = None,
    ):
        x_hat, u_hat, K = (np.asarray(a, dtype=np.float64) for a in (x_hat, u_hat, K))
        if x_hat.ndim != 2 or u_hat.ndim != 2:
            raise ValueError(
                f"x_hat and u_hat must be (T, dx) and (T, du); got {x_hat.shape} and {u_hat.shape}"
            )
        T, dx = x_hat.shape
        du = u_hat.shape[1]
        k = np.zeros((T, du)) if k is None else np.asarray(k, dtype=np.float64)
        cov = np.zeros((T, du, du)) if cov is None else np.asarray(cov, dtype=np.float64)
        expected = {
            "x_hat": (T, dx),
            "u_hat": (T, du),
            "K": (T, du, dx),
            "k": (T, du),
            "cov": (T, du, du),
        }
        for name, a in zip(expected, (x_hat, u_hat, K, k, cov)):
            if a.shape != expected[name]:
                raise ValueError(f"{name} has shape {a.shape}, expected {expected[name]}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} has non-finite values")
        if not 1 <= T <= MAX_STEPS or dx < 1 or du < 1:
            raise ValueError(
                f"need 1 ≤ T ≤ {MAX_STEPS}, dx ≥ 1, du ≥ 1; got T={T}, dx={dx}, du={du}"
            )
        if isinstance(dt_ns, bool) or int(dt_ns) != dt_ns or dt_ns <= 0:
            raise ValueError(f"dt_ns must be a positive integer, got {dt_ns!r}")
        if isinstance(start_ns, bool) or int(start_ns) != start_ns or start_ns < 0:
            raise ValueError(f"start_ns must be a non-negative integer, got {start_ns!r}")
        names = tuple(joint_names)
        if names:
            if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
                raise ValueError(f"joint_names must be distinct non-empty strings, got {names}")
            if len(names) != du:
                raise ValueError(f"{len(names)} joint_names for du={du}")
            if state_layout == STATE_LAYOUT_QQD and dx != 2 * du:
                raise ValueError(f"state_layout '{state_layout}' needs dx = 2·{du}, got dx={dx}")
        if not isinstance(state_layout, str) or not state_layout:
            raise ValueError(f"state_layout must be a non-empty string, got {state_layout!r}")
        chol, logdet, pd = _factor_psd(cov, "cov")
        self.x_hat, self.u_hat, self.K, self.k = (_readonly(a) for a in (x_hat, u_hat, K, k))
        self.cov, self.chol, self.logdet = _readonly(cov), _readonly(chol), _readonly(logdet)
        self.positive_definite = pd
        self.deterministic = not np.any(cov)
        self.dt_ns, self.start_ns = int(dt_ns), int(start_ns)
        self.joint_names, self.state_layout = names, state_layout
        end = self.start_ns + T * self.dt_ns
        if valid_until_ns is None:
            valid_until_ns = end
        if (
            isinstance(valid_until_ns, bool)
            or int(valid_until_ns) != valid_until_ns
            or not self.start_ns < valid_until_ns <= end
        ):
            raise ValueError(
                f"valid_until_ns must be an integer in ({self.start_ns}, {end}] ns, "
                f"got {valid_until_ns!r}"
            )
        self.valid_until_ns = int(valid_until_ns)

    @functools.cached_property
    def inv_cov(self) -> np.ndarray | None:
        """(T, du, du) Σ_t⁻¹, or None unless every Σ_t is positive definite (computed on first
        use: the executor never needs it)."""
        if not self.positive_definite:
            return None
        chol_inv = np.linalg.inv(self.chol)
        return _readonly(np.swapaxes(chol_inv, 1, 2) @ chol_inv)

    # -- the lecture's three versions ------------------------------------------------------
    @classmethod
    def open_loop(cls, u_hat, dx: int, **kw) -> LinearGaussianController:
        """Version 0.5: u_t = û_t (random shooting, CEM). u_hat (T, du)."""
        u_hat = np.asarray(u_hat, dtype=np.float64)
        T, du = u_hat.shape
        return cls(np.zeros((T, dx)), u_hat, np.zeros((T, du, dx)), **kw)

    @classmethod
    def feedback(cls, x_hat, u_hat, K, k=None, **kw) -> LinearGaussianController:
        """Version 1.0: u_t = K_t (x − x̂_t) + k_t + û_t (iLQR)."""
        return cls(x_hat, u_hat, K, k, None, **kw)

    @classmethod
    def gaussian(cls, x_hat, u_hat, K, k, cov, **kw) -> LinearGaussianController:
        """Version 2.0: u_t ~ N(K_t (x − x̂_t) + k_t + û_t, Σ_t) (GPS, Σ_t = Q_uu⁻¹)."""
        return cls(x_hat, u_hat, K, k, cov, **kw)

    # -- sizes and time ----------------------------------------------------------------------
    @property
    def T(self) -> int:
        return self.x_hat.shape[0]

    @property
    def dx(self) -> int:
        return self.x_hat.shape[1]

    @property
    def du(self) -> int:
        return self.u_hat.shape[1]

    @property
    def dt(self) -> float:
        """Step length in seconds."""
        return self.dt_ns * 1e-9

    @property
    def end_ns(self) -> int:
        """First stamp after the last step."""
        return self.start_ns + self.T * self.dt_ns

    def index(self, stamp_ns: int) -> int | None:
        """Step index t of a stamp (ns): ⌊(stamp − start)/dt⌋ in integer arithmetic, a stamp up to
        TIME_TOLERANCE_NS before a boundary counting as the later step; None if not 0 ≤ t < T."""
        t = (int(stamp_ns) - self.start_ns + TIME_TOLERANCE_NS) // self.dt_ns
        return t if 0 <= t < self.T else None

    def covers(self, stamp_ns: int) -> bool:
        return self.index(stamp_ns) is not None

    def valid_at(self, stamp_ns: int) -> bool:
        """Whether a step covers ``stamp_ns`` and the controller is still valid then."""
        return self.covers(stamp_ns) and stamp_ns < self.valid_until_ns

    def with_validity(self, valid_until_ns: int) -> LinearGaussianController:
        """The same controller, valid until ``valid_until_ns`` (clipped to its end)."""
        return self._replace(
            self._arrays(),
            start_ns=self.start_ns,
            valid_until_ns=min(int(valid_until_ns), self.end_ns),
        )

    # -- acting --------------------------------------------------------------------------------
    def act(self, x, t) -> np.ndarray:
        """Deterministic action K_t (x − x̂_t) + k_t + û_t. x (..., dx); t an int or an int array
        broadcastable to x's batch shape; returns (..., du)."""
        x = np.asarray(x, dtype=np.float64)
        if np.ndim(t) == 0 and x.ndim == 1:
            t = int(t)
            return self.K[t] @ (x - self.x_hat[t]) + self.k[t] + self.u_hat[t]
        t = np.asarray(t)
        shape = np.broadcast_shapes(x.shape[:-1], t.shape)
        t = np.broadcast_to(t, shape)
        x = np.broadcast_to(x, shape + (self.dx,))
        return (
            np.einsum("...ij,...j->...i", self.K[t], x - self.x_hat[t]) + self.k[t] + self.u_hat[t]
        )

    def noise(self, t, z) -> np.ndarray:
        """ε_t = L_t z for standard-normal z (..., du) (L = chol): a N(0, Σ_t) draw."""
        t = np.asarray(t)
        if t.ndim == 0 and np.ndim(z) == 1:
            return self.chol[int(t)] @ np.asarray(z, dtype=np.float64)
        return np.einsum("...ij,...j->...i", self.chol[t], z)

    def sample(self, x, t, rng: np.random.Generator | None = None, z=None) -> np.ndarray:
        """Stochastic action act(x, t) + L_t z with z ~ N(0, I) drawn from ``rng`` unless given
        (e.g. a row of ``exploration_noise``). Shapes as ``act``."""
        mean = self.act(x, t)
        if self.deterministic:
            return mean
        if z is None:
            if rng is None:
                raise ValueError("sample needs rng or z")
            z = rng.standard_normal(mean.shape)
        return mean + self.noise(t, z)

    def log_prob(self, u, x, t) -> np.ndarray:
        """log N(u; act(x, t), Σ_t); u (..., du), x (..., dx). Needs every Σ_t positive definite."""
        if self.inv_cov is None:
            raise ValueError("log_prob needs every Σ_t positive definite")
        t = np.asarray(t)
        r = np.asarray(u, dtype=np.float64) - self.act(x, t)
        maha = np.einsum("...i,...ij,...j->...", r, self.inv_cov[t], r)
        return -0.5 * (maha + self.logdet[t] + self.du * math.log(2 * math.pi))

    def entropy(self) -> np.ndarray:
        """(T,) differential entropy of p(u_t | x_t) in nats (−inf where Σ_t is singular)."""
        return 0.5 * (self.du * (1.0 + math.log(2 * math.pi)) + self.logdet)

    # -- receding horizon ----------------------------------------------------------------------
    def _replace(
        self, arrays: Sequence[np.ndarray], start_ns: int, valid_until_ns: int | None = None
    ) -> LinearGaussianController:
        """A controller of ``arrays`` (x_hat, u_hat, K, k, cov) from ``start_ns``, valid to its
        end unless given."""
        x_hat, u_hat, K, k, cov = arrays
        return LinearGaussianController(
            x_hat,
            u_hat,
            K,
            k,
            cov,
            dt_ns=self.dt_ns,
            start_ns=start_ns,
            joint_names=self.joint_names,
            state_layout=self.state_layout,
            valid_until_ns=valid_until_ns,
        )

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self.x_hat, self.u_hat, self.K, self.k, self.cov

    def with_gains(self, K) -> LinearGaussianController:
        """The actions along the nominal trajectory (û + k) with feedback gains ``K`` (du, dx) or
        (T, du, dx) on the deviation from it instead of the controller's own (the same steps,
        noise and validity)."""
        K = np.broadcast_to(np.asarray(K, dtype=np.float64), self.K.shape).copy()
        return self._replace(
            (self.x_hat, self.u_hat + self.k, K, np.zeros_like(self.k), self.cov),
            start_ns=self.start_ns,
            valid_until_ns=self.valid_until_ns,
        )

    def without_feedback(self) -> LinearGaussianController:
        """The actions along the nominal trajectory, open loop: û + k with K = 0, k = 0."""
        return self.with_gains(np.zeros_like(self.K))

    def slice(self, t0: int, t1: int) -> LinearGaussianController:
        """Steps t0..t1−1, starting at start + t0·dt."""
        if not 0 <= t0 < t1 <= self.T:
            raise ValueError(f"slice [{t0}, {t1}) outside 0..{self.T}")
        return self._replace(
            [a[t0:t1] for a in self._arrays()], start_ns=self.start_ns + t0 * self.dt_ns
        )

    def shift(self, steps: int, fill: str | None = None) -> LinearGaussianController:
        """Drop the first ``steps`` steps (start moves by steps·dt). ``fill``: None shortens the
        horizon; "repeat" appends copies of the last step, "zero" appends steps with û = k = 0,
        K = 0, Σ = 0 and x̂ of the last step, so T is kept (warm starts for MPC)."""
        if not 0 <= steps <= self.T or (fill is None and steps == self.T):
            raise ValueError(f"cannot shift a {self.T}-step controller by {steps}")
        if fill not in (None, "repeat", "zero"):
            raise ValueError(f"fill must be None, 'repeat' or 'zero', got {fill!r}")
        arrays = [a[steps:] for a in self._arrays()]
        if fill is not None and steps:
            last = [a[-1:] for a in self._arrays()]
            if fill == "zero":
                last = [last[0]] + [np.zeros_like(a) for a in last[1:]]
            arrays = [np.concatenate([a] + [b] * steps) for a, b in zip(arrays, last)]
        return self._replace(arrays, start_ns=self.start_ns + steps * self.dt_ns)

    def restamp(self, start_ns: int) -> LinearGaussianController:
        """The same steps (and validity) starting at ``start_ns``."""
        return self._replace(
            self._arrays(),
            start_ns=start_ns,
            valid_until_ns=self.valid_until_ns - self.start_ns + start_ns,
        )

    def to_bytes(self, info: dict | None = None) -> bytes:
        """The controller artifact (safetensors; ``info``: free JSON metadata, e.g. planner)."""
        tensors = dict(zip(("x_hat", "u_hat", "K", "k"), self._arrays()))
        if not self.deterministic:
            tensors["cov"] = self.cov
        meta = {
            "joint_names": list(self.joint_names),
            "dt_ns": self.dt_ns,
            "start_ns": self.start_ns,
            "state_layout": self.state_layout,
            "valid_until_ns": self.valid_until_ns,
        }
        if info:
            meta["info"] = info
        return artifacts.encode(CONTROLLER_SCHEMA, tensors, meta)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        joint_names: Sequence[str] | None = None,
        max_bytes: int = artifacts.MAX_ARTIFACT_BYTES,
    ) -> LinearGaussianController:
        """Decode and validate a controller artifact; ``joint_names``: the exact joint order the
        caller needs. Raises ArtifactError naming what is wrong."""
        tensors, meta = artifacts.decode(data, CONTROLLER_SCHEMA, max_bytes=max_bytes)
        names = meta["joint_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise artifacts.ArtifactError(f"joint_names must be a list of strings, got {names!r}")
        if joint_names is not None and list(joint_names) != names:
            raise artifacts.ArtifactError(
                f"controller joint_names {names} differ from the expected {list(joint_names)}"
            )
        for key in ("dt_ns", "start_ns", "valid_until_ns"):
            value = meta.get(key)
            if (value is not None or key != "valid_until_ns") and (
                isinstance(value, bool) or not isinstance(value, int)
            ):
                raise artifacts.ArtifactError(f"{key} must be an integer, got {value!r}")
        try:
            return cls(
                tensors["x_hat"],
                tensors["u_hat"],
                tensors["K"],
                tensors["k"],
                tensors.get("cov"),
                dt_ns=meta["dt_ns"],
                start_ns=meta["start_ns"],
                joint_names=names,
                state_layout=meta["state_layout"],
                valid_until_ns=meta.get("valid_until_ns"),
            )
        except ValueError as exc:
            raise artifacts.ArtifactError(f"invalid controller: {exc}") from None


def concatenate(
    controllers: Sequence[LinearGaussianController], retime: bool = False
) -> LinearGaussianController:
    """Steps of ``controllers`` one after another. They must share dt, dims, joint names and
    layout, and each must start where the previous ends unless ``retime`` (then the result starts
    at the first one's start and later ones are moved to follow on)."""
    if not controllers:
        raise ValueError("nothing to concatenate")
    first = controllers[0]
    for i, c in enumerate(controllers[1:], 1):
        prev = controllers[i - 1]
        if (c.dt_ns, c.dx, c.du, c.joint_names, c.state_layout) != (
            first.dt_ns,
            first.dx,
            first.du,
            first.joint_names,
            first.state_layout,
        ):
            raise ValueError(f"controller {i} differs from the first in dt, dims, joints or layout")
        if not retime and c.start_ns != prev.end_ns:
            raise ValueError(
                f"controller {i} starts at {c.start_ns} ns, not where controller "
                f"{i - 1} ends ({prev.end_ns} ns)"
            )
    arrays = [np.concatenate(parts) for parts in zip(*(c._arrays() for c in controllers))]
    return first._replace(arrays, start_ns=first.start_ns)


def kl_divergence(
    p: LinearGaussianController, q: LinearGaussianController, state_mean, state_cov
) -> np.ndarray:
    """(T,) E_{x_t ~ N(μ_t, P_t)} KL(p(u_t | x_t) ‖ q(u_t | x_t)) in nats, closed form.

    Summed over t this is the lecture's D_KL(p(τ) ‖ q(τ)) when both share the dynamics and μ, P
    are p's state marginals. With the means K x + c (c = k + û − K x̂) and D = K_p − K_q,
    e = c_p − c_q: ½[tr(Σ_q⁻¹Σ_p) − du + log|Σ_q| − log|Σ_p| + (Dμ+e)ᵀΣ_q⁻¹(Dμ+e)
    + tr(DᵀΣ_q⁻¹D P)]. +inf where either Σ_t is singular. state_mean (T, dx), state_cov (T, dx, dx).
    """
    if (p.T, p.dx, p.du) != (q.T, q.dx, q.du):
        raise ValueError(
            f"controllers differ in size: (T, dx, du) = {(p.T, p.dx, p.du)} vs {(q.T, q.dx, q.du)}"
        )
    mu = np.asarray(state_mean, dtype=np.float64)
    P = np.asarray(state_cov, dtype=np.float64)
    if mu.shape != (p.T, p.dx) or P.shape != (p.T, p.dx, p.dx):
        raise ValueError(
            f"state_mean/state_cov must be {(p.T, p.dx)}/{(p.T, p.dx, p.dx)}, got "
            f"{mu.shape}/{P.shape}"
        )
    out = np.full(p.T, np.inf)
    ok = np.isfinite(p.logdet) & np.isfinite(q.logdet)
    if not ok.any():
        return out
    Sq_inv = q.inv_cov[ok] if q.inv_cov is not None else np.linalg.inv(q.cov[ok])
    D = (p.K - q.K)[ok]
    c_p = p.k + p.u_hat - np.einsum("tij,tj->ti", p.K, p.x_hat)
    c_q = q.k + q.u_hat - np.einsum("tij,tj->ti", q.K, q.x_hat)
    m = np.einsum("tij,tj->ti", D, mu[ok]) + (c_p - c_q)[ok]
    trace = np.einsum("tij,tji->t", Sq_inv, p.cov[ok])
    maha = np.einsum("ti,tij,tj->t", m, Sq_inv, m)
    spread = np.einsum("tij,tij->t", Sq_inv @ D, D @ P[ok])  # P symmetric
    out[ok] = 0.5 * (trace - p.du + q.logdet[ok] - p.logdet[ok] + maha + spread)
    return out


def exploration_noise(
    T: int, du: int, rng: np.random.Generator, smoothing: float = 0.0
) -> np.ndarray:
    """(T, du) standard-normal noise for ``sample(..., z=...)``; ``smoothing`` > 0 (in steps) makes
    it temporally smooth as in guided policy search: white noise convolved with a Gaussian kernel
    of that standard deviation. The kernel is scaled to unit energy and the noise drawn with
    padding, so every z_t is exactly N(0, I) (GPS renormalised by the sample variance instead)."""
    if smoothing <= 0:
        return rng.standard_normal((T, du))
    half = int(math.ceil(4 * smoothing))
    taps = np.arange(-half, half + 1)
    w = np.exp(-0.5 * (taps / smoothing) ** 2)
    w /= np.sqrt(np.sum(w * w))
    white = rng.standard_normal((T + 2 * half, du))
    return np.stack([np.convolve(white[:, i], w, mode="valid") for i in range(du)], axis=1)
