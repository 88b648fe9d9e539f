"""SOLAR's core pieces against independent references: the MNIW expectations and conjugate update
(Monte Carlo over scipy's samplers, known dynamics), the expected chain log-prior (Monte Carlo
over θ), the structured posterior (the dense Gaussian product), the ELBO's gradients (finite
differences), the latent cost fit (a known quadratic), the model artifact and the controller."""

import numpy as np
import pytest
import torch
from scipy import stats

from mbrl_ros.common.artifacts import ArtifactError
from mbrl_ros.solar.controller import ImageController
from mbrl_ros.solar.inference import (
    chain_prior,
    expected_log_prior,
    local_elbo,
    structured_posterior,
)
from mbrl_ros.solar.latent_cost import CostModel, fit_latent_cost
from mbrl_ros.solar.latent_dynamics import MNIW, transition_statistics
from mbrl_ros.solar.latent_lqr import initial_latent_controller
from mbrl_ros.solar.model import FitSettings, SolarModel
from mbrl_ros.solar.vae import ImageDecoder, VAEConfig


def random_mniw(rng, dz=2, du=1):
    p = dz + du + 1
    A = rng.normal(size=(p, p))
    B = rng.normal(size=(dz, dz))
    return MNIW(
        rng.normal(size=(dz, p)), A @ A.T / p + 0.5 * np.eye(p), B @ B.T + dz * np.eye(dz), dz + 4.5
    )


def sample_mniw(d: MNIW, n: int, seed: int):
    """(F (n, dz, p), Σ (n, dz, dz)) drawn with scipy: Σ ~ IW(Ψ, ν), F ~ MN(M, Σ, V)."""
    rng = np.random.default_rng(seed)
    Sig = stats.invwishart(df=d.nu, scale=d.Psi).rvs(n, random_state=rng)
    Lv = np.linalg.cholesky(d.V)
    F = np.stack([d.M + np.linalg.cholesky(S) @ rng.standard_normal(d.M.shape) @ Lv.T for S in Sig])
    return F, Sig


def test_mniw_expectations_match_monte_carlo():
    d = random_mniw(np.random.default_rng(0))
    F, Sig = sample_mniw(d, 40000, 1)
    P = np.linalg.inv(Sig)
    e = d.expected()
    np.testing.assert_allclose(e.prec, P.mean(0), rtol=0.03, atol=0.01)
    np.testing.assert_allclose(e.prec_F, (P @ F).mean(0), rtol=0.05, atol=0.03)
    np.testing.assert_allclose(
        e.F_prec_F, (np.swapaxes(F, 1, 2) @ P @ F).mean(0), rtol=0.05, atol=0.05
    )
    assert e.logdet_prec == pytest.approx(np.linalg.slogdet(P)[1].mean(), abs=0.02)


def test_conjugate_update_recovers_known_dynamics_and_steps_interpolate():
    rng = np.random.default_rng(2)
    B, T, dz, du = 40, 12, 3, 2
    F = 0.4 * rng.normal(size=(dz, dz + du + 1))
    Z = np.empty((B, T, dz))
    Z[:, 0] = rng.normal(size=(B, dz))
    U = rng.normal(size=(B, T - 1, du))
    for t in range(T - 1):
        Z[:, t + 1] = np.c_[Z[:, t], U[:, t], np.ones(B)] @ F.T + 0.05 * rng.normal(size=(B, dz))
    second = np.einsum("bti,btj->btij", Z, Z)
    cross = np.einsum("bti,btj->btij", Z[:, 1:], Z[:, :-1])
    prior = MNIW.prior(dz, du, scale=1e-3, dynamics_scale=30.0)
    stats_ = transition_statistics(Z, second, cross, U)
    post = prior.posterior(*stats_)
    np.testing.assert_allclose(post.M, F, atol=0.02)
    np.testing.assert_allclose(post.noise_mean(), 0.05**2 * np.eye(dz), atol=6e-4)
    assert post.nu == prior.nu + B * (T - 1)
    half = prior.posterior(*stats_, step=0.5)
    nat = [0.5 * (a + b) for a, b in zip(prior.natural(), post.natural())]
    for a, b in zip(half.natural(), nat):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_chain_prior_is_the_expected_log_density_under_q_theta():
    """−½ vᵀJv + hᵀv + c equals E_θ[log p(z | θ, u)] estimated over scipy's MNIW samples."""
    rng = np.random.default_rng(3)
    d = random_mniw(rng)
    T, dz = 4, d.dz
    z = rng.normal(size=(T, dz))
    u = rng.normal(size=(T - 1, d.du))
    prior = chain_prior(d.expected(), torch.as_tensor(u[None]))
    v = torch.as_tensor(z.reshape(1, -1))
    closed = float(-0.5 * v @ prior.J @ v.T + (prior.h * v).sum() + prior.c)
    F, Sig = sample_mniw(d, 40000, 4)
    xi = np.c_[z[:-1], u, np.ones(T - 1)]
    logp = stats.multivariate_normal(np.zeros(dz), np.eye(dz)).logpdf(z[0])
    mc = np.full(len(F), logp)
    for t in range(T - 1):
        r = z[t + 1] - F @ xi[t]  # (n, dz)
        Pi = np.linalg.inv(Sig)
        mc += (
            -0.5 * np.einsum("ni,nij,nj->n", r, Pi, r)
            + 0.5 * np.linalg.slogdet(Pi)[1]
            - 0.5 * dz * np.log(2 * np.pi)
        )
    assert closed == pytest.approx(mc.mean(), abs=4 * mc.std() / np.sqrt(len(mc)) + 1e-3)


def test_structured_posterior_is_the_gaussian_product():
    rng = np.random.default_rng(5)
    d = random_mniw(rng)
    B, T, dz = 2, 3, d.dz
    u = torch.as_tensor(rng.normal(size=(B, T - 1, d.du)))
    prior = chain_prior(d.expected(), u)
    m = torch.as_tensor(rng.normal(size=(B, T, dz)))
    s = torch.as_tensor(rng.normal(size=(B, T, dz)) * 0.3)
    q = structured_posterior(prior, m, s)
    for b in range(B):
        J = prior.J.numpy() + np.diag(np.exp(-s[b].numpy().ravel()))
        h = prior.h[b].numpy() + np.exp(-s[b].numpy().ravel()) * m[b].numpy().ravel()
        cov = np.linalg.inv(J)
        np.testing.assert_allclose(q.mean[b].numpy().ravel(), cov @ h, rtol=1e-10)
        np.testing.assert_allclose(q.covariance()[b].numpy(), cov, rtol=1e-9, atol=1e-12)
        ref = torch.distributions.MultivariateNormal(torch.as_tensor(cov @ h), torch.as_tensor(cov))
        assert float(q.entropy()[b]) == pytest.approx(float(ref.entropy()), rel=1e-10)
    # E_q[log p̃] by Monte Carlo over q
    torch.manual_seed(0)
    eps = torch.randn(2000, B, T, dz, dtype=torch.float64)
    zs = torch.stack([q.sample(e) for e in eps]).reshape(2000, B, -1)
    vals = -0.5 * torch.einsum("nbi,ij,nbj->nb", zs, prior.J, zs) + (prior.h * zs).sum(-1) + prior.c
    np.testing.assert_allclose(
        expected_log_prior(prior, q).numpy(),
        vals.mean(0).numpy(),
        atol=float(4 * vals.std(0).max() / np.sqrt(2000)),
    )


def test_elbo_gradients_match_finite_differences():
    torch.manual_seed(0)
    rng = np.random.default_rng(6)
    config = VAEConfig(image_size=8, latent_dim=2, frames=1, channels=2, hidden=3, pixel_std=0.3)
    decoder = ImageDecoder(config).double()
    d = random_mniw(rng, dz=2, du=1)
    B, T = 2, 3
    u = torch.as_tensor(rng.normal(size=(B, T - 1, 1)))
    prior = chain_prior(d.expected(), u)
    images = torch.rand(B, T, 3, 8, 8, dtype=torch.float64)
    eps = torch.randn(B, T, 2, dtype=torch.float64)

    def pure(m, s, w):
        params = dict(decoder.named_parameters())
        params["dense.0.weight"] = w
        decode = lambda z: torch.func.functional_call(decoder, params, (z,))  # noqa: E731
        return local_elbo(prior, m, s, decode, images, config.pixel_std, eps)[0]

    m = torch.randn(B, T, 2, dtype=torch.float64, requires_grad=True)
    s = (0.3 * torch.randn(B, T, 2, dtype=torch.float64)).requires_grad_(True)
    w = decoder.dense[0].weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(pure, (m, s, w), eps=1e-6, atol=1e-5, rtol=1e-4)
    # the β-annealed bound: the reconstruction plus β × (expected log-prior + entropy)
    with torch.no_grad():
        decode = decoder
        full, q = local_elbo(prior, m, s, decode, images, config.pixel_std, eps)
        recon, _ = local_elbo(prior, m, s, decode, images, config.pixel_std, eps, beta=0.0)
        rest = expected_log_prior(prior, q) + q.entropy()
        torch.testing.assert_close(full - recon, rest)
        torch.testing.assert_close(
            local_elbo(prior, m, s, decode, images, config.pixel_std, eps, beta=0.25)[0],
            recon + 0.25 * rest,
        )


def test_observed_costs_add_their_gaussian_log_likelihood_at_the_images_sample():
    """SOLAR's cost model in the ELBO: + Σ_t log N(y_t; c(z_t), σ²) at the reparameterised
    sample (scipy's normal density), with gradients to the cost's parameters and the
    potentials matching finite differences."""
    torch.manual_seed(1)
    rng = np.random.default_rng(11)
    config = VAEConfig(image_size=8, latent_dim=2, frames=1, channels=2, hidden=3, pixel_std=0.3)
    decoder = ImageDecoder(config).double()
    cost = CostModel(2, torch.float64)
    with torch.no_grad():
        cost.L.copy_(torch.as_tensor(rng.normal(size=(2, 2))))
        cost.c.copy_(torch.as_tensor(rng.normal(size=2)))
        cost.c0.fill_(0.3)
    B, T, std = 2, 3, 0.2
    prior = chain_prior(
        random_mniw(rng, dz=2, du=1).expected(), torch.as_tensor(rng.normal(size=(B, T - 1, 1)))
    )
    images = torch.rand(B, T, 3, 8, 8, dtype=torch.float64)
    eps = torch.randn(B, T, 2, dtype=torch.float64)
    y = torch.as_tensor(rng.normal(size=(B, T)))
    m = torch.randn(B, T, 2, dtype=torch.float64, requires_grad=True)
    s = (0.3 * torch.randn(B, T, 2, dtype=torch.float64)).requires_grad_(True)
    with torch.no_grad():
        plain, q = local_elbo(prior, m, s, decoder, images, config.pixel_std, eps)
        z = q.sample(eps).numpy()
        C = cost.latent_cost()
        expected = stats.norm.logpdf(y.numpy(), C(z), std).sum(1)
        with_costs, _ = local_elbo(
            prior,
            m,
            s,
            decoder,
            images,
            config.pixel_std,
            eps,
            observed=lambda z: cost.log_likelihood(z, y, std),
        )
    np.testing.assert_allclose((with_costs - plain).numpy(), expected, rtol=1e-10)

    def pure(m, s, L, c):
        def observed(z):  # the cost model's c(z) with L and c as inputs
            cz = torch.func.functional_call(cost, {"L": L, "c": c, "c0": cost.c0.detach()}, (z,))
            return -0.5 * (((y - cz) / std) ** 2).sum(-1)

        return local_elbo(prior, m, s, decoder, images, config.pixel_std, eps, observed=observed)[0]

    L = cost.L.detach().clone().requires_grad_(True)
    c = cost.c.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(pure, (m, s, L, c), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_latent_cost_recovers_a_positive_semidefinite_quadratic():
    rng = np.random.default_rng(7)
    L = rng.normal(size=(3, 2))
    C, c, c0 = L @ L.T, rng.normal(size=3), 0.7
    Z = rng.normal(size=(400, 3))
    y = 0.5 * np.einsum("ni,ij,nj->n", Z, C, Z) + Z @ c + c0
    fit = fit_latent_cost(Z, y)
    np.testing.assert_allclose(fit.C, C, atol=1e-4)
    np.testing.assert_allclose(fit.c, c, atol=1e-4)
    assert fit.c0 == pytest.approx(c0, abs=1e-4) and fit.fit_r2 > 0.9999
    assert np.linalg.eigvalsh(fit.C).min() >= -1e-12
    q = fit.trajectory_cost(T=5, du=2, action_weight=0.1, terminal_weight=3.0)
    zu = np.zeros((6, 5))
    zu[:, :3] = Z[0]
    assert q(zu) == pytest.approx(5 * fit(Z[0]) + 3 * fit(Z[0]))
    # the planners' form (pixel-MPC baseline): a batch of rollouts against a per-step sum
    Zs, U = rng.normal(size=(4, 7, 3)), rng.normal(size=(4, 6, 2))
    want = [
        sum(fit(z[t]) for t in range(1, 6)) + 3.0 * fit(z[6]) + 0.05 * (u**2).sum()
        for z, u in zip(Zs, U)
    ]
    got = fit.planning_cost(0.1, 3.0)(torch.as_tensor(Zs), torch.as_tensor(U))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    with pytest.raises(ValueError, match="too few"):
        fit_latent_cost(Z[:5], y[:5])
    with pytest.raises(ValueError, match="non-finite"):
        fit_latent_cost(np.full((50, 3), np.nan), y[:50])


def test_latent_cost_about_a_goal_has_its_minimum_there():
    """With a goal latent (a goal image's encoding) the fit is ½ (z − g)ᵀC(z − g) + c0: the
    true quadratic when the data has that form, else the best one with its minimum at g (the
    unconstrained fit's minimum lies elsewhere)."""
    rng = np.random.default_rng(8)
    L = rng.normal(size=(3, 3))
    C, g, c0 = L @ L.T, np.array([0.4, -0.2, 0.3]), 0.25
    Z = rng.normal(size=(400, 3))
    y = 0.5 * np.einsum("ni,ij,nj->n", Z - g, C, Z - g) + c0
    fit = fit_latent_cost(Z, y, goal=g)
    np.testing.assert_allclose(fit.C, C, atol=1e-4)
    np.testing.assert_allclose(fit.c, -C @ g, atol=1e-4)
    assert fit(g) == pytest.approx(c0, abs=1e-4) and fit.fit_r2 > 0.9999
    # a goal off the data's minimum: the minimum is the goal all the same, at a worse fit
    other = np.array([-0.5, 0.5, 0.0])
    off = fit_latent_cost(Z, y, goal=other)
    np.testing.assert_allclose(np.linalg.lstsq(off.C, -off.c, rcond=None)[0], other, atol=1e-8)
    assert off.fit_r2 < fit.fit_r2 - 0.01
    with pytest.raises(ValueError, match="goal latent"):
        fit_latent_cost(Z, y, goal=[0.0, 1.0])


def tiny_model():
    return SolarModel(VAEConfig(image_size=8, latent_dim=2, frames=2, channels=2, hidden=4), 1)


def test_model_artifact_round_trip_and_rejection():
    model = tiny_model()
    model.dynamics = random_mniw(np.random.default_rng(8), dz=2, du=1)
    images = np.random.default_rng(9).integers(0, 256, (1, 3, 8, 8, 3), dtype=np.uint8)
    data = model.to_bytes()
    back = SolarModel.from_bytes(data)
    np.testing.assert_array_equal(back.encode(images), model.encode(images))
    np.testing.assert_array_equal(back.dynamics.M, model.dynamics.M)
    assert back.dynamics.nu == model.dynamics.nu
    bad = bytearray(data)
    bad[-5] ^= 1
    with pytest.raises(ArtifactError):
        SolarModel.from_bytes(bytes(bad))
    with pytest.raises(ValueError, match="images must be uint8"):
        model.encode(images.astype(np.float32))
    assert not back.calibrated and not back.cost_fitted
    with pytest.raises(ValueError, match="cost model has not been fitted"):
        model.latent_cost()
    with pytest.raises(ValueError, match="costs must be finite"):
        model.fit(images, np.zeros((1, 2, 1)), FitSettings(iterations=1), costs=np.zeros((1, 2)))
    model.pretrain(images, iterations=1)
    model.fit(images, np.zeros((1, 2, 1)), FitSettings(iterations=2), costs=np.ones((1, 3)))
    back = SolarModel.from_bytes(model.to_bytes())
    assert back.calibrated
    np.testing.assert_array_equal(back.encode(images), model.encode(images))
    np.testing.assert_array_equal(back.decode([[0.5, -1.0]]), model.decode([[0.5, -1.0]]))
    assert back.cost_fitted
    np.testing.assert_array_equal(back.latent_cost().C, model.latent_cost().C)
    assert back.latent_cost().c0 == model.latent_cost().c0 != 0.0


def test_the_first_training_calibrates_the_networks_to_its_mean_frame_once():
    """The encoder sees (x − mean frame) / pixel scale and the decoder adds the mean frame
    (``vae.calibrate``): set from the images of the first pretrain or fit, kept by later fits."""
    rng = np.random.default_rng(10)
    first = rng.integers(0, 256, (2, 3, 8, 8, 3), dtype=np.uint8)
    frames = first.reshape(-1, 8, 8, 3).astype(np.float64) / 255.0
    mean = frames.mean(0).transpose(2, 0, 1)
    scale = (frames.transpose(0, 3, 1, 2) - mean).std()
    for train in ("pretrain", "fit"):
        model = tiny_model()
        assert not model.calibrated
        if train == "pretrain":
            model.pretrain(first, iterations=1)
        else:
            model.fit(first, np.zeros((2, 2, 1)), FitSettings(iterations=1, batch_size=1))
        assert model.calibrated
        for net in (model.encoder, model.decoder):
            np.testing.assert_allclose(net.pixel_mean.numpy(), mean, atol=1e-6)
        assert model.encoder.pixel_scale.item() == pytest.approx(scale, rel=1e-5)
        other = rng.integers(0, 256, (2, 3, 8, 8, 3), dtype=np.uint8)
        model.fit(other, np.zeros((2, 2, 1)), FitSettings(iterations=1, batch_size=1))
        np.testing.assert_allclose(model.decoder.pixel_mean.numpy(), mean, atol=1e-6)
        assert model.encoder.pixel_scale.item() == pytest.approx(scale, rel=1e-5)


def test_image_controller_encodes_acts_and_clamps():
    model = tiny_model()
    ctrl = initial_latent_controller(4, 2, 1, std=1.0, dt_ns=10**8, mean=50.0)
    ic = ImageController(model, ctrl, effort_limit=2.0)
    assert ic.act(0) is None  # no image yet
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="image must be uint8"):
        ic.push(np.zeros((8, 8), np.uint8))
    ic.push(image)
    np.testing.assert_array_equal(ic.act(0), [2.0])  # 50 clamped to the limit
    noise = np.array([[-49.5], [0.0], [0.0], [0.0]])  # given noise: mean + L_t z_t (std 1)
    np.testing.assert_allclose(ic.act(0, noise=noise), [0.5])
    assert ic.act(4) is None and ic.act_at(10**9) is None
    np.testing.assert_allclose(ic.latent(), model.encode(np.stack([image, image])[None])[0, 1])
    with pytest.raises(ValueError, match="does not fit"):
        ImageController(model, initial_latent_controller(4, 3, 1, 1.0, 10**8), 2.0)


def test_pretraining_learns_to_reconstruct_the_frames():
    """The autoencoder pre-training: held-out frames of the point mass reconstructed (encoder
    mean → decoder) far better than by the mean frame, and it is the encoder stack of
    ``potentials`` (newest frame first) that it trains."""
    from solar_pointmass import random_data

    rng = np.random.default_rng(3)
    _, images, _ = random_data(rng, 12, 6)
    model = SolarModel(
        VAEConfig(image_size=16, latent_dim=4, frames=2, channels=8, hidden=32), du=2, seed=1
    )
    loss = model.pretrain(images[:10], iterations=300, batch_frames=32, learning_rate=3e-3)
    assert loss[-1] < 0.5 * loss[0]
    held = images[10:]
    recon = model.decode(model.encode(held)).astype(float)
    mean_frame = images[:10].reshape(-1, 16, 16, 3).astype(float).mean(0)
    err = ((recon - held) ** 2).mean()
    assert err < 0.3 * ((mean_frame - held) ** 2).mean()
    with pytest.raises(ValueError, match="iterations"):
        model.pretrain(images, iterations=0)
