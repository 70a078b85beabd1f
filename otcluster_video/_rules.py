"""The validation vocabulary of the recipe's configuration (:mod:`._config`).

Every section declares its allowed values as data (``_RULES``: field -> check and what is
allowed; ``_CROSS``: checks that involve two fields); :func:`_validate` applies them in
``__post_init__`` and names the key (``"training.lr must be > 0, got -1.0"``). Numbers must be
finite everywhere.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["Rule"]

Rule = tuple[Callable[[Any], bool], str]


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _at_least(lo: float) -> Rule:
    return (lambda v: _num(v) and v >= lo, f">= {lo:g}")


def _above(lo: float) -> Rule:
    return (lambda v: _num(v) and v > lo, f"> {lo:g}")


def _pair(v: Any, ok: Callable[[Any], bool]) -> bool:  # a [first, second] setting
    return isinstance(v, tuple) and len(v) == 2 and all(ok(x) for x in v)


_COUNT: Rule = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                "a non-negative integer")
_PROBABILITY: Rule = (lambda v: _num(v) and 0.0 <= v <= 1.0, "a probability in [0, 1]")
_FRACTION: Rule = (lambda v: _num(v) and 0.0 <= v < 1.0, "in [0, 1)")


def _validate(obj: Any) -> None:
    """Apply a section's ``_RULES`` and ``_CROSS``; ``ValueError`` names the first bad key."""
    section = obj._SECTION
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        items = value if isinstance(value, tuple) else (value,)
        if any(isinstance(x, float) and not math.isfinite(x) for x in items):
            raise ValueError(f"{section}.{f.name} must be a finite number, got {value!r}")
    for name, (check, allowed) in obj._RULES.items():
        value = getattr(obj, name)
        if not check(value):
            raise ValueError(f"{section}.{name} must be {allowed}, got {value!r}")
    for check, message in obj._CROSS:
        if not check(obj):
            raise ValueError(f"{section}: {message}")


def _renamed(old: str, new: str) -> property:
    """A read-only alias of a renamed field that warns (the Python side of the old keys)."""

    def get(self: Any) -> Any:
        warnings.warn(
            f"{self._SECTION}.{old} is deprecated; use {self._SECTION}.{new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(self, new)

    return property(get, doc=f"Deprecated alias of ``{new}``.")
