"""Config sections <-> the frozen dataclasses they configure, so every setting's default is defined once.

A default lives in its dataclass (`InnerConfig`, `SftConfig`, `RestemConfig`, ...), or in a dataclass instance
that `defaults.py` names for a domain (ARC's inner loop); `section` turns instances into an ml_collections
section, and `build` turns a (user-overridden) section back into an instance. A key table maps each config key
to the attribute path it sets, so config keys stay short and flat (`inner.lora_rank` -> `InnerConfig.lora.rank`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

import ml_collections

T = TypeVar("T")
Keys = Mapping[str, str]  # config key -> dotted attribute path in the dataclass


def own_fields(cls: type, *, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """The identity key table of a flat dataclass's fields (minus `exclude`)."""
    return {f.name: f.name for f in dataclasses.fields(cls) if f.name not in exclude}


def _get(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def _config_value(value: Any) -> Any:
    """A dataclass value as a config value: tuples of names as "a,b" (what a command line writes)."""
    return ",".join(value) if isinstance(value, tuple) else value


def section(*parts: tuple[Any, Keys]) -> ml_collections.ConfigDict:
    """One config section from (dataclass instance, key table) pairs; a key may appear in one part only."""
    values: dict[str, Any] = {}
    for obj, keys in parts:
        for key, path in keys.items():
            if key in values:
                raise ValueError(f"config key {key!r} is set by two dataclasses")
            values[key] = _config_value(_get(obj, path))
    return ml_collections.ConfigDict(values)


def _coerce(default: Any, value: Any) -> Any:
    """`value` as the type of the field's `default` (tuples of names also from "a, b" strings)."""
    if isinstance(default, tuple):
        items = value.split(",") if isinstance(value, str) else value
        return tuple(str(t).strip() for t in items if str(t).strip())
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, (int, float, str)):
        return type(default)(value)
    return value


def _replace(obj: T, updates: dict[tuple[str, ...], Any]) -> T:
    direct = {path[0]: value for path, value in updates.items() if len(path) == 1}
    nested: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in updates.items():
        if len(path) > 1:
            nested.setdefault(path[0], {})[path[1:]] = value
    changes = {name: _coerce(getattr(obj, name), value) for name, value in direct.items()}
    changes |= {name: _replace(getattr(obj, name), sub) for name, sub in nested.items()}
    return dataclasses.replace(obj, **changes)


def build(default: T, values: Mapping[str, Any], keys: Keys, **fixed: Any) -> T:
    """`default` with every key of `keys` present in `values` applied (then the `fixed` fields). The dataclasses'
    own checks run on the result: a bad value raises ValueError."""
    updates = {tuple(path.split(".")): values[key] for key, path in keys.items() if key in values}
    return dataclasses.replace(_replace(default, updates), **fixed)
