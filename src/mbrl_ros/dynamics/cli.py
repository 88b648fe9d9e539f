"""``mbrl-ros fit`` and ``mbrl-ros eval-model``: fit a dynamics model to bags or a dataset file
offline, and evaluate a saved model on other data (table + PNG of k-step rollouts).

Each command module of ``mbrl-ros`` exposes ``add_arguments(parser, command)`` and
``run(args) -> int``; errors are raised as ValueError and printed as one line.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mbrl_ros.artifacts import read_file, write_file
from mbrl_ros.data.dataset import Dataset
from mbrl_ros.data.errors import DataError
from mbrl_ros.dynamics.base import ModelError, ModelSignature
from mbrl_ros.dynamics.catalog import MODEL_MODULES, load_model, new_model
from mbrl_ros.dynamics.evaluation import evaluate, holdout_split, plot_rollouts


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--bag", nargs="+", metavar="BAG", help="bag folders (rosbag2, MCAP)")
    source.add_argument("--dataset", metavar="FILE", help="dataset file (mbrl-ros dataset)")
    parser.add_argument("--horizons", nargs="+", type=int, default=[1, 10], metavar="K",
                        help="prediction horizons of the evaluation (control periods)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    if command == "eval-model":
        parser.add_argument("model", metavar="MODEL", help="model artifact (.safetensors)")
        parser.add_argument("--png", metavar="OUT", help="write predicted vs recorded k-step "
                                                          "rollouts to this PNG")
        parser.add_argument("--plot-horizon", type=int, default=50,
                            help="rollout length in the PNG (control periods)")
        return
    parser.add_argument("--model", required=True, choices=list(MODEL_MODULES), dest="kind",
                        help="model kind")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL",
                        help="model artifact to write (.safetensors)")
    parser.add_argument("--force", action="store_true", help="overwrite MODEL if it exists")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="fraction of the episodes held out for early stopping and evaluation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the training")
    parser.add_argument("--robot", help="physics model: the arm (a name in urdf/, e.g. arm7 or "
                                        "arm2, or a URDF path; default arm7)")
    parser.add_argument("--gravity-compensation", action="store_true",
                        help="physics model: the data comes from an arm that cancels its own "
                             "weight (arm_sim gravity_compensation:=true)")
    net = parser.add_argument_group("network models (ensemble, mlp)")
    net.add_argument("--members", type=int, help="ensemble members (ensemble: 5, mlp: 1)")
    net.add_argument("--hidden", type=int, help="units per hidden layer (200)")
    net.add_argument("--layers", type=int, help="hidden layers (3)")
    net.add_argument("--epochs", type=int, dest="max_epochs", help="most epochs (200)")
    net.add_argument("--patience", type=int, help="epochs without improvement before stopping")
    net.add_argument("--max-seconds", type=float, help="training time budget (s)")


class _StatusLines:
    """Progress messages on stderr, prefixed with the elapsed time."""

    def __init__(self):
        self.t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f} s] {text}", file=sys.stderr, flush=True)


def _load_data(args: argparse.Namespace) -> Dataset:
    if args.dataset:
        return Dataset.load(args.dataset)
    from mbrl_ros.data.extract import dataset_from_bags
    status = _StatusLines()
    data = dataset_from_bags(args.bag, progress=lambda bag, done, total: status(
        f"{bag}: {done}/{total} messages")).dataset
    if len(data) == 0:
        raise DataError(f"no transitions in {', '.join(args.bag)}")
    return data


def run(args: argparse.Namespace) -> int:
    return _fit(args) if args.command == "fit" else _eval(args)


def _fit(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not args.force:
        raise ModelError(f"{out} exists; use --force to overwrite it")
    options = {k: getattr(args, k) for k in ("members", "hidden", "layers", "max_epochs",
                                              "patience", "max_seconds")}
    if args.kind in ("ensemble", "mlp"):
        options["seed"] = args.seed
    data = _load_data(args)
    model = new_model(args.kind, ModelSignature.of(data), args.device, args.robot,
                      args.gravity_compensation, **options)
    train, val = holdout_split(data, args.val_fraction, args.seed)
    status = _StatusLines()
    status(f"fitting a {args.kind} model to {len(train)} transitions ({train.n_episodes} "
           f"episodes); {len(val)} held out ({val.n_episodes} episodes)")
    report = model.fit(train, val if len(val) else None, progress=status)
    if report.rolled_back:
        raise ModelError(f"fit failed, no model written: {report.message}")
    status(f"fitted in {report.seconds:.1f} s")
    ev = evaluate(model, val if len(val) else train, args.horizons)
    model.info = {"transitions": len(train), "episodes": train.n_episodes,
                  "fit_seconds": report.seconds, "sources": list(data.sources),
                  "val_rmse": {str(h.horizon): h.rmse for h in ev.horizons}}
    write_file(out, model.to_bytes())
    print(ev.table() if len(val) else "evaluation on the training data (nothing held out):\n"
          + ev.table())
    print(f"{out}: {args.kind} model, {len(data.joint_names)} joints, state dim "
          f"{len(data.state_names)}, dt {data.dt * 1e3:g} ms")
    return 0


def _eval(args: argparse.Namespace) -> int:
    model = load_model(read_file(args.model), args.device)
    data = _load_data(args)
    print(evaluate(model, data, args.horizons).table())
    if args.png:
        k = plot_rollouts(model, data, args.png, args.plot_horizon)
        print(f"{args.png}: predicted vs recorded {k}-step rollouts")
    return 0
