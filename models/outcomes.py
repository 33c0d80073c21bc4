"""What happened to a patient after a prediction: the outcome a site feeds back, validated at the edge.

An outcome links to one audited prediction, by its ``audit_id`` (the seq of the prediction's audit row, returned
in every triage and second-read answer), by its ``request_id`` (only when that request made one prediction: a
batch shares its request id between its records) or, for a radiologist's read, by the image's
``sop_instance_uid`` (only when Vigil read that instance once). It carries the time the outcome was observed and
either a triage outcome (``admitted``, ``critical_care``, ``died_in_ed``, the senior clinician's ``final_acuity``)
or an imaging truth (the reporting radiologist's read, 0 or 1 per finding of :data:`models.labels.IMAGING_FINDINGS`).
Monitoring (per-group calibration, under-triage) reads these beside the audit trail; nothing here changes a
prediction.

Validation is strict, as for a triage record: an unknown key, a wrong type or an out-of-range value is an
:class:`models.errors.InputValidationError` naming the field (prefixed with ``where`` for a batch item).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from models.errors import InputValidationError
from models.labels import IMAGING_FINDINGS

__all__ = [
    "LINKS",
    "MAX_REQUEST_ID",
    "OUTCOME_TASKS",
    "TRIAGE_OUTCOMES",
    "Outcome",
    "format_utc",
    "parse_utc",
    "validate_outcome",
]

OUTCOME_TASKS: Final = ("triage", "imaging")
#: The triage outcome fields and what each means; every one is optional, at least one is required.
TRIAGE_OUTCOMES: Final = {
    "admitted": "admitted to hospital from the ED (true/false)",
    "critical_care": "admitted to critical care (ICU/HDU) or died in the ED (true/false)",
    "died_in_ed": "died in the ED (true/false)",
    "final_acuity": "the senior clinician's final acuity, 1 (most urgent) to 5",
}
MAX_REQUEST_ID: Final = 128
_KEYS: Final = {"audit_id", "request_id", "sop_instance_uid", "observed_utc", "triage", "imaging"}
LINKS: Final = ("audit_id", "request_id", "sop_instance_uid")
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


@dataclass(frozen=True)
class Outcome:
    """One validated outcome.

    Attributes
    ----------
    task : {"triage", "imaging"}
    audit_id, request_id, sop_instance_uid : int or None, str or None, str or None
        Exactly one is set: the prediction it belongs to (``sop_instance_uid`` for an imaging outcome only).
    observed_utc : str
        When the outcome was observed, ISO-8601 UTC (``...Z``), never before the prediction (checked by the store).
    values : dict
        Triage: a subset of :data:`TRIAGE_OUTCOMES` (bools; ``final_acuity`` int 1-5). Imaging:
        ``{"findings": {finding: 0 or 1}}``.
    """

    task: Literal["triage", "imaging"]
    audit_id: int | None
    request_id: str | None
    observed_utc: str
    values: dict[str, Any]
    sop_instance_uid: str | None = None

    @property
    def link(self) -> str:
        """The field naming the prediction: ``audit_id``, ``request_id`` or ``sop_instance_uid``."""
        return next(name for name in LINKS if getattr(self, name) is not None)


def parse_utc(field: str, value: Any) -> datetime:
    """An ISO-8601 time with a UTC offset (``Z`` or ``+00:00``), as an aware datetime; else an error naming it."""
    if not isinstance(value, str) or len(value) > 40:
        raise InputValidationError(field, f"'{field}' must be an ISO-8601 UTC time such as 2026-12-07T10:30:00Z")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise InputValidationError(
            field, f"'{field}' must be an ISO-8601 UTC time such as 2026-12-07T10:30:00Z; got {value!r:.40}"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() != UTC.utcoffset(None):
        raise InputValidationError(field, f"'{field}' must be in UTC (end in 'Z' or '+00:00'); got {value!r:.40}")
    return parsed.astimezone(UTC)


def format_utc(moment: datetime) -> str:
    """An aware datetime as the audit trail writes times: ISO-8601 UTC with milliseconds and a ``Z``
    (``2025-01-31T12:00:00.123Z``), which sorts as text."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputValidationError(field, f"'{field}' must be true or false; got {type(value).__name__}")
    return value


def _triage(where: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InputValidationError(f"{where}triage", f"'{where}triage' must be an object of {sorted(TRIAGE_OUTCOMES)}")
    unknown = sorted(set(raw) - set(TRIAGE_OUTCOMES))
    if unknown:
        raise InputValidationError(
            f"{where}triage.{unknown[0]}", f"unknown triage outcome {unknown[0]!r:.40}; known: {list(TRIAGE_OUTCOMES)}"
        )
    values: dict[str, Any] = {}
    for name in ("admitted", "critical_care", "died_in_ed"):
        if raw.get(name) is not None:
            values[name] = _bool(f"{where}triage.{name}", raw[name])
    acuity = raw.get("final_acuity")
    if acuity is not None:
        if isinstance(acuity, bool) or not isinstance(acuity, int) or not 1 <= acuity <= 5:
            raise InputValidationError(
                f"{where}triage.final_acuity",
                f"'{where}triage.final_acuity' must be an integer 1-5; got {acuity!r:.20}",
            )
        values["final_acuity"] = acuity
    if not values:
        raise InputValidationError(
            f"{where}triage", f"'{where}triage' must give at least one of {list(TRIAGE_OUTCOMES)}"
        )
    if values.get("died_in_ed") and values.get("critical_care") is False:
        raise InputValidationError(
            f"{where}triage.critical_care",
            "a death in the ED counts as a critical outcome: 'critical_care' cannot be false when 'died_in_ed' is true",
        )
    return values


def _imaging(where: str, raw: Any) -> dict[str, Any]:
    field = f"{where}imaging.findings"
    if not isinstance(raw, dict) or set(raw) != {"findings"} or not isinstance(raw["findings"], dict):
        raise InputValidationError(f"{where}imaging", f"'{where}imaging' must be {{\"findings\": {{finding: 0 or 1}}}}")
    findings = raw["findings"]
    if not findings:
        raise InputValidationError(field, f"'{field}' must label at least one of {list(IMAGING_FINDINGS)}")
    truth: dict[str, int] = {}
    for name, value in findings.items():
        if name not in IMAGING_FINDINGS:
            raise InputValidationError(
                f"{field}.{name:.40}", f"unknown finding {name!r:.40}; known: {list(IMAGING_FINDINGS)}"
            )
        if isinstance(value, bool) or value not in (0, 1):
            raise InputValidationError(f"{field}.{name}", f"'{field}.{name}' must be 0 or 1; got {value!r:.20}")
        truth[name] = int(value)
    return {"findings": {name: truth[name] for name in IMAGING_FINDINGS if name in truth}}


def validate_outcome(raw: Any, where: str = "") -> Outcome:
    """Validate one outcome object; ``where`` prefixes field names (``"outcomes[3]."`` for a batch item).

    Raises
    ------
    InputValidationError
        The first problem, naming its field.
    """
    if not isinstance(raw, dict):
        raise InputValidationError(
            where.rstrip(".") or "body", f"an outcome must be a JSON object; got {type(raw).__name__}"
        )
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise InputValidationError(
            f"{where}{unknown[0]:.40}", f"unknown field {unknown[0]!r:.40}; known: {sorted(_KEYS)}"
        )
    audit_id, request_id, uid = (raw.get(name) for name in LINKS)
    if sum(value is not None for value in (audit_id, request_id, uid)) != 1:
        raise InputValidationError(
            f"{where}audit_id",
            "give exactly one of 'audit_id', 'request_id' and 'sop_instance_uid': the prediction it belongs to",
        )
    if audit_id is not None and (isinstance(audit_id, bool) or not isinstance(audit_id, int) or audit_id < 1):
        raise InputValidationError(
            f"{where}audit_id", f"'{where}audit_id' must be an integer >= 1; got {audit_id!r:.20}"
        )
    if request_id is not None and (
        not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID or not request_id.isprintable()
    ):
        raise InputValidationError(
            f"{where}request_id", f"'{where}request_id' must be 1-{MAX_REQUEST_ID} printable characters"
        )
    if uid is not None:
        if not isinstance(uid, str) or len(uid) > 64 or not _UID.fullmatch(uid):
            raise InputValidationError(
                f"{where}sop_instance_uid",
                f"'{where}sop_instance_uid' must be a DICOM UID (digits and dots, at most 64)",
            )
        if raw.get("imaging") is None:
            raise InputValidationError(
                f"{where}sop_instance_uid",
                "'sop_instance_uid' links an imaging outcome; a triage outcome needs audit_id",
            )
    if "observed_utc" not in raw:
        raise InputValidationError(
            f"{where}observed_utc", f"'{where}observed_utc' is required: when the outcome was observed"
        )
    observed = parse_utc(f"{where}observed_utc", raw["observed_utc"])
    tasks = [task for task in OUTCOME_TASKS if raw.get(task) is not None]
    if len(tasks) != 1:
        raise InputValidationError(
            f"{where}triage", "give exactly one of 'triage' (an ED outcome) and 'imaging' (a radiologist's read)"
        )
    task = tasks[0]
    values = _triage(where, raw["triage"]) if task == "triage" else _imaging(where, raw["imaging"])
    return Outcome(
        task=task,  # type: ignore[arg-type]  # one of OUTCOME_TASKS
        audit_id=audit_id,
        request_id=request_id,
        sop_instance_uid=uid,
        observed_utc=format_utc(observed),
        values=values,
    )
