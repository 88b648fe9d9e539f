"""``mbrl-ros launch GRAPH [name:=value ...]`` and ``mbrl-ros demo``."""

from __future__ import annotations

import argparse

from mbrl_ros.graphs.description import GRAPHS
from mbrl_ros.graphs.launcher import launch, parse_graph_args

# The main job: model-based RL from zero data (the lecture's v1.5) with the 'mpc' graph's defaults
# (the 7-DOF arm, which learns to reach within 60 s of robot data in a few minutes of wall time;
# robot:=arm2 runs the 2-link arm), with fewer status lines.
DEMO_GRAPH, DEMO_ARGS = "mpc", {"status_period": "10.0"}


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    if command == "launch":
        parser.add_argument("graph", choices=sorted(GRAPHS), help="graph to start")
        parser.add_argument(
            "args", nargs="*", metavar="name:=value", help="graph arguments; see --list"
        )
        parser.add_argument("--list", action="store_true", help="print the graph's arguments")
    else:
        parser.add_argument(
            "args",
            nargs="*",
            metavar="name:=value",
            help=f"arguments of the '{DEMO_GRAPH}' graph, e.g. robot:=arm2",
        )


def run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        defaults = {a.name: a.default for a in GRAPHS[DEMO_GRAPH].args}
        demo = defaults | DEMO_ARGS | parse_graph_args(args.args)
        print(
            f"[mbrl-ros] demo: the {demo['robot']} sim arm learns to reach from zero data over "
            f"ROS 2 topics: random torques (π0) → fit a dynamics model → iLQR MPC through it → "
            f"refit on the growing data; {demo['train_episodes']} training episodes, then "
            f"{demo['final_eval_episodes']} on held-out targets. One line per episode; a "
            f"summary table and learning_curve.png at the end.",
            flush=True,
        )
        return launch(DEMO_GRAPH, demo)
    if args.list:
        for a in GRAPHS[args.graph].args:
            print(f"{a.name}:={a.default}\t{a.description}")
        return 0
    return launch(args.graph, parse_graph_args(args.args))
