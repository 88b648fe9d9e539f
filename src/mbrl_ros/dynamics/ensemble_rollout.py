"""The ensemble's rollout for planners: ``EnsembleModel``'s networks run step after step with the
normalisation folded into the layers and every buffer allocated once per rollout.

Gives ``DynamicsModel.rollout`` through ``EnsembleModel.propagate`` (the step-by-step reference)
up to float rounding, with the same generator draws in the same order, for the two modes the
planners use at scale: 'tsinf' (particle p through member p mod E, a draw from its Gaussian) and
'mean' (the average of the members' means). Only without autograd; ``EnsembleModel.rollout``
takes the reference path otherwise and for the other modes. ``fused_rollout_policy`` is the
'mean' path with the actions chosen at each step by a feedback law (iLQR's line search).

What it saves (one CPU thread at PETS scale: ``benchmarks/bench_planners.py``):
* the inputs [(s − μ_s)/σ_s, (a − μ_a)/σ_a, 1] live in one float32 buffer: the first layer's
  bias is a row of its weights, and the actions are normalised once for all steps;
* the mean head is scaled by σ_Δ and offset by μ_Δ (exact), so s' = s + head + std · noise;
* hidden layers write baddbmm into preallocated buffers with the (E, 1, H) bias and apply SiLU
  in place; 'mean' computes no variance head;
* 'tsinf' bounds the log-variance in place and takes std = exp(½·log-variance + log σ_Δ);
* noise is drawn into a buffer in the reference's (particles, ..., dx) layout and the states are
  written straight into the returned tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# softplus with ``out=`` (beta 1, threshold 20 as F.softplus); torch's stub omits ``out``
SOFTPLUS: Callable[..., torch.Tensor] = torch._C._nn.softplus


def fused_rollout(
    model,
    s0: torch.Tensor,
    actions: torch.Tensor,
    mode: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """States (..., H + 1, dx) from s0 (..., dx) under actions (..., H, du), as
    ``DynamicsModel.rollout``; None where this path does not apply (autograd on, another mode,
    an unfitted model, a batch shape 'tsinf' refuses, H = 0): the caller then runs the reference,
    which also names what is wrong."""
    if torch.is_grad_enabled() or mode not in ("tsinf", "mean") or model.stats is None:
        return None
    dx, du, E = model.dx, model.du, model.members
    if s0.shape[-1:] != (dx,) or actions.ndim < 2 or actions.shape[-1] != du:
        return None
    H = actions.shape[-2]
    shape = torch.broadcast_shapes(s0.shape[:-1], actions.shape[:-2])
    if H == 0 or (mode == "tsinf" and (not shape or shape[0] % E)):
        return None
    return _Rollout(model, shape, s0.dtype, mode).run(s0, actions, generator)


def fused_rollout_policy(
    model, s0: torch.Tensor, policy, horizon: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """States (B, H + 1, dx) and actions (B, H, du) of the members' average mean closed with
    ``policy(t, s) -> a`` (s (B, dx) read only, a (B, du)), as ``rollout_policy``; None where
    this path does not apply (an unfitted model, s0 not (B, dx), H = 0). Never records
    autograd history."""
    if model.stats is None or s0.ndim != 2 or s0.shape[-1] != model.dx or horizon <= 0:
        return None
    return _Rollout(model, s0.shape[:1], s0.dtype, "mean").run_policy(s0, policy, horizon)


class _Rollout:
    """Folded weights and buffers of one rollout of batch ``shape``: E members × B rows each
    ('tsinf': B = k·R for P = k·E particles of R rows; 'mean': B = all rows, every member)."""

    def __init__(self, model, shape: torch.Size, dtype: torch.dtype, mode: str):
        dx, E = model.dx, model.members
        self.model, self.shape, self.dtype = model, shape, dtype
        self.tsinf = mode == "tsinf"
        self.sample_var = self.tsinf and model.probabilistic
        self.k = shape[0] // E if self.tsinf else 1
        self.B = math.prod(shape) // (E if self.tsinf else 1)
        dev, f32 = model.device, torch.float32
        n = model._norm(torch.float64)
        weights = [w.detach() for w in model.net.weights]
        biases = [b.detach() for b in model.net.biases]
        self.first = torch.cat([weights[0], biases[0]], 1)  # (E, dx + du + 1, H)
        self.hidden = list(zip(weights[1:-1], biases[1:-1]))
        ds, dm = n["delta_std"], n["delta_mean"]
        w_mean = (weights[-1][..., :dx].double() * ds).to(f32)
        b_mean = (biases[-1][..., :dx].double() * ds + dm).to(f32)
        if self.sample_var:
            self.last_w = torch.cat([w_mean, weights[-1][..., dx:]], -1)  # (E, H, 2·dx)
            self.last_b = torch.cat([b_mean, biases[-1][..., dx:]], -1)
            hi, lo = model.max_logvar.detach(), model.min_logvar.detach()
            # log σ = lo/2 + log σ_Δ + softplus(hi − lo − softplus(hi − raw))/2 (state units)
            self.hi, self.span = hi, hi - lo
            self.log_std0 = (0.5 * lo.double() + ds.log()).to(f32)
            self.std = torch.empty(E, self.B, dx, dtype=f32, device=dev)
        else:
            self.last_w, self.last_b = w_mean, b_mean
        if self.tsinf and not model.probabilistic:  # residual variance, the same at every step
            self.std = (model.residual_var.double() * ds**2).sqrt().to(dtype)
        hidden = weights[0].shape[-1]
        self.x = torch.ones(E, self.B, self.first.shape[1], dtype=f32, device=dev)
        self.h = [torch.empty(E, self.B, hidden, dtype=f32, device=dev) for _ in range(2)]
        self.out = torch.empty(E, self.B, self.last_w.shape[-1], dtype=f32, device=dev)
        # the state (E or 1, B, dx) in the rollout's dtype, this step's and the next
        self.s = [
            torch.empty(E if self.tsinf else 1, self.B, dx, dtype=dtype, device=dev)
            for _ in range(2)
        ]
        self.z = self.x[..., :dx] if self.tsinf and dtype == f32 else torch.empty_like(self.s[0])
        if self.tsinf:
            self.noise = torch.empty(*shape, dx, dtype=dtype, device=dev)
        else:
            self.avg = torch.empty(self.B, dx, dtype=f32, device=dev)

    def rows(self, t: torch.Tensor) -> torch.Tensor:
        """A (particles, ..., d) tensor as the networks' rows, (E, B, d) for 'tsinf' and
        (1, B, d) for 'mean' (read only: a copy where the layout needs one)."""
        return self.grid(t).flatten(1, 2) if self.tsinf else t.reshape(1, self.B, t.shape[-1])

    def grid(self, t: torch.Tensor) -> torch.Tensor:
        """A (particles, ..., d) view of a step of the contiguous states as (E, k, R, d)
        ('tsinf': particle j·E + e is member e's row j·R + r)."""
        return t.reshape(self.k, self.model.members, -1, t.shape[-1]).transpose(0, 1)

    def forward(self) -> torch.Tensor:
        """Network output (E, B, dx or 2·dx) for the inputs in ``self.x``: the mean head in
        state units (Δs), then the raw log-variance head ('tsinf' of a probabilistic model)."""
        h, spare = self.h
        torch.bmm(self.x, self.first, out=h)
        torch.nn.functional.silu(h, inplace=True)
        for w, b in self.hidden:
            torch.baddbmm(b, h, w, out=spare)
            torch.nn.functional.silu(spare, inplace=True)
            h, spare = spare, h
        return torch.baddbmm(self.last_b, h, self.last_w, out=self.out)

    def bounded_std(self, logvar: torch.Tensor) -> torch.Tensor:
        """std (E, B, dx) in state units from the raw log-variance head, soft-bounded as
        ``EnsembleModel._heads`` does: lo + softplus(hi − softplus(hi − raw) − lo)."""
        v = self.std
        torch.sub(self.hi, logvar, out=v)
        SOFTPLUS(v, 1, 20, out=v)
        torch.sub(self.span, v, out=v)
        SOFTPLUS(v, 1, 20, out=v)
        return torch.add(self.log_std0, v, alpha=0.5, out=v).exp_()

    def run(
        self, s0: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        model, dx, dtype = self.model, self.model.dx, self.dtype
        H = actions.shape[-2]
        n = model._norm(dtype)
        scale = 1.0 / n["state_std"]
        offset = -n["state_mean"] * scale  # z = s / σ_s − μ_s / σ_s
        na = model._norm(torch.promote_types(dtype, actions.dtype))
        while actions.ndim > 2 and actions.stride(0) == 0:  # particles sharing their actions:
            actions = actions[0]  # normalise them once
        a_n = ((actions - na["action_mean"]) / na["action_std"]).to(torch.float32)
        a_n = a_n.expand(*self.shape, H, model.du)
        # the actions as rows, step first: one copy per step into the inputs
        a_rows = torch.stack([self.rows(a_n[..., t, :]) for t in range(H)])
        states = torch.empty(*self.shape, H + 1, dx, dtype=dtype, device=model.device)
        states[..., 0, :] = s0
        s, nxt = self.s
        s.copy_(self.rows(states[..., 0, :]))
        x_state, x_action = self.x[..., :dx], self.x[..., dx:-1]
        for t in range(H):
            torch.addcmul(offset, s, scale, out=self.z)
            if self.z.data_ptr() != x_state.data_ptr():
                x_state.copy_(self.z)
            x_action.copy_(a_rows[t])
            out = self.forward()
            if self.tsinf:
                std = self.bounded_std(out[..., dx:]) if self.sample_var else self.std
                torch.randn(
                    self.noise.shape,
                    generator=generator,
                    dtype=dtype,
                    device=model.device,
                    out=self.noise,
                )
                torch.addcmul(s, std, self.rows(self.noise), out=nxt)
                nxt.add_(out[..., :dx])
            else:
                torch.mean(out, 0, out=self.avg)
                torch.add(s, self.avg, out=nxt)
            if self.tsinf:
                self.grid(states[..., t + 1, :]).copy_(nxt.unflatten(1, (self.k, -1)))
            else:
                states[..., t + 1, :].view(1, self.B, dx).copy_(nxt)
            s, nxt = nxt, s
        return states

    def run_policy(self, s0: torch.Tensor, policy, H: int) -> tuple[torch.Tensor, torch.Tensor]:
        """'mean' mode with the actions chosen step by step: ``fused_rollout_policy``."""
        with torch.no_grad():
            return self._run_policy(s0, policy, H)

    def _run_policy(self, s0, policy, H):
        model, dx, du, dtype = self.model, self.model.dx, self.model.du, self.dtype
        n = model._norm(dtype)
        scale, a_scale = 1.0 / n["state_std"], 1.0 / n["action_std"]
        offset, a_offset = -n["state_mean"] * scale, -n["action_mean"] * a_scale
        states = torch.empty(self.B, H + 1, dx, dtype=dtype, device=model.device)
        actions = torch.empty(self.B, H, du, dtype=dtype, device=model.device)
        states[:, 0] = s0
        x_state, x_action = self.x[..., :dx], self.x[..., dx:-1]
        z = self.z[0]
        for t in range(H):
            s = states[:, t]
            a = actions[:, t]
            a.copy_(policy(t, s))
            x_state.copy_(torch.addcmul(offset, s, scale, out=z))
            x_action.copy_(torch.addcmul(a_offset, a, a_scale))
            torch.mean(self.forward(), 0, out=self.avg)
            torch.add(s, self.avg, out=states[:, t + 1])
        return states, actions
