"""The linear-Gaussian controller: the formula, sampling, KL, entropy, time indexing, receding
horizon operations — against explicit loops, scipy, Monte Carlo and closed forms."""

import numpy as np
import pytest
from scipy import stats

from mbrl_ros.common.msgconv import seconds_to_ns
from mbrl_ros.control.controller import (
    TIME_TOLERANCE_NS,
    LinearGaussianController,
    concatenate,
    exploration_noise,
    kl_divergence,
)

DT = 2_000_000  # 2 ms


def random_spd(rng, T, d, scale=1.0):
    A = rng.standard_normal((T, d, d))
    return scale * (A @ np.swapaxes(A, 1, 2)) / d + 0.1 * np.eye(d)


def random_controller(rng, T=6, n=3, cov=True, start_ns=1_000_000_000, names=None):
    dx = 2 * n
    return LinearGaussianController(
        rng.standard_normal((T, dx)),
        rng.standard_normal((T, n)),
        rng.standard_normal((T, n, dx)),
        rng.standard_normal((T, n)),
        random_spd(rng, T, n) if cov else None,
        dt_ns=DT,
        start_ns=start_ns,
        joint_names=names or [f"j{i}" for i in range(n)],
    )


def test_act_follows_the_formula_single_and_batched():
    rng = np.random.default_rng(0)
    c = random_controller(rng)
    X = rng.standard_normal((5, c.dx))
    for t in range(c.T):
        for x in X:
            expected = c.K[t] @ (x - c.x_hat[t]) + c.k[t] + c.u_hat[t]
            np.testing.assert_allclose(c.act(x, t), expected, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(c.act(X, t), [c.act(x, t) for x in X], rtol=1e-13, atol=1e-13)
    ts = np.array([0, 3, 5, 1, 2])
    np.testing.assert_allclose(
        c.act(X, ts), [c.act(x, t) for x, t in zip(X, ts)], rtol=1e-13, atol=1e-13
    )
    assert c.act(X[0], ts).shape == (5, c.du)  # one state, many steps


def test_the_lectures_three_versions():
    rng = np.random.default_rng(1)
    T, n = 4, 2
    u_hat = rng.standard_normal((T, n))
    v05 = LinearGaussianController.open_loop(u_hat, 2 * n, dt_ns=DT)
    x = rng.standard_normal(2 * n)
    assert all(np.array_equal(v05.act(x, t), u_hat[t]) for t in range(T))
    assert v05.deterministic and np.array_equal(v05.sample(x, 1, rng), u_hat[1])
    x_hat, K = rng.standard_normal((T, 2 * n)), rng.standard_normal((T, n, 2 * n))
    v10 = LinearGaussianController.feedback(x_hat, u_hat, K, dt_ns=DT)
    np.testing.assert_allclose(v10.act(x, 2), K[2] @ (x - x_hat[2]) + u_hat[2])
    assert np.array_equal(v10.act(x_hat[2], 2), u_hat[2])  # on the nominal trajectory: û
    cov = random_spd(rng, T, n)
    v20 = LinearGaussianController.gaussian(x_hat, u_hat, K, np.zeros((T, n)), cov, dt_ns=DT)
    assert not v20.deterministic
    z = rng.standard_normal(n)
    np.testing.assert_allclose(
        v20.sample(x, 2, z=z), v10.act(x, 2) + np.linalg.cholesky(cov[2]) @ z
    )


def test_cholesky_and_inverse_of_sigma():
    rng = np.random.default_rng(2)
    c = random_controller(rng)
    np.testing.assert_allclose(c.chol @ np.swapaxes(c.chol, 1, 2), c.cov, atol=1e-12)
    assert np.all(np.triu(c.chol, 1) == 0)
    np.testing.assert_allclose(
        c.inv_cov @ c.cov, np.broadcast_to(np.eye(c.du), c.cov.shape), atol=1e-10
    )
    np.testing.assert_allclose(c.logdet, np.linalg.slogdet(c.cov)[1], atol=1e-12)
    with pytest.raises(ValueError):
        c.K[0, 0, 0] = 1.0  # read-only: derived quantities stay consistent


def test_sampling_statistics_match_sigma():
    rng = np.random.default_rng(3)
    c = random_controller(rng)
    x, t, N = rng.standard_normal(c.dx), 4, 200_000
    draws = c.sample(np.broadcast_to(x, (N, c.dx)), t, rng)
    mean, cov = c.act(x, t), c.cov[t]
    se_mean = np.sqrt(np.diag(cov) / N)
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * se_mean)
    sample_cov = np.cov(draws, rowvar=False)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / N)
    assert np.all(np.abs(sample_cov - cov) < 5 * se_cov)


def test_singular_sigma_is_factored_and_sampled():
    rng = np.random.default_rng(4)
    T, n = 3, 3
    v = np.array([1.0, 2.0, -1.0])
    cov = np.stack([np.outer(v, v), np.zeros((n, n)), random_spd(rng, 1, n)[0]])
    c = LinearGaussianController(
        np.zeros((T, 2 * n)), np.zeros((T, n)), np.zeros((T, n, 2 * n)), None, cov, dt_ns=DT
    )
    np.testing.assert_allclose(c.chol @ np.swapaxes(c.chol, 1, 2), cov, atol=1e-12)
    assert np.all(np.triu(c.chol, 1) == 0)
    assert c.inv_cov is None and np.isneginf(c.logdet[:2]).all() and np.isfinite(c.logdet[2])
    draws = c.sample(np.zeros((50_000, 2 * n)), 0, rng)
    ratio = draws / v  # all draws lie on the line of v
    np.testing.assert_allclose(ratio, ratio[:, :1].repeat(n, axis=1), atol=1e-9)
    assert abs(ratio[:, 0].var() - 1.0) < 0.03
    with pytest.raises(ValueError, match="positive definite"):
        c.log_prob(np.zeros(n), np.zeros(2 * n), 0)


def test_log_prob_and_entropy_match_scipy():
    rng = np.random.default_rng(5)
    c = random_controller(rng)
    x, u = rng.standard_normal(c.dx), rng.standard_normal(c.du)
    for t in range(c.T):
        ref = stats.multivariate_normal(c.act(x, t), c.cov[t])
        assert c.log_prob(u, x, t) == pytest.approx(ref.logpdf(u), rel=1e-12)
        assert c.entropy()[t] == pytest.approx(ref.entropy(), rel=1e-12)


def _gaussian_kl(m1, S1, m2, S2):
    d = len(m1)
    diff = m2 - m1
    return 0.5 * (
        np.trace(np.linalg.solve(S2, S1))
        + diff @ np.linalg.solve(S2, diff)
        - d
        + np.linalg.slogdet(S2)[1]
        - np.linalg.slogdet(S1)[1]
    )


def _joint(c, t, mu, P):
    """Mean and covariance of (x, u) when x ~ N(mu, P) and u ~ c(u | x) at step t."""
    bias = c.k[t] + c.u_hat[t] - c.K[t] @ c.x_hat[t]
    K = c.K[t]
    mean = np.concatenate([mu, K @ mu + bias])
    cov = np.block([[P, P @ K.T], [K @ P, K @ P @ K.T + c.cov[t]]])
    return mean, cov


def test_kl_matches_the_closed_form_between_joint_gaussians():
    """With a shared state distribution, E_x KL(p(u|x)‖q(u|x)) = KL(p(x,u)‖q(x,u))."""
    rng = np.random.default_rng(6)
    p, q = random_controller(rng), random_controller(rng)
    mu = rng.standard_normal((p.T, p.dx))
    P = random_spd(rng, p.T, p.dx, 0.5)
    kl = kl_divergence(p, q, mu, P)
    for t in range(p.T):
        ref = _gaussian_kl(*_joint(p, t, mu[t], P[t]), *_joint(q, t, mu[t], P[t]))
        assert kl[t] == pytest.approx(ref, rel=1e-9)
    np.testing.assert_allclose(kl_divergence(p, p, mu, P), 0.0, atol=1e-10)
    assert np.all(kl > 0)


def test_kl_matches_monte_carlo():
    rng = np.random.default_rng(7)
    p = random_controller(rng, T=3, n=2)
    q = LinearGaussianController(
        p.x_hat + 0.3,
        p.u_hat,
        p.K + 0.2 * rng.standard_normal(p.K.shape),
        p.k,
        p.cov * 1.5,
        dt_ns=DT,
        start_ns=p.start_ns,
    )
    mu = rng.standard_normal((p.T, p.dx))
    P = random_spd(rng, p.T, p.dx, 0.3)
    kl = kl_divergence(p, q, mu, P)
    N = 200_000
    for t in range(p.T):
        x = rng.multivariate_normal(mu[t], P[t], size=N)
        u = p.sample(x, t, rng)
        ratio = p.log_prob(u, x, t) - q.log_prob(u, x, t)
        assert abs(ratio.mean() - kl[t]) < 5 * ratio.std() / np.sqrt(N)


def test_kl_is_infinite_for_deterministic_controllers():
    rng = np.random.default_rng(8)
    p, q = random_controller(rng), random_controller(rng, cov=False)
    mu, P = np.zeros((p.T, p.dx)), np.broadcast_to(np.eye(p.dx), (p.T, p.dx, p.dx))
    assert np.isposinf(kl_divergence(p, q, mu, P)).all()
    assert np.isposinf(kl_divergence(q, p, mu, P)).all()
    with pytest.raises(ValueError, match="differ in size"):
        kl_divergence(p, random_controller(rng, T=3), mu, P)


def test_time_index_uses_integer_nanoseconds():
    rng = np.random.default_rng(9)
    c = random_controller(rng, T=5, start_ns=seconds_to_ns(1.0))
    assert c.index(c.start_ns) == 0
    assert c.index(c.start_ns + DT - TIME_TOLERANCE_NS - 1) == 0
    assert c.index(c.start_ns + DT - TIME_TOLERANCE_NS) == 1  # float-rounded stamp of step 1
    assert c.index(c.start_ns - TIME_TOLERANCE_NS) == 0
    assert c.index(c.start_ns - TIME_TOLERANCE_NS - 1) is None
    assert c.index(c.end_ns - TIME_TOLERANCE_NS - 1) == 4
    assert c.index(c.end_ns - TIME_TOLERANCE_NS) is None and not c.covers(c.end_ns)
    # stamps computed in float seconds at 500 Hz land on the right step for a long run
    for k in range(0, 2_000_000, 9973):
        c_far = c.restamp(seconds_to_ns(k * 0.002))
        stamp = int(((k + 3) * 0.002) * 1e9)  # truncation of a float: may be 1 ns short
        assert c_far.index(stamp) == 3


def test_shift_slice_restamp_concatenate_keep_absolute_time():
    rng = np.random.default_rng(10)
    c = random_controller(rng, T=8)
    x = rng.standard_normal(c.dx)
    s = c.shift(3)
    assert s.T == 5 and s.start_ns == c.start_ns + 3 * DT
    for k in range(3, 8):
        stamp = c.start_ns + k * DT
        np.testing.assert_array_equal(s.act(x, s.index(stamp)), c.act(x, c.index(stamp)))
    for fill in ("repeat", "zero"):
        f = c.shift(2, fill=fill)
        assert f.T == c.T and f.end_ns == c.end_ns + 2 * DT
        tail = f.act(x, f.T - 1)
        expected = c.act(x, c.T - 1) if fill == "repeat" else np.zeros(c.du)
        np.testing.assert_array_equal(tail, expected)
    joined = concatenate([c.slice(0, 3), c.slice(3, 8)])
    for name in ("x_hat", "u_hat", "K", "k", "cov"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(c, name))
    assert joined.start_ns == c.start_ns
    with pytest.raises(ValueError, match="starts at"):
        concatenate([c.slice(0, 3), c.slice(4, 8)])
    retimed = concatenate([c.slice(0, 3), c.slice(4, 8)], retime=True)
    assert retimed.T == 7 and retimed.end_ns == c.start_ns + 7 * DT
    moved = c.restamp(0)
    np.testing.assert_array_equal(moved.act(x, moved.index(2 * DT)), c.act(x, 2))


@pytest.mark.parametrize("smoothing", [0.0, 2.0, 5.0])
def test_exploration_noise_is_standard_normal_with_gps_smoothing(smoothing):
    rng = np.random.default_rng(11)
    z = exploration_noise(200, 4000, rng, smoothing)  # many independent sequences
    assert z.shape == (200, 4000)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    # E (z_{t+1} − z_t)² = 2 (1 − ρ₁), ρ₁ = Σ w_j w_{j+1} for the unit-energy Gaussian kernel w
    rho1 = 0.0
    if smoothing > 0:
        half = int(np.ceil(4 * smoothing))
        w = np.exp(-0.5 * (np.arange(-half, half + 1) / smoothing) ** 2)
        w /= np.linalg.norm(w)
        rho1 = np.dot(w[1:], w[:-1])
    assert np.mean(np.diff(z, axis=0) ** 2) == pytest.approx(2 * (1 - rho1), rel=0.01)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(K=np.zeros((4, 2, 3))), "K has shape"),
        (dict(k=np.full((4, 2), np.nan)), "k has non-finite"),
        (dict(cov=np.tile([[1.0, 0.5], [0.0, 1.0]], (4, 1, 1))), "not symmetric"),
        (dict(cov=np.tile([[1.0, 0.0], [0.0, -1.0]], (4, 1, 1))), "not positive semidefinite"),
        (dict(dt_ns=0), "dt_ns"),
        (dict(dt_ns=1.5), "dt_ns"),
        (dict(start_ns=-1), "start_ns"),
        (dict(joint_names=["a", "a"]), "distinct"),
        (dict(joint_names=["a", "b", "c"]), "joint_names for du"),
    ],
)
def test_invalid_controllers_are_rejected(change, match):
    T, n = 4, 2
    kw = (
        dict(
            x_hat=np.zeros((T, 2 * n)),
            u_hat=np.zeros((T, n)),
            K=np.zeros((T, n, 2 * n)),
            k=None,
            cov=None,
            dt_ns=DT,
            joint_names=["a", "b"],
        )
        | change
    )
    with pytest.raises(ValueError, match=match):
        LinearGaussianController(
            kw.pop("x_hat"), kw.pop("u_hat"), kw.pop("K"), kw.pop("k"), kw.pop("cov"), **kw
        )


def test_without_feedback_runs_the_nominal_actions_open_loop():
    rng = np.random.default_rng(3)
    T, dx, du = 4, 4, 2
    c = LinearGaussianController.feedback(
        rng.normal(size=(T, dx)),
        rng.normal(size=(T, du)),
        rng.normal(size=(T, du, dx)),
        rng.normal(size=(T, du)),
        dt_ns=10,
        start_ns=100,
        joint_names=("a", "b"),
    )
    o = c.without_feedback()
    for t in range(T):  # the same action on the plan, and everywhere else too
        np.testing.assert_allclose(o.act(c.x_hat[t], t), c.act(c.x_hat[t], t))
        np.testing.assert_allclose(o.act(rng.normal(size=dx), t), c.act(c.x_hat[t], t))
    assert (o.start_ns, o.T, o.valid_until_ns) == (c.start_ns, c.T, c.valid_until_ns)
