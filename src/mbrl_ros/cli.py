"""``mbrl-ros``: the package's command line (works without a ROS 2 install).

Subcommands are registered in COMMANDS as modules exposing ``add_arguments(parser)`` and
``run(args) -> int``; a module is imported only when its subcommand runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mbrl_ros.cli_launch", "run the main job on the simulated arm"),
    "launch": ("mbrl_ros.cli_launch", "start a graph (the same nodes as launch/<graph>.launch.py)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mbrl-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        getattr(mod, "add_arguments")(sp, name)
        sp.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mbrl-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
