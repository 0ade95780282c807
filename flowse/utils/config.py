"""The one config loader: yaml gives values, CLI overrides win, dataclasses define the schema.

A config class is a (nested) ``dataclass``. Loading checks every key and value:
- an unknown key is an error listing the allowed keys;
- a value of the wrong type is an error naming the key, the type and the value;
- a ``Literal[...]`` field only accepts its choices (the error lists them);
- ``__post_init__`` of a config class may raise ``ConfigError`` for range checks.

Overrides are ``--key value`` pairs (``--model.depth 4`` for nested keys); values
are parsed as yaml scalars/lists (``--lr 5e-5``, ``--flag true``, ``--ids [1,2]``).
"""
from __future__ import annotations

import dataclasses
import shlex
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from flowse.utils.fileio import write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config key or value; the message names it and the allowed choices."""


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {list(choices)}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not match {' or '.join(_type_name(a) for a in args)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        conv = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(conv) if origin is tuple else conv
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(k, kt, where): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {tp}")


def _build(cls: type[T], data: dict, where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; allowed keys: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{where + '.' if where else ''}{name}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def _set_nested(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    d = data
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override --{dotted}: {k} is not a section")
    d[keys[-1]] = value


def parse_overrides(args: list[str] | str | None) -> dict:
    """``["--a.b", "3", "--c", "x"]`` (or the same as one string) -> ``{"a": {"b": 3}, "c": "x"}``."""
    if not args:
        return {}
    if isinstance(args, str):
        args = shlex.split(args)
    out: dict = {}
    i = 0
    while i < len(args):
        key = args[i]
        if not key.startswith("--"):
            raise ConfigError(f"override {key!r}: expected --key value")
        key = key[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override --{key} has no value")
            raw = args[i + 1]
            i += 2
        _set_nested(out, key.replace("-", "_"), yaml.safe_load(raw) if raw != "" else "")
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str) -> dict:
    """The mapping of a yaml file; a missing file, bad yaml or another top level is a ``ConfigError``."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid yaml: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def load_known_sections(cls: type[T], path: str) -> T:
    """``cls`` from the top-level keys of the yaml at ``path`` that ``cls`` has, ignoring the others.

    For files written by a stage whose config holds more than one part reads back (a model dir's
    training config, a vocoder dir's stage-3 config)."""
    known = {f.name for f in dataclasses.fields(cls)}
    return load_config(cls, path, {}, keep=known)


def load_config(cls: type[T], path: str | None = None, overrides: list[str] | str | dict | None = None,
                keep: set[str] | None = None) -> T:
    """Build ``cls`` from the yaml at ``path`` (optional) with CLI ``overrides`` applied.

    ``keep``: only these top-level keys of the yaml are read (see ``load_known_sections``)."""
    data = read_yaml(path) if path else {}
    if keep is not None:
        data = {k: v for k, v in data.items() if k in keep}
    over = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    data = _merge(data, over)
    try:
        return _build(cls, data, "")
    except ConfigError as e:
        raise ConfigError(f"{path or cls.__name__}: {e}") from None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str) -> None:
    """Write the resolved config (what was actually used) as yaml, atomically."""
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None))


def check(cond: bool, msg: str) -> None:
    """Range check helper for ``__post_init__`` methods."""
    if not cond:
        raise ConfigError(msg)
