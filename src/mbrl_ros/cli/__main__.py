"""``python -m mbrl_ros.cli``: the same as the ``mbrl-ros`` command."""

import sys

from mbrl_ros.cli import main

sys.exit(main())
