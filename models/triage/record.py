"""The canonical triage record: fields, units, plausibility ranges and validation, declared once.

Every edge that brings triage data in (dataset adapters, the canonical CSV, the HTTP API) validates against the
fields declared here (one record by :func:`validate_record`, a frame by
:func:`models.triage.record_frame.validate_frame`), so a range or a vocabulary cannot drift between training and
serving.

Missing values are allowed where they are clinically usual and are carried as missing (``None`` in a
record, ``NaN`` in a frame): nothing is silently imputed to a normal value here. Models see missingness
explicitly through indicator features (see :mod:`models.triage.features`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from models.errors import InputValidationError, RecordValidationErrors


@dataclass(frozen=True)
class NumericField:
    """A numeric field with its unit and plausibility range (inclusive)."""

    name: str
    unit: str
    low: float
    high: float
    description: str
    integer: bool = False
    required: bool = False


@dataclass(frozen=True)
class CategoricalField:
    """A categorical field with its allowed values."""

    name: str
    values: tuple[str, ...]
    description: str
    required: bool = False


NUMERIC_FIELDS: Final[tuple[NumericField, ...]] = (
    NumericField("age_years", "years", 0, 120, "age at arrival", required=True),
    NumericField("heart_rate", "beats/min", 20, 300, "pulse at triage", integer=False),
    NumericField("resp_rate", "breaths/min", 0, 80, "respiration rate at triage"),
    NumericField("sbp", "mmHg", 30, 300, "systolic blood pressure at triage"),
    NumericField("dbp", "mmHg", 10, 200, "diastolic blood pressure at triage"),
    NumericField("spo2", "%", 50, 100, "peripheral oxygen saturation at triage"),
    NumericField("temperature_c", "degC", 25, 45, "body temperature at triage"),
    NumericField("gcs", "points", 3, 15, "Glasgow Coma Scale total", integer=True),
    NumericField("pain_score", "points", 0, 10, "pain on a 0-10 numeric rating scale", integer=True),
)

SEX_VALUES: Final = ("female", "male", "unknown")
ARRIVAL_MODES: Final = ("ambulance", "walk_in", "other")
#: ACVPU: Alert, new Confusion, responds to Voice, responds to Pain, Unresponsive.
CONSCIOUSNESS_LEVELS: Final = ("A", "C", "V", "P", "U")

CATEGORICAL_FIELDS: Final[tuple[CategoricalField, ...]] = (
    CategoricalField("sex", SEX_VALUES, "sex recorded at registration", required=True),
    CategoricalField("arrival_mode", ARRIVAL_MODES, "ambulance, self-presenting (walk_in) or other"),
    CategoricalField("consciousness", CONSCIOUSNESS_LEVELS, "ACVPU at triage"),
)

#: ``spo2_scale_2``: the clinician has confirmed hypercapnic respiratory failure, so NEWS2 scores SpO2 on
#: scale 2 (RCP 2017). It changes NEWS2 only and is never a model input.
BOOLEAN_FIELDS: Final[tuple[str, ...]] = ("on_supplemental_oxygen", "spo2_scale_2")

#: Free-text / identifier fields: carried, length-limited, never used as numbers.
TEXT_FIELDS: Final[dict[str, int]] = {
    "chief_complaint": 500,
    "chief_complaint_code": 64,
    "ethnicity": 64,
    "site": 64,
}

DATETIME_FIELDS: Final[tuple[str, ...]] = ("arrival_time",)

NUMERIC_BY_NAME: Final[dict[str, NumericField]] = {f.name: f for f in NUMERIC_FIELDS}
CATEGORICAL_BY_NAME: Final[dict[str, CategoricalField]] = {f.name: f for f in CATEGORICAL_FIELDS}

RECORD_FIELDS: Final[tuple[str, ...]] = (
    *(f.name for f in NUMERIC_FIELDS),
    *(f.name for f in CATEGORICAL_FIELDS),
    *BOOLEAN_FIELDS,
    *TEXT_FIELDS,
    *DATETIME_FIELDS,
)

#: Fields that are never model inputs even though the record carries them (fairness audit, provenance).
NON_FEATURE_FIELDS: Final[tuple[str, ...]] = (
    "ethnicity",
    "site",
    "chief_complaint_code",
    "arrival_time",
    "spo2_scale_2",
)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def _check_numeric(spec: NumericField, value: Any, row: int | None) -> float | None:
    if _is_missing(value):
        if spec.required:
            raise InputValidationError(spec.name, f"'{spec.name}' is required", row)
        return None
    if isinstance(value, bool):
        raise InputValidationError(spec.name, f"'{spec.name}' must be a number; got a boolean", row)
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InputValidationError(
            spec.name, f"'{spec.name}' must be a number in {spec.unit}; got {str(value)[:32]!r}", row
        ) from exc
    if not math.isfinite(number):
        raise InputValidationError(spec.name, f"'{spec.name}' must be finite; got {number}", row)
    if not spec.low <= number <= spec.high:
        raise InputValidationError(
            spec.name,
            f"'{spec.name}' must be in [{spec.low:g}, {spec.high:g}] {spec.unit}; got {number:g}",
            row,
        )
    if spec.integer and number != int(number):
        raise InputValidationError(spec.name, f"'{spec.name}' must be a whole number; got {number:g}", row)
    return number


def _check_categorical(spec: CategoricalField, value: Any, row: int | None) -> str | None:
    if _is_missing(value):
        if spec.required:
            raise InputValidationError(spec.name, f"'{spec.name}' is required", row)
        return None
    text = str(value).strip()
    # Accept case-insensitive spellings of the canonical values.
    for allowed in spec.values:
        if text.lower() == allowed.lower():
            return allowed
    raise InputValidationError(spec.name, f"'{spec.name}' must be one of {list(spec.values)}; got {text[:32]!r}", row)


#: Texts read as true and as false in a boolean field (case-insensitive, stripped).
TRUE_TEXTS: Final = frozenset({"true", "1", "yes", "y"})
FALSE_TEXTS: Final = frozenset({"false", "0", "no", "n"})


def _check_boolean(name: str, value: Any, row: int | None) -> bool | None:
    if _is_missing(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE_TEXTS:
        return True
    if text in FALSE_TEXTS:
        return False
    raise InputValidationError(name, f"'{name}' must be true or false; got {str(value)[:16]!r}", row)


def _check_text(name: str, value: Any, row: int | None) -> str | None:
    if _is_missing(value):
        return None
    if not isinstance(value, str):
        value = str(value)
    limit = TEXT_FIELDS[name]
    if len(value) > limit:
        raise InputValidationError(name, f"'{name}' must be at most {limit} characters; got {len(value)}", row)
    return value.strip()


def _check_datetime(name: str, value: Any, row: int | None) -> datetime | None:
    if _is_missing(value):
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise InputValidationError(
            name, f"'{name}' must be an ISO 8601 date-time; got {str(value)[:32]!r}", row
        ) from exc


def validate_record(raw: Mapping[str, Any], row: int | None = None) -> dict[str, Any]:
    """Validate one triage record and return it in canonical form.

    Every problem is collected, so a client learns all of them at once. Unknown keys are refused: a typo in
    a field name must not silently drop a vital sign.

    Parameters
    ----------
    raw : Mapping
        Field name to value. Missing optional fields may be absent or ``None``.
    row : int, optional
        Data row number, used in error messages for tabular inputs.

    Returns
    -------
    dict
        Every field of :data:`RECORD_FIELDS`; missing values are ``None``.

    Raises
    ------
    RecordValidationErrors
        With one :class:`InputValidationError` per problem.
    """
    errors: list[InputValidationError] = []
    unknown = sorted(set(raw) - set(RECORD_FIELDS))
    for key in unknown:
        errors.append(InputValidationError(str(key)[:64], f"'{str(key)[:64]}' is not a triage record field", row))
    out: dict[str, Any] = {}
    checks: list[tuple[str, Any]] = [
        *((f.name, lambda v, f=f: _check_numeric(f, v, row)) for f in NUMERIC_FIELDS),
        *((f.name, lambda v, f=f: _check_categorical(f, v, row)) for f in CATEGORICAL_FIELDS),
        *((n, lambda v, n=n: _check_boolean(n, v, row)) for n in BOOLEAN_FIELDS),
        *((n, lambda v, n=n: _check_text(n, v, row)) for n in TEXT_FIELDS),
        *((n, lambda v, n=n: _check_datetime(n, v, row)) for n in DATETIME_FIELDS),
    ]
    for name, check in checks:
        try:
            out[name] = check(raw.get(name))
        except InputValidationError as exc:
            errors.append(exc)
    if not errors and out.get("consciousness") is None and out.get("gcs") is not None:
        out["consciousness"] = consciousness_from_gcs(out["gcs"])
    if not errors and out["sbp"] is not None and out["dbp"] is not None and out["dbp"] >= out["sbp"]:
        errors.append(
            InputValidationError("dbp", f"'dbp' must be below 'sbp'; got dbp {out['dbp']:g} >= sbp {out['sbp']:g}", row)
        )
    if errors:
        raise RecordValidationErrors(errors)
    return out


def consciousness_from_gcs(gcs: float) -> str:
    """Map a GCS total to ACVPU when ACVPU itself was not recorded.

    GCS 15 is Alert; 9-14 is treated as responding to Voice, 4-8 to Pain, 3 Unresponsive (a common,
    conservative correspondence: Kelly et al., Emerg Med J 2004). New confusion cannot be inferred from GCS
    15 and must be recorded as ACVPU 'C' by the triage nurse.
    """
    if gcs >= 15:
        return "A"
    if gcs >= 9:
        return "V"
    if gcs >= 4:
        return "P"
    return "U"
