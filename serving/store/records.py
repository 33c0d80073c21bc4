"""What the serving store keeps, as Python values: API keys, audit records and the audit chain's hash.

The dataclasses :class:`ApiKeyInfo` and :class:`AuditRecord`, the key format (``vgl_<key_id>_<secret>``,
:func:`split_key`), the chain hash an external verifier recomputes (:func:`audit_row_hash` over canonical JSON),
and the checks :class:`serving.store.database.Store` runs on what it is asked to write. No database here.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models.errors import InputValidationError
from models.outcomes import format_utc

__all__ = [
    "GENESIS_HASH",
    "KEY_ID_ALPHABET",
    "KEY_ID_LEN",
    "KEY_PREFIX",
    "MAX_CLIENT",
    "SCOPES",
    "SECRET_BYTES",
    "ApiKeyInfo",
    "AuditRecord",
    "audit_row_hash",
    "canonical_json",
    "check_audit",
    "check_scopes",
    "check_text",
    "split_key",
    "utc_now",
]

SCOPES: tuple[str, ...] = ("triage", "imaging", "outcomes", "admin")
"""Every scope a key may hold, in the order keys list them."""

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first audit row."""

KEY_PREFIX = "vgl_"
KEY_ID_ALPHABET = string.ascii_letters + string.digits
KEY_ID_LEN = 12
SECRET_BYTES = 32
# key_id is alphanumeric (a subset of url-safe) so the "_" after it is unambiguous; the secret is
# secrets.token_urlsafe(32): 43 characters of [A-Za-z0-9_-].
_KEY_RE = re.compile(rf"{KEY_PREFIX}([A-Za-z0-9]{{{KEY_ID_LEN}}})_([A-Za-z0-9_-]{{43}})")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
MAX_CLIENT = 64
# Longest accepted value of each free-text audit field (columns are TEXT; the limit is checked here).
_AUDIT_TEXT_LIMITS = {"request_id": 128, "client": MAX_CLIENT, "route": 256, "model_name": 128, "model_version": 64}


@dataclass(frozen=True)
class ApiKeyInfo:
    """What the store knows about one API key; never the key itself.

    Attributes
    ----------
    key_id : str
        The 12-character public part of the key (``vgl_<key_id>_<secret>``); safe to log.
    client : str
        Who the key was issued to.
    scopes : tuple of str
        The scopes it grants, a subset of :data:`SCOPES` in that order.
    created_utc, revoked_utc : str, str or None
        ISO-8601 UTC times (``...Z``); ``revoked_utc`` is None while the key is live.
    """

    key_id: str
    client: str
    scopes: tuple[str, ...]
    created_utc: str
    revoked_utc: str | None


@dataclass(frozen=True)
class AuditRecord:
    """One prediction as the audit trail keeps it: who asked, which model answered, what it said.

    The input itself is not kept, only its sha256. ``seq``, ``prev_hash`` and ``row_hash`` are filled by
    :meth:`serving.store.database.Store.write_audit`; leave them None when writing.

    Attributes
    ----------
    request_id : str
        The request id the API returned to the caller.
    time_utc : str
        ISO-8601 UTC time ending in ``Z`` (see :func:`utc_now`).
    client : str
        The key id, or the client name, that made the request.
    route : str
        The API route (``/v1/triage``).
    model_name, model_version, model_sha256 : str
        The model that answered; ``model_sha256`` is lowercase hex, or ``""`` when no model ran.
    input_sha256 : str
        Lowercase sha256 hex of the request body as received, or ``""`` when there was none.
    output : dict
        The response (JSON-serialisable, no NaN); stored as canonical JSON text.
    status : int
        The HTTP status returned.
    seq : int or None
        Position in the chain, from 1, without gaps.
    prev_hash, row_hash : str or None
        The previous row's ``row_hash`` (:data:`GENESIS_HASH` for the first) and this row's.
    """

    request_id: str
    time_utc: str
    client: str
    route: str
    model_name: str
    model_version: str
    model_sha256: str
    input_sha256: str
    output: dict[str, Any]
    status: int
    seq: int | None = None
    prev_hash: str | None = None
    row_hash: str | None = None


def utc_now() -> str:
    """The current time as ISO-8601 UTC with milliseconds and a ``Z`` (``2025-01-31T12:00:00.123Z``)."""
    return format_utc(datetime.now(UTC))


def canonical_json(value: object) -> str:
    """``value`` as canonical JSON: sorted keys, no whitespace, UTF-8 (no ASCII escaping), no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def audit_row_hash(prev_hash: str, record: AuditRecord) -> str:
    """The chain hash of ``record``: ``sha256(prev_hash + canonical JSON)`` as lowercase hex.

    The canonical JSON is an object of every field of :class:`AuditRecord` except ``prev_hash`` and ``row_hash``
    (so including ``seq``), with sorted keys, ``","``/``":"`` separators, UTF-8 (no ASCII escaping) and no NaN.
    An external verifier needs nothing else.

    Parameters
    ----------
    prev_hash : str
        The previous row's ``row_hash``, or :data:`GENESIS_HASH`.
    record : AuditRecord
        The row, with ``seq`` set.

    Returns
    -------
    str
        64 lowercase hex characters.
    """
    body = {
        "seq": record.seq,
        "request_id": record.request_id,
        "time_utc": record.time_utc,
        "client": record.client,
        "route": record.route,
        "model_name": record.model_name,
        "model_version": record.model_version,
        "model_sha256": record.model_sha256,
        "input_sha256": record.input_sha256,
        "output": record.output,
        "status": record.status,
    }
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


def split_key(presented: object) -> tuple[str, str] | None:
    """Split an API key ``vgl_<key_id>_<secret>`` into ``(key_id, secret)``; None when it is not one."""
    if not isinstance(presented, str):
        return None
    match = _KEY_RE.fullmatch(presented)
    return (match.group(1), match.group(2)) if match else None


def check_text(field: str, value: object, limit: int) -> str:
    """``value`` when it is a non-empty printable string of at most ``limit`` characters."""
    if not isinstance(value, str):
        raise InputValidationError(field, f"The '{field}' field must be a string; got {type(value).__name__}")
    if not value:
        raise InputValidationError(field, f"The '{field}' field must not be empty")
    if len(value) > limit:
        raise InputValidationError(field, f"The '{field}' field must be at most {limit} characters; got {len(value)}")
    if not value.isprintable():  # control, format and line/paragraph characters; a plain space is fine
        raise InputValidationError(field, f"The '{field}' field must not contain control characters")
    return value


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """``scopes`` in :data:`SCOPES` order, when they name at least one scope and only known ones."""
    if isinstance(scopes, str):
        raise InputValidationError(
            "scopes", f"The 'scopes' field must be a list of scope names from {SCOPES}, not a single string"
        )
    given = list(scopes)
    unknown = [s for s in given if s not in SCOPES]
    if unknown:
        raise InputValidationError("scopes", f"The 'scopes' field must hold only {SCOPES}; got {unknown[0]!r:.40}")
    if not given:
        raise InputValidationError("scopes", f"The 'scopes' field must name at least one of {SCOPES}")
    return tuple(s for s in SCOPES if s in given)


def check_audit(record: AuditRecord) -> str:
    """Validate ``record`` for writing; return its output as canonical JSON."""
    if not isinstance(record, AuditRecord):
        raise InputValidationError("record", f"write_audit needs an AuditRecord; got {type(record).__name__}")
    if record.seq is not None or record.prev_hash is not None or record.row_hash is not None:
        raise InputValidationError("seq", "seq, prev_hash and row_hash are assigned by the store; leave them None")
    for field, limit in _AUDIT_TEXT_LIMITS.items():
        check_text(field, getattr(record, field), limit)
    time_utc = check_text("time_utc", record.time_utc, 40)
    try:
        parsed = datetime.fromisoformat(time_utc)
    except ValueError:
        parsed = None
    if parsed is None or not time_utc.endswith("Z"):
        raise InputValidationError("time_utc", "The 'time_utc' field must be ISO-8601 UTC ending in 'Z'")
    for field in ("model_sha256", "input_sha256"):
        value = getattr(record, field)
        if not isinstance(value, str) or (value and not _HEX64_RE.fullmatch(value)):
            raise InputValidationError(field, f"The '{field}' field must be 64 lowercase hex characters or ''")
    if isinstance(record.status, bool) or not isinstance(record.status, int) or not 100 <= record.status <= 599:
        raise InputValidationError(
            "status", f"The 'status' field must be an HTTP status in [100, 599]; got {record.status!r:.20}"
        )
    if not isinstance(record.output, dict):
        raise InputValidationError("output", f"The 'output' field must be a dict; got {type(record.output).__name__}")
    try:
        return canonical_json(record.output)
    except (TypeError, ValueError) as exc:
        raise InputValidationError(
            "output", f"The 'output' field must be JSON-serialisable without NaN: {exc}"
        ) from exc
