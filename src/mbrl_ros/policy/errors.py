"""The policy package's one error type."""

from __future__ import annotations


class PolicyError(ValueError):
    """A policy, cost or learning setting that cannot be used (a policy that does not fit the
    robot, joints, observation layout or control period it is used with; bad PILCO or training
    settings); the message says what differs or why."""
