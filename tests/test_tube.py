"""The uncertainty tube of a plan (planning.tube) against Monte Carlo: closed-loop rollouts of a
linear-Gaussian system under a feedback controller with exploration noise (where linearisation
is exact), and the end effector of arm2 for joint angles drawn around a nominal pose."""

import numpy as np
import torch

from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.planning.tube import ee_tube, state_tube
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics

T, DX, DU = 6, 4, 2


class LinearModel:
    """x' = A x + B u + c with noise variance var (dx,): a model's predict for the tube."""

    def __init__(self, rng):
        self.A = np.eye(DX) + 0.1 * rng.normal(size=(DX, DX))
        self.B = 0.2 * rng.normal(size=(DX, DU))
        self.c = 0.05 * rng.normal(size=DX)
        self.var = rng.uniform(1e-4, 4e-4, size=DX)

    def predict(self, s, a):
        A, B, c = (torch.as_tensor(m, dtype=s.dtype) for m in (self.A, self.B, self.c))
        return s @ A.T + a @ B.T + c, torch.as_tensor(self.var).expand(s.shape[0], DX)

    def step(self, x, u, rng):
        return x @ self.A.T + u @ self.B.T + self.c + rng.normal(size=x.shape) * np.sqrt(self.var)


def test_state_tube_matches_monte_carlo_rollouts():
    rng = np.random.default_rng(0)
    model = LinearModel(rng)
    u_hat = 0.3 * rng.normal(size=(T, DU))
    states = [rng.normal(size=DX)]
    for t in range(T):
        states.append(states[-1] @ model.A.T + u_hat[t] @ model.B.T + model.c)
    states = np.array(states)
    K = -0.5 * rng.normal(size=(T, DU, DX))
    L = 0.1 * rng.normal(size=(T, DU, DU))
    cov = L @ np.swapaxes(L, 1, 2)
    controller = LinearGaussianController(states[:T], u_hat, K, cov=cov, dt_ns=10_000_000)
    P = state_tube(model, states, controller)

    n = 100_000
    x = np.repeat(states[:1], n, axis=0)
    empirical = [np.zeros((DX, DX))]
    for t in range(T):
        e = rng.multivariate_normal(np.zeros(DU), cov[t], size=n)
        u = u_hat[t] + (x - states[t]) @ K[t].T + e
        x = model.step(x, u, rng)
        empirical.append(np.cov(x.T))
        np.testing.assert_allclose(
            x.mean(0), states[t + 1], atol=5 * np.sqrt(P[t + 1].diagonal().max() / n)
        )
    empirical = np.array(empirical)
    scale = np.sqrt(np.einsum("tii,tjj->tij", P, P))  # sampling error of a covariance ~ this/√n
    assert np.all(np.abs(P - empirical) <= 6 * scale / np.sqrt(n) + 1e-12)
    assert np.all(np.linalg.eigvalsh(P[1:]) > 0)


def test_ee_tube_matches_monte_carlo_of_forward_kinematics():
    robot = load_robot("arm2")
    fk = ForwardKinematics(robot)
    rng = np.random.default_rng(1)
    states = np.array([[0.3, 0.8, 0.0, 0.0], [0.5, -0.4, 0.1, 0.2]])
    L = 1e-3 * rng.normal(size=(2, 4, 4))
    P = L @ np.swapaxes(L, 1, 2)
    ee, cov = ee_tube(fk, states, P, robot.n_joints)
    for t in range(2):
        q = rng.multivariate_normal(states[t, :2], P[t, :2, :2], size=200_000)
        points = fk.ee_position(torch.as_tensor(q)).numpy()
        np.testing.assert_allclose(ee[t], fk.ee_position(torch.as_tensor(states[t, :2])).numpy())
        np.testing.assert_allclose(cov[t], np.cov(points.T), rtol=0.03, atol=1e-12)
