"""FHIR R4 Observations -> triage readings, for :func:`serving.fhir.record.record_from_cds_request`.

:func:`observation_resources` yields the Observations of one prefetch key, :func:`read_observation` turns each into
readings held by an :class:`ObservationContext`, and :func:`latest_readings` keeps the most recent per field. What
is read, and why something is ignored, is described in :mod:`serving.fhir.record`; what is ignored is reported in
:class:`Notes`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from models.errors import InputValidationError
from serving.fhir.codes import ACVPU_SNOMED, LOINC, OBSERVATION_CODES, SNOMED, UCUM
from serving.fhir.shapes import (
    TOKEN_RE,
    check_subject,
    codings_of,
    fhir_datetime,
    json_number,
    json_object,
    json_string,
    kind,
    optional_array,
    optional_string,
    token,
)

#: Tolerance for clock skew between systems: readings this far before the encounter start or after ``now`` count.
CLOCK_SKEW: Final = timedelta(minutes=5)

_COMPONENTS: Final[dict[str, dict[str, str]]] = {
    "bp_panel": {"8480-6": "sbp", "8462-4": "dbp"},
    "spo2": {"3150-0": "fio2", "3151-8": "o2_flow"},
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
    "mmHg": "mm[Hg]",
    "degC": "Cel",
    "°C": "Cel",
    "degF": "[degF]",
    "°F": "[degF]",
    "bpm": "/min",
    "beats/min": "/min",
    "breaths/min": "/min",
    "l/min": "L/min",
}

_OBSERVATION_STATUSES: Final = frozenset(
    {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
)
_RESULT_STATUSES: Final = frozenset({"preliminary", "final", "amended", "corrected"})


@dataclass
class Notes:
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
class ObservationContext:
    """What reading one request's Observations needs and collects: the patient, the time window, readings, notes."""

    patient_id: str
    now: datetime
    not_before: datetime
    before_reason: str
    notes: Notes
    readings: list[_Reading] = field(default_factory=list)
    unknown_codes: dict[str, None] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)


def observation_resources(
    prefetch: Mapping[str, Any], key: str, ctx: ObservationContext
) -> Iterator[tuple[Mapping[str, Any], str]]:
    """The Observations of ``prefetch[key]`` (a Bundle, a list or one resource) with their JSON paths, once each."""
    path = f"prefetch.{key}"
    if key not in prefetch:
        ctx.notes.add(f"'{path}' was not sent: the Observations it asks for are treated as not recorded")
        return
    value = prefetch[key]
    if value is None:
        return  # CDS Hooks: null means the client found no matching data
    if isinstance(value, list):
        items = [(json_object(v, f"{path}[{i}]"), f"{path}[{i}]") for i, v in enumerate(value)]
    else:
        value = json_object(value, path)
        if value.get("resourceType") == "Bundle":
            items = []
            for i, entry in enumerate(optional_array(value, "entry", path)):
                entry = json_object(entry, f"{path}.entry[{i}]")
                items.append(
                    (json_object(entry.get("resource"), f"{path}.entry[{i}].resource"), f"{path}.entry[{i}].resource")
                )
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
        return fhir_datetime(obs["effectiveDateTime"], f"{path}.effectiveDateTime")
    if obs.get("effectivePeriod") is not None:
        period = json_object(obs["effectivePeriod"], f"{path}.effectivePeriod")
        for key in ("start", "end"):
            if period.get(key) is not None:
                return fhir_datetime(period[key], f"{path}.effectivePeriod.{key}")
    for key in ("effectiveInstant", "issued"):
        if obs.get(key) is not None:
            return fhir_datetime(obs[key], f"{path}.{key}")
    return None


def _what(concept: Any, path: str, ctx: ObservationContext) -> str | None:
    if concept is None:
        raise InputValidationError(path, f"'{path}' is required (Observation.code); got none")
    codings = codings_of(concept, path)
    for system, code, _ in codings:
        what = OBSERVATION_CODES.get((system or "", code or ""))
        if what is not None:
            return what
    for system, code, _ in codings:
        known = system in (LOINC, SNOMED) and code is not None and TOKEN_RE.fullmatch(code)
        ctx.unknown_codes[f"{'LOINC' if system == LOINC else 'SNOMED CT'} {code}" if known else "local codes"] = None
    if not codings:
        ctx.unknown_codes["text only"] = None
    return None


def read_observation(obs: Mapping[str, Any], path: str, ctx: ObservationContext) -> None:
    """Add the readings of one Observation (and its components) to ``ctx``, or a note saying why it was ignored."""
    status = obs.get("status")
    if not isinstance(status, str) or status not in _OBSERVATION_STATUSES:
        got = "a string of another form" if isinstance(status, str) else kind(status)
        raise InputValidationError(
            f"{path}.status", f"'{path}.status' must be a FHIR ObservationStatus code; got {got}"
        )
    if status not in _RESULT_STATUSES:
        ctx.notes.add(f"ignored, status {status}", path)
        return
    if not check_subject(obs, path, ctx.patient_id):
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
    for i, component in enumerate(optional_array(obs, "component", path)):
        cpath = f"{path}.component[{i}]"
        component = json_object(component, cpath)
        loinc = {code for system, code, _ in codings_of(component.get("code"), f"{cpath}.code") if system == LOINC}
        part = next((f for c, f in _COMPONENTS.get(what, {}).items() if c in loinc), None)
        if part is not None:
            _add_quantity(ctx, part, component, when, cpath)
    if what == "bp_panel" and not obs.get("component"):
        ctx.notes.add("ignored, blood pressure panel without components", path)


def _add(ctx: ObservationContext, name: str, value: Any, when: datetime, path: str) -> None:
    if value is not None:
        ctx.readings.append(_Reading(name, value, when, path))


def _add_quantity(ctx: ObservationContext, what: str, holder: Mapping[str, Any], when: datetime, path: str) -> None:
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


def _quantity(holder: Mapping[str, Any], path: str, what: str, notes: Notes) -> float | None:
    """The value of ``valueQuantity`` (or ``valueInteger`` for scores) in the record's unit, or None with a note."""
    scores = "{score}" in _UNITS[what]
    if holder.get("valueQuantity") is not None:
        qpath = f"{path}.valueQuantity"
        quantity = json_object(holder["valueQuantity"], qpath)
        if quantity.get("value") is None:
            notes.add("ignored, valueQuantity without a value", path)
            return None
        number = json_number(quantity["value"], f"{qpath}.value")
        system, code, unit = (optional_string(quantity, k, qpath) for k in ("system", "code", "unit"))
        if quantity.get("comparator") is not None:
            notes.add(f"ignored, {what} is a bound ({token(quantity['comparator'])}), not a measurement", path)
            return None
        if system is not None and system != UCUM:
            notes.add(f"ignored, {what} unit is not UCUM", path)
            return None
        key = code if code is not None else _UNIT_ALIASES.get(unit or "", unit or "")
        convert = _UNITS[what].get(key)
        if convert is None:
            got = f"unit {token(key)}" if key else "no unit"
            notes.add(f"ignored, {what} with {got}: expected {' or '.join(repr(u) for u in _UNITS[what] if u)}", path)
            return None
        return convert(number)
    if scores and holder.get("valueInteger") is not None:
        value = holder["valueInteger"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputValidationError(
                f"{path}.valueInteger", f"'{path}.valueInteger' must be an integer; got {kind(value)}"
            )
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


def _acvpu(obs: Mapping[str, Any], path: str, notes: Notes) -> str | None:
    texts: list[str | None] = []
    if obs.get("valueCodeableConcept") is not None:
        cpath = f"{path}.valueCodeableConcept"
        for system, code, display in codings_of(obs["valueCodeableConcept"], cpath):
            if system == SNOMED and code is not None and code in ACVPU_SNOMED:
                return ACVPU_SNOMED[code]
            texts += [display, code if system != SNOMED else None]
        texts.insert(0, optional_string(obs["valueCodeableConcept"], "text", cpath))
    elif obs.get("valueString") is not None:
        texts.append(json_string(obs["valueString"], f"{path}.valueString"))
    for text in texts:
        if text is not None and _words(text) in _ACVPU_WORDS:
            return _ACVPU_WORDS[_words(text)]
    notes.add("ignored, consciousness value is not one of ACVPU", path)
    return None


def complaint_concept(concept: Any, path: str) -> tuple[str | None, str | None]:
    """(text, SNOMED CT code) of a chief-complaint CodeableConcept; either may be None."""
    codings = codings_of(concept, path)
    text = optional_string(concept, "text", path) or next((d for _, _, d in codings if d), None)
    code = next((c for s, c, _ in codings if s == SNOMED and c), None)
    return text, code


def _complaint(obs: Mapping[str, Any], path: str, notes: Notes) -> tuple[str | None, str | None] | None:
    if obs.get("valueString") is not None:
        return json_string(obs["valueString"], f"{path}.valueString"), None
    if obs.get("valueCodeableConcept") is not None:
        text, code = complaint_concept(obs["valueCodeableConcept"], f"{path}.valueCodeableConcept")
        if text is not None or code is not None:
            return text, code
    notes.add("ignored, chief complaint without valueString or valueCodeableConcept", path)
    return None


def latest_readings(ctx: ObservationContext) -> dict[str, Any]:
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
