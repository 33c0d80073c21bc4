"""CDS Hooks 2.0 ``encounter-start`` request with FHIR R4 prefetch -> a raw triage record.

Pure functions (no FastAPI, no I/O): the HTTP route calls them. Vigil has no access to the client's FHIR server,
so everything it reads must arrive as prefetch data (:data:`~serving.fhir.codes.PREFETCH`). The answer (cards and a
RiskAssessment) is written by :mod:`serving.fhir.response`.

What the request is read for
============================
``prefetch.patient`` (required)
    ``birthDate`` -> ``age_years`` at ``now`` (fractional years; a partial date is taken at its middle:
    ``YYYY`` as 1 July, ``YYYY-MM`` as the 15th, never later than today). ``gender`` -> ``sex``
    (``other`` and ``unknown`` become ``"unknown"``).
``prefetch.encounter``
    ``period.start`` -> ``arrival_time``; Observations recorded before it (beyond
    :data:`~serving.fhir.observations.CLOCK_SKEW`) belong to earlier care and are ignored, pre-hospital ambulance
    readings included. Without it, Observations older than :data:`LOOKBACK_WITHOUT_ARRIVAL` are ignored. Arrival
    mode, first match wins: the extension :data:`~serving.fhir.codes.ARRIVAL_MODE_EXTENSION` (``valueCode``
    ambulance / walk_in / other, or a ``valueCodeableConcept`` as below); then an ECDS arrival-mode SNOMED CT code
    in ``hospitalization.admitSource`` (:data:`~serving.fhir.codes.ECDS_ARRIVAL_MODE`). HL7 admit-source codes
    (``gp``, ``emd``, ``hosp-trans``...) say where a patient came from, not how, so they are not mapped.
    ``reasonCode`` is the chief complaint when no chief-complaint Observation is sent.
``prefetch.vitals`` and ``prefetch.observations``
    Observations (a searchset Bundle, a list, or one resource), by code
    (:data:`~serving.fhir.codes.OBSERVATION_CODES`). When a field is recorded more than once the latest
    ``effectiveDateTime`` (else ``effectivePeriod.start``, ``effectiveInstant``, ``issued``) wins. Status
    ``entered-in-error``, ``cancelled``, ``registered`` and ``unknown`` are ignored. Units must be UCUM (``/min``,
    ``mm[Hg]``, ``%``, ``Cel``, ``[degF]``, ``L/min``, ``{score}``); a few unambiguous spellings in ``unit`` are
    accepted when ``code`` is absent (``mmHg``, ``degC``, ``bpm``...). Supplemental oxygen comes from FiO2
    (3150-0, > 21 %) and oxygen flow (3151-8, > 0), standalone or as components of the SpO2 Observation (US Core pulse
    oximetry). Consciousness (ACVPU) comes from LOINC 67775-7 "Level of responsiveness" or SNOMED CT
    1104441000000107 "ACVPU scale score" (NHS CareConnect), read from SNOMED codes
    (:data:`~serving.fhir.codes.ACVPU_SNOMED`) or words ("alert", "new confusion", "voice", "pain", "unresponsive"
    or their initials).

Anything ignored is reported in the returned notes (with its JSON path, never a value that could identify the
patient). A body that is not the FHIR/CDS Hooks shape Vigil reads raises
:class:`~models.errors.InputValidationError` whose ``field`` is the JSON path (``prefetch.vitals.entry[2].resource
.valueQuantity.value``); messages say what was expected and what kind of thing was found, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any, Final

from models.errors import InputValidationError
from serving.fhir.codes import ARRIVAL_MODE_EXTENSION, ECDS_ARRIVAL_MODE, HOOK, PREFETCH, SERVICE_ID, SNOMED
from serving.fhir.observations import (
    Notes,
    ObservationContext,
    complaint_concept,
    latest_readings,
    observation_resources,
    read_observation,
)
from serving.fhir.shapes import (
    check_subject,
    codings_of,
    fhir_datetime,
    fhir_id,
    json_array,
    json_object,
    json_string,
    kind,
    optional_array,
    require_aware,
    token,
)

LOOKBACK_WITHOUT_ARRIVAL: Final = timedelta(hours=24)
_DATE = re.compile(r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2}))?)?")


class MissingPrefetchError(InputValidationError):
    """Data Vigil needs (the Patient) was not prefetched, was null, or came back as an OperationOutcome.

    CDS Hooks 2.0 says a service that cannot obtain required data "SHALL respond with an HTTP 412 Precondition
    Failed status code"; :mod:`serving.api.errors` answers 412 for any error with ``precondition`` set.
    """

    precondition = True


def context_references(body: Mapping[str, Any]) -> tuple[str, str]:
    """``("Patient/<id>", "Encounter/<id>")`` from a CDS Hooks request's context, for
    :func:`serving.fhir.response.cds_response`."""
    context = json_object(json_object(body, "request").get("context"), "context")
    return (
        f"Patient/{fhir_id(context.get('patientId'), 'context.patientId')}",
        f"Encounter/{fhir_id(context.get('encounterId'), 'context.encounterId')}",
    )


def record_from_cds_request(body: Mapping[str, Any], *, now: datetime) -> tuple[dict[str, Any], list[str]]:
    """Build a raw triage record from an ``encounter-start`` CDS Hooks request.

    Parameters
    ----------
    body : Mapping
        The parsed JSON request: ``hook``, ``hookInstance``, ``context`` (``patientId``, ``encounterId``) and
        ``prefetch`` filled from :data:`~serving.fhir.codes.PREFETCH` (the module docstring says what is read from
        each key).
    now : datetime
        The time of the request (timezone-aware): age is computed at it and readings after it are ignored.

    Returns
    -------
    record : dict
        Only keys of :data:`models.triage.record.RECORD_FIELDS`, values not yet range-checked: pass it to
        :func:`models.triage.record.validate_record`.
    notes : list of str
        What was ignored and why (an unknown code, an unconvertible unit, a reading older than the encounter).

    Raises
    ------
    MissingPrefetchError
        The Patient was not prefetched (CDS Hooks says 412).
    InputValidationError
        The body is not the CDS Hooks / FHIR shape Vigil reads; ``field`` is the JSON path at fault.
    """
    require_aware(now)
    request = json_object(body, "request")
    hook = request.get("hook")
    if hook != HOOK:
        raise InputValidationError("hook", f"'hook' must be '{HOOK}' for service '{SERVICE_ID}'; got {token(hook)}")
    json_string(request.get("hookInstance"), "hookInstance")
    context = json_object(request.get("context"), "context")
    patient_id = fhir_id(context.get("patientId"), "context.patientId")
    encounter_id = fhir_id(context.get("encounterId"), "context.encounterId")
    if "userId" in context:
        json_string(context["userId"], "context.userId")
    if "prefetch" not in request:
        raise MissingPrefetchError(
            "prefetch",
            "'prefetch' is required: Vigil cannot query the FHIR server, so the "
            "CDS client must send the prefetch data listed at discovery",
        )
    prefetch = json_object(request["prefetch"], "prefetch")
    notes = Notes()

    record: dict[str, Any] = _read_patient(prefetch, patient_id, now, notes)
    arrival = _read_encounter(prefetch, encounter_id, patient_id, record, notes)
    if arrival is not None:
        ctx = ObservationContext(patient_id, now, arrival, "ignored, recorded before this encounter started", notes)
    else:
        ctx = ObservationContext(
            patient_id,
            now,
            now - LOOKBACK_WITHOUT_ARRIVAL,
            f"ignored, recorded more than {LOOKBACK_WITHOUT_ARRIVAL.total_seconds() / 3600:g} h ago "
            "(no encounter start to compare with)",
            notes,
        )
    for key in ("vitals", "observations"):
        for resource, path in observation_resources(prefetch, key, ctx):
            read_observation(resource, path, ctx)
    if ctx.unknown_codes:
        notes.add(f"Observations with codes Vigil does not use were ignored ({', '.join(list(ctx.unknown_codes)[:8])})")
    chosen = latest_readings(ctx)
    complaint = chosen.pop("chief_complaint", None)
    if complaint is not None:
        record.pop("chief_complaint", None)
        record.pop("chief_complaint_code", None)
        text, code = complaint
        record.update({k: v for k, v in (("chief_complaint", text), ("chief_complaint_code", code)) if v is not None})
    record.update(chosen)
    return record, notes.render()


def _read_patient(prefetch: Mapping[str, Any], patient_id: str, now: datetime, notes: Notes) -> dict[str, Any]:
    path = "prefetch.patient"
    if prefetch.get("patient") is None:
        got = "null (no data)" if "patient" in prefetch else "no 'patient' key"
        raise MissingPrefetchError(
            path, f"'{path}' (template '{PREFETCH['patient']}') is required for the patient's age and sex; got {got}"
        )
    patient = json_object(prefetch["patient"], path)
    resource_type = patient.get("resourceType")
    if resource_type == "OperationOutcome":
        raise MissingPrefetchError(path, f"'{path}' is an OperationOutcome: the CDS client could not fetch the Patient")
    if resource_type != "Patient":
        raise InputValidationError(
            f"{path}.resourceType", f"'{path}.resourceType' must be 'Patient'; got {token(resource_type)}"
        )
    if "id" in patient and patient["id"] != patient_id:
        raise InputValidationError(
            f"{path}.id",
            f"'{path}.id' does not match context.patientId: the prefetched Patient is not the patient in context",
        )
    if patient.get("birthDate") is None:
        raise InputValidationError(
            f"{path}.birthDate", f"'{path}.birthDate' is required: Vigil needs the age at arrival; got none"
        )
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
        got = "a string of another form" if isinstance(gender, str) else kind(gender)
        raise InputValidationError(
            f"{path}.gender",
            f"'{path}.gender' must be a FHIR AdministrativeGender code (male, female, other, unknown); got {got}",
        )
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
        got = "a string of another form" if isinstance(value, str) else kind(value)
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


def _read_encounter(
    prefetch: Mapping[str, Any], encounter_id: str, patient_id: str, record: dict[str, Any], notes: Notes
) -> datetime | None:
    """Fill arrival_time, arrival_mode and a fallback chief complaint; return the encounter start."""
    path = "prefetch.encounter"
    if prefetch.get("encounter") is None:
        notes.add("No Encounter was prefetched: arrival time and mode are unknown")
        return None
    encounter = json_object(prefetch["encounter"], path)
    resource_type = encounter.get("resourceType")
    if resource_type == "OperationOutcome":
        notes.add("The CDS client could not fetch the Encounter (OperationOutcome): arrival time and mode are unknown")
        return None
    if resource_type != "Encounter":
        raise InputValidationError(
            f"{path}.resourceType", f"'{path}.resourceType' must be 'Encounter'; got {token(resource_type)}"
        )
    if "id" in encounter and encounter["id"] != encounter_id:
        raise InputValidationError(f"{path}.id", f"'{path}.id' does not match context.encounterId")
    check_subject(encounter, path, patient_id)
    start: datetime | None = None
    if encounter.get("period") is not None:
        period = json_object(encounter["period"], f"{path}.period")
        if period.get("start") is not None:
            start = fhir_datetime(period["start"], f"{path}.period.start")
            if start is None:
                notes.add("Encounter.period.start has no time of day: arrival_time is unknown")
            else:
                record["arrival_time"] = start.isoformat()
    mode = _arrival_mode(encounter, path, notes)
    if mode is not None:
        record["arrival_mode"] = mode
    if encounter.get("reasonCode") is not None:
        for i, concept in enumerate(json_array(encounter["reasonCode"], f"{path}.reasonCode")):
            text, code = complaint_concept(concept, f"{path}.reasonCode[{i}]")
            if text is not None or code is not None:
                record.update({k: v for k, v in (("chief_complaint", text), ("chief_complaint_code", code)) if v})
                break
    return start


def _arrival_mode(encounter: Mapping[str, Any], path: str, notes: Notes) -> str | None:
    for i, ext in enumerate(optional_array(encounter, "extension", path)):
        epath = f"{path}.extension[{i}]"
        ext = json_object(ext, epath)
        if ext.get("url") != ARRIVAL_MODE_EXTENSION:
            continue
        if ext.get("valueCode") in ("ambulance", "walk_in", "other"):
            return str(ext["valueCode"])
        if ext.get("valueCodeableConcept") is not None:
            for system, code, _ in codings_of(ext["valueCodeableConcept"], f"{epath}.valueCodeableConcept"):
                if system == SNOMED and code is not None and code in ECDS_ARRIVAL_MODE:
                    return ECDS_ARRIVAL_MODE[code]
        notes.add("ignored, arrival-mode extension value not recognised", epath)
    hospitalization = encounter.get("hospitalization")
    if hospitalization is None:
        return None
    hospitalization = json_object(hospitalization, f"{path}.hospitalization")
    if hospitalization.get("admitSource") is None:
        return None
    for system, code, _ in codings_of(hospitalization["admitSource"], f"{path}.hospitalization.admitSource"):
        if system == SNOMED and code is not None and code in ECDS_ARRIVAL_MODE:
            return ECDS_ARRIVAL_MODE[code]
    notes.add("Encounter.hospitalization.admitSource holds no ECDS arrival-mode code: arrival_mode is unknown")
    return None
