"""Time per KL-constrained update (trajopt.kl_update) for T = 100, du = 7, dx = 14 and 26.

The problem is the first GPS iteration of the 7-DOF reach: 5 rollouts of the initial controller on
the sim arm, local dynamics by ridge regression, the reach cost expanded around the samples,
ε = 0.5 nats/step · T. dx = 26 appends end-effector features to x = [q, q̇]: the positions of the
end effector and the wrist (6) and their velocities (6). Each update is timed from three starts of
the η search: cold (η0 = 1, GPS's first iteration), warm (η0 = 2·η*, the loop starts from the
previous iteration's η, typically within that factor of the solution η*) and far (η0 = η*·10^±4,
the slower of the two).

Rounds interleave every case with a same-run reference, one batched matmul of T (dx+du)×(dx+du)
matrices (np.matmul on (T, n, n) stacks, T·n³ multiply-adds), and report medians over the rounds
of wall time and of this process's CPU time (the better figure on a busy machine). Ratios: update
(CPU) / reference (CPU), update (wall and CPU) / the 20 ms goal; one thread.

    python benchmarks/bench_kl_update.py [--seconds S] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from mbrl_ros.control.controller import LinearGaussianController
from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics
from mbrl_ros.simulator.simulation import ArmSimulator, SimConfig
from mbrl_ros.tasks.reach import ReachCost
from mbrl_ros.trajopt.gps import initial_controllers, rollout
from mbrl_ros.trajopt.kl_update import kl_update
from mbrl_ros.trajopt.local_dynamics import fit_linear_regression
from mbrl_ros.trajopt.trajectory import expand_cost

T, SAMPLES, KL_STEP = 100, 5, 0.5
GOAL_MS = 20.0


def per_call(fn, seconds: float) -> tuple[float, float]:
    """(wall ms, CPU ms) per call of ``fn``, called for about ``seconds`` (at least twice)."""
    calls, wall, cpu = 0, time.perf_counter(), time.process_time()
    while calls < 2 or time.perf_counter() - wall < seconds:
        fn()
        calls += 1
    return ((time.perf_counter() - wall) / calls * 1e3, (time.process_time() - cpu) / calls * 1e3)


def features(fk: ForwardKinematics, X: np.ndarray) -> np.ndarray:
    """X (N, T+1, 14) → (N, T+1, 26): [q, q̇, p_ee, p_wrist, ṗ_ee, ṗ_wrist] (velocities by J q̇)."""
    q, qd = torch.as_tensor(X[..., :7]), torch.as_tensor(X[..., 7:])
    with torch.no_grad():
        p = fk.positions(q)  # (N, T+1, 2, 3)
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
        fk = ForwardKinematics(
            robot,
            points={"ee": (robot.ee_link, (0, 0, 0)), "wrist": (robot.link_names[-3], (0, 0, 0))},
        )
        X = features(fk, X)
        K = np.concatenate([ctrl.K, np.zeros((T, 7, 12))], axis=2)
        x_hat = np.concatenate([ctrl.x_hat, np.zeros((T, 12))], axis=1)
        ctrl = LinearGaussianController.gaussian(
            x_hat,
            ctrl.u_hat,
            K,
            ctrl.k,
            ctrl.cov,
            dt_ns=ctrl.dt_ns,
            state_layout="q,qd,ee_features",
        )
    cost = ReachCost(robot, (0.3, 0.2, 0.6), w_l2=100.0, w_log=1.0, alpha=1e-5)
    return expand_cost(cost, X, U), fit_linear_regression(X, U, 1e-6), ctrl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=0.3, help="time per case and round (default 0.3)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    eps = KL_STEP * T
    print(
        f"KL-constrained update, T = {T}, du = 7, ε = {eps:g} nats, 1 thread, median of "
        f"{args.rounds} interleaved rounds"
    )
    print(
        f"{'dx':>3} {'start':>5} {'η0':>9} {'η iters':>7} {'ms':>7} {'CPU ms':>7} "
        f"{'CPU ms/iter':>11} {'ref CPU ms':>10} {'CPU/ref':>7} {'ms/goal':>7} "
        f"{'CPU/goal':>8}"
    )
    rng = np.random.default_rng(0)
    for dx in (14, 26):
        cost, dyn, prev = problem(dx)
        n = dx + 7
        A, B, C = rng.standard_normal((3, T, n, n))
        eta_star = kl_update(cost, dyn, prev, eps, eta0=1.0).eta
        starts = {"cold": [1.0], "warm": [2.0 * eta_star], "far": [eta_star * 1e-4, eta_star * 1e4]}
        cases = {
            (name, eta0): kl_update(cost, dyn, prev, eps, eta0=eta0).iterations
            for name, etas in starts.items()
            for eta0 in etas
        }
        times = {key: [] for key in cases}
        reference = []
        for _ in range(args.rounds):
            reference.append(per_call(lambda: np.matmul(A, B, out=C), args.seconds))
            for name, eta0 in cases:
                times[name, eta0].append(
                    per_call(lambda: kl_update(cost, dyn, prev, eps, eta0=eta0), args.seconds)
                )
        ref_cpu = statistics.median(c for _, c in reference)
        rows = {}
        for (name, eta0), its in cases.items():
            wall = statistics.median(w for w, _ in times[name, eta0])
            cpu = statistics.median(c for _, c in times[name, eta0])
            if name not in rows or cpu > rows[name][3]:
                rows[name] = (eta0, its, wall, cpu)
        for name, (eta0, its, wall, cpu) in rows.items():
            print(
                f"{dx:>3} {name:>5} {eta0:>9.3g} {its:>7} {wall:>7.2f} {cpu:>7.2f} "
                f"{cpu / its:>11.2f} {ref_cpu:>10.3f} {cpu / ref_cpu:>7.0f} "
                f"{wall / GOAL_MS:>7.2f} {cpu / GOAL_MS:>8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
