"""Time per KL-constrained update (trajopt.kl_update) for T = 100, du = 7, dx = 14 and 26.

The problem is the first GPS iteration of the 7-DOF reach: 5 rollouts of the initial controller on
the sim arm, local dynamics by ridge regression, the reach cost expanded around the samples,
ε = 0.5 nats/step · T. dx = 26 appends end-effector features to x = [q, q̇]: the positions of the
end effector and the wrist (6) and their velocities (6). Each update is timed cold (η search from
η = 1) and warm (from 2 × the solution's η: the loop starts from the previous iteration's η, which
is typically within that factor), best of several repeats.
Wall time and this process's CPU time (the better figure on a busy machine). Ratios in the same
run: update / one LQR backward pass, update (wall) / the 20 ms goal.

    python benchmarks/bench_kl_update.py [--seconds S]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mbrl_ros.controller import LinearGaussianController
from mbrl_ros.planning.lqr import backward_pass
from mbrl_ros.robot import ForwardKinematics, load_robot
from mbrl_ros.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.reach import ReachCost
from mbrl_ros.trajopt.gps import initial_controllers, rollout
from mbrl_ros.trajopt.kl_update import kl_cost_terms, kl_update
from mbrl_ros.trajopt.local_dynamics import fit_linear_regression
from mbrl_ros.trajopt.trajectory import expand_cost

T, SAMPLES, KL_STEP = 100, 5, 0.5
GOAL_MS = 20.0


def best_ms(fn, seconds: float, repeats: int = 5, clock=time.perf_counter) -> float:
    """Best mean time of one call (ms) over ``repeats`` runs of about seconds/repeats each, on
    ``clock`` (wall: perf_counter; this process's CPU: process_time, less hurt by a busy machine)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, clock()
        while calls == 0 or clock() - start < seconds / repeats:
            fn()
            calls += 1
        best = min(best, (clock() - start) / calls)
    return best * 1e3


def features(fk: ForwardKinematics, X: np.ndarray) -> np.ndarray:
    """X (N, T+1, 14) → (N, T+1, 26): [q, q̇, p_ee, p_wrist, ṗ_ee, ṗ_wrist] (velocities by J q̇)."""
    q, qd = torch.as_tensor(X[..., :7]), torch.as_tensor(X[..., 7:])
    with torch.no_grad():
        p = fk.positions(q)                                                # (N, T+1, 2, 3)
        J = torch.func.vmap(torch.func.jacrev(fk.positions))(q.reshape(-1, 7))
        v = torch.einsum("bpij,bj->bpi", J, qd.reshape(-1, 7)).reshape(p.shape)
    return np.concatenate([X, p.flatten(-2).numpy(), v.flatten(-2).numpy()], axis=-1)


def problem(dx: int):
    robot = load_robot("arm7")
    sim = ArmSimulator(robot, SimConfig(scene=None))
    q0 = np.array([0.0, -0.3, 0.0, -2.0, 0.0, 1.6, 0.8])
    ctrl = initial_controllers(sim, [q0], T)[0]
    rng = np.random.default_rng(0)
    runs = [rollout(sim, ctrl, q0, rng.standard_normal((T, 7))) for _ in range(SAMPLES)]
    X, U = np.stack([r[0] for r in runs]), np.stack([r[1] for r in runs])
    if dx == 26:
        fk = ForwardKinematics(robot, points={"ee": (robot.ee_link, (0, 0, 0)),
                                              "wrist": (robot.link_names[-3], (0, 0, 0))})
        X = features(fk, X)
        K = np.concatenate([ctrl.K, np.zeros((T, 7, 12))], axis=2)
        x_hat = np.concatenate([ctrl.x_hat, np.zeros((T, 12))], axis=1)
        ctrl = LinearGaussianController.gaussian(x_hat, ctrl.u_hat, K, ctrl.k, ctrl.cov,
                                                 dt_ns=ctrl.dt_ns, state_layout="q,qd,ee_features")
    cost = ReachCost(robot, (0.3, 0.2, 0.6), w_l2=100.0, w_log=1.0, alpha=1e-5)
    return expand_cost(cost, X, U), fit_linear_regression(X, U, 1e-6), ctrl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    eps = KL_STEP * T
    print(f"KL-constrained update, T = {T}, du = 7, ε = {eps:g} nats, best of 5 repeats")
    print(f"{'dx':>3} {'start':>5} {'η iters':>7} {'ms/update':>9} {'CPU ms':>7} {'ms/iter':>7} "
          f"{'backward ms':>11} {'update/backward':>15} {'update/goal':>11}")
    for dx in (14, 26):
        cost, dyn, prev = problem(dx)
        H, g = kl_cost_terms(prev)
        bwd = best_ms(lambda: backward_pass(dyn.Fx, dyn.fx, cost.C[:T] + H, cost.c[:T] + g,
                                            Vxx_T=cost.C[T, :dx, :dx], vx_T=cost.c[T, :dx]),
                      args.seconds)
        cold = kl_update(cost, dyn, prev, eps, eta0=1.0)
        for name, eta0 in (("cold", 1.0), ("warm", 2.0 * cold.eta)):
            result = kl_update(cost, dyn, prev, eps, eta0=eta0)
            ms = best_ms(lambda: kl_update(cost, dyn, prev, eps, eta0=eta0), args.seconds)
            cpu = best_ms(lambda: kl_update(cost, dyn, prev, eps, eta0=eta0), args.seconds,
                          clock=time.process_time)
            print(f"{dx:>3} {name:>5} {result.iterations:>7} {ms:>9.2f} {cpu:>7.2f} "
                  f"{ms / result.iterations:>7.2f} {bwd:>11.2f} {ms / bwd:>15.1f} "
                  f"{ms / GOAL_MS:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
