"""Shape checks of the CDS Hooks / FHIR JSON that :mod:`serving.fhir.record` reads: each returns the value or raises.

A value that is not of the expected shape raises :class:`~models.errors.InputValidationError` whose ``field`` is its
JSON path; messages say what was expected and what kind of thing was found (:func:`kind`), never the value, so no
patient data reaches an error or a log. :func:`require_aware` checks the ``now`` that every public FHIR function
takes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from models.errors import InputValidationError

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PATIENT_REF = re.compile(r"(?:^|/)(Patient|Group|Device|Location)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_DATETIME = re.compile(
    r"\d{4}(?:-\d{2}(?:-\d{2}(?P<time>T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.\[\]{}/%:_|]{1,40}")


def kind(value: Any) -> str:
    """What kind of JSON value ``value`` is ("a string", "an object"...), for messages that never echo it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return f"a {type(value).__name__}"


def token(value: Any) -> str:
    """Echo a code-like value (a hook name, a unit) only when it cannot carry free text."""
    if isinstance(value, str) and TOKEN_RE.fullmatch(value):
        return repr(value)
    return "a value of another form" if isinstance(value, str) else kind(value)


def json_object(value: Any, path: str) -> Mapping[str, Any]:
    """``value`` when it is a JSON object."""
    if not isinstance(value, Mapping):
        raise InputValidationError(path, f"'{path}' must be a JSON object; got {kind(value)}")
    return value


def json_array(value: Any, path: str) -> list[Any]:
    """``value`` when it is a JSON array."""
    if not isinstance(value, list):
        raise InputValidationError(path, f"'{path}' must be a JSON array; got {kind(value)}")
    return value


def json_string(value: Any, path: str) -> str:
    """``value`` when it is a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        got = "an empty string" if isinstance(value, str) else kind(value)
        raise InputValidationError(path, f"'{path}' must be a non-empty string; got {got}")
    return value


def optional_string(holder: Mapping[str, Any], key: str, path: str) -> str | None:
    """``holder[key]`` when it is a non-empty string; None when absent or null."""
    value = holder.get(key)
    return None if value is None else json_string(value, f"{path}.{key}")


def fhir_id(value: Any, path: str) -> str:
    """``value`` when it is a FHIR id (1-64 of ``A-Z a-z 0-9 - .``)."""
    if not isinstance(value, str) or not _FHIR_ID.fullmatch(value):
        got = "a string of another form" if isinstance(value, str) else kind(value)
        raise InputValidationError(path, f"'{path}' must be a FHIR id (1-64 of A-Z a-z 0-9 - .); got {got}")
    return value


def json_number(value: Any, path: str) -> float:
    """``value`` as a float when it is a finite JSON number (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputValidationError(path, f"'{path}' must be a number; got {kind(value)}")
    try:
        number = float(value)
    except OverflowError as exc:
        raise InputValidationError(path, f"'{path}' must be a finite number; got one too large") from exc
    if not math.isfinite(number):
        raise InputValidationError(path, f"'{path}' must be a finite number; got {number}")
    return number


def require_aware(now: datetime) -> None:
    """Raise ValueError unless ``now`` is a timezone-aware datetime."""
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def fhir_datetime(value: Any, path: str) -> datetime | None:
    """A FHIR dateTime/instant as an aware datetime; None when it has no time of day."""
    if not isinstance(value, str):
        raise InputValidationError(path, f"'{path}' must be a FHIR dateTime string; got {kind(value)}")
    match = _DATETIME.fullmatch(value.strip())
    if match is None:
        raise InputValidationError(
            path, f"'{path}' must be a FHIR dateTime (YYYY-MM-DDThh:mm:ss+zz:zz); got a string of another form"
        )
    if match["time"] is None:
        return None
    if match["tz"] is None:
        raise InputValidationError(path, f"'{path}' has a time of day but no time zone, which FHIR requires")
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise InputValidationError(path, f"'{path}' is not a valid date-time (a field is out of range)") from exc


def optional_array(holder: Mapping[str, Any], key: str, path: str) -> list[Any]:
    """An optional array element: [] when absent."""
    value = holder.get(key)
    return [] if value is None else json_array(value, f"{path}.{key}")


def codings_of(concept: Any, path: str) -> list[tuple[str | None, str | None, str | None]]:
    """(system, code, display) of each coding of a CodeableConcept."""
    concept = json_object(concept, path)
    out = []
    for i, coding in enumerate(optional_array(concept, "coding", path)):
        cpath = f"{path}.coding[{i}]"
        coding = json_object(coding, cpath)
        out.append(
            (
                optional_string(coding, "system", cpath),
                optional_string(coding, "code", cpath),
                optional_string(coding, "display", cpath),
            )
        )
    return out


def check_subject(resource: Mapping[str, Any], path: str, patient_id: str) -> bool:
    """Raise when the resource is about another patient; False when its subject is not a patient at all."""
    if resource.get("subject") is None:
        return True
    subject = json_object(resource["subject"], f"{path}.subject")
    reference = optional_string(subject, "reference", f"{path}.subject")
    match = _PATIENT_REF.search(reference) if reference else None
    if match is None:
        return True  # no literal reference, or a bundle-internal one: nothing to compare
    if match[1] != "Patient":
        return False
    if match[2] != patient_id:
        raise InputValidationError(
            f"{path}.subject.reference",
            f"'{path}.subject.reference' refers to a different patient than context.patientId",
        )
    return True
