"""Analytic moment matching of GP predictions at Gaussian inputs against Monte Carlo (2·10⁵
samples) and its gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dynamics_systems import arm_dataset

from mbrl_ros.dynamics.base import ModelError, ModelSignature
from mbrl_ros.dynamics.gp import GPConfig, GPModel, Hyperparameters, SparseGPModel, exact_posterior
from mbrl_ros.dynamics.moment_matching import gp_moments, predict_moments

torch.set_num_threads(1)
N_MC = 200_000


@pytest.fixture(scope="module")
def arm_data():
    return arm_dataset("arm2", episodes=3, steps=40, seed=5)


def input_gaussian(data, scale=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mean = torch.as_tensor(np.concatenate([data.states[30], data.actions[30]]))
    std = torch.as_tensor(np.concatenate([data.states.std(0), data.actions.std(0)]))
    a = torch.randn(6, 6, dtype=torch.float64, generator=gen) * scale * std[:, None]
    return mean, a @ a.T + torch.diag((0.02 * std) ** 2)


@pytest.mark.parametrize("cls", [GPModel, SparseGPModel])
def test_moments_match_monte_carlo(cls, arm_data):
    """Mean, covariance of s' and Cov[(s, a), s'] against 2·10⁵ samples pushed through
    ``predict`` (MC mean of the predictive means; MC covariance of them plus the mean predictive
    variance). Tolerance: 5 Monte-Carlo standard errors per entry (normal-theory SE of a
    mean / covariance estimate), plus 1e-9."""
    model = cls(
        ModelSignature.of(arm_data),
        device="cpu",
        config=GPConfig(iterations=20, inducing_points=50),
    )
    model.fit(arm_data)
    mean, cov = input_gaussian(arm_data)
    mm = predict_moments(model, mean, cov)
    gen = torch.Generator().manual_seed(1)
    x = (
        mean
        + torch.randn(N_MC, 6, dtype=torch.float64, generator=gen) @ torch.linalg.cholesky(cov).T
    )
    m, v = model.predict(x[:, :4], x[:, 4:])
    mc_mean = m.mean(0)
    mc_cov = torch.cov(m.T) + torch.diag(v.mean(0))
    xc, mc_ = x - x.mean(0), m - mc_mean
    mc_cross = xc.T @ mc_ / (N_MC - 1)  # Cov[x, s'] = Cov[x, s] + Cov[x, Δs]
    d_cross = mc_cross - cov[:, :4]
    var = torch.diagonal(mc_cov)
    se_mean = (var / N_MC).sqrt()
    se_cov = ((var[:, None] * var[None] + mc_cov**2) / N_MC).sqrt()
    cx = torch.diagonal(cov)
    se_cross = ((cx[:, None] * var[None] + d_cross**2) / N_MC).sqrt()
    assert bool(((mm.mean - mc_mean).abs() <= 5 * se_mean + 1e-9).all())
    assert bool(((mm.cov - mc_cov).abs() <= 5 * se_cov + 1e-9).all())
    assert bool(((mm.cross - mc_cross).abs() <= 5 * se_cross + 1e-9).all())
    # the input-output covariance is not trivially small: the check has teeth
    assert float(mm.delta_cross.abs().max()) > 20 * float(se_cross.max())
    # Δs moments agree with those of s'
    torch.testing.assert_close(mm.mean, mean[:4] + mm.delta_mean)


def test_point_input_reduces_to_predict(arm_data):
    """Σ → 0 gives the GP's own mean and variance. Checked in normalised units to 1e-6 of the
    largest signal variance σ_f²: E[f²] − M² and σ_f² − tr(iK Q) cancel digits in proportion to
    β and iK (large for nearly noise-free data), as in PILCO's own implementation."""
    model = GPModel(ModelSignature.of(arm_data), device="cpu", config=GPConfig(iterations=10))
    model.fit(arm_data)
    post = model.posterior
    x = post.support[30] + 0.01
    m, v = post.mean_var(x[None])
    scale = float(torch.exp(2 * post.hyp.log_signal_std).max())
    for tiny in (0.0, 1e-12):
        mean, cov, cross = gp_moments(post, x, torch.eye(6, dtype=torch.float64) * tiny)
        torch.testing.assert_close(mean, m[0], rtol=0, atol=1e-9 * scale)
        torch.testing.assert_close(torch.diagonal(cov), v[0], rtol=0, atol=1e-6 * scale)
        assert float(cross.abs().max()) <= 1e-9 * scale


def test_batched_equals_one_by_one(arm_data, monkeypatch):
    model = SparseGPModel(
        ModelSignature.of(arm_data),
        device="cpu",
        config=GPConfig(iterations=10, inducing_points=30),
    )
    model.fit(arm_data)
    pairs = [input_gaussian(arm_data, seed=i) for i in range(3)]
    batch = predict_moments(
        model, torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    )
    for i, (m, c) in enumerate(pairs):
        one = predict_moments(model, m, c)
        torch.testing.assert_close(batch.cov[i], one.cov)
        torch.testing.assert_close(batch.cross[i], one.cross)
    import mbrl_ros.dynamics.moment_matching as mm_module

    monkeypatch.setattr(mm_module, "Q_ELEMENTS", 1)  # one output b per Q block
    small = predict_moments(
        model, torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    )
    torch.testing.assert_close(small.cov, batch.cov, rtol=1e-12, atol=1e-14)
    with pytest.raises(ModelError, match=r"mean \(\.\.\., 6\)"):
        predict_moments(model, torch.zeros(5), torch.eye(5))


def test_gradients_match_finite_differences():
    """torch.autograd.gradcheck (central differences, float64) of mean, covariance and
    input-output covariance with respect to μ and a factor A of Σ = A Aᵀ + 0.01 I."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(2, 12))
    hyp = Hyperparameters(
        torch.tensor(rng.normal(0, 0.3, (2, 3))),
        torch.tensor([0.1, -0.2], dtype=torch.float64),
        torch.tensor([-1.0, -2.0], dtype=torch.float64),
    )
    post = exact_posterior(torch.tensor(x), torch.tensor(y), hyp)
    mu = torch.tensor(rng.normal(0, 0.5, 3), requires_grad=True)
    a = torch.tensor(rng.normal(0, 0.3, (3, 3)), requires_grad=True)

    def moments(mu, a):
        return gp_moments(post, mu, a @ a.T + 0.01 * torch.eye(3, dtype=torch.float64))

    assert torch.autograd.gradcheck(moments, (mu, a), eps=1e-6, atol=1e-6, rtol=1e-5)
