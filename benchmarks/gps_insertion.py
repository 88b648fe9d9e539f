"""GPS peg insertion on the 7-DOF sim arm (offline, pure core): the local-model loop from several
hole positions, with and without the GMM prior.

The arm holds a 10 mm round peg (sim/peg.xml) 6 cm above a 24 mm square hole 40 mm deep
(sim/insertion.xml); the conditions are 4 hole positions up to 5 cm apart, all started from the
same arm pose. Each iteration runs 5 stochastic samples of every condition's linear-Gaussian
controller for T = 100 steps of 10 ms (``trajopt.gps.rollout``, what the executor computes), fits
the local dynamics (Bayesian regression with a GMM prior, or ridge regression without one) and
makes the KL-constrained update with step adaptation (``tasks.insertion_gps``). A sample succeeds
when its peg tip ends within 5 mm of the hole's floor. Prints the learning curve per condition and
writes the JSON below and a PNG of success and depth against samples.

With ``--policy`` it runs mirror-descent GPS instead (``trajopt.mdgps``, GMM prior) on 15 hole
positions (``POLICY_TRAIN_HOLES``, a grid spanning the held-out region): the same controllers'
samples also train one network policy (``GoalPolicy``, input: joint state and the hole's top
centre), the C-step constrained against its linearisation; it reports per iteration
the controllers' and the policy's own insertion success on the training holes, and at the end the
policy's success alone on the held-out holes (``HELDOUT_HOLES``) and on 20 random holes in their
box (``HELDOUT_RANDOM_HOLES``), writes the policy artifact (``--policy-out``) and a PNG of the
learning curve.

    python benchmarks/gps_insertion.py [--iterations 15] [--samples 5] [--json FILE] [--png FILE]
        [--reach-json FILE (gps_reach_7dof.py --json: reaching on the same success plot)]
    python benchmarks/gps_insertion.py --policy [--iterations 20] [--policy-hidden 64,64]
        [--s-step-iters 1000]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from mbrl_ros.experiments.insertion_gps import InsertionConditions, InsertionSetup
from mbrl_ros.policy.network import GoalPolicy, PolicySignature
from mbrl_ros.robot.description import load_robot
from mbrl_ros.trajopt.gps import GPSConfig, format_curve, learning_curve
from mbrl_ros.trajopt.mdgps import SStepConfig

TRAIN_HOLES = [(-0.45, 0.0, 0.2), (-0.42, 0.03, 0.2), (-0.48, -0.03, 0.2), (-0.45, 0.04, 0.2)]
# --policy: a grid 6 cm apart in x and 3 cm in y around the start hole (listed first), spanning
# the region the held-out holes are drawn from (none of them is trained on). With the 4 holes above
# the network reached only the 2 held-out holes between them; with a 3 × 3 grid 6 cm apart, 5/5
# listed but 10/20 random held-out holes (misses between its rows in y).
POLICY_TRAIN_HOLES = [(-0.45, 0.0, 0.2)] + [
    (x, y, 0.2)
    for x in (-0.51, -0.45, -0.39)
    for y in (-0.06, -0.03, 0.0, 0.03, 0.06)
    if (x, y) != (-0.45, 0.0)
]
HELDOUT_HOLES = [
    (-0.435, 0.015, 0.2),
    (-0.465, -0.015, 0.2),
    (-0.45, -0.05, 0.2),
    (-0.40, 0.0, 0.2),
    (-0.50, 0.02, 0.2),
]
# --policy also: 20 random holes (seeded) drawn uniformly from the box the held-out ones span.
HELDOUT_RANDOM_HOLES = [
    (float(x), float(y), 0.2)
    for x, y in np.random.default_rng(7).uniform((-0.50, -0.05), (-0.40, 0.05), (20, 2))
]
COST = dict(w_l2=100.0, w_log=1.0, alpha=1e-5, terminal_weight=10.0, w_velocity=0.5)


def run(prior: str, args) -> dict:
    setup = InsertionSetup(
        TRAIN_HOLES,
        start_height=args.start_height,
        T=args.steps,
        std_fraction=args.init_std,
        cost=COST,
    )
    config = GPSConfig(
        prior=prior, kl_step=args.kl_step, max_step_mult=args.max_step_mult, seed=args.seed
    )
    conditions = InsertionConditions(load_robot("arm7"), setup, config)
    start = time.perf_counter()
    records = conditions.run(
        args.iterations, args.samples, seed=args.seed, noise_smoothing=args.noise_smoothing
    )
    seconds = time.perf_counter() - start
    rows = learning_curve(records)
    success = conditions.success()
    mean_success = conditions.mean_success()
    depth = [[float(np.mean(d[it])) for d in conditions.depths] for it in range(len(success))]
    print(f"\n## {prior} prior ({seconds:.0f} s): final tip depth (mm) per condition")
    print(format_curve(rows, metric_scale=1000.0, unit="mm"))
    print("success (fraction of samples inserted to full depth) per condition:")
    print("(and in brackets whether the noise-free controller inserted):")
    for it, s in enumerate(success):
        print(
            f"{it + 1:>4} {rows[it]['samples']:>7} "
            + " ".join(f"{v:>5.2f} [{'x' if ok else ' '}]" for v, ok in zip(s, mean_success[it]))
        )
    return {
        "train_success": [round(float(np.mean(s)), 9) for s in success],  # 0.9, not 0.8999…
        "samples": [r["samples"] for r in rows],
        "success_per_condition": success,
        "depth_per_condition_m": depth,
        "mean_controller_success": [round(float(np.mean(s)), 9) for s in mean_success],
        "mean_controller_depth_m": [
            [d[it] for d in conditions.mean_depths] for it in range(len(success))
        ],
        "cost": [r["cost"] for r in rows],
        "kl": [r["kl"] for r in rows],
        "step_mult": [r["step_mult"] for r in rows],
        "seconds": seconds,
    }


def run_policy(args) -> dict:
    """MDGPS with the GMM prior: per-iteration controller and policy success, held-out policy
    success, time per iteration."""
    robot = load_robot("arm7")
    setup = InsertionSetup(
        POLICY_TRAIN_HOLES,
        start_height=args.start_height,
        T=args.steps,
        std_fraction=args.init_std,
        cost=COST,
    )
    config = GPSConfig(
        prior="gmm", kl_step=args.kl_step, max_step_mult=args.max_step_mult, seed=args.seed
    )
    conditions = InsertionConditions(robot, setup, config)
    hidden = tuple(int(h) for h in args.policy_hidden.split(","))
    signature = PolicySignature.for_joints(
        robot.name, robot.joint_names, conditions.sims[0].config.control_period
    )
    policy = GoalPolicy(signature, robot.limits.effort, hidden, seed=args.seed)
    times = []
    start = time.perf_counter()

    def log(result):
        times.append(time.perf_counter() - start - sum(times))
        it = len(times)
        ctrl = conditions.success()[-1]
        pol = [
            d >= conditions.full_depth(m) for m, d in enumerate(conditions.policy_depths_train[-1])
        ]
        print(
            f"{it:>4} {result.records[-1].samples_used:>7} {np.mean(ctrl):>9.2f} "
            f"{np.mean(pol):>9.2f} {result.s_step_loss:>10.3g} "
            f"{np.mean([r.kl for r in result.records]):>7.1f} "
            f"{np.mean([r.step_mult for r in result.records]):>5.2f} {times[-1]:>6.1f}",
            flush=True,
        )

    print(f"\n## MDGPS, gmm prior, policy {list(hidden)}")
    print(
        f"{'iter':>4} {'samples':>7} {'ctrl succ':>9} {'pol succ':>9} {'S-loss':>10} "
        f"{'KL':>7} {'mult':>5} {'s/it':>6}"
    )
    results = conditions.run_mdgps(
        policy,
        args.iterations,
        args.samples,
        SStepConfig(train_steps=args.s_step_iters, seed=args.seed),
        seed=args.seed,
        noise_smoothing=args.noise_smoothing,
        log=log,
    )
    heldout = conditions.policy_depths(policy, HELDOUT_HOLES)
    heldout_random = conditions.policy_depths(policy, HELDOUT_RANDOM_HOLES)
    full = conditions.full_depth(0)
    policy.info = {
        "task": "peg insertion (benchmarks/gps_insertion.py --policy)",
        "train_holes": [list(p) for p in POLICY_TRAIN_HOLES],
        "iterations": args.iterations,
        "samples": args.samples,
    }
    if args.policy_out:
        with open(args.policy_out, "wb") as f:
            f.write(policy.to_bytes())
        print(f"wrote {args.policy_out}")
    policy_train = [
        [float(d >= conditions.full_depth(m)) for m, d in enumerate(row)]
        for row in conditions.policy_depths_train
    ]
    print(
        "held-out policy final depth (mm): "
        + ", ".join(f"{p}: {1000 * d:.1f}" for p, d in zip(HELDOUT_HOLES, heldout))
    )
    print(
        f"random held-out holes inserted: {int(np.sum(heldout_random >= full))}"
        f"/{len(heldout_random)}"
    )
    return {
        "train_success": [round(float(np.mean(s)), 9) for s in conditions.success()],
        "samples": [r.records[-1].samples_used for r in results],
        "policy_train_success": [round(float(np.mean(s)), 9) for s in policy_train],
        "policy_train_depth_m": conditions.policy_depths_train,
        "mean_controller_success": [round(float(np.mean(s)), 9) for s in conditions.mean_success()],
        "heldout_policy_success": round(float(np.mean(heldout >= full)), 9),
        "heldout_policy_depth_m": heldout.tolist(),
        "heldout_random_policy_success": round(float(np.mean(heldout_random >= full)), 9),
        "heldout_random_positions": [list(p) for p in HELDOUT_RANDOM_HOLES],
        "heldout_random_policy_depth_m": heldout_random.tolist(),
        "s_step_loss": [r.s_step_loss for r in results],
        "seconds_per_iteration": times,
        "policy_hidden": list(hidden),
    }


def plot_policy(res: dict, path: str, samples: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    n = res["samples"]
    ax.plot(n, 100 * np.array(res["train_success"]), "o-", label="controller samples")
    ax.plot(
        n, 100 * np.array(res["mean_controller_success"]), "s--", label="noise-free controllers"
    )
    ax.plot(n, 100 * np.array(res["policy_train_success"]), "^-", label="network policy alone")
    ax.axhline(
        100 * res["heldout_policy_success"],
        color="r",
        ls=":",
        label="network policy, held-out holes (final)",
    )
    ax.set(
        xlabel="samples (all conditions)",
        ylabel="inserted to full depth (%)",
        ylim=(-5, 105),
        title=f"MDGPS peg insertion, arm7, {len(POLICY_TRAIN_HOLES)} holes × "
        f"{samples} samples per iteration",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reach_success(path: str) -> dict[str, tuple[list[int], list[float]]]:
    """From ``gps_reach_7dof.py --json`` at ``path``: per prior, (samples used, % of the reach
    conditions whose samples end within the goal distance on average) per iteration; ValueError
    naming the file if it is not such a file."""
    try:
        with open(path) as f:
            data = json.load(f)
        goal = float(data["goal_m"])
        return {
            label: (
                [row["samples"] for row in rows],
                [100 * float(np.mean(np.array(row["per_condition"]) <= goal)) for row in rows],
            )
            for label, rows in data["curves"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"--reach-json {path}: not a gps_reach_7dof.py --json file ({exc})"
        ) from None


def plot(results: dict, path: str, samples: int, reach: dict | None = None) -> None:
    """PNG at ``path``: insertion success and depth against samples per prior; ``reach``
    (``reach_success``): the 7-DOF reach's conditions within 2 cm on the success panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_s, ax_d) = plt.subplots(1, 2, figsize=(10, 4))
    for prior, res in results.items():
        n = res["samples"]
        (line,) = ax_s.plot(
            n, 100 * np.array(res["train_success"]), "o-", label=f"{prior} prior: samples"
        )
        ax_s.plot(
            n,
            100 * np.array(res["mean_controller_success"]),
            "s--",
            color=line.get_color(),
            label=f"{prior} prior: noise-free controllers",
        )
        per = np.array(res["success_per_condition"])
        for m in range(per.shape[1]):
            ax_s.plot(n, 100 * per[:, m], ":", color=line.get_color(), lw=0.8)
        depth = 1000 * np.array(res["depth_per_condition_m"])
        ax_d.plot(n, depth.mean(1), "o-", color=line.get_color(), label=f"{prior} prior: mean")
        ax_d.plot(
            n, depth.min(1), "--", color=line.get_color(), label=f"{prior} prior: worst condition"
        )
    for label, (n, success) in (reach or {}).items():
        ax_s.plot(n, success, "^-.", lw=1.2, label=f"reach, {label}: conditions within 2 cm")
    ax_s.axhline(90, color="k", lw=0.8, ls=":")
    ax_s.set(
        xlabel="samples (all conditions)",
        ylabel="inserted to full depth / reached (%)",
        title="success, all conditions (dotted: samples per condition)",
        ylim=(-5, 105),
    )
    ax_d.set(
        xlabel="samples (all conditions)",
        ylabel="final insertion depth (mm)",
        title="mean final depth of the samples",
    )
    ax_s.legend(fontsize=8)
    ax_d.legend(fontsize=8)
    fig.suptitle(
        f"GPS peg insertion{' and 7-DOF reach' if reach else ''}, arm7, {len(TRAIN_HOLES)} "
        f"conditions × {samples} samples per iteration (local controllers only)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_json(path, out: dict) -> None:
    """The run's figures as JSON at ``path`` (None: not written)."""
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--iterations", type=int, help="default: 15, with --policy 20 (the paper's 10–20)"
    )
    parser.add_argument("--samples", type=int, default=5, help="samples per condition")
    parser.add_argument("--steps", type=int, default=100, help="time steps T of 10 ms")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--priors", default="gmm,none", help="variants to run: gmm, none")
    parser.add_argument("--kl-step", type=float, default=0.3, help="nats per step")
    parser.add_argument("--max-step-mult", type=float, default=3.0)
    parser.add_argument("--init-std", type=float, default=0.05, help="fraction of effort limit")
    parser.add_argument(
        "--noise-smoothing",
        type=float,
        default=0.0,
        help="exploration noise smoothed over this many steps (0: white)",
    )
    parser.add_argument(
        "--start-height",
        type=float,
        default=0.10,
        help="start: peg tip this far above the first hole's floor (m)",
    )
    parser.add_argument(
        "--policy", action="store_true", help="mirror-descent GPS: also train the network policy"
    )
    parser.add_argument("--policy-hidden", default="64,64", help="hidden layer sizes")
    parser.add_argument("--s-step-iters", type=int, default=1000, help="Adam steps per S-step")
    parser.add_argument("--policy-out", help="write the trained policy artifact here")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--png", default="gps_insertion.png")
    parser.add_argument(
        "--reach-json",
        help="learning curves of benchmarks/gps_reach_7dof.py --json, plotted beside insertion",
    )
    args = parser.parse_args()
    if args.iterations is None:
        args.iterations = 20 if args.policy else 15
    if args.iterations < 1 or args.samples < 2 or args.steps < 1:
        parser.error("need --iterations ≥ 1, --samples ≥ 2 and --steps ≥ 1")
    priors = args.priors.split(",")
    if not set(priors) <= {"gmm", "none"}:
        parser.error(f"--priors takes gmm and/or none, got {args.priors!r}")
    try:
        reach = reach_success(args.reach_json) if args.reach_json else None
    except ValueError as exc:
        parser.error(str(exc))
    torch.set_num_threads(1)
    if args.policy:
        res = run_policy(args)
        out = {key: res[key] for key in ("train_success", "samples", "heldout_policy_success")}
        out |= {
            "heldout_positions": [list(p) for p in HELDOUT_HOLES],
            "train_positions": [list(p) for p in POLICY_TRAIN_HOLES],
            "prior": "gmm",
            "note": "MDGPS: train_success: the controllers' samples on the training holes; "
            "policy_train_success: the network alone (noise-free) on them; "
            "heldout_policy_success: the network alone on heldout_positions "
            "(tip within 5 mm of the floor); mdgps.heldout_random_policy_success: on 20 "
            "random positions in the held-out box (mdgps.heldout_random_positions).",
            "mdgps": res,
        }
        write_json(args.json, out)
        plot_policy(res, args.png, args.samples)
        print(f"wrote {args.png}")
        return
    results = {prior: run(prior, args) for prior in priors}
    main_variant = results.get("gmm", results[priors[0]])
    out = {
        "train_success": main_variant["train_success"],
        "samples": main_variant["samples"],
        "heldout_policy_success": None,
        "heldout_positions": [list(p) for p in HELDOUT_HOLES],
        "train_positions": [list(p) for p in TRAIN_HOLES],
        "prior": "gmm" if "gmm" in results else priors[0],
        "note": "train_success: fraction of the iteration's controller samples (all training "
        "conditions) whose peg tip ends within 5 mm of the hole's floor; samples: "
        "rollouts used by then (the noise-free evaluation runs of the controllers, "
        "variants.*.mean_controller_*, are not counted: they are not used to "
        "learn). No network policy is trained in this mode (--policy trains one "
        "by MDGPS), so heldout_policy_success is null.",
        "variants": results,
    }
    for prior, res in results.items():
        for key, what in (
            ("train_success", "≥ 90 % of samples"),
            ("mean_controller_success", "every noise-free controller"),
        ):
            done = [i for i, s in enumerate(res[key]) if s >= 0.9]
            print(
                f"{prior} prior: {what} inserted first at "
                + (
                    f"iteration {done[0] + 1} ({res['samples'][done[0]]} samples)"
                    if done
                    else "no iteration"
                )
            )
    write_json(args.json, out)
    plot(results, args.png, args.samples, reach)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
