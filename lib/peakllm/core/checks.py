"""Argument checks shared by every module: fail at once, name the parameter and what is allowed.

Validation lives here (not in notebooks) so a bad value fails the same way in a notebook,
a sweep and a test, before anything heavy is loaded.
"""
from __future__ import annotations

from typing import Iterable


def choice(param: str, value, allowed: Iterable) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{param}={value!r} is not allowed; choose one of {allowed}")


def choices(param: str, values, allowed: Iterable) -> None:
    """Raise ValueError unless every one of ``values`` (a list parameter) is in ``allowed``."""
    for v in values:
        choice(param, v, allowed)


def in_range(param: str, value, low, high, *, high_inclusive: bool = False) -> None:
    """Raise ValueError unless ``low <= value < high`` (or ``<= high``)."""
    ok = low <= value <= high if high_inclusive else low <= value < high
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{param}={value!r} is outside [{low}, {high}{bracket}")


def positive_int(param: str, value) -> None:
    """Raise ValueError unless ``value`` is an int > 0 (a bool is not)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{param}={value!r} must be a positive integer")


def as_list(param: str, value) -> list:
    """A list parameter as given in a notebook, or as papermill's ``-p`` passes it (a string):
    '["a", "b"]' (JSON) or 'a,b' both give ["a", "b"]."""
    import json

    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return list(json.loads(text))
            except json.JSONDecodeError as e:
                raise ValueError(f"{param}={value!r} is not a valid JSON list: {e}") from None
        return [v.strip() for v in text.split(",") if v.strip()]
    raise ValueError(f"{param}={value!r} must be a list (or a JSON list as a string)")


def seeds(param: str, value) -> list[int]:
    """A non-empty list of distinct non-negative integer seeds (a comparison's calibration sets)."""
    values = as_list(param, value)
    ok = values and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)
    if not ok or len(set(values)) != len(values):
        raise ValueError(f"{param}={value!r} must be a non-empty list of distinct non-negative integers")
    return values
