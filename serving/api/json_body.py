"""Reading a JSON request body: the media type (415), the parse and the nesting depth (422 naming ``body``).

Shared by the routes that take JSON (the triage routes and the CDS Hooks service), so that every one of them
refuses the same bodies the same way.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from models.errors import InputValidationError
from serving.api.errors import ApiError

__all__ = ["MAX_JSON_DEPTH", "batch_items", "is_json", "nesting_exceeds", "parse_json", "read_json"]

#: Deepest nesting of arrays and objects a JSON body may have (a CDS Hooks request with FHIR resources needs ~10).
MAX_JSON_DEPTH = 64


def is_json(content_type: str | None, *extra: str) -> bool:
    """Whether ``content_type`` is JSON: ``application/json``, any ``application/*+json``, or one of ``extra``."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return kind in ("application/json", *extra) or (kind.startswith("application/") and kind.endswith("+json"))


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays and objects in ``value`` nest more than ``limit`` deep (a scalar is depth 0; iterative, so
    any depth is safe to check)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON; :class:`InputValidationError` naming ``body`` when it does not parse or nests arrays
    and objects deeper than :data:`MAX_JSON_DEPTH`.

    Deep nesting is refused before anything recurses over the value: ``json.loads`` itself raises RecursionError
    near Python's recursion limit (1,000 ``[`` in 2 KB), and so would ``json.dumps`` or a validator further on.
    """
    try:
        value = json.loads(raw)
    except RecursionError as exc:
        raise InputValidationError(
            "body", f"the body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels"
        ) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputValidationError("body", f"the body is not valid JSON: {type(exc).__name__}") from exc
    if nesting_exceeds(value, MAX_JSON_DEPTH):
        raise InputValidationError("body", f"the body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels")
    return value


async def read_json(request: Request) -> Any:
    """The request body as JSON: 415 for another media type, 422 naming ``body`` when it does not parse or nests
    too deep (:func:`parse_json`)."""
    if not is_json(request.headers.get("content-type")):
        raise ApiError(415, "send the record as application/json")
    return parse_json(await request.body())


def batch_items(body: Any, key: str, noun: str, limit: int, *, shown: str | None = None) -> list[Any]:
    """The items of a batch body ``{key: [...]}``: one to ``limit`` of them; else an error naming ``key``.

    ``noun`` names one item in the messages ("record"); ``shown`` what the list holds in the expected shape
    (default ``key``: ``{"records": [ ...triage records... ]}`` with ``shown="triage records"``).
    """
    if not isinstance(body, dict) or set(body) != {key} or not isinstance(body[key], list):
        raise InputValidationError(key, f'the body must be {{"{key}": [ ...{shown or key}... ]}}')
    items: list[Any] = body[key]
    if not items:
        raise InputValidationError(key, f"'{key}' must hold at least one {noun}")
    if len(items) > limit:
        raise InputValidationError(key, f"'{key}' may hold at most {limit} {noun}s; got {len(items)}")
    return items
