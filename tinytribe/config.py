"""Typed dataclass configs, filled from JSON-like dicts and ``--a.b=value`` overrides.

Dataclasses are the single source of truth (nanoGPT's style); JSON files and command lines only fill
them in. Unknown keys and values of the wrong type are errors that name the key::

    >>> from_dict(BudgetConfig, {"kaggle_session_h": 9, "colour": 1})
    ConfigError: BudgetConfig: unknown key 'colour' (known: kaggle_session_h, ...)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key is wrong; the message names it."""


def _check_value(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for arm in args:
            try:
                return _check_value(arm, value, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_check_value(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_check_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_check_value(kt, k, where): _check_value(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """Resolved type hints and init fields of a dataclass (resolving hints is slow: do it once)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls) if f.init}


def from_dict(cls: type[T], data: dict[str, Any], *, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and wrong types.

    Args:
        cls: a dataclass type; nested dataclass fields are built recursively.
        data: the values; keys missing from it take the field defaults.
        where: prefix for error messages (a file name or key path); defaults to the class name.
    """
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints, fields = _fields(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    kwargs = {name: _check_value(hints[name], data[name], f"{where}.{name}") for name in fields if name in data}
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass (or nesting of them) as plain JSON-ready values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_json_config(cls: type[T], path: str | Path) -> T:
    """Read a JSON file into dataclass ``cls``; errors name the file and the key."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    return from_dict(cls, data, where=str(path))


def parse_assignment(text: str, what: str = "override") -> tuple[str, Any]:
    """``key=value`` as ``(key, value)``: the value parsed as JSON when it parses (``4``, ``0.1``, ``true``,
    ``[1,2]``), else kept as the string. ``what`` names the argument in the error.

    Raises:
        ConfigError: ``text`` has no ``=``.
    """
    key, sep, raw = text.partition("=")
    if not sep:
        raise ConfigError(f"{what} {text!r}: expected key=value")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def apply_overrides(cfg: T, overrides: list[str], *, prefix: str = "") -> T:
    """Return a copy of ``cfg`` with ``key.path=value`` overrides applied.

    Values are parsed as JSON when they parse (``4``, ``0.1``, ``true``, ``[1,2]``), else kept as
    strings. A leading ``--`` and a ``prefix`` such as ``"model."`` are stripped.

    Raises:
        ConfigError: naming the override whose key is unknown or whose value has the wrong type.
    """
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = parse_assignment(item[2:] if item.startswith("--") else item)
        if prefix and key.startswith(prefix):
            key = key[len(prefix):]
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {item!r}: unknown key {p!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {parts[-1]!r} (known: {', '.join(node)})")
        node[parts[-1]] = value
    return from_dict(type(cfg), data, where=type(cfg).__name__)
