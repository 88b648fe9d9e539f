"""``mbrl-ros``: the package's command line (works without a ROS 2 install).

Subcommands are registered in COMMANDS as modules exposing ``add_arguments(parser)`` and
``run(args) -> int``; a module is imported only when its subcommand runs. Every error, whether
found while parsing (argument types of ``mbrl_ros.cli.args``) or raised by a command as a
ValueError or OSError, is one line ``mbrl-ros <command>: error: <what>`` on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mbrl_ros.cli.args import error_line

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mbrl_ros.graphs.commands", "run the main job on the simulated arm"),
    "launch": (
        "mbrl_ros.graphs.commands",
        "start a graph (the same nodes as launch/<graph>.launch.py)",
    ),
    "bag": ("mbrl_ros.cli.data", "inspect (info) or repair a rosbag2 bag"),
    "dataset": ("mbrl_ros.cli.data", "build a transition dataset from bags"),
    "fit": ("mbrl_ros.cli.dynamics", "fit a dynamics model to bags or a dataset file"),
    "eval-model": ("mbrl_ros.cli.dynamics", "evaluate a dynamics model on bags or a dataset file"),
    "robot-config": (
        "mbrl_ros.cli.robot_config",
        "write a robot's per-robot settings, derived from its URDF, for review",
    ),
    "versions": (
        "mbrl_ros.cli.experiments",
        "compare the lecture's MBRL versions offline on the simulated arm",
    ),
    "replay": ("mbrl_ros.nodes.replay", "publish a bag's topics with their original timing"),
    "send-controller": (
        "mbrl_ros.nodes.send_controller",
        "publish a controller artifact on /mbrl/controller (or write a scripted "
        "hold/PD controller)",
    ),
}


EXIT_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``--help`` shows the usage)."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, error_line(self.prog, message) + "\n")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (the others are listed by name)."""
    parser = OneLineParser(prog="mbrl-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            mod = importlib.import_module(module)
            mod.add_arguments(sp, name)
            sp.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except (ValueError, OSError) as exc:
        print(error_line(f"mbrl-ros {args.command}", _describe(exc)), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
