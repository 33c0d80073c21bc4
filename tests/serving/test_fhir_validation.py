"""Every FHIR resource Vigil emits, and every one the tests send it, validates against fhir.resources' models.

fhir.resources 8.x has no FHIR R4 (4.0.1) package that imports with pydantic 2, so the models are its R4B (4.3.0)
ones (see pyproject.toml): Patient, Encounter, Observation, Bundle and RiskAssessment are the same in both
releases. The models check structure, cardinality, required elements and the primitive types' regular
expressions (a dateTime with a time needs a zone, no empty strings, no unknown elements); they do not check
profiles (vital signs) or terminology bindings.

Two tiers: the response builders on hand-made results (fast, no model), then the CDS Hooks service and
``POST /v1/triage`` with ``Accept: application/fhir+json`` end to end on the small real models of the
``service`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError
from test_api_cds import _request as api_cds_request  # the prefetch the other CDS tests send
from test_fhir import NOW, _sample
from test_fhir import _request as fhir_request

from serving.fhir.codes import LOINC, SNOMED, UCUM
from serving.fhir.record import context_references, record_from_cds_request
from serving.fhir.response import cds_response, risk_assessment

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
VITAL_SIGNS = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]
}


def _resources(node: Any, where: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every top-level FHIR resource (a dict with ``resourceType``) in a JSON document, with its path."""
    if isinstance(node, dict):
        if "resourceType" in node:
            yield where, node
            return  # a resource validates its contained resources itself (Bundle.entry.resource)
        for key, value in node.items():
            yield from _resources(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _resources(value, f"{where}[{i}]")


def _validate_all(document: Any, expected: set[str]) -> list[dict[str, Any]]:
    """Validate each resource in ``document`` with the R4B model of its type; the types found must be ``expected``."""
    found = list(_resources(document))
    assert {resource["resourceType"] for _, resource in found} == expected
    for where, resource in found:
        model = get_fhir_model_class(resource["resourceType"])
        try:
            model.model_validate(resource)
        except ValidationError as exc:
            pytest.fail(f"{where} is not a valid FHIR {resource['resourceType']}:\n{exc}")
    return [resource for _, resource in found]


def test_the_validator_refuses_what_fhir_forbids():
    """The check can fail: a naive dateTime, an empty string and an unknown element are each refused."""
    good = risk_assessment(_sample(), patient_reference="Patient/p1", encounter_reference=None, now=NOW)
    model = get_fhir_model_class("RiskAssessment")
    model.model_validate(good)
    for change in ({"occurrenceDateTime": "2025-03-14T10:30:00"}, {"mitigation": ""}, {"riskLevel": "high"}):
        with pytest.raises(ValidationError):
            model.model_validate({**good, **change})
    with pytest.raises(ValidationError, match="status"):
        model.model_validate({k: v for k, v in good.items() if k != "status"})


# ------------------------------------------------------------------------------- prefetch the tests send
@pytest.mark.parametrize("request_of", [api_cds_request, fhir_request], ids=["test_api_cds", "test_fhir"])
def test_prefetch_sent_by_the_tests_is_valid_fhir(request_of):
    request = request_of()
    resources = _validate_all(request["prefetch"], {"Patient", "Encounter", "Bundle"})
    assert all(
        e["resource"]["resourceType"] == "Observation"
        for b in resources
        if b["resourceType"] == "Bundle"
        for e in b["entry"]
    )


# ------------------------------------------------------------------------ response builders, no model
@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="partial-news2-floor-raised"),
        pytest.param(
            {
                "acuity__level": 5,
                "acuity__model_level": 5,
                "acuity__raised_by_news2_floor": False,
                "acuity__raised_by_safety_floor": False,
                "news2__score": 0,
                "news2__band": "low",
                "news2__partial": False,
                "news2__missing": [],
                "news2__clinical_response": "ward-based response",
                "floor": {"level": 5, "source": "none", "reasons": [], "raised_level": False},
                "flags__missing_inputs": [],
                "flags__news2_floor_raised_level": False,
                "flags__safety_floor_raised_level": False,
                "flags__news2_partial": False,
            },
            id="normal",
        ),
        pytest.param(
            {
                "acuity__level": 1,
                "news2__score": 11,
                "news2__band": "high",
                "news2__red_flag": True,
                "news2__clinical_response": "emergency response",
                "floor": {"level": 1, "source": "acvpu", "reasons": ["consciousness P"], "raised_level": True},
                "red_flags": [{"id": "stroke", "label": "Stroke symptoms", "floor_level": 2, "source": "NICE NG128"}],
            },
            id="news2-red-red-flag",
        ),
        pytest.param({"flags__synthetic_model": True, "flags__unreleased_model": True}, id="unreleased-synthetic"),
    ],
)
@pytest.mark.parametrize(
    "references", [("Patient/pat-7f3a", "Encounter/enc-88"), (None, None)], ids=["references", "no-references"]
)
def test_cds_response_resources_are_valid_fhir(changes, references):
    patient, encounter = references
    response = cds_response(_sample(**changes), now=NOW, patient_reference=patient, encounter_reference=encounter)
    (resource,) = _validate_all(response, {"RiskAssessment"})
    assert resource is response["cards"][0]["suggestions"][0]["actions"][0]["resource"]


def test_references_read_from_the_request_make_a_valid_risk_assessment():
    request = fhir_request()
    record_from_cds_request(request, now=NOW)
    patient, encounter = context_references(request)
    _validate_all(
        risk_assessment(_sample(), patient_reference=patient, encounter_reference=encounter, now=NOW),
        {"RiskAssessment"},
    )


# --------------------------------------------------------------------------------------- end to end
def _obs(code: str, when: str, **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{code}",
        "status": "final",
        "category": [VITAL_SIGNS],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": "Patient/p9"},
        "effectiveDateTime": when,
        **value,
    }


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"https://ehr.example/fhir/Observation/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


#: (heart rate, respiratory rate, systolic, diastolic, SpO2, temperature, FiO2); None: not recorded.
PATIENTS = {
    "normal": (72, 14, 124, 78, 98, 36.8, 21),
    "news2-red": (131, 27, 89, 55, 90, 39.4, 21),
    "missing-optional-vitals": (88, 18, None, None, None, None, None),
}
VITAL_CODES = (
    ("8867-4", "/min"),
    ("9279-1", "/min"),
    ("8480-6", "mm[Hg]"),
    ("8462-4", "mm[Hg]"),
    ("59408-5", "%"),
    ("8310-5", "Cel"),
    ("3150-0", "%"),
)


def _cds_request(vitals: tuple[float | None, ...]) -> dict[str, Any]:
    now = datetime.now(UTC)
    arrival = (now - timedelta(minutes=20)).isoformat(timespec="seconds")
    taken = (now - timedelta(minutes=10)).isoformat(timespec="seconds")
    readings = [
        _obs(code, taken, valueQuantity={"value": value, "unit": unit, "system": UCUM, "code": unit})
        for (code, unit), value in zip(VITAL_CODES, vitals, strict=True)
        if value is not None
    ]
    complaint = _obs(
        "8661-1",
        taken,
        valueCodeableConcept={"coding": [{"system": SNOMED, "code": "29857009", "display": "Chest pain"}]},
    )
    alert = _obs(
        "67775-7",
        taken,
        valueCodeableConcept={"coding": [{"system": SNOMED, "code": "248234008", "display": "Mentally alert"}]},
    )
    for resource in (complaint, alert):
        del resource["category"]
    observations = [complaint] if None in vitals else [complaint, alert]  # ACVPU too is missing in that case
    return {
        "hook": "encounter-start",
        "hookInstance": "5f0c2a4e-1b7d-4c11-9d1e-000000000009",
        "context": {"userId": "Practitioner/n1", "patientId": "p9", "encounterId": "e9"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p9", "gender": "male", "birthDate": "1971-04-12"},
            "encounter": {
                "resourceType": "Encounter",
                "id": "e9",
                "status": "arrived",
                "class": {"system": ACT_CODE, "code": "EMER"},
                "subject": {"reference": "Patient/p9"},
                "period": {"start": arrival},
            },
            "vitals": _bundle(*readings),
            "observations": _bundle(*observations),
        },
    }


@pytest.mark.parametrize("case", list(PATIENTS))
def test_cds_service_emits_only_valid_fhir(service, case):
    request = _cds_request(PATIENTS[case])
    _validate_all(request["prefetch"], {"Patient", "Encounter", "Bundle"})  # the input is valid R4 too
    res = service.client.post("/cds-services/vigil-triage", json=request, headers=service.headers("triage"))
    assert res.status_code == 200, res.text
    (resource,) = _validate_all(res.json(), {"RiskAssessment"})
    assert resource["subject"] == {"reference": "Patient/p9"}
    assert resource["encounter"] == {"reference": "Encounter/e9"}
    mitigation = resource["mitigation"]
    if case == "news2-red":
        assert "(high" in mitigation, mitigation
    elif case == "normal":
        assert "(low" in mitigation and "partial" not in mitigation, mitigation
    else:
        assert "partial" in mitigation, mitigation


def test_triage_as_fhir_json_is_a_valid_risk_assessment(service):
    record = {
        "age_years": 71,
        "sex": "female",
        "arrival_mode": "ambulance",
        "chief_complaint": "shortness of breath",
        "heart_rate": 135,
        "resp_rate": 30,
        "sbp": 88,
        "spo2": 86,
        "consciousness": "V",
    }
    res = service.client.post(
        "/v1/triage", json=record, headers=service.headers("triage", Accept="application/fhir+json")
    )
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("application/fhir+json")
    (resource,) = _validate_all(res.json(), {"RiskAssessment"})
    assert "reference" not in resource["subject"]
