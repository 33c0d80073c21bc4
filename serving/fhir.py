"""CDS Hooks 2.0 and FHIR R4 for triage: discovery, request -> triage record, result -> cards and RiskAssessment.

Pure functions (no FastAPI, no I/O): the HTTP routes call them. Vigil has no access to the client's FHIR server,
so everything it reads must arrive as prefetch data (:data:`PREFETCH`).

What the request is read for
============================
``prefetch.patient`` (required)
    ``birthDate`` -> ``age_years`` at ``now`` (fractional years; a partial date is taken at its middle:
    ``YYYY`` as 1 July, ``YYYY-MM`` as the 15th, never later than today). ``gender`` -> ``sex``
    (``other`` and ``unknown`` become ``"unknown"``).
``prefetch.encounter``
    ``period.start`` -> ``arrival_time``; Observations recorded before it (beyond :data:`CLOCK_SKEW`) belong to
    earlier care and are ignored, pre-hospital ambulance readings included. Without it, Observations older than
    :data:`LOOKBACK_WITHOUT_ARRIVAL` are ignored. Arrival mode, first match wins: the extension
    :data:`ARRIVAL_MODE_EXTENSION` (``valueCode`` ambulance / walk_in / other, or a ``valueCodeableConcept``
    as below); then an ECDS arrival-mode SNOMED CT code in ``hospitalization.admitSource``
    (:data:`ECDS_ARRIVAL_MODE`). HL7 admit-source codes (``gp``, ``emd``, ``hosp-trans``...) say where a
    patient came from, not how, so they are not mapped. ``reasonCode`` is the chief complaint when no
    chief-complaint Observation is sent.
``prefetch.vitals`` and ``prefetch.observations``
    Observations (a searchset Bundle, a list, or one resource), by code (:data:`OBSERVATION_CODES`). When a
    field is recorded more than once the latest ``effectiveDateTime`` (else ``effectivePeriod.start``,
    ``effectiveInstant``, ``issued``) wins. Status ``entered-in-error``, ``cancelled``, ``registered`` and
    ``unknown`` are ignored. Units must be UCUM (``/min``, ``mm[Hg]``, ``%``, ``Cel``, ``[degF]``,
    ``L/min``, ``{score}``); a few unambiguous spellings in ``unit`` are accepted when ``code`` is absent
    (``mmHg``, ``degC``, ``bpm``...). Supplemental oxygen comes from FiO2 (3150-0, > 21 %) and oxygen flow
    (3151-8, > 0), standalone or as components of the SpO2 Observation (US Core pulse oximetry).
    Consciousness (ACVPU) comes from LOINC 67775-7 "Level of responsiveness" or SNOMED CT 1104441000000107
    "ACVPU scale score" (NHS CareConnect), read from SNOMED codes (:data:`ACVPU_SNOMED`) or words
    ("alert", "new confusion", "voice", "pain", "unresponsive" or their initials).

Anything ignored is reported in the returned notes (with its JSON path, never a value that could identify the
patient). A body that is not the FHIR/CDS Hooks shape Vigil reads raises
:class:`~models.errors.InputValidationError` whose ``field`` is the JSON path (``prefetch.vitals.entry[2].resource
.valueQuantity.value``); messages say what was expected and what kind of thing was found, never the value.
"""

from __future__ import annotations

import copy
import math
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final

from models.errors import InputValidationError
from models.labels import ACUITY_LABELS_ECDS, HIGH_ACUITY_MAX_LEVEL, OUTCOMES
from serving.schemas import TriageResult

SERVICE_ID: Final = "vigil-triage"
HOOK: Final = "encounter-start"

LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
UCUM: Final = "http://unitsofmeasure.org"

VIGIL_FHIR: Final = "https://vigil.example/fhir"
OUTCOME_SYSTEM: Final = f"{VIGIL_FHIR}/CodeSystem/triage-outcome"
MODEL_SYSTEM: Final = f"{VIGIL_FHIR}/CodeSystem/triage-model"
TOPIC_SYSTEM: Final = f"{VIGIL_FHIR}/CodeSystem/cds-topic"
REQUEST_ID_SYSTEM: Final = f"{VIGIL_FHIR}/NamingSystem/request-id"
ARRIVAL_MODE_EXTENSION: Final = f"{VIGIL_FHIR}/StructureDefinition/arrival-mode"

LOOKBACK_WITHOUT_ARRIVAL: Final = timedelta(hours=24)
#: Tolerance for clock skew between systems: readings this far before the encounter start or after ``now`` count.
CLOCK_SKEW: Final = timedelta(minutes=5)

#: Observation codes -> what they carry. LOINC unless noted.
OBSERVATION_CODES: Final[dict[tuple[str, str], str]] = {
    (LOINC, "8867-4"): "heart_rate",
    (LOINC, "9279-1"): "resp_rate",
    (LOINC, "8480-6"): "sbp",
    (LOINC, "8462-4"): "dbp",
    (LOINC, "85354-9"): "bp_panel",
    (LOINC, "59408-5"): "spo2",
    (LOINC, "2708-6"): "spo2",
    (LOINC, "8310-5"): "temperature_c",
    (LOINC, "9269-2"): "gcs",
    (LOINC, "72514-3"): "pain_score",
    (LOINC, "3150-0"): "fio2",
    (LOINC, "3151-8"): "o2_flow",
    (LOINC, "67775-7"): "consciousness",
    (SNOMED, "1104441000000107"): "consciousness",
    (LOINC, "8661-1"): "chief_complaint",
}
_COMPONENTS: Final[dict[str, dict[str, str]]] = {
    "bp_panel": {"8480-6": "sbp", "8462-4": "dbp"},
    "spo2": {"3150-0": "fio2", "3151-8": "o2_flow"},
}

#: ECDS acuity (SNOMED CT, UK edition), by level. Codes agree across several public NHS ECDS analyses.
ECDS_ACUITY_SNOMED: Final[dict[int, str]] = {
    1: "1064891000000107",
    2: "1064911000000105",
    3: "1064901000000108",
    4: "1077241000000103",
    5: "1077251000000100",
}
#: ECDS arrival mode (SNOMED CT, UK edition) -> canonical ``arrival_mode``.
ECDS_ARRIVAL_MODE: Final[dict[str, str]] = {
    "1048021000000102": "ambulance",  # non-emergency road ambulance
    "1048031000000100": "ambulance",  # emergency road ambulance
    "1048041000000109": "ambulance",  # emergency road ambulance with medical escort
    "1048051000000107": "ambulance",  # helicopter air ambulance
    "1048081000000101": "ambulance",  # medical repatriation air ambulance
    "1048061000000105": "walk_in",  # public transport
    "1048071000000103": "walk_in",  # own transport
    "1047991000000102": "other",  # prison transport
    "1048001000000106": "other",  # police transport
}
#: AVPU findings (SNOMED CT) as in the IHE mPSC value set; no code for "new confusion" could be verified.
ACVPU_SNOMED: Final[dict[str, str]] = {
    "248234008": "A",  # Mentally alert
    "255373000": "V",  # Verbal
    "450847001": "P",  # Responds to pain
    "422768004": "U",  # Unresponsive
}
_ACVPU_WORDS: Final[dict[str, str]] = {
    **dict.fromkeys(("a", "alert", "mentally alert"), "A"),
    **dict.fromkeys(("c", "confusion", "new confusion", "confused", "newly confused"), "C"),
    **dict.fromkeys(("v", "voice", "verbal", "responds to voice", "responds to verbal stimuli"), "V"),
    **dict.fromkeys(("p", "pain", "responds to pain", "responds to painful stimuli"), "P"),
    **dict.fromkeys(("u", "unresponsive"), "U"),
}


def _same(v: float) -> float:
    return v


#: Accepted UCUM codes per quantity, with the conversion to the record's unit ("" = no unit given).
_UNITS: Final[dict[str, dict[str, Callable[[float], float]]]] = {
    "heart_rate": dict.fromkeys(("/min", "{beats}/min", "{beat}/min"), _same),
    "resp_rate": dict.fromkeys(("/min", "{breaths}/min", "{breath}/min"), _same),
    "sbp": {"mm[Hg]": _same},
    "dbp": {"mm[Hg]": _same},
    "spo2": {"%": _same},
    "temperature_c": {"Cel": _same, "[degF]": lambda f: round((f - 32.0) * 5.0 / 9.0, 2)},
    "gcs": dict.fromkeys(("{score}", "1", ""), _same),
    "pain_score": dict.fromkeys(("{score}", "1", ""), _same),
    "fio2": {"%": _same, "1": lambda v: v * 100.0},
    "o2_flow": {"L/min": _same, "mL/min": lambda v: v / 1000.0},
}
#: Spellings accepted in ``Quantity.unit`` when ``Quantity.code`` is absent.
_UNIT_ALIASES: Final[dict[str, str]] = {
    "mmHg": "mm[Hg]", "degC": "Cel", "°C": "Cel", "degF": "[degF]", "°F": "[degF]", "bpm": "/min",
    "beats/min": "/min", "breaths/min": "/min", "l/min": "L/min",
}

PREFETCH: Final[dict[str, str]] = {
    "patient": "Patient/{{context.patientId}}",
    "encounter": "Encounter/{{context.encounterId}}",
    # `patient=` rather than `subject=`: Observation.subject may be a Patient, Group, Device or Location, so a
    # bare id in `subject=` is ambiguous and some servers refuse it; the CDS Hooks examples use `patient=`.
    "vitals": "Observation?patient={{context.patientId}}&category=vital-signs&_sort=-date&_count=100",
    # Observations outside the vital-signs category that Vigil reads (chief complaint, pain, GCS, ACVPU, oxygen).
    "observations": "Observation?patient={{context.patientId}}&code="
    + ",".join(f"{system}|{code}" for (system, code), kind in OBSERVATION_CODES.items()
               if kind in {"chief_complaint", "pain_score", "gcs", "consciousness", "fio2", "o2_flow"})
    + "&_sort=-date&_count=50",
}

_OBSERVATION_STATUSES: Final = frozenset(
    {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"})
_RESULT_STATUSES: Final = frozenset({"preliminary", "final", "amended", "corrected"})
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PATIENT_REF = re.compile(r"(?:^|/)(Patient|Group|Device|Location)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_DATE = re.compile(r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2}))?)?")
_DATETIME = re.compile(
    r"\d{4}(?:-\d{2}(?:-\d{2}(?P<time>T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?")
_TOKEN = re.compile(r"[A-Za-z0-9\-.\[\]{}/%:_|]{1,40}")


class MissingPrefetchError(InputValidationError):
    """Data Vigil needs (the Patient) was not prefetched, was null, or came back as an OperationOutcome.

    CDS Hooks 2.0 says a service that cannot obtain required data "SHALL respond with an HTTP 412 Precondition
    Failed status code"; :mod:`serving.errors` answers 412 for any error with ``precondition`` set.
    """

    precondition = True


# ------------------------------------------------------------------------------------------------ discovery
def cds_discovery() -> dict[str, Any]:
    """The CDS Hooks discovery document (``GET {base}/cds-services``): one service on ``encounter-start``."""
    return {"services": [{
        "hook": HOOK,
        "id": SERVICE_ID,
        "title": "Vigil emergency department triage",
        "description": (
            "Decision support for emergency department triage: a recommended acuity (Manchester / ECDS levels "
            "1-5), the probability of hospital admission and of critical care, and the NEWS2 score, from the "
            "patient's age, sex and triage observations. It never replaces the triage clinician's judgement."),
        "usageRequirements": (
            "Call when triage observations have been recorded for this encounter; prefetch is required because "
            "Vigil does not query the FHIR server. Observations recorded before the encounter started are not used."),
        "prefetch": copy.deepcopy(PREFETCH),
    }]}


# --------------------------------------------------------------------------------------------- shape checks
def _kind(value: Any) -> str:
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


def _token(value: Any) -> str:
    """Echo a code-like value (a hook name, a unit) only when it cannot carry free text."""
    if isinstance(value, str) and _TOKEN.fullmatch(value):
        return repr(value)
    return "a value of another form" if isinstance(value, str) else _kind(value)


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InputValidationError(path, f"'{path}' must be a JSON object; got {_kind(value)}")
    return value


def _array(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise InputValidationError(path, f"'{path}' must be a JSON array; got {_kind(value)}")
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        got = "an empty string" if isinstance(value, str) else _kind(value)
        raise InputValidationError(path, f"'{path}' must be a non-empty string; got {got}")
    return value


def _optional_string(holder: Mapping[str, Any], key: str, path: str) -> str | None:
    value = holder.get(key)
    return None if value is None else _string(value, f"{path}.{key}")


def _fhir_id(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _FHIR_ID.fullmatch(value):
        got = "a string of another form" if isinstance(value, str) else _kind(value)
        raise InputValidationError(path, f"'{path}' must be a FHIR id (1-64 of A-Z a-z 0-9 - .); got {got}")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputValidationError(path, f"'{path}' must be a number; got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError as exc:
        raise InputValidationError(path, f"'{path}' must be a finite number; got one too large") from exc
    if not math.isfinite(number):
        raise InputValidationError(path, f"'{path}' must be a finite number; got {number}")
    return number


def _require_aware(now: datetime) -> None:
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def _datetime(value: Any, path: str) -> datetime | None:
    """A FHIR dateTime/instant as an aware datetime; None when it has no time of day."""
    if not isinstance(value, str):
        raise InputValidationError(path, f"'{path}' must be a FHIR dateTime string; got {_kind(value)}")
    match = _DATETIME.fullmatch(value.strip())
    if match is None:
        raise InputValidationError(
            path, f"'{path}' must be a FHIR dateTime (YYYY-MM-DDThh:mm:ss+zz:zz); got a string of another form")
    if match["time"] is None:
        return None
    if match["tz"] is None:
        raise InputValidationError(path, f"'{path}' has a time of day but no time zone, which FHIR requires")
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise InputValidationError(path, f"'{path}' is not a valid date-time (a field is out of range)") from exc


def _items(holder: Mapping[str, Any], key: str, path: str) -> list[Any]:
    """An optional array element: [] when absent."""
    value = holder.get(key)
    return [] if value is None else _array(value, f"{path}.{key}")


def _codings(concept: Any, path: str) -> list[tuple[str | None, str | None, str | None]]:
    """(system, code, display) of each coding of a CodeableConcept."""
    concept = _object(concept, path)
    out = []
    for i, coding in enumerate(_items(concept, "coding", path)):
        cpath = f"{path}.coding[{i}]"
        coding = _object(coding, cpath)
        out.append((_optional_string(coding, "system", cpath), _optional_string(coding, "code", cpath),
                    _optional_string(coding, "display", cpath)))
    return out


# ------------------------------------------------------------------------------------------------- request
@dataclass
class _Notes:
    """Human-readable notes; repeated reasons are grouped with the paths they apply to."""

    by_reason: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, path: str | None = None) -> None:
        paths = self.by_reason.setdefault(reason, [])
        if path is not None:
            paths.append(path)

    def render(self) -> list[str]:
        out = []
        for reason, paths in self.by_reason.items():
            if not paths:
                out.append(reason)
                continue
            more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
            out.append(f"{reason}: {', '.join(paths[:3])}{more}")
        return out


@dataclass(frozen=True)
class _Reading:
    field: str
    value: Any
    when: datetime
    path: str


@dataclass
class _Context:
    patient_id: str
    now: datetime
    not_before: datetime
    before_reason: str
    notes: _Notes
    readings: list[_Reading] = field(default_factory=list)
    unknown_codes: dict[str, None] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)


def context_references(body: Mapping[str, Any]) -> tuple[str, str]:
    """``("Patient/<id>", "Encounter/<id>")`` from a CDS Hooks request's context, for :func:`cds_response`."""
    context = _object(_object(body, "request").get("context"), "context")
    return (f"Patient/{_fhir_id(context.get('patientId'), 'context.patientId')}",
            f"Encounter/{_fhir_id(context.get('encounterId'), 'context.encounterId')}")


def record_from_cds_request(body: Mapping[str, Any], *, now: datetime) -> tuple[dict[str, Any], list[str]]:
    """Build a raw triage record from an ``encounter-start`` CDS Hooks request.

    Parameters
    ----------
    body : Mapping
        The parsed JSON request: ``hook``, ``hookInstance``, ``context`` (``patientId``, ``encounterId``) and
        ``prefetch`` filled from :data:`PREFETCH` (the module docstring says what is read from each key).
    now : datetime
        The time of the request (timezone-aware): age is computed at it and readings after it are ignored.

    Returns
    -------
    record : dict
        Only keys of :data:`models.triage_record.RECORD_FIELDS`, values not yet range-checked: pass it to
        :func:`models.triage_record.validate_record`.
    notes : list of str
        What was ignored and why (an unknown code, an unconvertible unit, a reading older than the encounter).

    Raises
    ------
    MissingPrefetchError
        The Patient was not prefetched (CDS Hooks says 412).
    InputValidationError
        The body is not the CDS Hooks / FHIR shape Vigil reads; ``field`` is the JSON path at fault.
    """
    _require_aware(now)
    request = _object(body, "request")
    hook = request.get("hook")
    if hook != HOOK:
        raise InputValidationError("hook", f"'hook' must be '{HOOK}' for service '{SERVICE_ID}'; got {_token(hook)}")
    _string(request.get("hookInstance"), "hookInstance")
    context = _object(request.get("context"), "context")
    patient_id = _fhir_id(context.get("patientId"), "context.patientId")
    encounter_id = _fhir_id(context.get("encounterId"), "context.encounterId")
    if "userId" in context:
        _string(context["userId"], "context.userId")
    if "prefetch" not in request:
        raise MissingPrefetchError("prefetch", "'prefetch' is required: Vigil cannot query the FHIR server, so the "
                                               "CDS client must send the prefetch data listed at discovery")
    prefetch = _object(request["prefetch"], "prefetch")
    notes = _Notes()

    record: dict[str, Any] = _read_patient(prefetch, patient_id, now, notes)
    arrival = _read_encounter(prefetch, encounter_id, patient_id, record, notes)
    if arrival is not None:
        ctx = _Context(patient_id, now, arrival, "ignored, recorded before this encounter started", notes)
    else:
        ctx = _Context(patient_id, now, now - LOOKBACK_WITHOUT_ARRIVAL,
                       f"ignored, recorded more than {LOOKBACK_WITHOUT_ARRIVAL.total_seconds() / 3600:g} h ago "
                       "(no encounter start to compare with)", notes)
    for key in ("vitals", "observations"):
        for resource, path in _resources(prefetch, key, ctx):
            _read_observation(resource, path, ctx)
    if ctx.unknown_codes:
        notes.add(f"Observations with codes Vigil does not use were ignored ({', '.join(list(ctx.unknown_codes)[:8])})")
    chosen = _latest(ctx)
    complaint = chosen.pop("chief_complaint", None)
    if complaint is not None:
        record.pop("chief_complaint", None)
        record.pop("chief_complaint_code", None)
        text, code = complaint
        record.update({k: v for k, v in (("chief_complaint", text), ("chief_complaint_code", code)) if v is not None})
    record.update(chosen)
    return record, notes.render()


def _read_patient(prefetch: Mapping[str, Any], patient_id: str, now: datetime, notes: _Notes) -> dict[str, Any]:
    path = "prefetch.patient"
    if prefetch.get("patient") is None:
        got = "null (no data)" if "patient" in prefetch else "no 'patient' key"
        raise MissingPrefetchError(path, f"'{path}' (template '{PREFETCH['patient']}') is required for the "
                                         f"patient's age and sex; got {got}")
    patient = _object(prefetch["patient"], path)
    resource_type = patient.get("resourceType")
    if resource_type == "OperationOutcome":
        raise MissingPrefetchError(path, f"'{path}' is an OperationOutcome: the CDS client could not fetch the Patient")
    if resource_type != "Patient":
        raise InputValidationError(f"{path}.resourceType",
                                   f"'{path}.resourceType' must be 'Patient'; got {_token(resource_type)}")
    if "id" in patient and patient["id"] != patient_id:
        raise InputValidationError(f"{path}.id", f"'{path}.id' does not match context.patientId: the prefetched "
                                                 "Patient is not the patient in context")
    if patient.get("birthDate") is None:
        raise InputValidationError(f"{path}.birthDate", f"'{path}.birthDate' is required: Vigil needs the age at "
                                                        "arrival; got none")
    record: dict[str, Any] = {"age_years": _age_years(patient["birthDate"], f"{path}.birthDate", now)}
    gender = patient.get("gender")
    if gender is None:
        notes.add("Patient.gender is absent: sex is 'unknown'")
        record["sex"] = "unknown"
    elif gender in ("female", "male"):
        record["sex"] = gender
    elif gender in ("other", "unknown"):
        record["sex"] = "unknown"
    else:
        got = "a string of another form" if isinstance(gender, str) else _kind(gender)
        raise InputValidationError(f"{path}.gender", f"'{path}.gender' must be a FHIR AdministrativeGender code "
                                                     f"(male, female, other, unknown); got {got}")
    return record


def _anniversary(birth: date, year: int) -> date:
    try:
        return birth.replace(year=year)
    except ValueError:  # 29 February in a common year
        return date(year, 2, 28)


def _age_years(value: Any, path: str, now: datetime) -> float:
    """Age in fractional years; a partial birth date is taken at the middle of its period (never after today)."""
    match = _DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        got = "a string of another form" if isinstance(value, str) else _kind(value)
        raise InputValidationError(path, f"'{path}' must be a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD); got {got}")
    year, month, day = int(match["y"]), match["m"], match["d"]
    try:
        earliest = date(year, int(month or 1), int(day or 1))
        birth = date(year, int(month), int(day)) if day else date(year, int(month), 15) if month else date(year, 7, 1)
    except ValueError as exc:
        raise InputValidationError(path, f"'{path}' is not a valid calendar date") from exc
    today = now.date()
    if earliest > today:
        raise InputValidationError(path, f"'{path}' is after the time of the request")
    birth = min(birth, today)
    years = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    last, following = _anniversary(birth, birth.year + years), _anniversary(birth, birth.year + years + 1)
    return years + (today - last).days / (following - last).days


def _read_encounter(prefetch: Mapping[str, Any], encounter_id: str, patient_id: str, record: dict[str, Any],
                    notes: _Notes) -> datetime | None:
    """Fill arrival_time, arrival_mode and a fallback chief complaint; return the encounter start."""
    path = "prefetch.encounter"
    if prefetch.get("encounter") is None:
        notes.add("No Encounter was prefetched: arrival time and mode are unknown")
        return None
    encounter = _object(prefetch["encounter"], path)
    resource_type = encounter.get("resourceType")
    if resource_type == "OperationOutcome":
        notes.add("The CDS client could not fetch the Encounter (OperationOutcome): arrival time and mode are unknown")
        return None
    if resource_type != "Encounter":
        raise InputValidationError(f"{path}.resourceType",
                                   f"'{path}.resourceType' must be 'Encounter'; got {_token(resource_type)}")
    if "id" in encounter and encounter["id"] != encounter_id:
        raise InputValidationError(f"{path}.id", f"'{path}.id' does not match context.encounterId")
    _check_subject(encounter, path, patient_id)
    start: datetime | None = None
    if encounter.get("period") is not None:
        period = _object(encounter["period"], f"{path}.period")
        if period.get("start") is not None:
            start = _datetime(period["start"], f"{path}.period.start")
            if start is None:
                notes.add("Encounter.period.start has no time of day: arrival_time is unknown")
            else:
                record["arrival_time"] = start.isoformat()
    mode = _arrival_mode(encounter, path, notes)
    if mode is not None:
        record["arrival_mode"] = mode
    if encounter.get("reasonCode") is not None:
        for i, concept in enumerate(_array(encounter["reasonCode"], f"{path}.reasonCode")):
            text, code = _complaint_concept(concept, f"{path}.reasonCode[{i}]")
            if text is not None or code is not None:
                record.update({k: v for k, v in (("chief_complaint", text), ("chief_complaint_code", code)) if v})
                break
    return start


def _arrival_mode(encounter: Mapping[str, Any], path: str, notes: _Notes) -> str | None:
    for i, ext in enumerate(_items(encounter, "extension", path)):
        epath = f"{path}.extension[{i}]"
        ext = _object(ext, epath)
        if ext.get("url") != ARRIVAL_MODE_EXTENSION:
            continue
        if ext.get("valueCode") in ("ambulance", "walk_in", "other"):
            return str(ext["valueCode"])
        if ext.get("valueCodeableConcept") is not None:
            for system, code, _ in _codings(ext["valueCodeableConcept"], f"{epath}.valueCodeableConcept"):
                if system == SNOMED and code is not None and code in ECDS_ARRIVAL_MODE:
                    return ECDS_ARRIVAL_MODE[code]
        notes.add("ignored, arrival-mode extension value not recognised", epath)
    hospitalization = encounter.get("hospitalization")
    if hospitalization is None:
        return None
    hospitalization = _object(hospitalization, f"{path}.hospitalization")
    if hospitalization.get("admitSource") is None:
        return None
    for system, code, _ in _codings(hospitalization["admitSource"], f"{path}.hospitalization.admitSource"):
        if system == SNOMED and code is not None and code in ECDS_ARRIVAL_MODE:
            return ECDS_ARRIVAL_MODE[code]
    notes.add("Encounter.hospitalization.admitSource holds no ECDS arrival-mode code: arrival_mode is unknown")
    return None


def _check_subject(resource: Mapping[str, Any], path: str, patient_id: str) -> bool:
    """Raise when the resource is about another patient; False when its subject is not a patient at all."""
    if resource.get("subject") is None:
        return True
    subject = _object(resource["subject"], f"{path}.subject")
    reference = _optional_string(subject, "reference", f"{path}.subject")
    match = _PATIENT_REF.search(reference) if reference else None
    if match is None:
        return True  # no literal reference, or a bundle-internal one: nothing to compare
    if match[1] != "Patient":
        return False
    if match[2] != patient_id:
        raise InputValidationError(f"{path}.subject.reference", f"'{path}.subject.reference' refers to a different "
                                                                "patient than context.patientId")
    return True


def _resources(prefetch: Mapping[str, Any], key: str, ctx: _Context) -> Iterator[tuple[Mapping[str, Any], str]]:
    path = f"prefetch.{key}"
    if key not in prefetch:
        ctx.notes.add(f"'{path}' was not sent: the Observations it asks for are treated as not recorded")
        return
    value = prefetch[key]
    if value is None:
        return  # CDS Hooks: null means the client found no matching data
    if isinstance(value, list):
        items = [(_object(v, f"{path}[{i}]"), f"{path}[{i}]") for i, v in enumerate(value)]
    else:
        value = _object(value, path)
        if value.get("resourceType") == "Bundle":
            items = []
            for i, entry in enumerate(_items(value, "entry", path)):
                entry = _object(entry, f"{path}.entry[{i}]")
                items.append((_object(entry.get("resource"), f"{path}.entry[{i}].resource"),
                              f"{path}.entry[{i}].resource"))
            links = value.get("link")
            if isinstance(links, list) and any(isinstance(x, Mapping) and x.get("relation") == "next" for x in links):
                ctx.notes.add(f"'{path}' holds only the first page of results; later pages were not used")
        elif value.get("resourceType") == "OperationOutcome":
            ctx.notes.add(f"The CDS client could not fetch '{path}' (OperationOutcome)")
            return
        else:
            items = [(value, path)]
    for resource, rpath in items:
        resource_type = resource.get("resourceType")
        if resource_type != "Observation":
            ctx.notes.add("ignored, not an Observation", rpath)
            continue
        rid = resource.get("id")
        if isinstance(rid, str):
            if rid in ctx.seen:
                continue  # the same Observation in two prefetch keys
            ctx.seen.add(rid)
        yield resource, rpath


def _observation_time(obs: Mapping[str, Any], path: str) -> datetime | None:
    if obs.get("effectiveDateTime") is not None:
        return _datetime(obs["effectiveDateTime"], f"{path}.effectiveDateTime")
    if obs.get("effectivePeriod") is not None:
        period = _object(obs["effectivePeriod"], f"{path}.effectivePeriod")
        for key in ("start", "end"):
            if period.get(key) is not None:
                return _datetime(period[key], f"{path}.effectivePeriod.{key}")
    for key in ("effectiveInstant", "issued"):
        if obs.get(key) is not None:
            return _datetime(obs[key], f"{path}.{key}")
    return None


def _what(concept: Any, path: str, ctx: _Context) -> str | None:
    if concept is None:
        raise InputValidationError(path, f"'{path}' is required (Observation.code); got none")
    codings = _codings(concept, path)
    for system, code, _ in codings:
        what = OBSERVATION_CODES.get((system or "", code or ""))
        if what is not None:
            return what
    for system, code, _ in codings:
        known = system in (LOINC, SNOMED) and code is not None and _TOKEN.fullmatch(code)
        ctx.unknown_codes[f"{'LOINC' if system == LOINC else 'SNOMED CT'} {code}" if known else "local codes"] = None
    if not codings:
        ctx.unknown_codes["text only"] = None
    return None


def _read_observation(obs: Mapping[str, Any], path: str, ctx: _Context) -> None:
    status = obs.get("status")
    if not isinstance(status, str) or status not in _OBSERVATION_STATUSES:
        got = "a string of another form" if isinstance(status, str) else _kind(status)
        raise InputValidationError(f"{path}.status",
                                   f"'{path}.status' must be a FHIR ObservationStatus code; got {got}")
    if status not in _RESULT_STATUSES:
        ctx.notes.add(f"ignored, status {status}", path)
        return
    if not _check_subject(obs, path, ctx.patient_id):
        ctx.notes.add("ignored, its subject is not a patient", path)
        return
    what = _what(obs.get("code"), f"{path}.code", ctx)
    if what is None:
        return
    when = _observation_time(obs, path)
    if when is None:
        ctx.notes.add("ignored, no effective time of day to place it in this encounter", path)
        return
    if when < ctx.not_before - CLOCK_SKEW:
        ctx.notes.add(ctx.before_reason, path)
        return
    if when > ctx.now + CLOCK_SKEW:
        ctx.notes.add("ignored, recorded after the time of the request", path)
        return
    if what == "consciousness":
        _add(ctx, "consciousness", _acvpu(obs, path, ctx.notes), when, path)
    elif what == "chief_complaint":
        _add(ctx, "chief_complaint", _complaint(obs, path, ctx.notes), when, path)
    elif what != "bp_panel":
        _add_quantity(ctx, what, obs, when, path)
    for i, component in enumerate(_items(obs, "component", path)):
        cpath = f"{path}.component[{i}]"
        component = _object(component, cpath)
        loinc = {code for system, code, _ in _codings(component.get("code"), f"{cpath}.code") if system == LOINC}
        part = next((f for c, f in _COMPONENTS.get(what, {}).items() if c in loinc), None)
        if part is not None:
            _add_quantity(ctx, part, component, when, cpath)
    if what == "bp_panel" and not obs.get("component"):
        ctx.notes.add("ignored, blood pressure panel without components", path)


def _add(ctx: _Context, name: str, value: Any, when: datetime, path: str) -> None:
    if value is not None:
        ctx.readings.append(_Reading(name, value, when, path))


def _add_quantity(ctx: _Context, what: str, holder: Mapping[str, Any], when: datetime, path: str) -> None:
    value = _quantity(holder, path, what, ctx.notes)
    if value is None:
        return
    if what == "fio2":
        if value < 20:
            ctx.notes.add("ignored, inspired oxygen below 20 % is implausible (a fraction sent as %?)", path)
            return
        _add(ctx, "on_supplemental_oxygen", value > 21, when, path)
    elif what == "o2_flow":
        _add(ctx, "on_supplemental_oxygen", value > 0, when, path)
    else:
        _add(ctx, what, value, when, path)


def _quantity(holder: Mapping[str, Any], path: str, what: str, notes: _Notes) -> float | None:
    """The value of ``valueQuantity`` (or ``valueInteger`` for scores) in the record's unit, or None with a note."""
    scores = "{score}" in _UNITS[what]
    if holder.get("valueQuantity") is not None:
        qpath = f"{path}.valueQuantity"
        quantity = _object(holder["valueQuantity"], qpath)
        if quantity.get("value") is None:
            notes.add("ignored, valueQuantity without a value", path)
            return None
        number = _number(quantity["value"], f"{qpath}.value")
        system, code, unit = (_optional_string(quantity, k, qpath) for k in ("system", "code", "unit"))
        if quantity.get("comparator") is not None:
            notes.add(f"ignored, {what} is a bound ({_token(quantity['comparator'])}), not a measurement", path)
            return None
        if system is not None and system != UCUM:
            notes.add(f"ignored, {what} unit is not UCUM", path)
            return None
        key = code if code is not None else _UNIT_ALIASES.get(unit or "", unit or "")
        convert = _UNITS[what].get(key)
        if convert is None:
            got = f"unit {_token(key)}" if key else "no unit"
            notes.add(f"ignored, {what} with {got}: expected {' or '.join(repr(u) for u in _UNITS[what] if u)}", path)
            return None
        return convert(number)
    if scores and holder.get("valueInteger") is not None:
        value = holder["valueInteger"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputValidationError(f"{path}.valueInteger", f"'{path}.valueInteger' must be an integer; "
                                                               f"got {_kind(value)}")
        return float(value)
    if holder.get("dataAbsentReason") is not None:
        notes.add(f"ignored, {what} not recorded (dataAbsentReason)", path)
    elif any(k.startswith("value") for k in holder):
        notes.add(f"ignored, {what} must be a valueQuantity{' or valueInteger' if scores else ''}", path)
    else:
        notes.add(f"ignored, {what} without a value", path)
    return None


def _words(text: str) -> str:
    return " ".join(text.lower().replace("(finding)", "").strip(" .").split())


def _acvpu(obs: Mapping[str, Any], path: str, notes: _Notes) -> str | None:
    texts: list[str | None] = []
    if obs.get("valueCodeableConcept") is not None:
        cpath = f"{path}.valueCodeableConcept"
        for system, code, display in _codings(obs["valueCodeableConcept"], cpath):
            if system == SNOMED and code is not None and code in ACVPU_SNOMED:
                return ACVPU_SNOMED[code]
            texts += [display, code if system != SNOMED else None]
        texts.insert(0, _optional_string(obs["valueCodeableConcept"], "text", cpath))
    elif obs.get("valueString") is not None:
        texts.append(_string(obs["valueString"], f"{path}.valueString"))
    for text in texts:
        if text is not None and _words(text) in _ACVPU_WORDS:
            return _ACVPU_WORDS[_words(text)]
    notes.add("ignored, consciousness value is not one of ACVPU", path)
    return None


def _complaint_concept(concept: Any, path: str) -> tuple[str | None, str | None]:
    codings = _codings(concept, path)
    text = _optional_string(concept, "text", path) or next((d for _, _, d in codings if d), None)
    code = next((c for s, c, _ in codings if s == SNOMED and c), None)
    return text, code


def _complaint(obs: Mapping[str, Any], path: str, notes: _Notes) -> tuple[str | None, str | None] | None:
    if obs.get("valueString") is not None:
        return _string(obs["valueString"], f"{path}.valueString"), None
    if obs.get("valueCodeableConcept") is not None:
        text, code = _complaint_concept(obs["valueCodeableConcept"], f"{path}.valueCodeableConcept")
        if text is not None or code is not None:
            return text, code
    notes.add("ignored, chief complaint without valueString or valueCodeableConcept", path)
    return None


def _latest(ctx: _Context) -> dict[str, Any]:
    """The most recent reading per field; on a tie the first listed wins (True for supplemental oxygen)."""
    best: dict[str, _Reading] = {}
    for reading in ctx.readings:
        current = best.get(reading.field)
        if current is None or reading.when > current.when:
            best[reading.field] = reading
        elif reading.when == current.when and reading.value != current.value:
            if reading.field == "on_supplemental_oxygen":
                best[reading.field] = current if current.value else reading
            kept = "oxygen was assumed" if reading.field == "on_supplemental_oxygen" else "the first was used"
            ctx.notes.add(f"{reading.field} has different values recorded at the same time; {kept}", reading.path)
    return {name: reading.value for name, reading in best.items()}


# ------------------------------------------------------------------------------------------------ response
def card_indicator(level: int, news2_band: str) -> str:
    """CDS card indicator: ``critical`` for levels 1-2 or a high NEWS2, ``warning`` for level 3 or a medium or
    low-medium NEWS2, else ``info``."""
    if level <= HIGH_ACUITY_MAX_LEVEL or news2_band == "high":
        return "critical"
    if level == HIGH_ACUITY_MAX_LEVEL + 1 or news2_band in ("medium", "low-medium"):
        return "warning"
    return "info"


def _pct(p: float) -> str:
    if 0 < p < 0.005:
        return "<1%"
    if 0.995 < p < 1:
        return ">99%"
    return f"{p:.0%}"


def _result(result: Mapping[str, Any] | TriageResult) -> TriageResult:
    return result if isinstance(result, TriageResult) else TriageResult.model_validate(dict(result))


def _model_text(res: TriageResult) -> str:
    return f"Vigil triage model {res.model.name} {res.model.version}"


def _not_released(res: TriageResult) -> list[str]:
    reasons = []
    if res.flags.synthetic_model:
        reasons.append("it was trained on synthetic data only")
    if res.flags.unreleased_model:
        reasons.append("it has not passed its release gate and is served by an explicit override")
    return reasons


def _risk_items(res: TriageResult) -> list[tuple[str, Any]]:
    order = [o for o in OUTCOMES if o in res.risks] + sorted(set(res.risks) - set(OUTCOMES))
    return [(o, res.risks[o]) for o in order]


def _detail(res: TriageResult) -> str:
    acuity, news, flags = res.acuity, res.news2, res.flags
    lines = [f"**Recommended acuity: level {acuity.level}, {acuity.label.manchester}** (ECDS: {acuity.label.ecds})"]
    if acuity.raised_by_news2_floor:
        lines.append(f"Raised from the model's level {acuity.model_level} by the NEWS2 safety floor "
                     f"(NEWS2 allows no level less urgent than {news.minimum_acuity}).")
    lines += ["", *(f"- P({name}) {_pct(risk.probability)}: {risk.definition}" for name, risk in _risk_items(res))]
    partial = f", partial: a lower bound, {', '.join(news.missing)} not recorded" if news.partial else ""
    red = "; a single parameter scored 3" if news.red_flag else ""
    response = news.clinical_response[:1].upper() + news.clinical_response[1:]
    lines += ["", f"**NEWS2 {news.score}** ({news.band} clinical risk{partial}{red}). {response}."]
    if res.contributing_factors:
        lines += ["", "**Contributing factors**", *(f"- {f.detail} ({f.source})" for f in res.contributing_factors)]
    flag_lines = [
        *([f"- Not recorded: {', '.join(flags.missing_inputs)}"] if flags.missing_inputs else []),
        *([f"- Outside the central 99% of the training data: {', '.join(flags.out_of_training_range)}"]
          if flags.out_of_training_range else []),
        *(["- The NEWS2 safety floor raised the level"] if flags.news2_floor_raised_level else []),
        *(["- NEWS2 is not validated under 16 years of age"] if flags.news2_not_validated else []),
        *(f"- Not for clinical use: {reason}" for reason in _not_released(res)),
    ]
    if flag_lines:
        lines += ["", "**Flags**", *flag_lines]
    lines += ["", f"> {res.decision_support_statement}", "",
              f"{_model_text(res)} (sha256 {res.model.sha256[:12]}, release gate: {res.model.release_status})"]
    return "\n".join(lines)


def cds_response(result: Mapping[str, Any] | TriageResult, *, now: datetime, patient_reference: str | None = None,
                 encounter_reference: str | None = None) -> dict[str, Any]:
    """The CDS Hooks response for one triage result.

    Parameters
    ----------
    result : Mapping
        A :class:`serving.schemas.TriageResult` as a dict (``model_dump()``); validated against the schema.
    now : datetime
        Time of the assessment (timezone-aware), written to the RiskAssessment.
    patient_reference, encounter_reference : str, optional
        ``Patient/<id>`` and ``Encounter/<id>`` (see :func:`context_references`) for the suggested RiskAssessment.

    Returns
    -------
    dict
        ``{"cards": [...]}``: the triage card (summary, indicator from :func:`card_indicator`, markdown detail, a
        suggestion to create the :func:`risk_assessment`), plus a ``warning`` card when the model is not released
        for clinical use.
    """
    _require_aware(now)
    res = _result(result)
    acuity = res.acuity
    labels = {"admitted": "admission", "critical": "critical"}
    chances = ", ".join(f"P({labels.get(name, name)}) {_pct(risk.probability)}" for name, risk in _risk_items(res))
    summary = (f"Triage level {acuity.level} ({acuity.label.manchester}): {chances}; "
               f"NEWS2 {res.news2.score} ({res.news2.band})")
    source = {"label": "Vigil", "topic": {"system": TOPIC_SYSTEM, "code": "ed-triage",
                                          "display": "Emergency department triage"}}
    assessment = risk_assessment(res, patient_reference=patient_reference,
                                 encounter_reference=encounter_reference, now=now)
    cards = [{
        "uuid": str(uuid.uuid4()),
        "summary": summary if len(summary) < 140 else summary[:138] + "…",
        "indicator": card_indicator(acuity.level, res.news2.band),
        "detail": _detail(res),
        "source": source,
        "suggestions": [{
            "label": "Record Vigil's triage risk assessment",
            "uuid": str(uuid.uuid4()),
            "actions": [{"type": "create", "resource": assessment,
                         "description": "Create a RiskAssessment with Vigil's recommended acuity and risks "
                                        "(decision support, to be confirmed by the triage clinician)"}],
        }],
        "selectionBehavior": "at-most-one",
    }]
    reasons = _not_released(res)
    if reasons:
        cards.append({
            "uuid": str(uuid.uuid4()),
            "summary": "Not for clinical use: this Vigil model is not released",
            "indicator": "warning",
            "detail": f"Do not base care on this result: {'; '.join(reasons)}.",
            "source": source,
        })
    return {"cards": cards}


def _reference(value: str | None, resource_type: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.search(rf"(?:^|/){resource_type}/[A-Za-z0-9\-.]{{1,64}}$", value):
        raise ValueError(f"a {resource_type} reference must look like '{resource_type}/<id>'")
    return {"reference": value}


def risk_assessment(result: Mapping[str, Any] | TriageResult, *, patient_reference: str | None,
                    encounter_reference: str | None, now: datetime) -> dict[str, Any]:
    """A FHIR R4 RiskAssessment of one triage result.

    Parameters
    ----------
    result : Mapping
        A :class:`serving.schemas.TriageResult` as a dict; validated against the schema.
    patient_reference : str or None
        ``Patient/<id>``; without it the subject carries only a display (the resource is then for display,
        not for storing).
    encounter_reference : str or None
        ``Encounter/<id>``, omitted when None.
    now : datetime
        ``occurrenceDateTime`` (timezone-aware).

    Returns
    -------
    dict
        ``status`` final; one ``prediction`` per outcome (``probabilityDecimal`` equal to the result's), then one for
        the recommended acuity coded as its ECDS SNOMED CT concept with the model's P(level); ``mitigation`` is
        the NEWS2 clinical response; ``note`` the decision-support statement and any not-for-clinical-use flag.
    """
    _require_aware(now)
    res = _result(result)
    acuity, news = res.acuity, res.news2
    method = _model_text(res)
    predictions: list[dict[str, Any]] = [
        {"outcome": {"coding": [{"system": OUTCOME_SYSTEM, "code": name, "display": name}], "text": risk.definition},
         "probabilityDecimal": risk.probability}
        for name, risk in _risk_items(res)
    ]
    rationale = f"Model's acuity estimate; recommended level {acuity.level}"
    if acuity.raised_by_news2_floor:
        rationale += f", raised from model level {acuity.model_level} by the NEWS2 safety floor"
    predictions.append({
        "outcome": {"coding": [{"system": SNOMED, "code": ECDS_ACUITY_SNOMED[acuity.level],
                                "display": ACUITY_LABELS_ECDS[acuity.level]}],
                    "text": f"Recommended acuity: level {acuity.level}, {acuity.label.manchester}"},
        "probabilityDecimal": acuity.probabilities.get(str(acuity.level), 0.0),
        "rationale": rationale,
    })
    notes = [{"text": res.decision_support_statement}]
    notes += [{"text": f"Not for clinical use: {reason}."} for reason in _not_released(res)]
    out: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "method": {"coding": [{"system": MODEL_SYSTEM, "code": res.model.name, "display": method}], "text": method},
        "code": {"text": "Emergency department triage risk assessment"},
        "subject": _reference(patient_reference, "Patient") or {"display": "Patient in context (no reference)"},
        "occurrenceDateTime": now.isoformat(timespec="seconds"),
        "performer": {"display": method},
        "prediction": predictions,
        "mitigation": f"NEWS2 {news.score} ({news.band}{', partial' if news.partial else ''}): "
                      f"{news.clinical_response}",
        "note": notes,
    }
    if res.request_id:
        out["identifier"] = [{"system": REQUEST_ID_SYSTEM, "value": res.request_id}]
    encounter = _reference(encounter_reference, "Encounter")
    if encounter is not None:
        out["encounter"] = encounter
    return out
