"""What every config section shares: config keys, and refusing attributes a section lacks."""

from __future__ import annotations

import dataclasses
import difflib
import keyword
import typing
from typing import Any

from mmjax.errors import ConfigError


def key_of(attribute: str) -> str:
    """The config key of a field: `from_` is spelt `init.from` (a Python keyword)."""
    stripped = attribute.removesuffix("_")
    return stripped if keyword.iskeyword(stripped) else attribute


def attribute_of(key: str) -> str:
    return f"{key}_" if keyword.iskeyword(key) else key


def unknown_key_error(key: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def get(cfg: Any, key: str) -> Any:
    """The value at a dotted key, e.g. get(cfg, "model.fusion.kind")."""
    for part in key.split("."):
        cfg = getattr(cfg, attribute_of(part))
    return cfg


def field_types(cls: type) -> dict[str, Any]:
    """Field types by config key."""
    return {key_of(name): annotation for name, annotation in typing.get_type_hints(cls).items()}


def is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Section)


class Section:
    """Base of every config dataclass: assigning an attribute the section has no field
    for (`cfg.train.num_stepz = 5` in an experiment file) raises a ConfigError naming the
    key and the closest field, instead of silently adding an attribute nothing reads."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self.__dataclass_fields__:
            prefix = section_path(type(self))
            raise unknown_key_error(f"{prefix}{key_of(name)}",
                                    [f"{prefix}{key_of(f)}" for f in self.__dataclass_fields__])
        object.__setattr__(self, name, value)


_PATHS: dict[type, str] = {}


def section_path(cls: type) -> str:
    """'model.image.' for ViTConfig: where the section sits in a Config ('' for Config,
    the class name where it sits nowhere or in several places)."""
    if not _PATHS:
        from mmjax.config.sections import Config

        found: dict[type, list[str]] = {Config: [""]}
        _collect(Config, "", found)
        _PATHS.update({c: paths[0] if len(paths) == 1 else f"{c.__name__}."
                       for c, paths in found.items()})
    return _PATHS.get(cls, f"{cls.__name__}.")


def _collect(cls: type, prefix: str, found: dict[type, list[str]]) -> None:
    for key, annotation in field_types(cls).items():
        if is_section(annotation):
            found.setdefault(annotation, []).append(f"{prefix}{key}.")
            _collect(annotation, f"{prefix}{key}.", found)


def section(default_factory: type) -> Any:
    """A nested section field: `image: ViTConfig = section(ViTConfig)`."""
    return dataclasses.field(default_factory=default_factory)
