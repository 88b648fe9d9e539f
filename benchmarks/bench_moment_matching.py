"""GP moment matching on the 7-DOF arm (14 outputs, 21 inputs): time of one analytic
propagation of a Gaussian (and of its gradient) against Monte Carlo with 10⁵ samples through the
same GP, measured in the same run, and how far the two answers are apart.

Model: sparse GP (VFE, k-means inducing inputs) on 2000 random-torque transitions; the input
Gaussian is centred on a recorded (s, a) with a random covariance of ~10 % of the data's spread.

    python benchmarks/bench_moment_matching.py [--inducing 100 200] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
from timing import best_seconds  # noqa: E402  (benchmarks/timing.py)

from mbrl_ros.dynamics.base import ModelSignature
from mbrl_ros.dynamics.gp import GPConfig, SparseGPModel
from mbrl_ros.dynamics.moment_matching import predict_moments
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.robot.description import load_robot

N_MC = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inducing", nargs="+", type=int, default=[50, 100, 200])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (the work is many small operations)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = random_torque_dataset(load_robot("arm7"), 20, 100, seed=0)
    gen = torch.Generator().manual_seed(0)
    mean = torch.cat([torch.as_tensor(data.states[150]), torch.as_tensor(data.actions[150])])
    spread = torch.cat([torch.as_tensor(data.states.std(0)), torch.as_tensor(data.actions.std(0))])
    a = torch.randn(21, 21, dtype=torch.float64, generator=gen) * 0.1 * spread[:, None] / 21**0.5
    cov = a @ a.T + torch.diag((0.01 * spread) ** 2)
    x = (
        mean
        + torch.randn(N_MC, 21, dtype=torch.float64, generator=gen) @ torch.linalg.cholesky(cov).T
    )
    print(
        f"== bench_moment_matching: arm7, {len(data)} transitions, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(
        "| inducing M | fit (s) | moment matching (ms) | + gradient (ms) | Monte Carlo 1e5 (ms) "
        "| MC / analytic | max |Δmean| / std | max |Δcov| / scale |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in args.inducing:
        model = SparseGPModel(
            ModelSignature.of(data), device="cpu", config=GPConfig(iterations=40, inducing_points=m)
        )
        t0 = time.perf_counter()
        model.fit(data)
        fit_s = time.perf_counter() - t0
        with torch.no_grad():
            t_mm = best_seconds(lambda: predict_moments(model, mean, cov))
            mm = predict_moments(model, mean, cov)

        def with_grad():
            mu = mean.clone().requires_grad_(True)
            out = predict_moments(model, mu, cov)
            (out.mean.sum() + out.cov.sum()).backward()

        t_grad = best_seconds(with_grad)
        with torch.no_grad():

            def monte_carlo():
                mu_s, var_s = model.predict(x[:, :14], x[:, 14:])
                return mu_s.mean(0), torch.cov(mu_s.T) + torch.diag(var_s.mean(0))

            t_mc = best_seconds(monte_carlo, repeats=1)
            mc_mean, mc_cov = monte_carlo()
        std = torch.diagonal(mc_cov).sqrt()
        d_mean = float(((mm.mean - mc_mean).abs() / std).max())
        d_cov = float(((mm.cov - mc_cov).abs() / (std[:, None] * std[None])).max())
        print(
            f"| {m} | {fit_s:.1f} | {1e3 * t_mm:.1f} | {1e3 * t_grad:.1f} | {1e3 * t_mc:.0f} | "
            f"{t_mc / t_mm:.0f} | {d_mean:.4f} | {d_cov:.4f} |",
            flush=True,
        )
    print(
        f"(Monte Carlo standard error of the mean ≈ {1 / N_MC**0.5:.4f} std; differences of "
        "that size are sampling error)"
    )


if __name__ == "__main__":
    main()
