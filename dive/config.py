"""Typed configuration: dataclasses <-> plain dicts (JSON), with clear errors for unknown keys."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import typing
from pathlib import Path
from typing import Any, TypeVar

from dive.errors import DiveError, short_repr

T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name`` (calling its factory), e.g. for help texts."""
    field = cls.__dataclass_fields__[name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def from_dict(cls: type[T], data: dict[str, Any], base: T | None = None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` (nested dataclasses too), on top of ``base``.

    Each value must have its field's type (an integer, a finite number, true/false, text, or a
    mapping for a nested dataclass): a value read from a file or flag reaches the constructor only
    with the type it declares, so a tampered ``hidden`` of ``8.5`` or ``"x"`` is one DiveError
    naming the field, never a traceback from deep inside torch. ``prefix`` names nested fields
    (``train.epochs``).
    """
    if not isinstance(data, dict):
        raise DiveError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping of {cls.__name__} settings, "
                        f"got {short_repr(data)}")
    hints = typing.get_type_hints(cls)
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)
    if unknown:
        raise DiveError(f"unknown setting {prefix + str(unknown[0])!r} for {cls.__name__} "
                        f"(known: {', '.join(sorted(names))})")
    values = {}
    for name, value in data.items():
        field_type = hints[name]
        if dataclasses.is_dataclass(field_type):
            value = from_dict(field_type, value, getattr(base, name) if base is not None else None, f"{prefix}{name}.")
        else:
            _check_type(f"{prefix}{name}", value, field_type)
        values[name] = value
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except TypeError as error:
        raise DiveError(f"{cls.__name__}: {error}") from None


def _check_type(name: str, value: Any, field_type: Any) -> None:
    """Refuse ``value`` unless it fits ``field_type`` (int, float, bool or str; a bool is not a number)."""
    if field_type is bool:
        ok, expected = isinstance(value, bool), "true or false"
    elif field_type is int:
        ok, expected = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"
    elif field_type is float:
        ok, expected = _is_finite_number(value), "a finite number"
    elif field_type is str:
        ok, expected = isinstance(value, str), "text"
    else:
        return  # a type no config uses yet: left to the dataclass
    if not ok:
        raise DiveError(f"setting {name!r} must be {expected}, got {short_repr(value)}")


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON settings file (as written by ``dive tune`` or by hand): method settings, and
    training settings as an object under ``"train"``."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise DiveError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise DiveError(f"{path}: not a file (a folder)") from None
    except OSError as error:
        raise DiveError(f"{path}: cannot read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise DiveError(f"{path}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise DiveError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise DiveError(f"{path}: expected a JSON object of settings")
    if not isinstance(data.get("train", {}), dict):
        raise DiveError(f"{path}: \"train\" must be a JSON object of training settings (e.g. {{\"epochs\": 10}}), "
                        f"got {json.dumps(data['train'])[:60]}")
    return data


def parse_assignments(items: list[str], what: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``: values parsed as JSON when they are JSON."""
    settings: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise DiveError(f"{what} expects NAME=VALUE, got {item!r}")
        try:
            settings[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[name.strip()] = value
    return settings
