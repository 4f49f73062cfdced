"""Values against their fields' annotations: `--set` text parsed, Python values (from
JSON or an experiment file) checked, Literal choices enforced, floats finite."""

from __future__ import annotations

import math
import typing
from typing import Any

from mmjax.config.base import attribute_of, field_types, is_section
from mmjax.errors import ConfigError


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _choices(annotation: Any) -> tuple[str, ...] | None:
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal \
        else None


def _not_a_choice(key: str, choices: tuple[str, ...], got: Any) -> ConfigError:
    names = ", ".join(choice or "''" for choice in choices)
    return ConfigError(f"config key '{key}' expects one of {names}, got {got!r}")


def parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parses the string of a --set override into the field's annotated type."""
    if (choices := _choices(annotation)) is not None:
        if text not in choices:
            raise _not_a_choice(key, choices, text)
        return text
    try:
        if annotation is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if annotation in (int, float, str):
            return annotation(text)
        if typing.get_origin(annotation) is tuple:
            (item_type, _ellipsis) = typing.get_args(annotation)
            items = [t for t in text.strip("()[] ").split(",") if t.strip()]
            return tuple(parse_value(t.strip(), item_type, key) for t in items)
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(
            f"config key '{key}' expects {_type_name(annotation)}, got '{text}'"
        ) from None
    raise ConfigError(f"config key '{key}' has type {annotation!r} that --set cannot parse")


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Checks a Python value (from JSON or code) against the field type."""
    if (choices := _choices(annotation)) is not None:
        if not (isinstance(value, str) and value in choices):
            raise _not_a_choice(key, choices, value)
        return value
    if typing.get_origin(annotation) is tuple and isinstance(value, list | tuple):
        (item_type, _ellipsis) = typing.get_args(annotation)
        return tuple(coerce(v, item_type, key) for v in value)
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):  # NaN passes every range check; Inf is never meant
            raise ConfigError(f"config key '{key}' expects a finite number, got {value!r}")
        return float(value)
    is_bool_as_int = annotation is int and isinstance(value, bool)
    if isinstance(annotation, type) and isinstance(value, annotation) and not is_bool_as_int:
        return value
    raise ConfigError(f"config key '{key}' expects {_type_name(annotation)}, got {value!r}")


def check_types(cfg: Any, prefix: str = "") -> None:
    """Every field of `cfg` against its annotation, in place (lists become tuples, ints
    floats where a float is expected): what an experiment file assigned is checked too."""
    for key, annotation in field_types(type(cfg)).items():
        value = getattr(cfg, attribute_of(key))
        if is_section(annotation):
            if type(value) is not annotation:
                raise ConfigError(f"config key '{prefix}{key}' expects a {annotation.__name__} "
                                  f"section, got {value!r}")
            check_types(value, f"{prefix}{key}.")
        else:
            setattr(cfg, attribute_of(key), coerce(value, annotation, f"{prefix}{key}"))
