"""The shared LQR backward pass (``planning.lqr``, used by iLQR and GPS) against scipy's Riccati
solver and a brute-force quadratic program over the whole action sequence."""

import numpy as np
import pytest
import torch
from scipy.linalg import solve_discrete_are

from mbrl_ros.planning.lqr import NotPositiveDefinite, backward_pass, lqr_backward


def lti(rng, dx=4, du=2):
    A = np.eye(dx) + 0.1 * rng.standard_normal((dx, dx))
    B = rng.standard_normal((dx, du))
    Q = np.diag(rng.uniform(0.5, 2.0, dx))
    R = np.diag(rng.uniform(0.1, 1.0, du))
    return A, B, Q, R


def block_cost(Q, R, T):
    dx, du = Q.shape[0], R.shape[0]
    C = np.zeros((T, dx + du, dx + du))
    C[:, :dx, :dx], C[:, dx:, dx:] = Q, R
    return C


def rollout(F, f, K, k, x0, alpha=1.0):
    """States and actions of u_t = K_t x_t + α k_t (plain numpy reference)."""
    x, U = x0, []
    for t in range(len(F)):
        U.append(K[t] @ x + alpha * k[t])
        x = F[t] @ np.concatenate([x, U[-1]]) + f[t]
    return np.array(U)


def total_cost(F, f, C, c, V_T, v_T, x0, U):
    x, total = x0, 0.0
    for t in range(len(U)):
        z = np.concatenate([x, U[t]])
        total += 0.5 * z @ C[t] @ z + c[t] @ z
        x = F[t] @ z + f[t]
    return total + 0.5 * x @ V_T @ x + v_T @ x


def test_gains_match_the_infinite_horizon_riccati_solution():
    rng = np.random.default_rng(0)
    A, B, Q, R = lti(rng)
    P = solve_discrete_are(A, B, Q, R)
    K_ref = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
    T = 15
    F = np.tile(np.hstack([A, B]), (T, 1, 1))
    sol = backward_pass(F, np.zeros((T, 4)), block_cost(Q, R, T), np.zeros((T, 6)), Vxx_T=P)
    np.testing.assert_allclose(sol.K, np.broadcast_to(-K_ref, (T, 2, 4)), atol=1e-9)
    np.testing.assert_allclose(sol.Vxx, np.broadcast_to(P, (T + 1, 4, 4)), atol=1e-8)
    np.testing.assert_allclose(sol.k, 0.0, atol=1e-12)
    np.testing.assert_allclose(
        sol.Quu_inv @ sol.Quu, np.broadcast_to(np.eye(2), (T, 2, 2)), atol=1e-9
    )
    np.testing.assert_allclose(sol.Quu, np.broadcast_to(R + B.T @ P @ B, (T, 2, 2)), atol=1e-9)


def test_affine_time_varying_problem_matches_the_quadratic_program():
    """Time-varying F, offsets f, cross terms and linear costs: the feedback law rolled out from
    x0 is the minimiser of the total cost as a quadratic in all actions, and the value function
    gives the optimal cost's dependence on x0."""
    rng = np.random.default_rng(1)
    T, dx, du = 6, 3, 2
    n = dx + du
    F = rng.standard_normal((T, dx, n)) * 0.5
    f = rng.standard_normal((T, dx))
    M = rng.standard_normal((T, n, n))
    C = M @ np.swapaxes(M, 1, 2) / n + 0.2 * np.eye(n)
    c = rng.standard_normal((T, n))
    W = rng.standard_normal((dx, dx))
    V_T, v_T = W @ W.T, rng.standard_normal(dx)
    x0 = rng.standard_normal(dx)
    sol = backward_pass(F, f, C, c, Vxx_T=V_T, vx_T=v_T)
    U = rollout(F, f, sol.K, sol.k, x0)

    def J(u_flat, start=x0):
        return total_cost(F, f, C, c, V_T, v_T, start, u_flat.reshape(T, du))

    m = T * du
    e, z = np.eye(m), np.zeros(m)
    H = np.array([[J(e[i] + e[j]) - J(e[i]) - J(e[j]) + J(z) for j in range(m)] for i in range(m)])
    g = np.array([J(e[i]) - J(-e[i]) for i in range(m)]) / 2
    np.testing.assert_allclose(U, np.linalg.solve(H, -g).reshape(T, du), atol=1e-7)
    zero = np.zeros(dx)
    J_opt_0 = J(rollout(F, f, sol.K, sol.k, zero).ravel(), zero)
    assert J(U.ravel()) - J_opt_0 == pytest.approx(
        0.5 * x0 @ sol.Vxx[0] @ x0 + sol.vx[0] @ x0, abs=1e-8
    )


def test_predicted_cost_change_is_exact_for_a_quadratic_problem():
    rng = np.random.default_rng(2)
    A, B, Q, R = lti(rng, 3, 1)
    T = 8
    F = np.tile(np.hstack([A, B]), (T, 1, 1))
    c = rng.standard_normal((T, 4))
    C = block_cost(Q, R, T)
    sol = backward_pass(F, np.zeros((T, 3)), C, c, Vxx_T=Q, vx_T=np.zeros(3))
    # The deviation problem around the zero nominal from x0 = 0: u_t = α k_t + K_t x_t.
    for alpha in (1.0, 0.5, 0.1):
        U = rollout(F, np.zeros((T, 3)), sol.K, sol.k, np.zeros(3), alpha)
        actual = total_cost(F, np.zeros((T, 3)), C, c, Q, np.zeros(3), np.zeros(3), U)
        assert actual == pytest.approx(alpha * sol.dV[0] + alpha**2 * sol.dV[1], rel=1e-9)


def test_indefinite_quu_is_reported_and_regularisation_fixes_it():
    rng = np.random.default_rng(3)
    A, B, Q, R = lti(rng)
    T = 5
    C = block_cost(Q, -0.5 * R, T)  # negative control cost
    F = np.tile(np.hstack([A, 0.01 * B]), (T, 1, 1))
    with pytest.raises(NotPositiveDefinite) as err:
        backward_pass(F, np.zeros((T, 4)), C, np.zeros((T, 6)))
    assert err.value.t == T - 1
    assert not lqr_backward(F, np.zeros((T, 4)), C, np.zeros((T, 6))).ok
    fixed = lqr_backward(F, np.zeros((T, 4)), C, np.zeros((T, 6)), mu=1.0)
    assert fixed.ok
    np.testing.assert_allclose(fixed.Quu[-1], -0.5 * R + np.eye(2), atol=1e-12)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(fx=np.zeros((3, 5))), "fx has shape"),
        (lambda a: a.update(Cxx=np.zeros((3, 5, 5))), "Cxx has shape"),
        (lambda a: a.update(Fx=np.zeros((3, 4, 4))), "Fx must be"),
        (lambda a: a.update(cx=np.full((3, 6), np.nan)), "cx has non-finite"),
        (lambda a: a.update(Vxx_T=np.eye(3)), "Vxx_T has shape"),
        (lambda a: a.update(reg=-1.0), "reg must be"),
    ],
)
def test_bad_input_is_named(change, message):
    args = dict(
        Fx=np.zeros((3, 4, 6)),
        fx=np.zeros((3, 4)),
        Cxx=np.tile(np.eye(6), (3, 1, 1)),
        cx=np.zeros((3, 6)),
    )
    change(args)
    with pytest.raises(ValueError, match=message):
        backward_pass(**args)


def test_torch_inputs_come_back_as_tensors_of_their_dtype():
    sol = lqr_backward(
        torch.zeros(2, 2, 3), torch.zeros(2, 2), torch.eye(3).repeat(2, 1, 1), torch.ones(2, 3)
    )
    assert sol.ok and isinstance(sol.K, torch.Tensor) and sol.K.dtype == torch.float32
    np.testing.assert_allclose(sol.k.numpy(), -1.0)
