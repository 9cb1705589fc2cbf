"""Stage parameters as frozen dataclasses: one place for each default, type, bound and help text.

A field's ``metadata`` may hold ``help``, JSON-schema bounds (``minimum``, ``exclusiveMinimum``,
``maximum``, ``exclusiveMaximum``, ``enum``, ``minItems``) and ``identity=False`` for a field that
does not change the output (a file's location, whose content is fingerprinted instead).  From
the dataclass come the canonical JSON of a version, the checked construction from a mapping
(a DAG run's conf), the ``metaclip`` command-line flags and the Airflow ``Param`` schemas.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from metaclip_tasks.core.errors import CurationError

_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}
_BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "enum", "minItems")


@dataclasses.dataclass(frozen=True)
class NoParams:
    """A stage whose output depends on its inputs alone."""


def field_like(cls: type, name: str, *, default: Any = dataclasses.MISSING, help_suffix: str = "") -> Any:
    """A field described as the field ``name`` of the dataclass ``cls`` (its default unless another is
    given): one description for a parameter that two dataclasses take."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    metadata = {**f.metadata, "help": f.metadata.get("help", name) + help_suffix}
    return dataclasses.field(default=f.default if default is dataclasses.MISSING else default, metadata=metadata)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _split_optional(hint: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else hint), len(args) < len(typing.get_args(hint))
    return hint, False


def _item_type(hint: Any) -> Any | None:
    """For ``tuple[X, ...]``: X; for a fixed ``tuple[X, X]``: X; else None."""
    if typing.get_origin(hint) is not tuple:
        return None
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    return args[0] if args else str


def to_dict(params: Any) -> dict[str, Any]:
    """All fields, tuples as lists: the manifest's ``params``."""
    return json.loads(json.dumps(dataclasses.asdict(params)))


def identity(params: Any) -> dict[str, Any]:
    """The fields that decide the output: what a version hashes.  ``identity`` False: never (a path,
    a worker count); ``"when-set"``: only away from its default (a param added later whose default
    keeps the earlier output, so that adding it leaves every existing version as it was)."""
    full = to_dict(params)
    kept = {}
    for f in dataclasses.fields(params):
        mode = f.metadata.get("identity", True)
        if mode is False or (mode == "when-set" and full[f.name] == json.loads(json.dumps(f.default))):
            continue
        kept[f.name] = full[f.name]
    return kept


def _check_value(name: str, hint: Any, value: Any, meta: Mapping[str, Any]) -> Any:
    base, optional = _split_optional(hint)
    if value is None:
        if optional:
            return None
        raise CurationError(f"parameter {name} must not be empty")
    item = _item_type(base)
    if item is not None:
        if not isinstance(value, (list, tuple)):
            raise CurationError(f"parameter {name} must be a list, got {value!r}")
        fixed = [a for a in typing.get_args(base) if a is not Ellipsis]
        if Ellipsis not in typing.get_args(base) and len(value) != len(fixed):
            raise CurationError(f"parameter {name} must have {len(fixed)} items, got {len(value)}")
        if len(value) < meta.get("minItems", 0):
            raise CurationError(f"parameter {name} needs at least {meta['minItems']} item(s)")
        item_meta = {k: v for k, v in meta.items() if k != "minItems"}
        return tuple(_check_value(f"{name}[{i}]", item, v, item_meta) for i, v in enumerate(value))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if base in _JSON_TYPES and (type(value) is not base):
        raise CurationError(f"parameter {name} must be {_JSON_TYPES[base]}, got {value!r}")
    if "enum" in meta and value not in meta["enum"]:
        raise CurationError(f"parameter {name} must be one of {', '.join(map(str, meta['enum']))}, got {value!r}")
    for bound, ok, words in (
        ("minimum", lambda v, b: v >= b, ">="),
        ("exclusiveMinimum", lambda v, b: v > b, ">"),
        ("maximum", lambda v, b: v <= b, "<="),
        ("exclusiveMaximum", lambda v, b: v < b, "<"),
    ):
        if bound in meta and not ok(value, meta[bound]):
            raise CurationError(f"parameter {name} must be {words} {meta[bound]}, got {value!r}")
    return value


def from_mapping(cls: type, values: Mapping[str, Any]) -> Any:
    """``cls`` built from ``values`` (missing keys take their defaults), every value checked:
    a wrong type, an unknown key or a value out of bounds is an error naming the parameter."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise CurationError(f"unknown parameter(s) {', '.join(unknown)}: expected some of {', '.join(sorted(names))}")
    hints = _hints(cls)
    checked = {
        f.name: _check_value(f.name, hints[f.name], values[f.name], f.metadata)
        for f in dataclasses.fields(cls)
        if f.name in values
    }
    return cls(**checked)


def check(params: Any) -> Any:
    """``params`` with every field checked (types and bounds) as :func:`from_mapping` does."""
    return from_mapping(type(params), {f.name: getattr(params, f.name) for f in dataclasses.fields(params)})


def default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def json_schema(cls: type, name: str) -> dict[str, Any]:
    """The JSON schema of one field (an Airflow ``Param``'s type, bounds and description)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    base, optional = _split_optional(_hints(cls)[name])
    item = _item_type(base)
    bounds = {k: f.metadata[k] for k in _BOUNDS if k in f.metadata}
    if item is not None:
        item_bounds = {k: v for k, v in bounds.items() if k != "minItems"}
        schema: dict[str, Any] = {"type": "array", "items": {"type": _JSON_TYPES[item], **item_bounds}}
        schema.update({k: v for k, v in bounds.items() if k == "minItems"})
    else:
        schema = {"type": _JSON_TYPES[base], **bounds}
    if optional:
        schema["type"] = ["null", schema["type"]]  # not required in Airflow's trigger form
        if "enum" in schema:
            schema["enum"] = [None, *schema["enum"]]
    schema["description"] = f.metadata.get("help", name)
    schema["title"] = f.metadata.get("title", name.replace("_", " ").capitalize())
    return schema


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per field of ``cls``: the dataclass's type, default and help."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        base, _ = _split_optional(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        value = default(f)
        text = f"{f.metadata.get('help', '')} (default: {value if value is not dataclasses.MISSING else 'required'})"
        kwargs: dict[str, Any] = {"dest": f.name, "help": text.replace("%", "%%")}
        item = _item_type(base)
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif item is not None:
            kwargs.update(nargs="+", type=item)
        else:
            kwargs["type"] = base
            if "enum" in f.metadata:
                kwargs["choices"] = f.metadata["enum"]
        if value is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = argparse.SUPPRESS  # absent flags keep the dataclass default
        parser.add_argument(flag, **kwargs)


def from_arguments(cls: type, args: argparse.Namespace, **extra: Any) -> Any:
    """``cls`` from the parsed flags of :func:`add_arguments` (plus ``extra``), checked."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return from_mapping(cls, {**values, **extra})
