"""Rules for single settings, stated by the config dataclasses and reused by the CLI's flag parsers.

A config's ``__post_init__`` checks its fields with these functions, so a Python user and a
command-line user are refused by the same rule. A broken rule is an :class:`InvalidSetting`
that knows the setting, the rule and the value: the library says ``n_folds must be at least
2, got 0``, the CLI says ``argument --folds: must be at least 2, got 0``.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from dive.errors import DiveError

DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")
"""Devices dive trains and encodes on: ``cpu``, ``cuda``, ``cuda:N`` (GPU N), ``mps`` (Apple)."""


class InvalidSetting(DiveError):
    """A setting's value breaks its rule; ``requirement`` is the message without the setting's name."""

    def __init__(self, name: str, rule: str, value: Any):
        self.name, self.rule, self.value = name, rule, value
        super().__init__(f"{name} {self.requirement}")

    @property
    def requirement(self) -> str:
        text = repr(self.value)
        return f"{self.rule}, got {text if len(text) <= 60 else text[:57] + '...'}"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    try:
        return _is_number(value) and math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def finite(name: str, value: Any) -> None:
    """``value`` is a finite number (not NaN, not infinite)."""
    if not _is_finite(value):
        raise InvalidSetting(name, "must be a finite number", value)


def at_least(name: str, value: Any, minimum: float) -> None:
    """``value`` is a finite number >= ``minimum``."""
    finite(name, value)
    if value < minimum:
        raise InvalidSetting(name, f"must be at least {minimum:g}", value)


def above(name: str, value: Any, bound: float) -> None:
    """``value`` is a finite number > ``bound``."""
    finite(name, value)
    if value <= bound:
        raise InvalidSetting(name, f"must be above {bound:g}", value)


def whole_at_least(name: str, value: Any, minimum: int) -> None:
    """``value`` is an integer >= ``minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise InvalidSetting(name, "must be an integer", value)
    if value < minimum:
        raise InvalidSetting(name, f"must be at least {minimum}", value)


def device(name: str, value: Any) -> None:
    """``value`` names a device dive can run on (see :data:`DEVICE`)."""
    if not isinstance(value, str) or not DEVICE.fullmatch(value):
        raise InvalidSetting(name, "must be cpu, cuda, cuda:N or mps", value)


def one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise InvalidSetting(name, f"must be one of {', '.join(choices)}", value)
