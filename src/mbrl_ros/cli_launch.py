"""``mbrl-ros launch GRAPH [name:=value ...]`` and ``mbrl-ros demo``."""
from __future__ import annotations

import argparse

from mbrl_ros.graphs import GRAPHS
from mbrl_ros.launcher import launch, parse_graph_args

# The main job until the MPC graph lands: the 7-DOF arm under the random base policy π0.
DEMO_GRAPH, DEMO_ARGS = "sim", {"robot": "arm7", "duration": "60.0", "status_period": "2.0"}


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    if command == "launch":
        parser.add_argument("graph", choices=sorted(GRAPHS), help="graph to start")
        parser.add_argument("args", nargs="*", metavar="name:=value",
                            help="graph arguments; see --list")
        parser.add_argument("--list", action="store_true", help="print the graph's arguments")
    else:
        parser.add_argument("args", nargs="*", metavar="name:=value",
                            help=f"arguments of the '{DEMO_GRAPH}' graph, e.g. duration:=120")


def run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        print(f"[mbrl-ros] demo: the {DEMO_ARGS['robot']} sim arm driven by random torques (π0) "
              f"over ROS 2 topics for {DEMO_ARGS['duration']} s of sim time", flush=True)
        return launch(DEMO_GRAPH, DEMO_ARGS | parse_graph_args(args.args))
    if args.list:
        for a in GRAPHS[args.graph].args:
            print(f"{a.name}:={a.default}\t{a.description}")
        return 0
    return launch(args.graph, parse_graph_args(args.args))
