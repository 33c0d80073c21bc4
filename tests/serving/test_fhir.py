"""CDS Hooks 2.0 / FHIR R4 translation: request -> triage record, result -> cards and RiskAssessment."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import InputValidationError
from models.model_card import DECISION_SUPPORT_STATEMENT
from models.triage.news2 import news2
from models.triage.record import RECORD_FIELDS, validate_record
from serving.api.schemas import TriageResult
from serving.fhir.codes import ARRIVAL_MODE_EXTENSION, LOINC, PREFETCH, SERVICE_ID, SNOMED, UCUM
from serving.fhir.record import MissingPrefetchError, context_references, record_from_cds_request
from serving.fhir.response import card_indicator, cds_discovery, cds_response, risk_assessment

NOW = datetime(2025, 3, 14, 10, 30, tzinfo=UTC)
ARRIVAL = "2025-03-14T10:05:00Z"
TRIAGE = "2025-03-14T10:12:00Z"
PHI = ("Okonkwo", "Adaeze", "9990001112", "1961-07-02", "pat-7f3a")


def _obs(
    code: str,
    value: dict[str, Any] | None = None,
    *,
    when: str = TRIAGE,
    status: str = "final",
    system: str = LOINC,
    oid: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": status,
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
                ]
            }
        ],
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/pat-7f3a"},
        "effectiveDateTime": when,
        **extra,
    }
    if oid is not None:
        obs["id"] = oid
    if value is not None:
        obs["valueQuantity"] = value
    return obs


def _q(value: Any, code: str | None, **extra: Any) -> dict[str, Any]:
    q = {"value": value, "system": UCUM, "code": code, "unit": code, **extra}
    return {k: v for k, v in q.items() if v is not None}


def _component(code: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"code": {"coding": [{"system": LOINC, "code": code}]}, "valueQuantity": value}


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"https://ehr.example/fhir/Observation/{i}", "resource": r, "search": {"mode": "match"}}
            for i, r in enumerate(resources)
        ],
    }


def _request(
    vitals: list[dict[str, Any]] | None = None, observations: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A realistic encounter-start request: a man of 63 brought by emergency ambulance with chest pain."""
    vitals = (
        vitals
        if vitals is not None
        else [
            _obs("8867-4", _q(112, "/min")),
            _obs("9279-1", _q(24, "/min")),
            _obs("85354-9", component=[_component("8480-6", _q(98, "mm[Hg]")), _component("8462-4", _q(60, "mm[Hg]"))]),
            _obs("59408-5", _q(93, "%"), component=[_component("3151-8", _q(2, "L/min"))]),
            _obs("8310-5", _q(100.4, "[degF]")),
            _obs("29463-7", _q(82, "kg")),  # body weight: not used
            _obs("8867-4", _q(70, "/min"), when="2024-11-02T16:40:00+00:00"),  # a previous visit
        ]
    )
    observations = (
        observations
        if observations is not None
        else [
            _obs("9269-2", _q(15, "{score}")),
            {**_obs("72514-3"), "valueInteger": 7},
            {
                **_obs("67775-7"),
                "valueCodeableConcept": {
                    "coding": [{"system": SNOMED, "code": "248234008", "display": "Mentally alert"}]
                },
            },
            {
                **_obs("8661-1"),
                "valueCodeableConcept": {
                    "coding": [{"system": SNOMED, "code": "29857009", "display": "Chest pain"}],
                    "text": "Central chest pain radiating to the left arm",
                },
            },
        ]
    )
    return {
        "hook": "encounter-start",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "PractitionerRole/triage-nurse-1", "patientId": "pat-7f3a", "encounterId": "enc-88"},
        "prefetch": {
            "patient": {
                "resourceType": "Patient",
                "id": "pat-7f3a",
                "gender": "male",
                "birthDate": "1961-07-02",
                "name": [{"family": "Okonkwo", "given": ["Adaeze"]}],
                "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990001112"}],
            },
            "encounter": {
                "resourceType": "Encounter",
                "id": "enc-88",
                "status": "arrived",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
                "subject": {"reference": "Patient/pat-7f3a"},
                "period": {"start": ARRIVAL},
                "hospitalization": {
                    "admitSource": {
                        "coding": [
                            {
                                "system": SNOMED,
                                "code": "1048031000000100",
                                "display": "Arrival by emergency road ambulance",
                            }
                        ]
                    }
                },
            },
            "vitals": _bundle(*vitals),
            "observations": _bundle(*observations),
        },
    }


def _read(request: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    record, notes = record_from_cds_request(request, now=NOW)
    assert set(record) <= set(RECORD_FIELDS)
    for note in notes:
        assert not any(p in note for p in PHI), note
    return record, notes


def _vitals(*resources: dict[str, Any]) -> dict[str, Any]:
    request = _request(observations=[])
    request["prefetch"]["vitals"] = _bundle(*resources)
    return request


# ------------------------------------------------------------------------------------------------- request
def test_realistic_request_gives_the_expected_valid_record():
    record, notes = _read(_request())
    assert record == {
        "age_years": pytest.approx(63 + 255 / 365),  # 2 July 2024 -> 14 March 2025 is 255 of 365 days
        "sex": "male",
        "arrival_time": "2025-03-14T10:05:00+00:00",
        "arrival_mode": "ambulance",
        "heart_rate": 112.0,
        "resp_rate": 24.0,
        "sbp": 98.0,
        "dbp": 60.0,
        "spo2": 93.0,
        "on_supplemental_oxygen": True,
        "temperature_c": 38.0,
        "gcs": 15.0,
        "pain_score": 7.0,
        "consciousness": "A",
        "chief_complaint": "Central chest pain radiating to the left arm",
        "chief_complaint_code": "29857009",
    }
    canonical = validate_record(record)
    # Oracle: RR 24 (2) + SpO2 93 (2) + oxygen (2) + SBP 98 (2) + HR 112 (2) + alert (0) + 38.0 degC (0).
    assert news2(canonical).score == 10 and news2(canonical).band == "high"
    assert any("LOINC 29463-7" in n for n in notes)
    assert any("before this encounter started" in n and "prefetch.vitals.entry[6].resource" in n for n in notes)


@pytest.mark.parametrize(
    ("birth_date", "expected"),
    [
        ("1970-03-14", 55.0),  # birthday today
        ("1970-03-15", 54 + 364 / 365),  # birthday tomorrow
        ("1970-03", 54 + 364 / 365),  # taken as the 15th
        ("1970", 54 + 256 / 365),  # taken as 1 July
        ("2000-02-29", 25 + 14 / 365),  # leap-day birthday: 28 Feb in common years
        ("2025", 0.0),  # born this year: the middle of the year is in the future, so today
        ("2024-12-14", 90 / 365),
    ],
)
def test_birth_date_gives_age_at_now(birth_date, expected):
    request = _request()
    request["prefetch"]["patient"]["birthDate"] = birth_date
    record, _ = _read(request)
    assert record["age_years"] == pytest.approx(expected)


@pytest.mark.parametrize("birth_date", ["2025-03-15", "2026", "1970-02-30", "14/03/1970", "1970-3-4", 1970])
def test_bad_or_future_birth_date_is_refused_without_echoing_it(birth_date):
    request = _request()
    request["prefetch"]["patient"]["birthDate"] = birth_date
    with pytest.raises(InputValidationError, match=r"'prefetch\.patient\.birthDate'") as info:
        record_from_cds_request(request, now=NOW)
    assert info.value.field == "prefetch.patient.birthDate"
    assert str(birth_date) not in str(info.value)


@pytest.mark.parametrize(
    ("gender", "sex"),
    [("female", "female"), ("male", "male"), ("other", "unknown"), ("unknown", "unknown"), (None, "unknown")],
)
def test_gender_maps_to_sex(gender, sex):
    request = _request()
    request["prefetch"]["patient"]["gender"] = gender
    assert _read(request)[0]["sex"] == sex


def test_blood_pressure_panel_components_and_a_later_single_reading():
    panel = _obs(
        "85354-9",
        when="2025-03-14T10:10:00Z",
        component=[_component("8480-6", _q(141, "mm[Hg]")), _component("8462-4", _q(92, "mm[Hg]"))],
    )
    record, _ = _read(_vitals(panel))
    assert (record["sbp"], record["dbp"]) == (141.0, 92.0)
    later = _obs("8480-6", _q(128, "mm[Hg]"), when="2025-03-14T10:20:00Z")
    record, _ = _read(_vitals(panel, later))
    assert (record["sbp"], record["dbp"]) == (128.0, 92.0)


@pytest.mark.parametrize(
    ("value", "unit", "celsius"),
    [(98.6, "[degF]", 37.0), (104.0, "[degF]", 40.0), (36.4, "Cel", 36.4), (95.0, "°F", 35.0)],
)
def test_temperature_in_celsius_or_converted_from_fahrenheit(value, unit, celsius):
    quantity = _q(value, unit) if unit != "°F" else {"value": value, "unit": unit}  # display unit, no code
    record, _ = _read(_vitals(_obs("8310-5", quantity)))
    assert record["temperature_c"] == pytest.approx(celsius)
    validate_record(record)


def test_most_recent_reading_wins_whatever_the_order_or_time_element():
    readings = [
        _obs("8867-4", _q(96, "/min"), when="2025-03-14T10:15:00Z"),
        _obs("8867-4", _q(131, "/min"), when="2025-03-14T11:20:00+01:00"),  # 10:20Z: the latest
        _obs("8867-4", _q(88, "/min"), when="2025-03-14T10:06:00Z"),
    ]
    for order in (readings, readings[::-1]):
        assert _read(_vitals(*order))[0]["heart_rate"] == 131.0
    period = {**_obs("9279-1", _q(30, "/min")), "effectivePeriod": {"start": "2025-03-14T10:25:00Z"}}
    issued = {**_obs("9279-1", _q(14, "/min")), "issued": "2025-03-14T10:26:00.123Z"}
    del period["effectiveDateTime"], issued["effectiveDateTime"]
    assert _read(_vitals(_obs("9279-1", _q(18, "/min")), period, issued))[0]["resp_rate"] == 14.0


def test_entered_in_error_and_cancelled_are_ignored_with_a_note():
    record, notes = _read(
        _vitals(
            _obs("8867-4", _q(88, "/min"), when="2025-03-14T10:10:00Z"),
            _obs("8867-4", _q(180, "/min"), when="2025-03-14T10:20:00Z", status="entered-in-error"),
            _obs("9279-1", _q(40, "/min"), status="cancelled"),
        )
    )
    assert record["heart_rate"] == 88.0 and "resp_rate" not in record
    assert any("entered-in-error" in n and "prefetch.vitals.entry[1].resource" in n for n in notes)
    assert any("cancelled" in n and "prefetch.vitals.entry[2].resource" in n for n in notes)


@pytest.mark.parametrize(
    ("observation", "missing", "note"),
    [
        (_obs("8867-4", _q(2, "/s")), "heart_rate", "heart_rate with unit '/s'"),
        (_obs("8310-5", _q(310, "K")), "temperature_c", "temperature_c with unit 'K'"),
        (_obs("8310-5", {"value": 37.2}), "temperature_c", "temperature_c with no unit"),
        (_obs("59408-5", _q(97, "%", comparator=">")), "spo2", "a bound"),
        (_obs("8480-6", {"value": 120, "system": "http://example.org/units", "code": "mmHg"}), "sbp", "not UCUM"),
        ({**_obs("8867-4"), "valueString": "88"}, "heart_rate", "must be a valueQuantity"),
        ({**_obs("8867-4"), "dataAbsentReason": {"text": "patient refused"}}, "heart_rate", "dataAbsentReason"),
        (
            {k: v for k, v in _obs("8867-4", _q(80, "/min")).items() if k != "effectiveDateTime"},
            "heart_rate",
            "no effective time",
        ),
        (_obs("8867-4", _q(80, "/min"), when="2025-03-14"), "heart_rate", "no effective time"),
        (_obs("8867-4", _q(80, "/min"), when="2025-03-14T11:00:00Z"), "heart_rate", "after the time of the request"),
        (_obs("67775-7", valueCodeableConcept={"text": "drowsy"}), "consciousness", "not one of ACVPU"),
        (_obs("3150-0", _q(0.4, "%")), "on_supplemental_oxygen", "implausible"),
    ],
)
def test_unusable_values_are_noted_not_fatal(observation, missing, note):
    record, notes = _read(_vitals(observation))
    assert missing not in record
    assert any(note in n and "prefetch.vitals.entry[0].resource" in n for n in notes), notes
    validate_record(record)


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        ([_obs("3150-0", _q(21, "%"))], False),
        ([_obs("3150-0", _q(40, "%"))], True),
        ([_obs("3150-0", _q(0.35, "1"))], True),  # a fraction in UCUM "1"
        ([_obs("3151-8", _q(0, "L/min"))], False),
        ([_obs("3151-8", _q(15, "L/min"))], True),
        # the latest reading decides: oxygen stopped at 10:20
        (
            [
                _obs("3151-8", _q(4, "L/min"), when="2025-03-14T10:10:00Z"),
                _obs("3150-0", _q(21, "%"), when="2025-03-14T10:20:00Z"),
            ],
            False,
        ),
        # readings at the same time that disagree: oxygen is assumed (NEWS2 counts it)
        ([_obs("3150-0", _q(21, "%")), _obs("3151-8", _q(2, "L/min"))], True),
    ],
)
def test_supplemental_oxygen_from_fio2_or_flow(readings, expected):
    assert _read(_vitals(*readings))[0]["on_supplemental_oxygen"] is expected


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ({"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "450847001"}]}}, "P"),
        ({"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "422768004"}]}}, "U"),
        ({"valueCodeableConcept": {"text": "New confusion"}}, "C"),
        ({"valueCodeableConcept": {"coding": [{"system": "https://ehr.example/acvpu", "code": "voice"}]}}, "V"),
        ({"valueString": "Alert."}, "A"),
    ],
)
def test_consciousness_as_acvpu(value, level):
    for code, system in (("67775-7", LOINC), ("1104441000000107", SNOMED)):
        assert _read(_vitals({**_obs(code, system=system), **value}))[0]["consciousness"] == level


def test_chief_complaint_from_observation_string_or_encounter_reason():
    request = _request(observations=[{**_obs("8661-1"), "valueString": "fall from ladder"}])
    record, _ = _read(request)
    assert record["chief_complaint"] == "fall from ladder" and "chief_complaint_code" not in record
    request = _request(observations=[])
    request["prefetch"]["encounter"]["reasonCode"] = [
        {"coding": [{"system": SNOMED, "code": "21522001", "display": "Abdominal pain"}]}
    ]
    record, _ = _read(request)
    assert (record["chief_complaint"], record["chief_complaint_code"]) == ("Abdominal pain", "21522001")


@pytest.mark.parametrize(
    ("encounter_change", "mode"),
    [
        ({"extension": [{"url": ARRIVAL_MODE_EXTENSION, "valueCode": "walk_in"}]}, "walk_in"),
        ({"hospitalization": {"admitSource": {"coding": [{"system": SNOMED, "code": "1048071000000103"}]}}}, "walk_in"),
        ({"hospitalization": {"admitSource": {"coding": [{"system": SNOMED, "code": "1048001000000106"}]}}}, "other"),
        (
            {
                "hospitalization": {
                    "admitSource": {
                        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/admit-source", "code": "gp"}]
                    }
                }
            },
            None,
        ),
    ],
)
def test_arrival_mode(encounter_change, mode):
    request = _request()
    request["prefetch"]["encounter"].update(encounter_change)
    record, notes = _read(request)
    assert record.get("arrival_mode") == mode
    if mode is None:
        assert any("admitSource" in n for n in notes)


def test_without_encounter_only_the_last_24_hours_count():
    request = _vitals(
        _obs("8867-4", _q(90, "/min"), when="2025-03-13T09:00:00Z"),
        _obs("9279-1", _q(16, "/min"), when="2025-03-13T11:00:00Z"),
    )
    del request["prefetch"]["encounter"]
    record, notes = _read(request)
    assert "heart_rate" not in record and record["resp_rate"] == 16.0 and "arrival_time" not in record
    assert any("more than 24 h ago" in n for n in notes)


def test_null_or_missing_observation_keys_and_lists_of_resources():
    request = _request()
    request["prefetch"]["vitals"] = None  # CDS Hooks: the client found nothing
    del request["prefetch"]["observations"]
    record, notes = _read(request)
    assert set(record) == {"age_years", "sex", "arrival_time", "arrival_mode"}
    assert any("'prefetch.observations' was not sent" in n for n in notes)
    validate_record(record)
    request["prefetch"]["vitals"] = [_obs("8867-4", _q(77, "/min"))]
    assert _read(request)[0]["heart_rate"] == 77.0


def test_same_observation_in_both_keys_counts_once_and_other_resources_are_skipped():
    hr = _obs("8867-4", _q(77, "/min"), oid="hr-1")
    request = _request(vitals=[hr, {"resourceType": "OperationOutcome", "issue": []}], observations=[hr])
    record, notes = _read(request)
    assert record["heart_rate"] == 77.0
    assert not any("same time" in n for n in notes)
    assert any("not an Observation" in n for n in notes)


_HR = ("prefetch", "vitals", "entry", 0, "resource")
_DELETE = object()


def _set(request: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    request = copy.deepcopy(request)
    if not path:
        return value
    holder = request
    for key in path[:-1]:
        holder = holder[key]
    if value is _DELETE:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return request


@pytest.mark.parametrize(
    ("path", "value", "field", "error"),
    [
        ((), ["not", "an", "object"], "request", InputValidationError),
        (("hook",), "patient-view", "hook", InputValidationError),
        (("hookInstance",), _DELETE, "hookInstance", InputValidationError),
        (("context",), "pat-7f3a", "context", InputValidationError),
        (("context", "patientId"), 7, "context.patientId", InputValidationError),
        (("context", "patientId"), "pat 7f3a/../x", "context.patientId", InputValidationError),
        (("context", "encounterId"), _DELETE, "context.encounterId", InputValidationError),
        (("context", "userId"), {"id": 1}, "context.userId", InputValidationError),
        (("prefetch",), _DELETE, "prefetch", MissingPrefetchError),
        (("prefetch",), "Patient/pat-7f3a", "prefetch", InputValidationError),
        (("prefetch", "patient"), _DELETE, "prefetch.patient", MissingPrefetchError),
        (("prefetch", "patient"), None, "prefetch.patient", MissingPrefetchError),
        (("prefetch", "patient"), {"resourceType": "OperationOutcome"}, "prefetch.patient", MissingPrefetchError),
        (
            ("prefetch", "patient", "resourceType"),
            "Practitioner",
            "prefetch.patient.resourceType",
            InputValidationError,
        ),
        (("prefetch", "patient", "id"), "someone-else", "prefetch.patient.id", InputValidationError),
        (("prefetch", "patient", "birthDate"), _DELETE, "prefetch.patient.birthDate", InputValidationError),
        (("prefetch", "patient", "gender"), "M", "prefetch.patient.gender", InputValidationError),
        (("prefetch", "encounter", "id"), "enc-99", "prefetch.encounter.id", InputValidationError),
        (("prefetch", "encounter", "period"), ARRIVAL, "prefetch.encounter.period", InputValidationError),
        (
            ("prefetch", "encounter", "period", "start"),
            "2025-03-14T10:05:00",
            "prefetch.encounter.period.start",
            InputValidationError,
        ),
        (
            ("prefetch", "encounter", "subject", "reference"),
            "Patient/other",
            "prefetch.encounter.subject.reference",
            InputValidationError,
        ),
        (("prefetch", "vitals"), "lots", "prefetch.vitals", InputValidationError),
        (("prefetch", "vitals", "entry"), {"resource": {}}, "prefetch.vitals.entry", InputValidationError),
        (("prefetch", "vitals", "entry", 1), "Observation/1", "prefetch.vitals.entry[1]", InputValidationError),
        (
            ("prefetch", "vitals", "entry", 0, "resource"),
            _DELETE,
            "prefetch.vitals.entry[0].resource",
            InputValidationError,
        ),
        (
            (*_HR, "valueQuantity", "value"),
            "112",
            "prefetch.vitals.entry[0].resource.valueQuantity.value",
            InputValidationError,
        ),
        (
            (*_HR, "valueQuantity", "value"),
            True,
            "prefetch.vitals.entry[0].resource.valueQuantity.value",
            InputValidationError,
        ),
        (
            (*_HR, "valueQuantity", "value"),
            float("nan"),
            "prefetch.vitals.entry[0].resource.valueQuantity.value",
            InputValidationError,
        ),
        ((*_HR, "valueQuantity"), [112], "prefetch.vitals.entry[0].resource.valueQuantity", InputValidationError),
        (
            (*_HR, "valueQuantity", "code"),
            60,
            "prefetch.vitals.entry[0].resource.valueQuantity.code",
            InputValidationError,
        ),
        ((*_HR, "status"), _DELETE, "prefetch.vitals.entry[0].resource.status", InputValidationError),
        ((*_HR, "status"), "done", "prefetch.vitals.entry[0].resource.status", InputValidationError),
        ((*_HR, "code"), _DELETE, "prefetch.vitals.entry[0].resource.code", InputValidationError),
        ((*_HR, "code"), ["8867-4"], "prefetch.vitals.entry[0].resource.code", InputValidationError),
        (
            (*_HR, "code", "coding"),
            {"code": "8867-4"},
            "prefetch.vitals.entry[0].resource.code.coding",
            InputValidationError,
        ),
        (
            (*_HR, "code", "coding", 0),
            "8867-4",
            "prefetch.vitals.entry[0].resource.code.coding[0]",
            InputValidationError,
        ),
        (
            (*_HR, "effectiveDateTime"),
            "2025-03-14T10:12:00",
            "prefetch.vitals.entry[0].resource.effectiveDateTime",
            InputValidationError,
        ),
        (
            (*_HR, "effectiveDateTime"),
            20250314,
            "prefetch.vitals.entry[0].resource.effectiveDateTime",
            InputValidationError,
        ),
        (
            (*_HR, "effectiveDateTime"),
            "14 March 2025",
            "prefetch.vitals.entry[0].resource.effectiveDateTime",
            InputValidationError,
        ),
        (
            (*_HR, "subject", "reference"),
            "Patient/someone-else",
            "prefetch.vitals.entry[0].resource.subject.reference",
            InputValidationError,
        ),
        (
            ("prefetch", "vitals", "entry", 2, "resource", "component", 0, "valueQuantity", "value"),
            None,
            None,
            None,
        ),  # a component without a value is noted, not an error
        (
            ("prefetch", "vitals", "entry", 2, "resource", "component", 1, "valueQuantity", "value"),
            "60",
            "prefetch.vitals.entry[2].resource.component[1].valueQuantity.value",
            InputValidationError,
        ),
        (
            ("prefetch", "observations", "entry", 1, "resource", "valueInteger"),
            7.5,
            "prefetch.observations.entry[1].resource.valueInteger",
            InputValidationError,
        ),
    ],
)
def test_wrong_shapes_raise_with_the_json_path_and_no_phi(path, value, field, error):
    request = _set(_request(), path, value)
    if error is None:
        record, notes = _read(request)
        assert "sbp" not in record and any("without a value" in n for n in notes)
        return
    with pytest.raises(error) as info:
        record_from_cds_request(request, now=NOW)
    assert info.value.field == field
    assert f"'{field}'" in info.value.message
    assert not any(p in str(info.value) for p in PHI)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_PLACES = [
    (),
    ("context",),
    ("prefetch",),
    ("prefetch", "patient"),
    ("prefetch", "patient", "birthDate"),
    ("prefetch", "encounter"),
    ("prefetch", "encounter", "period"),
    ("prefetch", "encounter", "extension"),
    ("prefetch", "vitals"),
    ("prefetch", "vitals", "entry"),
    ("prefetch", "vitals", "entry", 2),
    *(
        (*_HR, key)
        for key in (
            "status",
            "code",
            "valueQuantity",
            "effectiveDateTime",
            "effectivePeriod",
            "component",
            "subject",
            "valueCodeableConcept",
            "issued",
        )
    ),
    ("prefetch", "observations", "entry", 2, "resource", "valueCodeableConcept"),
    ("prefetch", "observations", "entry", 3, "resource", "valueCodeableConcept", "coding"),
]


@settings(max_examples=300, deadline=None)
@given(place=st.sampled_from(_PLACES), value=_JSON)
def test_any_odd_shape_is_an_input_error_or_a_record(place, value):
    try:
        record, notes = record_from_cds_request(_set(_request(), place, value), now=NOW)
    except InputValidationError as exc:
        assert exc.field and exc.message
        return
    assert set(record) <= set(RECORD_FIELDS) and all(isinstance(n, str) for n in notes)


def test_now_must_be_timezone_aware():
    with pytest.raises(ValueError, match="timezone-aware"):
        record_from_cds_request(_request(), now=datetime(2025, 3, 14, 10, 30))


def test_context_references():
    assert context_references(_request()) == ("Patient/pat-7f3a", "Encounter/enc-88")


# ----------------------------------------------------------------------------------------------- discovery
def test_discovery_document():
    services = cds_discovery()["services"]
    assert len(services) == 1
    service = services[0]
    assert (service["hook"], service["id"]) == ("encounter-start", SERVICE_ID)
    assert {"hook", "id", "title", "description", "prefetch"} <= set(service)
    assert "never replaces" in service["description"] and "decision support" in service["description"].lower()
    assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert service["prefetch"]["encounter"] == "Encounter/{{context.encounterId}}"
    assert "category=vital-signs" in service["prefetch"]["vitals"]
    for code in ("8661-1", "72514-3", "9269-2", "67775-7"):
        assert f"{LOINC}|{code}" in service["prefetch"]["observations"]
    service["prefetch"]["patient"] = "changed"
    assert cds_discovery()["services"][0]["prefetch"] == PREFETCH  # a fresh copy each time


# ------------------------------------------------------------------------------------------------ response
SAMPLE: dict[str, Any] = {
    "request_id": "req-0b7c",
    "audit_id": 1042,
    "model": {
        "name": "vigil-triage",
        "version": "3",
        "sha256": "ab" * 32,
        "release_status": "pass",
        "unreleased_override": False,
        "synthetic_data": False,
    },
    "acuity": {
        "level": 2,
        "label": {"manchester": "Very urgent (orange)", "ecds": "Very urgent level emergency care"},
        "model_level": 3,
        "raised_by_news2_floor": True,
        "raised_by_safety_floor": True,
        "probabilities": {"1": 0.04, "2": 0.21, "3": 0.45, "4": 0.25, "5": 0.05},
    },
    "risks": {
        "admitted": {"probability": 0.41, "definition": "admitted to hospital from the ED"},
        "critical": {"probability": 0.07, "definition": "admitted to critical care, or died in the ED"},
    },
    "news2": {
        "score": 5,
        "partial": True,
        "band": "medium",
        "clinical_response": "key threshold for urgent response",
        "red_flag": False,
        "components": {
            "resp_rate": 2,
            "spo2": 1,
            "on_supplemental_oxygen": 0,
            "sbp": 0,
            "heart_rate": 2,
            "consciousness": 0,
            "temperature_c": 0,
        },
        "missing": ["temperature_c"],
        "minimum_acuity": 2,
    },
    "floor": {"level": 2, "source": "news2", "reasons": ["NEWS2 5 (medium risk)"], "raised_level": True},
    "red_flags": [],
    "contributing_factors": [
        {
            "field": "resp_rate",
            "source": "news2",
            "detail": "resp_rate 24 breaths/min scores 2 NEWS2 points",
            "effect": {},
        },
        {
            "field": "age_years",
            "source": "model",
            "detail": "age_years 63.7 years: P(admitted) +9.0 pts",
            "effect": {"admitted": 0.09, "critical": 0.01},
        },
    ],
    "flags": {
        "missing_inputs": ["temperature_c"],
        "out_of_training_range": [],
        "news2_floor_raised_level": True,
        "safety_floor_raised_level": True,
        "news2_partial": True,
        "news2_not_validated": False,
        "synthetic_model": False,
        "unreleased_model": False,
    },
    "decision_support_statement": DECISION_SUPPORT_STATEMENT,
}


def _sample(**changes: Any) -> dict[str, Any]:
    sample = copy.deepcopy(SAMPLE)
    for dotted, value in changes.items():
        holder = sample
        *parents, last = dotted.split("__")
        for key in parents:
            holder = holder[key]
        holder[last] = value
    return TriageResult.model_validate(sample).model_dump()  # cannot drift from the schema


def _no_empty(node: Any, where: str = "$") -> None:
    """CDS Hooks and FHIR JSON forbid null, "", [] and {}."""
    assert node not in (None, "", [], {}), where
    if isinstance(node, dict):
        for key, value in node.items():
            _no_empty(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _no_empty(value, f"{where}[{i}]")


def test_main_card():
    response = cds_response(
        _sample(), now=NOW, patient_reference="Patient/pat-7f3a", encounter_reference="Encounter/enc-88"
    )
    _no_empty(response)
    json.dumps(response)
    (card,) = response["cards"]
    assert card["summary"] == (
        "Triage level 2 (Very urgent (orange)): P(admission) 41%, P(critical) 7%; NEWS2 5 (medium)"
    )
    assert card["indicator"] == "critical" and card["source"]["label"] == "Vigil"
    detail = card["detail"]
    for text in (
        "NEWS2 5",
        "medium",
        "Key threshold for urgent response.",
        "temperature_c not recorded",
        "resp_rate 24 breaths/min scores 2 NEWS2 points",
        "Raised from the model's level 3 by the safety "
        "floor (NEWS2: NEWS2 5 (medium risk); no level less urgent than 2)",
        f"> {DECISION_SUPPORT_STATEMENT}",
        "vigil-triage 3",
    ):
        assert text in detail, text
    (suggestion,) = card["suggestions"]
    assert card["selectionBehavior"] == "at-most-one"
    (action,) = suggestion["actions"]
    assert action["type"] == "create" and action["description"]
    assert action["resource"]["resourceType"] == "RiskAssessment"
    assert action["resource"]["subject"] == {"reference": "Patient/pat-7f3a"}
    ids = [card["uuid"], suggestion["uuid"]]
    assert all(uuid.UUID(i).version == 4 for i in ids) and len(set(ids)) == 2


@pytest.mark.parametrize(
    ("level", "band", "indicator"),
    [
        (1, "low", "critical"),
        (2, "low", "critical"),
        (3, "low", "warning"),
        (4, "high", "critical"),
        (4, "medium", "warning"),
        (5, "low-medium", "warning"),
        (4, "low", "info"),
        (5, "low", "info"),
    ],
)
def test_card_indicator(level, band, indicator):
    assert card_indicator(level, band) == indicator
    sample = _sample(acuity__level=level, news2__band=band)
    assert cds_response(sample, now=NOW)["cards"][0]["indicator"] == indicator


@pytest.mark.parametrize(
    ("flag", "reason"), [("synthetic_model", "synthetic data"), ("unreleased_model", "release gate")]
)
def test_unreleased_or_synthetic_model_adds_a_warning_card(flag, reason):
    cards = cds_response(_sample(**{f"flags__{flag}": True}), now=NOW)["cards"]
    assert len(cards) == 2
    warning = cards[1]
    assert warning["indicator"] == "warning" and "Not for clinical use" in warning["summary"]
    assert reason in warning["detail"] and reason in cards[0]["detail"]
    assert warning["uuid"] != cards[0]["uuid"]


def test_summary_stays_under_140_characters():
    card = cds_response(_sample(acuity__label={"manchester": "x" * 200, "ecds": "y"}), now=NOW)["cards"][0]
    assert len(card["summary"]) < 140


def test_risk_assessment_structure_and_probabilities():
    result = _sample()
    ra = risk_assessment(result, patient_reference="Patient/pat-7f3a", encounter_reference="Encounter/enc-88", now=NOW)
    _no_empty(ra)
    json.dumps(ra)
    assert (ra["resourceType"], ra["status"]) == ("RiskAssessment", "final")
    assert ra["subject"] == {"reference": "Patient/pat-7f3a"}
    assert ra["encounter"] == {"reference": "Encounter/enc-88"}
    assert ra["occurrenceDateTime"] == "2025-03-14T10:30:00+00:00"
    assert ra["method"]["text"] == "Vigil triage model vigil-triage 3"
    admitted, critical, acuity = ra["prediction"]
    assert admitted["probabilityDecimal"] == result["risks"]["admitted"]["probability"] == 0.41
    assert critical["probabilityDecimal"] == result["risks"]["critical"]["probability"] == 0.07
    assert admitted["outcome"]["text"] == result["risks"]["admitted"]["definition"]
    assert acuity["outcome"]["coding"] == [
        {"system": SNOMED, "code": "1064911000000105", "display": "Very urgent level emergency care"}
    ]
    assert acuity["probabilityDecimal"] == 0.21
    assert "by the safety floor (NEWS2: NEWS2 5 (medium risk); no level less urgent than 2)" in acuity["rationale"]
    assert ra["note"] == [
        {"text": DECISION_SUPPORT_STATEMENT},
        {"text": "Safety floor: NEWS2: NEWS2 5 (medium risk); no level less urgent than 2."},
    ]
    assert "key threshold for urgent response" in ra["mitigation"]
    assert ra["identifier"][0]["value"] == "req-0b7c"


def test_red_flag_and_acvpu_floor_are_shown_in_card_and_risk_assessment():
    flag = {"id": "stroke", "label": "Stroke symptoms", "floor_level": 2, "source": "NICE NG128"}
    sample = _sample(
        acuity__level=1,
        acuity__model_level=3,
        acuity__raised_by_news2_floor=False,
        floor={"level": 1, "source": "acvpu", "reasons": ["consciousness P"], "raised_level": True},
        red_flags=[flag],
    )
    detail = cds_response(sample, now=NOW)["cards"][0]["detail"]
    assert "by the safety floor (ACVPU: consciousness P; no level less urgent than 1)" in detail
    assert "Red-flag complaint: Stroke symptoms (level 2 at least)." in detail
    assert "- The safety floor raised the level (acvpu)" in detail
    ra = risk_assessment(sample, patient_reference=None, encounter_reference=None, now=NOW)
    notes = [n["text"] for n in ra["note"]]
    assert "Safety floor: ACVPU: consciousness P; no level less urgent than 1." in notes
    assert "Red-flag complaint: Stroke symptoms." in notes
    no_floor = _sample(
        acuity__raised_by_news2_floor=False,
        acuity__raised_by_safety_floor=False,
        flags__news2_floor_raised_level=False,
        flags__safety_floor_raised_level=False,
        floor={"level": 5, "source": "none", "reasons": [], "raised_level": False},
    )
    ra = risk_assessment(no_floor, patient_reference=None, encounter_reference=None, now=NOW)
    assert ra["note"] == [{"text": DECISION_SUPPORT_STATEMENT}]
    assert "safety floor" not in ra["prediction"][-1]["rationale"]


@pytest.mark.parametrize(
    ("level", "code"),
    [(1, "1064891000000107"), (3, "1064901000000108"), (4, "1077241000000103"), (5, "1077251000000100")],
)
def test_acuity_is_coded_as_the_ecds_snomed_concept(level, code):
    ra = risk_assessment(_sample(acuity__level=level), patient_reference=None, encounter_reference=None, now=NOW)
    assert ra["prediction"][-1]["outcome"]["coding"][0]["code"] == code


def test_risk_assessment_without_references_and_with_flags():
    ra = risk_assessment(
        _sample(flags__unreleased_model=True), patient_reference=None, encounter_reference=None, now=NOW
    )
    assert "reference" not in ra["subject"] and ra["subject"]["display"]
    assert "encounter" not in ra
    assert any("release gate" in note["text"] for note in ra["note"])
    with pytest.raises(ValueError, match="Patient/<id>"):
        risk_assessment(_sample(), patient_reference="Encounter/enc-88", encounter_reference=None, now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        risk_assessment(_sample(), patient_reference=None, encounter_reference=None, now=datetime(2025, 3, 14))


def test_end_to_end_request_to_cards():
    """Request -> record -> (a hand-made result for it) -> response: references flow into the RiskAssessment."""
    request = _request()
    record, _ = record_from_cds_request(request, now=NOW)
    validate_record(record)
    patient, encounter = context_references(request)
    response = cds_response(_sample(), now=NOW, patient_reference=patient, encounter_reference=encounter)
    resource = response["cards"][0]["suggestions"][0]["actions"][0]["resource"]
    assert resource["subject"]["reference"] == "Patient/pat-7f3a"
    assert resource["encounter"]["reference"] == "Encounter/enc-88"
