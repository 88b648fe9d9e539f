"""The lecture's MBRL versions compared offline on the simulated arm with the mpc graph's settings:
``mbrl-ros versions`` (``mbrl_ros.cli.experiments``), kept here for ``make bench``.

    python benchmarks/compare_versions.py [--robot arm2|arm7] [--budget S] [--seed-data S]
                                          [--eval N] [--seeds 0,1,2,3,4] [--versions v0.5,...]
                                          [--set planner_setting=value ...]
"""

from __future__ import annotations

import sys

from mbrl_ros.cli import main

if __name__ == "__main__":
    sys.exit(main(["versions", *sys.argv[1:]]))
