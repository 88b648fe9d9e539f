"""Declared, described and range-checked node parameters.

Each node lists its parameters as ``Param`` entries; ``declare_params`` declares them with a
description and range (visible to ``ros2 param describe``), reads the values given by YAML or the
command line, and raises ``ConfigError`` naming the parameter, the value and what is allowed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.node import Node


class ConfigError(ValueError):
    """A node's configuration (parameter, file) is invalid; the node must not start."""


@dataclass(frozen=True)
class Param:
    """One parameter: name, default (its type sets the parameter type), description with units,
    inclusive numeric range (also applied to each element of a numeric list), or allowed strings."""

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, description=self.description, read_only=True,
                                dynamic_typing=True)
        if self.range is not None and isinstance(self.default, float):
            d.floating_point_range = [FloatingPointRange(
                from_value=float(self.range[0]), to_value=float(self.range[1]), step=0.0)]
        elif self.range is not None and isinstance(self.default, int) \
                and not isinstance(self.default, bool):
            d.integer_range = [IntegerRange(
                from_value=int(self.range[0]), to_value=int(self.range[1]), step=0)]
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(self.choices)
        elif self.range is not None:
            d.additional_constraints = f"range [{self.range[0]}, {self.range[1]}]"
        return d

    def check(self, value: Any) -> Any:
        """The value converted to this parameter's type; ConfigError if it does not fit."""
        kind = type(self.default)
        bad = f"parameter '{self.name}' = {value!r}"
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{bad} must be true or false")
            return value
        if kind is float or kind is int:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{bad} must be a number")
            if kind is int and not float(value).is_integer():
                raise ConfigError(f"{bad} must be an integer")
            value = kind(value)
            if not math.isfinite(value):
                raise ConfigError(f"{bad} must be finite")
            self._check_range(value, bad)
            return value
        if kind is str:
            if not isinstance(value, str):
                raise ConfigError(f"{bad} must be a string")
            if self.choices and value not in self.choices:
                raise ConfigError(f"{bad} must be one of {list(self.choices)}")
            return value
        if kind is list:
            if value is None or value == []:
                return []
            items = list(value)
            if items and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
                items = [float(v) for v in items]
                for i, v in enumerate(items):
                    if not math.isfinite(v):
                        raise ConfigError(f"{bad}: element {i} must be finite")
                    self._check_range(v, f"{bad}: element {i}")
            return items
        raise TypeError(f"unsupported parameter type for '{self.name}'")

    def _check_range(self, value: float, bad: str) -> None:
        if self.range is not None and not (self.range[0] <= value <= self.range[1]):
            raise ConfigError(f"{bad} is out of range [{self.range[0]}, {self.range[1]}]")


def select_joints(robot, names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The 'joint_names' parameter resolved against ``robot`` ([] = all joints in robot order):
    (names, their indices in the robot); ConfigError naming unknown or repeated joints."""
    names = list(names) or list(robot.joint_names)
    if len(set(names)) != len(names):
        raise ConfigError(f"parameter 'joint_names' = {names} repeats a joint")
    try:
        return names, robot.index_of(names)
    except ValueError as exc:
        raise ConfigError(f"parameter 'joint_names': {exc}") from None


def _initial(default: Any) -> Any:
    # An empty list has no ROS type; declare it as an empty string array (overridable by any list).
    return [] if default == [] else default


def declare_params(node: Node, params: Sequence[Param]) -> SimpleNamespace:
    """Declare ``params`` on ``node`` and return their checked values as attributes."""
    values = {}
    for p in params:
        try:
            node.declare_parameter(p.name, _initial(p.default), p.descriptor())
        except ParameterException as exc:  # rclpy's own range check rejected an override
            override = getattr(node, "_parameter_overrides", {}).get(p.name)
            if override is not None:
                p.check(override.value)  # raises with our wording
            raise ConfigError(f"parameter '{p.name}': {exc}") from None
        raw = node.get_parameter(p.name).value
        values[p.name] = p.check(p.default if raw is None else raw)
    return SimpleNamespace(**values)
