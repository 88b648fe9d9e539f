"""The GMM: EM on known mixtures, survival of tiny and empty clusters, conditioning against the
closed form and numerical integration, the NIW prior, and the GMM dynamics model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dynamics_systems import arm_dataset, linear_dataset, one_step_rmse
from scipy import integrate, stats

from mbrl_ros.common.artifacts import ArtifactError, encode
from mbrl_ros.dynamics.base import ModelError, ModelSignature, model_from_bytes
from mbrl_ros.dynamics.gmm import GMM, GMMConfig, GMMDynamicsModel, kmeans

torch.set_num_threads(1)


def two_blobs(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], n // 2)
    b = rng.multivariate_normal([6, -3], [[0.5, -0.2], [-0.2, 0.3]], n // 2)
    return np.vstack([a, b])


def test_em_recovers_a_known_mixture():
    gmm = GMM(GMMConfig(n_components=2, seed=1))
    history = gmm.fit(two_blobs())
    assert all(b >= a - 1e-9 for a, b in zip(history, history[1:]))  # EM never decreases
    order = gmm.means[:, 0].argsort()
    np.testing.assert_allclose(gmm.weights[order], [0.5, 0.5], atol=0.01)
    np.testing.assert_allclose(gmm.means[order], [[0, 0], [6, -3]], atol=0.1)
    np.testing.assert_allclose(gmm.covs[order[0]], [[1, 0.8], [0.8, 1]], atol=0.1)
    np.testing.assert_allclose(gmm.covs[order[1]], [[0.5, -0.2], [-0.2, 0.3]], atol=0.06)
    x = torch.tensor([[0.3, -0.1], [5.0, -2.0]], dtype=torch.float64)
    w, mu, cov = gmm.weights.numpy(), gmm.means.numpy(), gmm.covs.numpy()
    ref = np.log(
        sum(w[k] * stats.multivariate_normal(mu[k], cov[k]).pdf(x.numpy()) for k in range(2))
    )
    np.testing.assert_allclose(gmm.log_prob(x), ref, rtol=1e-10)
    np.testing.assert_allclose(gmm.responsibilities(x).sum(1), 1.0)


def test_em_survives_tiny_and_empty_clusters():
    """20 components for 30 points, 5 of them duplicates: every weight stays ≥ the floor and every
    covariance positive definite; more components than points is capped at N."""
    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(size=(25, 3)), np.repeat([[4.0, 4.0, 4.0]], 5, 0)])
    gmm = GMM(GMMConfig(n_components=20, min_weight=1e-3))
    gmm.fit(x)
    assert bool((gmm.weights >= 1e-3 / (1 + 20e-3) - 1e-12).all())
    assert bool((torch.linalg.eigvalsh(gmm.covs) > 0).all())
    assert bool(torch.isfinite(gmm.log_prob(x)).all())
    small = GMM(GMMConfig(n_components=10))
    small.fit(x[:4])
    assert small.means.shape == (4, 3)
    flat = GMM(GMMConfig(n_components=3))
    flat.fit(np.c_[x[:, :2], np.ones(30)])  # a constant column: still a proper GMM
    assert bool((torch.linalg.eigvalsh(flat.covs) > 0).all())
    assert bool(torch.isfinite(flat.log_prob(np.c_[x[:, :2], np.ones(30)])).all())
    with pytest.raises(ModelError, match="non-finite"):
        GMM().fit(np.r_[x, [[np.nan, 0, 0]]])


def test_reseeding_moves_an_empty_cluster_to_the_worst_explained_point():
    resp = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    out = GMM._reseed_empty(resp, torch.tensor([-1.0, -9.0, -2.0], dtype=torch.float64))
    assert out.tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]


def test_kmeans_finds_separated_centres():
    centres = kmeans(torch.as_tensor(two_blobs()), 2, seed=0)
    order = centres[:, 0].argsort()
    np.testing.assert_allclose(centres[order], [[0, 0], [6, -3]], atol=0.1)
    with pytest.raises(ModelError, match="1 ≤ k ≤ 3"):
        kmeans(torch.zeros(3, 2), 4)


def test_condition_single_gaussian_matches_closed_form():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 4))
    cov, mean = a @ a.T + np.eye(4), rng.normal(size=4)
    gmm = GMM.from_parameters([1.0], mean[None], cov[None])
    x = rng.normal(size=(5, 2))
    cond = gmm.condition([0, 2], [1, 3], x)
    xi, yi = [0, 2], [1, 3]
    gain = cov[np.ix_(yi, xi)] @ np.linalg.inv(cov[np.ix_(xi, xi)])
    ref_mean = mean[yi] + (x - mean[xi]) @ gain.T
    ref_cov = cov[np.ix_(yi, yi)] - gain @ cov[np.ix_(xi, yi)]
    np.testing.assert_allclose(cond.mean, ref_mean, rtol=1e-10)
    np.testing.assert_allclose(cond.cov, np.broadcast_to(ref_cov, (5, 2, 2)), rtol=1e-10)


def test_condition_mixture_matches_numerical_integration():
    """p(y | x) of a 2-D mixture at x = 0.7: its mean and variance against quadrature of
    p(x, y) over y (scipy.integrate.quad), and the mixture density pointwise."""
    gmm = GMM.from_parameters(
        [0.3, 0.7],
        [[0.0, 1.0], [1.5, -2.0]],
        [[[1.0, 0.6], [0.6, 0.8]], [[0.5, -0.3], [-0.3, 1.2]]],
    )
    x0 = 0.7
    joint = lambda y: float(gmm.log_prob(np.array([[x0, y]])).exp())  # noqa: E731
    z = integrate.quad(joint, -20, 20)[0]
    m = integrate.quad(lambda y: y * joint(y), -20, 20)[0] / z
    v = integrate.quad(lambda y: (y - m) ** 2 * joint(y), -20, 20)[0] / z
    cond = gmm.condition([0], [1], [[x0]])
    assert float(cond.mean[0, 0]) == pytest.approx(m, rel=1e-7)
    assert float(cond.cov[0, 0, 0]) == pytest.approx(v, rel=1e-7)
    for y in (-3.0, 0.0, 1.2):
        dens = sum(
            float(cond.weights[0, k])
            * stats.norm(float(cond.means[0, k, 0]), float(cond.covs[k, 0, 0]) ** 0.5).pdf(y)
            for k in range(2)
        )
        assert dens == pytest.approx(joint(y) / z, rel=1e-7)


def test_niw_prior_as_gps():
    """μ0 and Φ/m are the moments of the mixture under the batch-averaged responsibilities;
    m = strength, n0 = strength (N − 2 − D) / N."""
    gmm = GMM(GMMConfig(n_components=2, seed=1))
    x = two_blobs()
    gmm.fit(x)
    pts = torch.as_tensor(x[:10])  # all from the first blob
    mu0, phi, m, n0 = gmm.niw_prior(pts, strength=2.0)
    w = gmm.responsibilities(pts).mean(0)
    ref_mu = (w[:, None] * gmm.means).sum(0)
    ref_cov = sum(
        w[k] * (gmm.covs[k] + torch.outer(gmm.means[k] - ref_mu, gmm.means[k] - ref_mu))
        for k in range(2)
    )
    torch.testing.assert_close(mu0, ref_mu)
    torch.testing.assert_close(phi, 2.0 * ref_cov)
    assert m == 2.0 and n0 == pytest.approx(2.0 * (2000 - 2 - 2) / 2000)


@pytest.fixture(scope="module")
def arm():
    return arm_dataset("arm2", episodes=8, steps=100, seed=4).split(0.25, seed=0)


def test_gmm_dynamics_fits_linear_system():
    """Linear system (a single Gaussian suffices): held-out one-step RMSE < 5 % of std(Δs)."""
    train, val = linear_dataset(episodes=8, steps=40, noise=1e-4).split(0.25, 0)
    model = GMMDynamicsModel(
        ModelSignature.of(train), device="cpu", config=GMMConfig(n_components=1)
    )
    assert not model.fit(train, val).rolled_back
    assert np.all(one_step_rmse(model, val) < 0.05)


def test_gmm_dynamics_fits_two_link_arm(arm):
    """2-link arm, 600 random-torque transitions: held-out one-step RMSE < 35 % of std(Δs)
    (a piecewise-linear model of nonlinear dynamics), and the prediction is differentiable."""
    train, val = arm
    model = GMMDynamicsModel(ModelSignature.of(train), device="cpu")
    report = model.fit(train, val)
    assert not report.rolled_back and report.val_loss
    err = one_step_rmse(model, val)
    assert np.all(err < 0.35), err
    s = torch.as_tensor(val.states[:3]).requires_grad_(True)
    mean, var = model.predict(s, torch.as_tensor(val.actions[:3]))
    mean.sum().backward()
    assert bool(torch.isfinite(s.grad).all()) and bool((var > 0).all())


def test_gmm_dynamics_artifacts_and_bad_input(arm):
    train, val = arm
    model = GMMDynamicsModel(
        ModelSignature.of(train), device="cpu", config=GMMConfig(n_components=4)
    )
    with pytest.raises(ModelError, match="at least 22 transitions, the dataset has 10"):
        model.fit(train.select(np.arange(10)))
    model.fit(train)
    data = model.to_bytes()
    back = model_from_bytes(data, device="cpu")
    s, a = torch.as_tensor(val.states), torch.as_tensor(val.actions)
    for x, y in zip(model.predict(s, a), back.predict(s, a)):
        assert torch.equal(x, y)
    from safetensors.numpy import load

    from mbrl_ros.common.artifacts import read_header

    tensors, meta = load(data), read_header(data)[1]
    meta = {k: v for k, v in meta.items() if k not in ("schema", "version")}
    bad = dict(tensors, covs=-tensors["covs"])
    with pytest.raises(ArtifactError, match="positive definite"):
        GMMDynamicsModel.from_bytes(encode(GMMDynamicsModel.SCHEMA, bad, meta))
    with pytest.raises(ArtifactError, match="sum to 1"):
        GMMDynamicsModel.from_bytes(
            encode(GMMDynamicsModel.SCHEMA, dict(tensors, weights=2 * tensors["weights"]), meta)
        )
    with pytest.raises(ArtifactError, match="n_points"):
        GMMDynamicsModel.from_bytes(
            encode(GMMDynamicsModel.SCHEMA, tensors, dict(meta, n_points="many"))
        )


def test_gmm_dynamics_warm_start(arm):
    train, val = arm
    model = GMMDynamicsModel(
        ModelSignature.of(train), device="cpu", config=GMMConfig(n_components=4)
    )
    with pytest.raises(ModelError, match="warm start needs a fitted model"):
        model.fit(train, warm_start=True)
    cold = model.fit(train)
    stats = model.stats
    warm = model.fit(train, warm_start=True)  # from the converged mixture: stops at once
    assert model.stats is stats and len(warm.train_loss) <= 3
    assert warm.train_loss[-1] <= cold.train_loss[-1] + 1e-6
