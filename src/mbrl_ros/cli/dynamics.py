"""``mbrl-ros fit`` and ``mbrl-ros eval-model``: fit a dynamics model to bags or a dataset file
offline, and evaluate a saved model on other data (table + PNG of k-step rollouts).

Each command module of ``mbrl-ros`` exposes ``add_arguments(parser, command)`` and
``run(args) -> int``; errors are raised as ValueError and printed as one line. Every argument
is checked before any data is read or a model fitted: numbers and files while parsing, outputs,
bags, model options and the horizons (against the evaluation data) before the fit.
"""

from __future__ import annotations

import argparse
import sys
import time

from mbrl_ros.cli.args import (
    check_bags,
    check_output,
    input_file,
    load_robot_arg,
    number,
    torch_device,
)
from mbrl_ros.cli.data import add_stream_arguments, stream_options
from mbrl_ros.common.artifacts import read_file, write_file
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.data.errors import DataError
from mbrl_ros.dynamics.base import ModelError, ModelSignature
from mbrl_ros.dynamics.catalog import MODEL_MODULES, NETWORK_KINDS, load_model, new_model
from mbrl_ros.dynamics.evaluation import (
    Evaluation,
    evaluate,
    holdout_split,
    plot_rollouts,
    window_starts,
)

# options (argparse dest → flag) that only some model kinds use
NETWORK_OPTIONS = {
    "members": "--members",
    "hidden": "--hidden",
    "layers": "--layers",
    "max_epochs": "--epochs",
    "patience": "--patience",
    "max_seconds": "--max-seconds",
}
PHYSICS_OPTIONS = {"robot": "--robot", "gravity_compensation": "--gravity-compensation"}


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bag", nargs="+", metavar="BAG", help="bag folders (rosbag2, MCAP)")
    source.add_argument(
        "--dataset", metavar="FILE", type=input_file, help="dataset file (mbrl-ros dataset)"
    )
    parser.add_argument(
        "--horizons",
        nargs="+",
        type=number(int, ge=1),
        default=[1, 10],
        metavar="K",
        help="prediction horizons of the evaluation (control periods)",
    )
    parser.add_argument(
        "--device",
        type=torch_device,
        help="torch device: cpu, cuda or cuda:N (default: cuda if available, else cpu)",
    )
    if command == "eval-model":
        parser.add_argument(
            "model", metavar="MODEL", type=input_file, help="model artifact (.safetensors)"
        )
        parser.add_argument(
            "--png",
            metavar="OUT",
            help="write predicted vs recorded k-step rollouts to this PNG (overwritten)",
        )
        parser.add_argument(
            "--plot-horizon",
            type=number(int, ge=1),
            default=50,
            help="rollout length in the PNG (control periods)",
        )
        return
    parser.add_argument(
        "--model", required=True, choices=list(MODEL_MODULES), dest="kind", help="model kind"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="model artifact to write (.safetensors)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite MODEL if it exists")
    parser.add_argument(
        "--reject-worse",
        action="store_true",
        help="write nothing (and fail) when the model predicts worse than no "
        "motion (s' = s) at any horizon; by default that is a warning",
    )
    parser.add_argument(
        "--val-fraction",
        type=number(float, ge=0, lt=1),
        default=0.2,
        help="fraction of the episodes held out for early stopping and evaluation",
    )
    parser.add_argument(
        "--seed", type=number(int, ge=0), default=0, help="seed of the split and the training"
    )
    parser.add_argument(
        "--robot",
        help="physics model: the arm (a name in urdf/, e.g. arm7 or "
        "arm2, or a URDF path; default arm7)",
    )
    parser.add_argument(
        "--gravity-compensation",
        action="store_true",
        help="physics model: the data comes from an arm that cancels its own "
        "weight (arm_sim gravity_compensation:=true)",
    )
    add_stream_arguments(
        parser.add_argument_group("bags of a real robot (with --bag)"), robot=False
    )
    net = parser.add_argument_group("network models (ensemble, mlp)")
    count = number(int, ge=1)
    net.add_argument("--members", type=count, help="ensemble members (ensemble: 5, mlp: 1)")
    net.add_argument("--hidden", type=count, help="units per hidden layer (200)")
    net.add_argument("--layers", type=count, help="hidden layers (3)")
    net.add_argument("--epochs", type=count, dest="max_epochs", help="most epochs (200)")
    net.add_argument("--patience", type=count, help="epochs without improvement before stopping")
    net.add_argument("--max-seconds", type=number(float, gt=0), help="training time budget (s)")


class _StatusLines:
    """Progress messages on stderr, prefixed with the elapsed time."""

    def __init__(self):
        self.t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f} s] {text}", file=sys.stderr, flush=True)


def _load_data(args: argparse.Namespace, streams=None) -> Dataset:
    if args.dataset:
        return Dataset.load(args.dataset)
    from mbrl_ros.data.extract import Streams, dataset_from_bags

    check_bags(args.bag)
    status = _StatusLines()
    data = dataset_from_bags(
        args.bag,
        streams=streams or Streams(),
        progress=lambda bag, done, total: status(f"{bag}: {done}/{total} messages"),
    ).dataset
    if len(data) == 0:
        raise DataError(f"no transitions in {', '.join(args.bag)}")
    return data


def _check_horizons(data: Dataset, horizons: list[int], what: str) -> None:
    """ModelError unless ``data`` has a window of consecutive transitions for every horizon."""
    for k in sorted(set(horizons), reverse=True):
        if len(window_starts(data, k)) == 0:
            raise ModelError(
                f"--horizons {k}: {what} has no {k} consecutive transitions "
                f"({len(data)} transitions in {data.n_episodes} episode(s))"
            )


def _check_fit_options(args: argparse.Namespace) -> None:
    """ModelError for options given that the model kind does not use (--robot also serves
    --robot-compensates-gravity false), or stream options without --bag."""
    gravity_robot = args.robot_compensates_gravity == "false"
    unused = [
        flag
        for kinds, options in ((NETWORK_KINDS, NETWORK_OPTIONS), (("physics",), PHYSICS_OPTIONS))
        if args.kind not in kinds
        for name, flag in options.items()
        if getattr(args, name) and not (flag == "--robot" and gravity_robot)
    ]
    if args.dataset and (args.resample is not None or gravity_robot):
        unused.append("--resample/--robot-compensates-gravity (they apply to --bag)")
    if unused:
        raise ModelError(f"{', '.join(unused)}: not used by a {args.kind} model")


def run(args: argparse.Namespace) -> int:
    return _fit(args) if args.command == "fit" else _eval(args)


def _worse_than_constant(ev: Evaluation) -> str:
    """'' or the ratios of the model's RMSE to that of predicting no motion (s' = s) where they
    exceed 1."""
    worse = [
        f"{h.constant_ratio:.3g} at horizon {h.horizon}"
        for h in ev.horizons
        if h.constant_ratio > 1.0
    ]
    return f"RMSE ratio to no motion {', '.join(worse)}" if worse else ""


def _fit(args: argparse.Namespace) -> int:
    out = check_output(args.output, "-o", args.force)
    _check_fit_options(args)
    if args.robot:
        load_robot_arg(args.robot, "--robot")
    options = {k: getattr(args, k) for k in NETWORK_OPTIONS}
    if args.kind in NETWORK_KINDS:
        options["seed"] = args.seed
    streams = stream_options(args)
    data = _load_data(args, streams)
    model = new_model(
        args.kind,
        ModelSignature.of(data),
        args.device,
        args.robot,
        args.gravity_compensation,
        **options,
    )
    train, val = holdout_split(data, args.val_fraction, args.seed)
    scored = val if len(val) else train
    _check_horizons(scored, args.horizons, "the held-out data" if len(val) else "the data")
    status = _StatusLines()
    status(
        f"fitting a {args.kind} model to {len(train)} transitions ({train.n_episodes} "
        f"episodes); {len(val)} held out ({val.n_episodes} episodes)"
    )
    report = model.fit(train, val if len(val) else None, progress=status)
    if report.rolled_back:
        raise ModelError(f"fit failed, no model written: {report.message}")
    status(f"fitted in {report.seconds:.1f} s")
    ev = evaluate(model, scored, args.horizons)
    print(
        ev.table()
        if len(val)
        else "evaluation on the training data (nothing held out):\n" + ev.table()
    )
    worse = _worse_than_constant(ev)
    if worse and args.reject_worse:
        raise ModelError(
            f"the {args.kind} model predicts worse than no motion (s' = s): {worse}; "
            "not written (--reject-worse)"
        )
    if worse:
        print(
            f"mbrl-ros fit: warning: the {args.kind} model predicts worse than no motion "
            f"(s' = s): {worse}; written anyway (--reject-worse refuses it)",
            file=sys.stderr,
        )
    model.info = {
        "transitions": len(train),
        "episodes": train.n_episodes,
        "fit_seconds": report.seconds,
        "sources": list(data.sources),
        "val_rmse": {str(h.horizon): h.rmse for h in ev.horizons},
    }
    write_file(out, model.to_bytes())
    print(
        f"{out}: {args.kind} model, {len(data.joint_names)} joints, state dim "
        f"{len(data.state_names)}, dt {data.dt * 1e3:g} ms"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.png:
        check_output(args.png, "--png", suffix=".png")
    try:
        model = load_model(read_file(args.model), args.device)
    except ValueError as exc:
        raise ModelError(f"MODEL {args.model}: {exc}") from None
    data = _load_data(args)
    _check_horizons(data, args.horizons, "the data")
    print(evaluate(model, data, args.horizons).table())
    if args.png:
        k = plot_rollouts(model, data, args.png, args.plot_horizon)
        print(f"{args.png}: predicted vs recorded {k}-step rollouts")
    return 0
