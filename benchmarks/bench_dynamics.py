"""Dynamics models on random-torque data of the simulated 7-DOF arm: training time and held-out
1-step / 10-step prediction error at 1k, 5k and 20k training transitions (the README table), and
the ensemble's batched forward throughput as a fraction of a plain matmul's FLOP/s, both measured
in the same run.

Data: episodes of 100 control periods (10 ms) from resets with ±0.5 rad on the start pose, random
torques of ±30 % of the effort limits held for 5 periods. Each model is fitted to the first N
training transitions (10 % of those episodes held out for early stopping) and evaluated on 30
separate test episodes (3000 transitions): RMSE over all 14 state columns of the open-loop
mean rollout with the recorded actions, and per group (rad, rad/s).

    python benchmarks/bench_dynamics.py [--kinds ensemble mlp ...] [--sizes 1000 5000 20000]
                                        [--threads N] [--max-seconds S]
"""

from __future__ import annotations

import argparse
import time

import torch
from timing import best_seconds  # noqa: E402  (benchmarks/timing.py)

from mbrl_ros.dynamics.base import ModelSignature
from mbrl_ros.dynamics.catalog import NETWORK_KINDS, available_kinds, new_model
from mbrl_ros.dynamics.ensemble import EnsembleConfig, EnsembleModel
from mbrl_ros.dynamics.evaluation import evaluate, holdout_split
from mbrl_ros.dynamics.simdata import random_torque_dataset
from mbrl_ros.robot.description import load_robot

STEPS = 100  # transitions per episode
TEST_EPISODES = 30
# (kind, training transitions) not run, and why
SKIP = {
    ("gp", 20000): "exact GP: O(N³) time and O(N²) memory at 20k points; use sparse-gp",
    ("gp", 5000): "exact GP: O(N³) hyperparameter optimisation at 5k points takes too long "
    "on 2 cores; use sparse-gp",
}


def throughput(batch: int) -> dict:
    """Transitions/s of the default ensemble's predict (all members, one batched pass) and its
    FLOP/s against torch.mm of the same number of FLOPs (square-ish float32 matrices)."""
    robot = load_robot("arm7")
    data = random_torque_dataset(robot, 2, STEPS, seed=9)
    model = EnsembleModel(ModelSignature.of(data), data.stats(), "cpu", EnsembleConfig())
    cfg = model.config
    s = torch.randn(batch, model.dx, dtype=torch.float32)
    a = torch.randn(batch, model.du, dtype=torch.float32)
    sizes = [model.dx + model.du] + [cfg.hidden] * cfg.layers + [2 * model.dx]
    flops = 2.0 * cfg.members * batch * sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))
    with torch.no_grad():
        t_model = best_seconds(lambda: model.predict(s, a))
    k = cfg.hidden
    m = max(1, int(round(flops / (2.0 * k * k))))
    x, w = torch.randn(m, k), torch.randn(k, k)
    t_mm = best_seconds(lambda: torch.mm(x, w))
    mm_flops = 2.0 * m * k * k
    return {
        "batch": batch,
        "members": cfg.members,
        "rate": batch / t_model,
        "model_flops": flops / t_model,
        "mm_flops": mm_flops / t_mm,
        "fraction": (flops / t_model) / (mm_flops / t_mm),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", help="model kinds (default: all available)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000, 20000])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable numbers on a shared machine)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=240.0,
        help="training time budget of one network fit (s)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kinds = args.kinds or available_kinds()

    robot = load_robot("arm7")
    t0 = time.perf_counter()
    train_all = random_torque_dataset(robot, max(args.sizes) // STEPS, STEPS, seed=0)
    test = random_torque_dataset(robot, TEST_EPISODES, STEPS, seed=1)
    print(
        f"arm7 random-torque data: {len(train_all)} training + {len(test)} test transitions "
        f"simulated in {time.perf_counter() - t0:.1f} s; torch {torch.__version__}, CPU, "
        f"{torch.get_num_threads()} thread(s)",
        flush=True,
    )
    print(
        f"network models: {EnsembleConfig(max_seconds=args.max_seconds)} (mlp: members=1, "
        "no bootstrap)",
        flush=True,
    )

    print("ensemble forward throughput (predict: all members in one batched pass, float32):")
    print("| batch | members | transitions/s | forward GFLOP/s | matmul GFLOP/s | fraction |")
    print("|---:|---:|---:|---:|---:|---:|")
    for batch in (100, 1000, 10000):
        r = throughput(batch)
        print(
            f"| {r['batch']} | {r['members']} | {r['rate']:.3g} | {r['model_flops'] / 1e9:.2f} "
            f"| {r['mm_flops'] / 1e9:.2f} | {r['fraction']:.2f} |",
            flush=True,
        )

    rows = []
    for kind in kinds:
        for n in args.sizes:
            if (kind, n) in SKIP:
                rows.append((kind, n, None, SKIP[(kind, n)]))
                print(f"{kind:>9} {n:>6}: skipped ({SKIP[(kind, n)]})", flush=True)
                continue
            data = train_all.select(train_all.episodes < n // STEPS)
            train, val = holdout_split(data, 0.1, 0)
            options = {"max_seconds": args.max_seconds} if kind in NETWORK_KINDS else {}
            model = new_model(kind, ModelSignature.of(data), "cpu", **options)
            report = model.fit(train, val)
            ev = evaluate(model, test, (1, 10))
            rows.append((kind, n, (report, ev), ""))
            one, ten = ev.horizons
            print(
                f"{kind:>9} {n:>6}: {report.seconds:7.1f} s | 1-step RMSE {one.rmse:.4g} "
                f"({one.group_rmse['position']:.3g} rad, {one.group_rmse['velocity']:.3g} "
                f"rad/s) | 10-step RMSE {ten.rmse:.4g} ({ten.group_rmse['position']:.3g} rad, "
                f"{ten.group_rmse['velocity']:.3g} rad/s) | {report.message}",
                flush=True,
            )

    print(
        "\n| model | training transitions | training time (s) | 1-step RMSE (rad / rad/s) "
        "| 10-step RMSE (rad / rad/s) | 10-step vs no-motion |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for kind, n, result, why in rows:
        if result is None:
            print(f"| {kind} | {n} | skipped: {why} | | | |")
            continue
        report, ev = result
        one, ten = ev.horizons
        print(
            f"| {kind} | {n} | {report.seconds:.1f} | {one.group_rmse['position']:.2e} / "
            f"{one.group_rmse['velocity']:.3g} | {ten.group_rmse['position']:.2e} / "
            f"{ten.group_rmse['velocity']:.3g} | {ten.constant_ratio:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
