"""Configs in and out: `--set` overrides, config.json, experiment files, and the type of
every value checked against its field's annotation."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import types
import typing
from pathlib import Path
from typing import Any

from mmjax import storage
from mmjax.config.base import (
    attribute_of,
    field_types,
    get,
    is_section,
    key_of,
    unknown_key_error,
)
from mmjax.config.evaluation import LEGACY_KEYS, EvalConfig
from mmjax.config.rules import validate
from mmjax.config.sections import Config
from mmjax.config.values import coerce, parse_value
from mmjax.errors import ConfigError


def leaf_keys(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted paths to non-dataclass fields, e.g. 'train.batch_size'."""
    keys = []
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        path = f"{prefix}{key_of(field.name)}"
        if dataclasses.is_dataclass(value):
            keys.extend(leaf_keys(value, path + "."))
        else:
            keys.append(path)
    return keys


def override(cfg: Config, assignment: str) -> None:
    """Applies one 'a.b=c' override in place, parsing c to the field's type. Cross-field
    rules are left to `validate` (or `apply`), once every override is in."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' is not of the form key=value")
    key, text = assignment.split("=", 1)
    key = key.strip()
    node = _parent_of(cfg, key)
    name = key.rsplit(".", 1)[-1]
    annotation = field_types(type(node))[name]
    setattr(node, attribute_of(name), parse_value(text, annotation, key))


def apply(cfg: Config, assignments: typing.Sequence[str]) -> Config:
    """Every override, then `validate`."""
    for assignment in assignments:
        override(cfg, assignment)
    validate(cfg)
    return cfg


def _parent_of(cfg: Any, key: str) -> Any:
    """Returns the dataclass holding the leaf `key`, or raises naming the bad key."""
    valid = leaf_keys(cfg)
    if key not in valid:
        raise unknown_key_error(key, valid)
    return get(cfg, key.rpartition(".")[0]) if "." in key else cfg


# Fields naming local files or folders; a run stores them absolute, so that its
# config.json means the same from any directory (eval, export, a resume from elsewhere).
PATH_KEYS = ("data.path", "data.tokenizer", "init.from", "init.text_from",
             "eval.zeroshot.prompts")


def absolute_paths(cfg: Config) -> Config:
    """A copy of `cfg` with each relative local path of PATH_KEYS made absolute against the
    working directory; empty values and bucket URLs stay as they are."""
    out = copy.deepcopy(cfg)
    for key in PATH_KEYS:
        value = get(out, key)
        if value and not storage.is_bucket(value):
            setattr(_parent_of(out, key), attribute_of(key.rsplit(".", 1)[-1]),
                    str(storage.absolute(value)))
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    return {
        key_of(field.name): (to_dict(value) if dataclasses.is_dataclass(value) else value)
        for field in dataclasses.fields(cfg)
        for value in [getattr(cfg, field.name)]
    }


def from_dict(data: dict[str, Any], cls: type = Config, prefix: str = "") -> Any:
    """Builds a config from nested dicts (e.g. a workdir's config.json), strictly; a whole
    Config is validated."""
    types_ = field_types(cls)
    if cls is EvalConfig:
        data = _upgrade_eval(data)
    valid = [f"{prefix}{k}" for k in types_]
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in types_:
            raise unknown_key_error(key, valid)
        annotation = types_[name]
        if is_section(annotation):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{key}' expects a section, got {value!r}")
            kwargs[attribute_of(name)] = from_dict(value, annotation, key + ".")
        else:
            kwargs[attribute_of(name)] = coerce(value, annotation, key)
    cfg = cls(**kwargs)
    if cls is Config:
        validate(cfg)
    return cfg


def _upgrade_eval(data: dict[str, Any]) -> dict[str, Any]:
    """The flat eval keys of an older config.json moved into the evaluator sections."""
    data = dict(data)
    for old, new_keys in LEGACY_KEYS.items():
        if old in data and not isinstance(data[old], dict):
            value = data.pop(old)
            for new in new_keys:
                kind, name = new.split(".")
                if isinstance(data.setdefault(kind, {}), dict):
                    data[kind] = {name: value, **data[kind]}
    return data


def load(path: str | Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Runs an experiment file's get_config(), applies --set overrides and validates."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"mmjax_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not isinstance(get_config, types.FunctionType):
        raise ConfigError(f"config file {path} does not define get_config()")
    cfg = get_config()
    if not isinstance(cfg, Config):
        raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}, not Config")
    return apply(cfg, overrides)


def save(cfg: Config, path: str | Path) -> None:
    storage.path(path).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def read(path: str | Path) -> Config:
    path = storage.path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} is not a JSON object")
    return from_dict(data)


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs of the same class."""
    return [
        key
        for key in leaf_keys(a, prefix)
        if get(a, key[len(prefix):]) != get(b, key[len(prefix):])
    ]
