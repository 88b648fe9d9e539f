"""Forward kinematics speed: mbrl_ros.robot.kinematics.ForwardKinematics against
pytorch-kinematics (if installed).

End-effector positions of arm7 for random joint configurations, float64, CPU, batch sizes 1 to 100k,
forward only and forward + backward (gradient of the summed positions w.r.t. q). Each time is the
best of several repeats, ours and theirs interleaved in the same run, so the ratio holds on a busy
machine. Also prints the largest disagreement between the two libraries.

    python benchmarks/bench_fk.py [--threads N] [--seconds S]
"""

from __future__ import annotations

import argparse
import time
from importlib import metadata

import numpy as np
import torch

from mbrl_ros.robot.description import load_robot
from mbrl_ros.robot.kinematics import ForwardKinematics

BATCHES = (1, 1_000, 10_000, 100_000)


def best_time_us(fn, seconds: float, repeats: int = 5) -> float:
    """Best mean time of one call in µs over ``repeats`` runs of about seconds/repeats each."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < seconds / repeats:
            fn()
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable numbers on a shared machine)",
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="time budget per measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    robot = load_robot("arm7")
    ours = ForwardKinematics(robot)
    try:
        import pytorch_kinematics as pk
    except ImportError:
        theirs = None
    else:
        chain = pk.build_serial_chain_from_urdf(robot.urdf_path.read_text(), robot.ee_link)
        chain = chain.to(dtype=torch.float64)

        def theirs(q):
            return chain.forward_kinematics(q).get_matrix()[:, :3, 3]

    rng = np.random.default_rng(0)
    sample = torch.tensor(
        rng.uniform(robot.limits.lower, robot.limits.upper, (1000, robot.n_joints))
    )
    print(
        f"arm7 end-effector FK, float64, CPU, {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}"
    )
    if theirs is not None:
        error = (ours.ee_position(sample) - theirs(sample)).abs().max().item()
        print(
            f"pytorch-kinematics {metadata.version('pytorch-kinematics')}: "
            f"max |ours - theirs| on 1000 configs = {error:.2e} m"
        )
    print(
        f"{'batch':>7} {'pass':>8} {'ours µs':>12} {'theirs µs':>14} {'ratio':>7} "
        f"{'ours configs/s':>15}"
    )
    for batch in BATCHES:
        q = torch.tensor(
            rng.uniform(robot.limits.lower, robot.limits.upper, (batch, robot.n_joints))
        )
        qg = q.clone().requires_grad_()
        cases = {
            "fwd": (lambda f: lambda: f(q)),
            "fwd+bwd": (lambda f: lambda: f(qg).sum().backward()),
        }
        for name, make in cases.items():
            t_ours = best_time_us(make(ours.ee_position), args.seconds)
            if theirs is None:
                t_theirs, text, ratio = None, "not installed", "-"
            else:
                t_theirs = best_time_us(make(theirs), args.seconds)
                text, ratio = f"{t_theirs:14.1f}", f"{t_theirs / t_ours:7.2f}"
            print(
                f"{batch:>7} {name:>8} {t_ours:12.1f} {text:>14} {ratio:>7} "
                f"{batch / t_ours * 1e6:15.3g}"
            )
    print("ratio = theirs / ours (> 1: ours is faster)")


if __name__ == "__main__":
    main()
