"""Exact and sparse GP dynamics: fits of known systems, prediction, warm start, roll-back,
artifacts and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dynamics_systems import arm_dataset, linear_dataset, one_step_rmse

from mbrl_ros.common.artifacts import ArtifactError, encode, read_header
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.dynamics.base import ModelError, ModelSignature, model_from_bytes
from mbrl_ros.dynamics.gp import (
    GPConfig,
    GPModel,
    Hyperparameters,
    SparseGPModel,
    exact_neg_log_ml,
    se_ard,
)

torch.set_num_threads(1)
FAST = GPConfig(iterations=40, inducing_points=60)
KINDS = [GPModel, SparseGPModel]


@pytest.fixture(scope="module")
def linear():
    return linear_dataset(episodes=6, steps=30, noise=1e-4).split(0.34, seed=0)


@pytest.fixture(scope="module")
def arm():
    return arm_dataset("arm2", episodes=6, steps=60, seed=3).split(0.34, seed=0)


def fitted(cls, train, val=None, config=FAST):
    model = cls(ModelSignature.of(train), device="cpu", config=config)
    report = model.fit(train, val)
    assert not report.rolled_back, report.message
    return model


@pytest.mark.parametrize("cls", KINDS)
def test_linear_system_one_step_error(cls, linear):
    """s' = A s + B a with noise std 1e-4: held-out one-step RMSE < 5 % of the std of Δs."""
    train, val = linear
    model = fitted(cls, train, val)
    assert np.all(one_step_rmse(model, val) < 0.05)
    s, a = torch.as_tensor(val.states), torch.as_tensor(val.actions)
    mean, var = model.predict(s, a)
    assert mean.dtype == torch.float64 and var.shape == mean.shape and bool((var > 0).all())
    # float32 in → float32 out, batched leading dimensions broadcast
    m32, _ = model.predict(s.float().reshape(2, -1, 2), a.float().reshape(2, -1, 1))
    assert m32.dtype == torch.float32 and m32.shape == (2, len(val) // 2, 2)


@pytest.mark.parametrize("cls", KINDS)
def test_two_link_arm_one_step_error(cls, arm):
    """2-link arm, random torques, 240 training transitions: held-out one-step RMSE < 15 % of
    the std of Δs for every state column."""
    train, val = arm
    model = fitted(cls, train, val)
    err = one_step_rmse(model, val)
    assert np.all(err < 0.15), err


def test_exact_posterior_matches_closed_form():
    """Mean and variance against the textbook formulas in numpy on a tiny problem."""
    rng = np.random.default_rng(0)
    x, xs = rng.normal(size=(15, 3)), rng.normal(size=(4, 3))
    y = rng.normal(size=(2, 15))
    hyp = Hyperparameters(
        torch.tensor(rng.normal(0, 0.3, (2, 3))),
        torch.tensor([0.1, -0.2], dtype=torch.float64),
        torch.tensor([-1.0, -2.0], dtype=torch.float64),
    )
    from mbrl_ros.dynamics.gp import exact_posterior

    post = exact_posterior(torch.tensor(x), torch.tensor(y), hyp)
    mean, var = post.mean_var(torch.tensor(xs))
    for e in range(2):
        ls, sf2 = np.exp(hyp.log_lengthscale[e].numpy()), np.exp(2 * hyp.log_signal_std[e].item())
        sn2 = np.exp(2 * hyp.log_noise_std[e].item())
        k = lambda p, q: sf2 * np.exp(-0.5 * (((p[:, None] - q[None]) / ls) ** 2).sum(-1))  # noqa
        kxx = k(x, x) + sn2 * np.eye(15)
        ks = k(xs, x)
        np.testing.assert_allclose(mean[:, e], ks @ np.linalg.solve(kxx, y[e]), rtol=1e-9)
        v = sf2 - np.einsum("ij,ji->i", ks, np.linalg.solve(kxx, ks.T)) + sn2
        np.testing.assert_allclose(var[:, e], v, rtol=1e-9)
    # the marginal likelihood against scipy
    from scipy.stats import multivariate_normal

    nll = sum(
        -multivariate_normal(
            np.zeros(15),
            (
                np.exp(2 * hyp.log_signal_std[e].item())
                * np.exp(
                    -0.5
                    * (((x[:, None] - x[None]) / np.exp(hyp.log_lengthscale[e].numpy())) ** 2).sum(
                        -1
                    )
                )
                + np.exp(2 * hyp.log_noise_std[e].item()) * np.eye(15)
            ),
        ).logpdf(y[e])
        for e in range(2)
    )
    assert float(exact_neg_log_ml(torch.tensor(x), torch.tensor(y), hyp)) == pytest.approx(
        nll / 15, rel=1e-10
    )
    assert se_ard(
        torch.tensor(x), torch.tensor(xs), hyp.log_lengthscale, hyp.log_signal_std
    ).shape == (2, 15, 4)


def test_sparse_gp_with_all_points_as_inducing_equals_exact(linear):
    """With Z = X, the VFE posterior is the exact GP posterior."""
    train, _ = linear
    from mbrl_ros.dynamics.gp import exact_posterior, sparse_posterior

    model = fitted(GPModel, train)
    x, y = model.train_data
    hyp = model.posterior.hyp
    exact, sparse = exact_posterior(x, y, hyp), sparse_posterior(x, x, y, hyp)
    xs = x[:20] + 0.1
    for a, b in zip(exact.mean_var(xs), sparse.mean_var(xs)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # K_uu is ill-conditioned


def test_sparse_gp_on_more_points_than_the_exact_limit():
    data = linear_dataset(episodes=10, steps=120, noise=1e-4, seed=1)
    with pytest.raises(ModelError, match=r"at most 1000 transitions.*sparse-gp"):
        GPModel(ModelSignature.of(data), config=GPConfig(max_points=1000)).fit(data)
    train, val = data.split(0.2, 0)
    model = fitted(
        SparseGPModel,
        train,
        val,
        GPConfig(iterations=20, inducing_points=40, hyper_points=300, max_points=1000),
    )
    assert model.posterior.support.shape == (40, 3)
    assert np.all(one_step_rmse(model, val) < 0.05)


@pytest.mark.parametrize("cls", KINDS)
def test_artifact_round_trip_is_bit_exact(cls, arm):
    train, val = arm
    model = fitted(cls, train, config=GPConfig(iterations=10, inducing_points=30))
    back = model_from_bytes(model.to_bytes(), device="cpu")
    assert type(back) is cls and back.signature == model.signature
    s, a = torch.as_tensor(val.states), torch.as_tensor(val.actions)
    for x, y in zip(model.predict(s, a), back.predict(s, a)):
        assert torch.equal(x, y)
    actions = a[:15].reshape(3, 5, 2)
    rollout = model.rollout(s[:3], actions)
    assert rollout.shape == (3, 6, 4) and torch.equal(rollout, back.rollout(s[:3], actions))


def test_artifact_errors(arm):
    train, _ = arm
    model = fitted(SparseGPModel, train, config=GPConfig(iterations=5, inducing_points=20))
    data = model.to_bytes()
    with pytest.raises(ArtifactError, match="expected 'mbrl_ros.dynamics.gp'"):
        GPModel.from_bytes(data)
    _, meta = read_header(data)
    from safetensors.numpy import load

    tensors = load(data)
    meta = {k: v for k, v in meta.items() if k not in ("schema", "version")}
    newer = type(SparseGPModel.SCHEMA)(**{**vars(SparseGPModel.SCHEMA), "version": 2})
    with pytest.raises(ArtifactError, match="version 2 is newer"):
        SparseGPModel.from_bytes(encode(newer, tensors, meta))
    one_joint = dict(meta, joint_names=["x"], state_names=["position/x", "velocity/x"])
    with pytest.raises(ArtifactError, match="do not match 2 state columns and 1 joints"):
        SparseGPModel.from_bytes(encode(SparseGPModel.SCHEMA, tensors, one_joint))
    loaded = SparseGPModel.from_bytes(data)
    with pytest.raises(ModelError, match="model is for joints"):
        loaded.signature.check(ModelSignature(("x",), ("position/x", "velocity/x"), 0.01))
    with pytest.raises(ArtifactError, match="config"):
        SparseGPModel.from_bytes(
            encode(SparseGPModel.SCHEMA, tensors, dict(meta, config={"bogus": 1}))
        )


def test_bad_input(linear):
    train, _ = linear
    model = GPModel(ModelSignature.of(train), device="cpu", config=FAST)
    with pytest.raises(ModelError, match="at least 10 transitions, the dataset has 5"):
        model.fit(train.select(np.arange(5)))
    const = Dataset(
        train.states,
        np.zeros_like(train.actions),
        train.next_states,
        train.episodes,
        train.stamps,
        train.joint_names,
        train.dt,
        train.state_names,
    )
    with pytest.raises(ModelError, match=r"\['effort/j'\] are constant"):
        model.fit(const)
    bad = train.select(np.arange(len(train)))
    states = bad.states.copy()
    states[3, 1] = np.nan
    object.__setattr__(bad, "states", states)  # Dataset refuses NaN; simulate a corrupt one
    with pytest.raises(ModelError, match="states contain non-finite values"):
        model.fit(bad)
    other = Dataset(
        train.states,
        train.actions,
        train.next_states,
        train.episodes,
        train.stamps,
        ("k",),
        train.dt,
        ("position/k", "velocity/k"),
    )
    with pytest.raises(ModelError, match="model is for joints"):
        model.fit(other)
    with pytest.raises(ModelError, match="not fitted"):
        model.predict(torch.zeros(2), torch.zeros(1))
    with pytest.raises(ModelError, match="warm start needs a fitted model"):
        model.fit(train, warm_start=True)
    with pytest.raises(ModelError, match="lengthscale_bounds"):
        GPConfig(lengthscale_bounds=(1.0, 0.5))
    assert model.stats is None and model.posterior is None  # failed fits changed nothing


def test_refit_warm_starts_and_divergence_rolls_back(linear, monkeypatch):
    train, val = linear
    model = fitted(GPModel, train, val)
    warm = model.fit(train, val, warm_start=True)  # starts at the optimum: one stage
    assert len(warm.train_loss) <= 2
    before = model.posterior
    import mbrl_ros.dynamics.gp as gp

    monkeypatch.setattr(gp, "exact_neg_log_ml", lambda *a: torch.tensor(float("nan")))
    stats = model.stats
    report = model.fit(train.select(np.arange(40)), val, warm_start=True)
    assert report.rolled_back and "diverged" in report.message
    assert model.posterior is before and model.stats is stats  # exactly as before
    assert model.train_data[0].shape[0] == len(train)
