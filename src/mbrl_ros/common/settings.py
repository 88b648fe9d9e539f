"""Typed settings owned by the core: one source of each setting's name, type, default,
description (with units) and allowed values, for the nodes and for offline code alike (no rclpy).

A component's settings are a frozen dataclass derived from ``Settings`` whose fields are declared
with ``setting(default, description, range | choices)``. Constructing one checks and converts every
value (``ConfigError`` naming the setting, the value and what is allowed); ``from_mapping``
rejects unknown names (with the nearest known one), so a typo cannot leave a default in force.
The planner node declares ``PlannerSettings.params()`` as its ROS parameters (``nodes.params``),
and offline code (``versions``, benchmarks, tests) builds the same object without ROS.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

S = TypeVar("S", bound="Settings")


class ConfigError(ValueError):
    """A node's configuration (parameter, file) is invalid; the node must not start."""


@dataclass(frozen=True)
class Param:
    """One parameter: name, default (its type sets the parameter type), description with units,
    inclusive numeric range (also applied to each element of a numeric list), or allowed strings.
    ``runtime``: settable on a running node (else read-only); ``safer``: for a runtime safety
    setting, "higher" or "lower", the direction it may move from its start-up value."""

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    runtime: bool = False
    safer: str | None = None

    def __post_init__(self):
        if self.safer not in (None, "higher", "lower") or (self.safer and not self.runtime):
            raise TypeError(
                f"parameter '{self.name}': safer must be 'higher' or 'lower' and needs runtime=True"
            )

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
            if items and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in items
            ):
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


def setting(
    default: Any,
    description: str,
    range: tuple[float, float] | None = None,
    choices: tuple[str, ...] | None = None,
    runtime: bool = False,
    safer: str | None = None,
) -> Any:
    """A field of a ``Settings`` dataclass: its default (whose type is the setting's type: bool,
    int, float, str or list), description with units, inclusive numeric range or allowed strings;
    ``runtime``/``safer`` as for ``Param``."""
    meta = {"setting": (description, range, choices, runtime, safer)}
    if isinstance(default, list):
        items = list(default)
        return dataclasses.field(default_factory=lambda: list(items), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Base of the components' settings (frozen dataclasses whose fields come from ``setting``);
    every value is checked and converted on construction. A plain dataclass field (no
    ``setting``) is a value offline code may give but no parameter (not in ``params``, not
    checked): e.g. the simulator's ``scene``, which may be None."""

    def __post_init__(self) -> None:
        for p in self.params():
            object.__setattr__(self, p.name, p.check(getattr(self, p.name)))

    @classmethod
    def params(cls) -> list[Param]:
        """The settings as ``Param`` entries (name, default, description, range, choices)."""
        out = []
        for f in dataclasses.fields(cls):
            if "setting" not in f.metadata:
                continue
            description, range_, choices, runtime, safer = f.metadata["setting"]
            factory = f.default_factory
            default = f.default if factory is dataclasses.MISSING else factory()
            out.append(Param(f.name, default, description, range_, choices, runtime, safer))
        return out

    @classmethod
    def names(cls) -> set[str]:
        """The fields' names (settings and plain fields alike)."""
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls: type[S], values: Mapping[str, Any], where: str = "") -> S:
        """The settings with ``values`` over the defaults; ConfigError naming each unknown name
        (and the nearest known one) or a bad value. ``where`` prefixes the message (a file)."""
        unknown = sorted(set(values) - cls.names())
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(cls.names()), n=1)
                hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise ConfigError(
                f"{where + ': ' if where else ''}unknown {cls.__name__} "
                f"setting(s) {', '.join(hints)}"
            )
        return cls(**values)

    @classmethod
    def select(cls: type[S], values: Mapping[str, Any]) -> S:
        """The settings from those of ``values`` that are settings of this class (a node's
        parameters hold these and the node's own)."""
        return cls(**{k: v for k, v in values.items() if k in cls.names()})

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` (checked like any construction)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
