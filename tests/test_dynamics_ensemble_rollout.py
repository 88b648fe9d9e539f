"""The ensemble's fused planning rollout (``dynamics/ensemble_rollout.py``) against a plain
float64 NumPy forward written from the model's parameters: particle by particle, member by member,
normalisation, SiLU, the soft log-variance bounds and the Gaussian draw spelled out. Also the
step-by-step reference path (autograd on), the cost in the planner's dtype, and bad shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_ros.dynamics.base import DynamicsModel, ModelError, ModelSignature
from mbrl_ros.dynamics.ensemble import EnsembleConfig, EnsembleModel, MLPModel
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.planning import rollout_costs
from mbrl_ros.planning.mpc import PlannerSettings, build_mpc
from mbrl_ros.robot.description import load_robot
from mbrl_ros.tasks.reach import ReachCost

torch.set_num_threads(1)
H = 6


@pytest.fixture(scope="module")
def arm2():
    robot = load_robot("arm2")
    return robot, random_torque_dataset(robot, episodes=4, steps=40, seed=0, scale=0.3)


def make(cls, data, members: int) -> EnsembleModel:
    """Random weights, random biases and log-variance bounds that bind, the data's (non-trivial)
    normalisation statistics."""
    model = cls(
        ModelSignature.of(data),
        device="cpu",
        config=EnsembleConfig(members=members, hidden=24, layers=3, seed=2, bootstrap=False),
    )
    model.stats = data.stats()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for b in model.net.biases:
            b.copy_(0.3 * torch.randn(b.shape, generator=gen))
        model.max_logvar.fill_(-1.0)
        model.min_logvar.fill_(-4.0)
        model.residual_var.copy_(torch.rand(model.dx, generator=gen) + 0.1)
    return model


def softplus(x):
    return np.logaddexp(0.0, x)


def numpy_rollout(model, s0, actions, mode, seed, noise_dtype):
    """s0 (P, N, dx), actions (P, N, H, du) → states (P, N, H + 1, dx), float64, as PETS defines
    the propagation: 'tsinf' particle p keeps member p mod E and draws s' ~ N(μ_e, σ_e²) with
    the generator's normal draws of shape (P, N, dx) at each step; 'mean' averages the members'
    means."""
    W = [w.detach().double().numpy() for w in model.net.weights]
    b = [x.detach().double().numpy()[:, 0] for x in model.net.biases]
    st = {k: np.asarray(v, dtype=np.float64) for k, v in vars(model.stats).items()}
    hi = model.max_logvar.detach().double().numpy()[0]
    lo = model.min_logvar.detach().double().numpy()[0]
    E, dx = model.members, model.dx
    s = s0.double().numpy().copy()
    a_all = actions.double().numpy()
    P, N = s.shape[:2]
    gen = torch.Generator().manual_seed(seed)
    out = [s.copy()]
    for t in range(a_all.shape[2]):
        nxt = np.empty_like(s)
        noise = (
            torch.randn((P, N, dx), generator=gen, dtype=noise_dtype).double().numpy()
            if mode == "tsinf"
            else None
        )
        for p in range(P):
            for n in range(N):
                x = np.concatenate(
                    [
                        (s[p, n] - st["state_mean"]) / st["state_std"],
                        (a_all[p, n, t] - st["action_mean"]) / st["action_std"],
                    ]
                )
                means, stds = [], []
                for e in range(E):
                    h = x
                    for i in range(len(W)):
                        h = h @ W[i][e] + b[i][e]
                        if i < len(W) - 1:
                            h = h / (1.0 + np.exp(-h))
                    if model.probabilistic:
                        lv = hi - softplus(hi - h[dx:])
                        lv = lo + softplus(lv - lo)
                    else:
                        lv = np.log(model.residual_var.double().numpy())
                    means.append(s[p, n] + st["delta_mean"] + st["delta_std"] * h[:dx])
                    stds.append(st["delta_std"] * np.exp(0.5 * lv))
                if mode == "mean":
                    nxt[p, n] = np.mean(means, axis=0)
                else:
                    e = p % E
                    nxt[p, n] = means[e] + stds[e] * noise[p, n]
        s = nxt
        out.append(s.copy())
    return np.stack(out, axis=2)


@pytest.mark.parametrize("cls, members", [(EnsembleModel, 3), (MLPModel, 1), (MLPModel, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode, particles", [("tsinf", 2), ("mean", 1)])
def test_fused_rollout_matches_a_plain_forward(arm2, cls, members, dtype, mode, particles):
    """Two particles per member ('tsinf') or one deterministic rollout ('mean') of N = 5
    sequences: the fused path (no autograd) and the step-by-step path (autograd on) both give
    the plain float64 forward's states to float32 rounding."""
    _, data = arm2
    model = make(cls, data, members)
    P = particles * members if mode == "tsinf" else 1
    s0 = torch.as_tensor(data.states[:5], dtype=dtype).expand(P, 5, model.dx)
    U = torch.as_tensor(data.actions[: 5 * H].reshape(5, H, model.du), dtype=dtype)
    U = U.expand(P, 5, H, model.du)
    want = numpy_rollout(model, s0, U, mode, 11, dtype)
    with torch.no_grad():
        fused = model.rollout(s0, U, mode, torch.Generator().manual_seed(11))
    step_by_step = model.rollout(s0, U, mode, torch.Generator().manual_seed(11)).detach()
    scale = np.abs(want).max()
    for got in (fused, step_by_step):
        assert got.shape == (P, 5, H + 1, model.dx) and got.dtype == dtype
        np.testing.assert_allclose(got.double().numpy(), want, rtol=2e-5, atol=2e-5 * scale)
    assert not np.allclose(want[..., -1, :], want[..., 0, :])  # the rollout moved the state


def test_fused_rollout_takes_any_batch_shape_and_keeps_the_errors(arm2):
    """Batch (P, 2, 3): particle p still keeps member p mod E; no batch ('mean', as ``plan``
    rolls out its result); a particle count that is not a multiple of the members is refused
    with the reference's message; horizon 0 is s0."""
    _, data = arm2
    model = make(EnsembleModel, data, 3)
    s0 = torch.as_tensor(data.states[:6].reshape(2, 3, -1)).expand(6, 2, 3, model.dx)
    U = torch.as_tensor(data.actions[: 6 * H].reshape(2, 3, H, -1))
    with torch.no_grad():
        got = model.rollout(s0, U, "tsinf", torch.Generator().manual_seed(1))
        flat = model.rollout(
            s0.reshape(6, 6, -1),
            U.reshape(6, H, -1).expand(6, 6, H, -1),
            "tsinf",
            torch.Generator().manual_seed(1),
        )
        np.testing.assert_array_equal(got.reshape(6, 6, H + 1, -1).numpy(), flat.numpy())
        single = model.rollout(s0[0, 0, 0], U[0, 0], "mean")
        with torch.enable_grad():
            reference = model.rollout(s0[0, 0, 0], U[0, 0], "mean").detach()
        assert single.shape == (H + 1, model.dx)
        np.testing.assert_allclose(single.numpy(), reference.numpy(), rtol=1e-6, atol=1e-9)
        with pytest.raises(ModelError, match="multiple of the 3 members"):
            model.rollout(s0[:4], U, "tsinf")
        empty = model.rollout(s0, U[..., :0, :], "tsinf")
    assert empty.shape == (6, 2, 3, 1, model.dx)
    np.testing.assert_array_equal(empty[..., 0, :].numpy(), s0.numpy())


def test_rollout_costs_through_the_fused_path_match_the_reference_path(arm2):
    """The planners' expected costs (TS∞, 2 particles per member) equal those of the
    step-by-step path to float32 rounding."""
    robot, data = arm2
    model = make(EnsembleModel, data, 3)
    cost = ReachCost(robot, (0.15, 0.1, 0.07)).to(torch.float32)
    x0 = torch.as_tensor(data.states[0], dtype=torch.float32)
    U = torch.as_tensor(data.actions[: 8 * H].reshape(8, H, -1), dtype=torch.float32)
    fused = rollout_costs(model, cost, x0, U, "tsinf", 6, torch.Generator().manual_seed(3))
    with torch.enable_grad():
        states = model.rollout(
            x0.expand(6, 8, model.dx),
            U.expand(6, 8, H, model.du),
            "tsinf",
            torch.Generator().manual_seed(3),
        )
        reference = cost(states, U.expand(6, 8, H, model.du)).mean(0).detach()
    np.testing.assert_allclose(fused.numpy(), reference.numpy(), rtol=1e-5)


@pytest.mark.parametrize("planner", ["cem", "ilqr"])
def test_the_planner_nodes_cost_is_in_the_planners_dtype(planner):
    robot = load_robot("arm2")
    settings = PlannerSettings(planner=planner, horizon=4, samples=8, elites=2, device="cpu")
    mpc = build_mpc(robot, range(robot.n_joints), settings)
    assert {b.dtype for b in mpc.cost.buffers()} == {mpc.planner.dtype} == {torch.float32}


@pytest.mark.parametrize("cls, members", [(EnsembleModel, 3), (MLPModel, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_closed_loop_rollout_matches_a_plain_forward(arm2, cls, members, dtype):
    """``rollout_policy`` (the fused path) with a clamped linear feedback law, 4 rows: at every
    step the policy sees the state the plain float64 forward reaches, and the states follow it;
    the step-by-step reference (``DynamicsModel.rollout_policy``) agrees, and so does
    ``propagate(…, 'mean')`` with the mixture mean of ``predict``."""
    _, data = arm2
    model = make(cls, data, members)
    gen = torch.Generator().manual_seed(5)
    s0 = torch.as_tensor(data.states[:4], dtype=dtype)
    U = torch.as_tensor(data.actions[:H], dtype=dtype)
    K = 0.5 * torch.randn(H, model.du, model.dx, generator=gen, dtype=dtype)
    seen = []

    def policy(t, s):
        seen.append(s.clone())
        return torch.clamp(U[t] + (s - s0[0]) @ K[t].T, -0.2, 0.2)

    states, actions = model.rollout_policy(s0, policy, H)
    assert states.shape == (4, H + 1, model.dx) and actions.shape == (4, H, model.du)
    assert not states.requires_grad and states.dtype == dtype
    want = [s0.double().numpy()]
    for t in range(H):
        np.testing.assert_allclose(seen[t].double().numpy(), want[-1], rtol=2e-5, atol=2e-5)
        a = np.clip(
            U[t].double().numpy() + (want[-1] - s0[0].double().numpy()) @ K[t].double().numpy().T,
            -0.2,
            0.2,
        )
        np.testing.assert_allclose(actions[:, t].double().numpy(), a, rtol=2e-5, atol=2e-5)
        step = numpy_rollout(
            model,
            torch.as_tensor(want[-1])[None],
            torch.as_tensor(a)[None, :, None],
            "mean",
            0,
            torch.float64,
        )
        want.append(step[0, :, 1])
    np.testing.assert_allclose(
        states.double().numpy(), np.stack(want, 1), rtol=2e-5, atol=2e-5 * np.abs(want).max()
    )
    reference, _ = DynamicsModel.rollout_policy(model, s0, policy, H)
    np.testing.assert_allclose(reference.numpy(), states.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model.propagate(s0, U[0], "mean").detach().numpy(),
        model.predict(s0, U[0])[0].detach().numpy(),
        rtol=1e-6,
        atol=1e-7,
    )
