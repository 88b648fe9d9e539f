"""The DDS environment of a run: confined to this machine unless the user says otherwise."""

from __future__ import annotations

import os
import random


def ros_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default: this process's) with DDS confined to localhost
    (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``), a ``ROS_DOMAIN_ID`` chosen for this run and
    unbuffered Python output, each only where the caller has not set it."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
