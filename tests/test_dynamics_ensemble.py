"""The network models (probabilistic ensemble, deterministic MLP): fits of known systems against
independent references, the mixture moments, the propagation modes, artifacts, bad input and
divergence rollback."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from dynamics_systems import linear_dataset

from mbrl_ros.common.artifacts import ArtifactError, Schema, decode, encode
from mbrl_ros.data.dataset import Dataset, joint_state_names
from mbrl_ros.data.errors import DataError
from mbrl_ros.dynamics.base import ModelError, ModelSignature, model_from_bytes
from mbrl_ros.dynamics.ensemble import EnsembleConfig, EnsembleModel, MLPModel
from mbrl_ros.dynamics.evaluation import evaluate
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.robot.description import load_robot

torch.set_num_threads(1)

NOISE = 0.01
SMALL = EnsembleConfig(members=3, hidden=32, layers=2, max_epochs=60, patience=10)


@pytest.fixture(scope="module")
def linear():
    """s' = A s + B a + w, w ~ N(0, 0.01² I): one joint, state (q, q̇); 10 episodes of 50."""
    return linear_dataset(episodes=10, steps=50, noise=NOISE).split(0.2, 0)


@pytest.fixture(scope="module")
def fitted(linear):
    train, val = linear
    model = EnsembleModel(ModelSignature.of(train), device="cpu", config=SMALL)
    report = model.fit(train, val)
    assert not report.rolled_back
    return model


def rmse(model, data: Dataset) -> np.ndarray:
    with torch.no_grad():
        mean, _ = model.predict(torch.as_tensor(data.states), torch.as_tensor(data.actions))
    return np.sqrt(((mean.numpy() - data.next_states) ** 2).mean(0))


@pytest.mark.parametrize("cls", [EnsembleModel, MLPModel])
def test_fits_a_linear_system_as_well_as_least_squares(cls, linear):
    """1-step error on held-out episodes within 15 % of the least-squares fit of the true model
    class (which reaches the noise floor, 0.01) and below 0.0125 per state."""
    train, val = linear
    cfg = EnsembleConfig(
        members=3 if cls is EnsembleModel else 1,
        hidden=64,
        layers=2,
        max_epochs=300,
        patience=20,
        bootstrap=cls is EnsembleModel,
    )
    model = cls(ModelSignature.of(train), device="cpu", config=cfg)
    report = model.fit(train, val)
    assert not report.rolled_back and report.val_loss and report.seconds > 0
    X = np.hstack([train.states, train.actions, np.ones((len(train), 1))])
    W = np.linalg.lstsq(X, train.next_states, rcond=None)[0]
    Xv = np.hstack([val.states, val.actions, np.ones((len(val), 1))])
    reference = np.sqrt(((Xv @ W - val.next_states) ** 2).mean(0))
    err = rmse(model, val)
    assert np.all(err < 1.15 * reference), (err, reference)
    assert np.all(err < 1.25 * NOISE)


@pytest.fixture(scope="module")
def arm2_data():
    return random_torque_dataset(load_robot("arm2"), 12, 100, seed=1).split(0.25, 0)


@pytest.mark.parametrize("cls", [EnsembleModel, MLPModel])
def test_fits_the_two_link_arm(cls, arm2_data):
    """Random-torque data of the simulated 2-link arm (900 training transitions): on held-out
    episodes the 1-step RMSE is below 1e-3 rad / 0.07 rad/s, the 10-step open-loop error below
    0.006 rad / 0.08 rad/s, both under 10 % of the error of predicting no motion."""
    train, val = arm2_data
    cfg = EnsembleConfig(
        members=3 if cls is EnsembleModel else 1,
        hidden=64,
        layers=2,
        max_epochs=150,
        patience=15,
        bootstrap=cls is EnsembleModel,
    )
    model = cls(ModelSignature.of(train), device="cpu", config=cfg)
    assert not model.fit(train, val).rolled_back
    ev = evaluate(model, val, (1, 10))
    one, ten = ev.horizons
    assert one.group_rmse["position"] < 1e-3 and one.group_rmse["velocity"] < 0.07, ev.table()
    assert ten.group_rmse["position"] < 6e-3 and ten.group_rmse["velocity"] < 0.08, ev.table()
    assert one.constant_ratio < 0.1 and ten.constant_ratio < 0.1, ev.table()


def test_prediction_is_the_mixture_of_the_members(fitted, linear):
    """mean = average of member means; var = average member variance + variance of the means
    (law of total variance), for any leading batch shape; s and a broadcast."""
    _, val = linear
    s = torch.as_tensor(val.states[:12]).reshape(3, 4, 2)
    a = torch.as_tensor(val.actions[:4])  # broadcasts over the first dim
    with torch.no_grad():
        means, variances = fitted.member_predictions(s, a)
        mean, var = fitted.predict(s, a)
    assert means.shape == (3, 3, 4, 2) and mean.shape == (3, 4, 2) and mean.dtype == s.dtype
    m, v = means.numpy(), variances.numpy()
    np.testing.assert_allclose(mean.numpy(), m.mean(0), rtol=1e-6)
    np.testing.assert_allclose(var.numpy(), v.mean(0) + ((m - m.mean(0)) ** 2).mean(0), rtol=1e-5)
    assert np.all(v > 0)


@pytest.mark.parametrize("cls", [EnsembleModel, MLPModel])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_closed_form_jacobians_are_autograds_and_finite_differences(cls, layers, dtype):
    """The ensemble's closed-form ∂s'/∂s, ∂s'/∂a of the mean equal the generic batched
    autograd ones (DynamicsModel.mean_jacobians) and central differences, with non-unit
    normalisation, on arm7's dimensions (dx 14, du 7)."""
    robot = load_robot("arm7")
    data = random_torque_dataset(robot, episodes=2, steps=30, seed=0, scale=0.3)
    config = replace(SMALL, layers=layers, members=1 if cls is MLPModel else 3, seed=3)
    model = cls(ModelSignature.of(data), device="cpu", config=config)
    model.stats = data.stats()
    s = torch.as_tensor(data.states[:5], dtype=dtype)
    a = torch.as_tensor(data.actions[:5], dtype=dtype)
    A, B = model.mean_jacobians(s, a)
    A_ref, B_ref = super(EnsembleModel, model).mean_jacobians(s, a)
    assert A.shape == (5, 14, 14) and B.shape == (5, 14, 7) and A.dtype == dtype
    scale = float(torch.cat([A_ref, B_ref], -1).abs().max())
    np.testing.assert_allclose(A.numpy(), A_ref.numpy(), atol=1e-5 * scale)
    np.testing.assert_allclose(B.numpy(), B_ref.numpy(), atol=1e-5 * scale)
    z = torch.cat([s[0], a[0]]).double()
    eps = 1e-3 * z.abs().clamp(min=1.0)

    def f(z):
        return model.propagate(z[None, :14], z[None, 14:], "mean")[0]

    with torch.no_grad():
        fd = torch.stack(
            [
                (f(z + e * h) - f(z - e * h)) / (2 * h)
                for e, h in zip(torch.eye(21, dtype=z.dtype), eps)
            ],
            -1,
        )
    np.testing.assert_allclose(
        torch.cat([A[0], B[0]], -1).double().numpy(), fd.numpy(), atol=2e-3 * scale
    )


def test_propagation_modes(fitted, linear):
    """ts1: each particle through a random member at each step; tsinf: particle p through member
    p mod E; both draw from that member's Gaussian. Replayed with the same generator seed."""
    _, val = linear
    E = fitted.members
    s = torch.as_tensor(val.states[: 2 * E])
    a = torch.as_tensor(val.actions[: 2 * E])
    with torch.no_grad():
        means, variances = fitted.member_predictions(s, a)
        sd = variances.sqrt()
        p = torch.arange(2 * E)

        out = fitted.propagate(s, a, "ts1", torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)
        member = torch.randint(E, (2 * E,), generator=g)
        noise = torch.randn(2 * E, 2, generator=g, dtype=s.dtype)
        np.testing.assert_allclose(out, means[member, p] + sd[member, p] * noise, rtol=1e-6)

        out = fitted.propagate(s, a, "tsinf", torch.Generator().manual_seed(4))
        noise = torch.randn(2 * E, 2, generator=torch.Generator().manual_seed(4), dtype=s.dtype)
        np.testing.assert_allclose(out, means[p % E, p] + sd[p % E, p] * noise, rtol=1e-5)

        # 'mean' averages the members' heads in float32 (no variance): predict's mean to rounding
        np.testing.assert_allclose(
            fitted.propagate(s, a, "mean"), fitted.predict(s, a)[0], rtol=1e-6, atol=1e-7
        )
        actions = torch.as_tensor(val.actions[:5]).expand(2 * E, 5, 1)
        for mode in ("mean", "sample", "ts1", "tsinf"):
            assert fitted.rollout(s, actions, mode).shape == (2 * E, 6, 2)
        with pytest.raises(ModelError, match="multiple of the 3 members"):
            fitted.propagate(s[:4], a[:4], "tsinf")
        with pytest.raises(ModelError, match="no propagation mode 'ts2'"):
            fitted.propagate(s, a, "ts2")


@pytest.mark.parametrize("cls", [EnsembleModel, MLPModel])
def test_artifact_round_trip(cls, linear):
    train, val = linear
    model = cls(ModelSignature.of(train), device="cpu", config=replace(SMALL, max_epochs=5))
    model.fit(train, val)
    model.info = {"version": 7, "note": "x"}
    copy = model_from_bytes(model.to_bytes(), device="cpu")
    assert type(copy) is cls and copy.signature == model.signature and copy.info == model.info
    assert copy.config == model.config
    s, a = torch.as_tensor(val.states), torch.as_tensor(val.actions)
    with torch.no_grad():
        for x, y in zip(model.predict(s, a), copy.predict(s, a)):
            np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_bad_artifacts_are_rejected(fitted):
    data = fitted.to_bytes()
    with pytest.raises(ArtifactError, match="expected 'mbrl_ros.dynamics.mlp'"):
        MLPModel.from_bytes(data)
    tensors, meta = decode(data, EnsembleModel.SCHEMA)
    meta = {k: v for k, v in meta.items() if k not in ("schema", "version")}
    newer = replace(EnsembleModel.SCHEMA, version=2)
    with pytest.raises(ArtifactError, match="version 2 is newer"):
        model_from_bytes(encode(newer, tensors, meta))
    wrong = encode(
        EnsembleModel.SCHEMA, tensors, {**meta, "config": {**meta["config"], "members": 4}}
    )
    with pytest.raises(ArtifactError, match="do not match the configured networks"):
        model_from_bytes(wrong)
    with pytest.raises(ArtifactError, match="not a dynamics model"):
        model_from_bytes(encode(Schema("other", 1, {}), {}, {}))


def test_bad_data_gets_clear_errors(fitted, linear):
    train, _ = linear
    model = EnsembleModel(ModelSignature.of(train), device="cpu", config=SMALL)
    with pytest.raises(ModelError, match="needs at least 50 transitions, the dataset has 20"):
        model.fit(train.select(np.arange(20)))
    flat = Dataset(
        train.states,
        np.zeros_like(train.actions),
        train.next_states,
        train.episodes,
        train.stamps,
        train.joint_names,
        train.dt,
        train.state_names,
    )
    with pytest.raises(ModelError, match=r"input columns \['effort/j'\] are constant"):
        model.fit(flat)
    states = train.states.copy()
    states[3, 1] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        Dataset(
            states,
            train.actions,
            train.next_states,
            train.episodes,
            train.stamps,
            train.joint_names,
            train.dt,
            train.state_names,
        )
    other = Dataset(
        train.states,
        train.actions,
        train.next_states,
        train.episodes,
        train.stamps,
        ("k",),
        train.dt,
        joint_state_names(("k",)),
    )
    with pytest.raises(ModelError, match=r"model is for joints \['j'\], data has \['k'\]"):
        fitted.fit(other)
    with pytest.raises(ModelError, match=r"model is for joints \['j'\]"):
        evaluate(fitted, other)
    with pytest.raises(ModelError, match="not fitted"):
        model.predict(torch.zeros(2), torch.zeros(1))
    with pytest.raises(ModelError, match="warm start needs a fitted model"):
        model.fit(train, warm_start=True)
    with pytest.raises(ModelError, match="members = 0"):
        EnsembleConfig(members=0)


def test_divergence_is_detected_and_rolled_back(fitted, linear):
    """A learning rate that blows the weights up gives a non-finite loss: the fit reports it and
    the model is exactly as before (same artifact bytes); a fresh model stays unfitted."""
    train, val = linear
    before = fitted.to_bytes()
    fitted.info = {"version": 1}
    good_config = fitted.config
    fitted.config = replace(good_config, lr=1e30)
    try:
        report = fitted.fit(train, val, warm_start=True)
    finally:
        fitted.config = good_config
    assert report.rolled_back and "diverged" in report.message
    fitted.info = {}
    assert fitted.to_bytes() == before
    fresh = EnsembleModel(ModelSignature.of(train), device="cpu", config=replace(SMALL, lr=1e30))
    assert fresh.fit(train, val).rolled_back
    with pytest.raises(ModelError, match="not fitted"):
        fresh.to_bytes()


def test_warm_start_continues_and_early_stopping_stops(linear):
    train, val = linear
    model = EnsembleModel(
        ModelSignature.of(train), device="cpu", config=replace(SMALL, max_epochs=500, patience=5)
    )
    report = model.fit(train, val)
    assert "5 without improvement" in report.message and len(report.val_loss) < 500
    stats = model.stats
    model.config = replace(model.config, max_epochs=1)
    warm = model.fit(train, val, warm_start=True)
    cold = EnsembleModel(
        ModelSignature.of(train), device="cpu", config=replace(SMALL, max_epochs=1)
    ).fit(train, val)
    assert model.stats is stats
    assert warm.val_loss[0] < 1.5 * min(report.val_loss) < 0.2 * cold.val_loss[0]
