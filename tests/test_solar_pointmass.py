"""SOLAR end to end on a synthetic task whose true latent is known: a point seen as a blob in
16 × 16 images (tests/solar_pointmass.py). The fitted latent recovers the position up to an
affine map, the decoder reproduces the frames, and the latent KL-constrained LQR, fed only
encoded images and the observed cost, moves the point to the target."""

import numpy as np
import pytest
import torch
from solar_pointmass import random_data, render, step

from mbrl_ros.solar.controller import ImageController
from mbrl_ros.solar.latent_cost import fit_latent_cost
from mbrl_ros.solar.latent_lqr import initial_latent_controller, latent_update
from mbrl_ros.solar.model import FitSettings, SolarModel
from mbrl_ros.solar.vae import VAEConfig

TARGET = np.array([0.4, -0.3])
START = np.array([-0.5, 0.5])


def fit_pointmass(images, U, settings: FitSettings, costs=None):
    """A SolarModel (dz 4, one frame) fitted on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = VAEConfig(
            image_size=16, latent_dim=4, frames=1, channels=16, hidden=64, pixel_std=0.1
        )
        model = SolarModel(config, du=2, seed=0)
        elbo = model.fit(images, U, settings, seed=0, costs=costs)
    finally:
        torch.set_num_threads(threads)
    return model, elbo


@pytest.fixture(scope="module")
def fitted():
    X, images, U = random_data(np.random.default_rng(0), 48, 10)
    settings = FitSettings(iterations=300, batch_size=24, learning_rate=3e-3, warmup=150)
    model, elbo = fit_pointmass(images, U, settings)
    return model, X, images, U, elbo


def r2_affine(Z, P):
    A = np.c_[Z, np.ones(len(Z))]
    w, *_ = np.linalg.lstsq(A, P, rcond=None)
    return 1.0 - (P - A @ w).var(0) / P.var(0)


@pytest.mark.slow
def test_the_latent_recovers_the_position_up_to_a_linear_map(fitted):
    model, X, images, U, elbo = fitted
    assert np.mean(elbo[-20:]) > np.mean(elbo[:20]) + 400  # per image (nats)
    P = X.reshape(-1, 2)
    assert r2_affine(model.encode(images).reshape(-1, 4), P).min() > 0.9
    q = model.posterior(images, U)
    assert r2_affine(q.mean.numpy().reshape(-1, 4), P).min() > 0.9
    # the dynamics learned in that latent space move it along the commanded direction
    Z = q.mean.numpy()
    pred = np.einsum(
        "ij,btj->bti",
        model.dynamics.M,
        np.concatenate([Z[:, :-1], U, np.ones(U.shape[:2] + (1,))], axis=2),
    )
    assert r2_affine(pred.reshape(-1, 4), X[:, 1:].reshape(-1, 2)).min() > 0.85
    recon = model.decode(model.encode(images[:4])).astype(float)
    assert np.abs(recon - images[:4]).mean() < 0.1 * np.abs(images[:4] - 128.0).mean()


@pytest.mark.slow
def test_the_cost_model_learnt_with_the_latent_predicts_the_observed_cost():
    """SOLAR's cost model: fitted jointly with the networks from the observed costs (the squared
    distance to the target), it predicts them from the encoded frames of held-out episodes."""
    X, images, U = random_data(np.random.default_rng(2), 40, 10)
    costs = ((X - TARGET) ** 2).sum(-1)
    settings = FitSettings(
        iterations=200, batch_size=16, learning_rate=3e-3, warmup=100, cost_std=0.1
    )
    model, _ = fit_pointmass(images[:32], U[:32], settings, costs[:32])
    learnt = model.latent_cost()
    held = model.encode(images[32:]).reshape(-1, 4)
    assert learnt.r2(held, costs[32:].ravel()) > 0.9
    assert np.all(np.linalg.eigvalsh(learnt.C) >= -1e-12)


def rollouts(model, ctrl, rng, n, limit=3.0):
    Z, U, final = [], [], []
    for _ in range(n):
        ic = ImageController(model, ctrl, effort_limit=limit)
        p, zs, us = START.copy(), [], []
        for t in range(ctrl.T):
            ic.push(render(p))
            zs.append(ic.latent())
            us.append(ic.act(t, rng))
            p = step(p, us[-1])
        ic.push(render(p))
        zs.append(ic.latent())
        Z.append(zs), U.append(us), final.append(np.linalg.norm(p - TARGET))
    return np.array(Z), np.array(U), np.array(final)


@pytest.mark.slow
def test_latent_lqr_reaches_the_target_from_images(fitted):
    model, X, images, U, _ = fitted
    cost = fit_latent_cost(
        model.encode(images).reshape(-1, 4), ((X.reshape(-1, 2) - TARGET) ** 2).sum(1)
    )
    assert cost.fit_r2 > 0.95
    rng = np.random.default_rng(1)
    ctrl = initial_latent_controller(8, 4, 2, std=1.0, dt_ns=250_000_000)
    eta, curve = 1.0, []
    for _ in range(10):
        Z, Us, final = rollouts(model, ctrl, rng, 8, limit=1.5)
        curve.append(final.mean())
        result = latent_update(
            model.dynamics,
            cost,
            ctrl,
            Z,
            Us,
            epsilon=5.0,
            action_weight=1e-2,
            terminal_weight=5.0,
            strength=0.01,
            eta0=eta,
        )
        assert abs(result.kl - 5.0) <= 0.5 or not result.active
        ctrl, eta = result.controller, result.eta
    ic, p = ImageController(model, ctrl, effort_limit=1.5), START.copy()
    for t in range(ctrl.T):
        ic.push(render(p))
        p = step(p, ic.act(t))
    assert curve[0] > 1.0  # random exploration: about 1.2 m away
    assert min(curve[-4:]) < 0.35 * curve[0]  # the samples end within ~0.3 m
    assert np.linalg.norm(p - TARGET) < 0.4  # so does the mean controller
