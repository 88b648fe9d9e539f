"""Declared, described and range-checked node parameters (the ROS side of
``mbrl_ros.common.settings``).

Each node lists its parameters as ``Param`` entries (a core component's ``Settings.params()``
and the node's own); ``declare_params`` declares them with a
description and range (visible to ``ros2 param describe``), reads the values given by YAML or the
command line, and raises ``ConfigError`` naming the parameter, the value and what is allowed.

A ``Param`` is read-only on a running node unless it says ``runtime=True``; then ``ros2 param
set`` (any SetParameters call) is checked like a start-up value, and a safety setting
(``safer``) may only move in its safe direction from the value the node started with. An
accepted set updates the namespace ``declare_params`` returned and the node's ``apply`` hook.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import ParameterException
from rclpy.node import Node

from mbrl_ros.common.settings import ConfigError, Param


def descriptor(p: Param) -> ParameterDescriptor:
    """The ROS parameter descriptor of ``p``: description, range or choices, read-only unless
    ``runtime`` (visible to ``ros2 param describe``)."""
    d = ParameterDescriptor(
        name=p.name, description=p.description, read_only=not p.runtime, dynamic_typing=True
    )
    if p.range is not None and isinstance(p.default, float):
        d.floating_point_range = [
            FloatingPointRange(from_value=float(p.range[0]), to_value=float(p.range[1]), step=0.0)
        ]
    elif p.range is not None and isinstance(p.default, int) and not isinstance(p.default, bool):
        d.integer_range = [
            IntegerRange(from_value=int(p.range[0]), to_value=int(p.range[1]), step=0)
        ]
    if p.choices:
        d.additional_constraints = "one of: " + ", ".join(p.choices)
    elif p.range is not None:
        d.additional_constraints = f"range [{p.range[0]}, {p.range[1]}]"
    if p.safer:
        d.additional_constraints += f"; at run time only {p.safer} than the start-up value"
    return d


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


def declare_params(
    node: Node, params: Sequence[Param], apply: Callable[[Mapping[str, Any]], None] | None = None
) -> SimpleNamespace:
    """Declare ``params`` on ``node`` and return their checked values as attributes. If some are
    ``runtime``, a set on the running node is validated (``RuntimeParams``) and then passed, as
    {name: checked value}, to ``apply`` (which may raise ConfigError to refuse it) before the
    namespace takes the new values."""
    values = {}
    for p in params:
        try:
            node.declare_parameter(p.name, _initial(p.default), descriptor(p))
        except ParameterException as exc:  # rclpy's own range check rejected an override
            override = getattr(node, "_parameter_overrides", {}).get(p.name)
            if override is not None:
                p.check(override.value)  # raises with our wording
            raise ConfigError(f"parameter '{p.name}': {exc}") from None
        raw = node.get_parameter(p.name).value
        values[p.name] = p.check(p.default if raw is None else raw)
    namespace = SimpleNamespace(**values)
    if any(p.runtime for p in params):
        node.add_on_set_parameters_callback(RuntimeParams(params, namespace, apply))
    return namespace


def check_unknown_parameters(node: Node) -> None:
    """ConfigError naming every parameter given to ``node`` (parameter file, ``-p``, launch
    ``parameters``) that it does not declare, with the nearest declared name: rclpy would drop
    such a value silently, so a typo (``horizn: 5``) would leave the default in force. ROS's own
    ``qos_overrides.*`` keys pass."""
    declared = set(node._parameters)
    given = getattr(node, "_parameter_overrides", {})
    unknown = sorted(k for k in given if k not in declared and not k.startswith("qos_overrides."))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(declared), n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(
            f"unknown parameter(s) for node '{node.get_name()}': "
            f"{', '.join(hints)}; `ros2 param list` on the node shows what it takes"
        )


class RuntimeParams:
    """The on-set-parameters callback of ``declare_params``: checks every parameter of a set
    (rclpy has already refused read-only ones), keeps safety settings on their safe side of the
    start-up values, calls ``apply``, then stores the values in ``namespace``. A refusal's
    reason names the parameter, the value and what is allowed; nothing changes then."""

    def __init__(
        self,
        params: Sequence[Param],
        namespace: SimpleNamespace,
        apply: Callable[[Mapping[str, Any]], None] | None,
    ):
        self.params = {p.name: p for p in params}
        self.start = dict(vars(namespace))
        self.namespace, self.apply = namespace, apply

    def __call__(self, parameters) -> SetParametersResult:
        try:
            changes = {}
            for parameter in parameters:
                p = self.params.get(parameter.name)
                if p is None:  # rclpy's own (use_sim_time) or one the node declared itself
                    continue
                if not p.runtime:
                    raise ConfigError(f"parameter '{p.name}' is read-only on a running node")
                changes[p.name] = self._checked(p, parameter.value)
            if changes and self.apply is not None:
                self.apply(changes)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        for name, value in changes.items():
            setattr(self.namespace, name, value)
        return SetParametersResult(successful=True)

    def _checked(self, p: Param, value: Any) -> Any:
        value = p.check(value)
        start = self.start[p.name]
        if (p.safer == "higher" and value < start) or (p.safer == "lower" and value > start):
            bound = "≥" if p.safer == "higher" else "≤"
            raise ConfigError(
                f"parameter '{p.name}' = {value!r}: a running node takes only "
                f"values {bound} its start-up value {start!r} (safer); a looser "
                "safety setting needs a restart"
            )
        return value
