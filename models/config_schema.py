"""Configuration files as pydantic models, and their errors as :class:`~models.errors.ConfigError` naming the key.

The training configs (:mod:`training.config`) and the release policy (:mod:`fairness.policy`) declare their keys,
types and ranges on pydantic models derived from :class:`ConfigModel` (unknown keys refused, frozen);
:func:`validate_config` validates a parsed file and turns pydantic's ``ValidationError`` into a ``ConfigError``
whose message names the key by its dotted path (``"config key 'max_gap.under_triage_rate' must be in [0, 1];
got 1.5"``, ``"config key 'history[0].date' must match ..."``). A validator that checks several keys together
raises :func:`key_problem`, naming the key below the validated value that is at fault.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from models.errors import ConfigError

__all__ = ["ConfigModel", "key_problem", "validate_config"]

M = TypeVar("M", bound=BaseModel)

#: What a value of the wrong type must be instead, by pydantic's error type.
_KINDS = {
    "int_type": "int",
    "float_type": "float",
    "string_type": "str",
    "bool_type": "bool",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_BOUNDS = {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}
_PROBLEM = "config_key"


class ConfigModel(BaseModel):
    """Base of every configuration model: an unknown key is an error, and a validated config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def key_problem(problem: str, *key: str | int) -> PydanticCustomError:
    """The error a validator raises when ``key`` (a path below the validated value; itself when empty) breaks a
    rule that :func:`validate_config` cannot read from the annotations; ``problem`` completes "config key '...'"
    (``"is also in gated_data"``)."""
    return PydanticCustomError(_PROBLEM, "{problem}", {"problem": problem, "key": key})


def validate_config(model: type[M], data: object, what: str) -> M:
    """``model`` validated from ``data`` (a parsed file); ``what`` names the whole file in errors ("release policy").

    Raises
    ------
    models.errors.ConfigError
        Naming the first key at fault (every unknown key of the same mapping at once), chained to pydantic's error.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, model, what) from exc


def _config_error(exc: ValidationError, model: type[BaseModel], what: str) -> ConfigError:
    """The :class:`ConfigError` for the first problem pydantic found validating ``model``, naming the key."""
    errors = exc.errors()
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        parent = extra[0]["loc"][:-1]
        unknown = [_path(e["loc"]) for e in extra if e["loc"][:-1] == parent]
        annotation, _ = _declared(model, parent)
        known = sorted(annotation.model_fields) if _is_model(annotation) else []
        inside = f" in '{_path(parent)}'" if parent else ""
        return ConfigError(f"unknown config key(s) {unknown}{inside}; known keys: {known}")
    return ConfigError(_message(errors[0], model, what))


def _message(error: ErrorDetails, model: type[BaseModel], what: str) -> str:
    kind, value, ctx = error["type"], error["input"], error.get("ctx") or {}
    loc = tuple(part for part in error["loc"] if part != "[key]")  # a mapping's key is named by its own path
    if kind == _PROBLEM:
        loc += tuple(ctx["key"])
    path = _path(loc)
    where = f"config key '{path}'" if path else what
    if kind == "missing":
        parent = f" (missing from '{_path(loc[:-1])}')" if len(loc) > 1 else ""
        return f"{where} is required{parent}"
    if kind in _KINDS:
        return f"{where} must be {_KINDS[kind]}; got {type(value).__name__}"
    if kind in _BOUNDS:
        annotation, constraints = _declared(model, loc)
        shown = float(value) if annotation is float and not isinstance(value, bool) else value
        return f"{where} must be {_range(constraints)}; got {shown}"
    if kind == "literal_error":
        return f"{where} must be one of {ctx['expected']}; got {value!r}"
    if kind == "string_too_short":
        return f"{where} must be a non-empty string; got {value!r}"
    if kind == "string_pattern_mismatch":
        return f"{where} must match {ctx['pattern']}; got {value!r}"
    if kind == "too_short":
        return f"{where} must have at least {ctx['min_length']} item(s); got {value!r}"
    if kind == "multiple_of":
        return f"{where} must be a multiple of {ctx['multiple_of']}; got {value}"
    if kind == _PROBLEM:
        return f"{where} {error['msg']}"
    return f"{where}: {error['msg']}"


def _path(loc: Sequence[str | int]) -> str:
    """``("history", 0, "date")`` -> ``"history[0].date"``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _range(constraints: Sequence[Any]) -> str:
    """``[1, 500]``, ``(0, 0.5)``, ``>= 1``: the interval the constraints declare."""
    low: tuple[Any, str] | None = None
    high: tuple[Any, str] | None = None
    for c in constraints:
        if isinstance(c, annotated_types.Ge):
            low = (c.ge, "[")
        elif isinstance(c, annotated_types.Gt):
            low = (c.gt, "(")
        elif isinstance(c, annotated_types.Le):
            high = (c.le, "]")
        elif isinstance(c, annotated_types.Lt):
            high = (c.lt, ")")
    if low and high:
        return f"in {low[1]}{_number(low[0])}, {_number(high[0])}{high[1]}"
    if low:
        return f"{'>=' if low[1] == '[' else '>'} {_number(low[0])}"
    if high:
        return f"{'<=' if high[1] == ']' else '<'} {_number(high[0])}"
    return "in range"


def _number(bound: Any) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """``annotation`` without ``Annotated`` and ``| None``, and the constraints that ``Annotated`` declared."""
    constraints: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *metadata = get_args(annotation)
            for item in metadata:
                constraints += item.metadata if isinstance(item, FieldInfo) else [item]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation, constraints
            annotation = members[0]
        else:
            return annotation, constraints


def _declared(model: type[BaseModel], loc: Sequence[str | int]) -> tuple[Any, list[Any]]:
    """The type declared at ``loc`` below ``model`` and its constraints (``None, []`` when not found)."""
    annotation: Any = model
    constraints: list[Any] = []
    for part in loc:
        annotation, _ = _unwrap(annotation)
        origin = get_origin(annotation)
        if _is_model(annotation) and str(part) in annotation.model_fields:
            field = annotation.model_fields[str(part)]
            annotation, constraints = field.annotation, list(field.metadata)
        elif origin in (dict, Mapping):
            annotation, constraints = get_args(annotation)[1], []
        elif origin in (list, tuple, Sequence) and isinstance(part, int):
            annotation, constraints = get_args(annotation)[0], []
        else:
            return None, []
    annotation, declared = _unwrap(annotation)
    return annotation, constraints + declared
