"""CDS Hooks over HTTP: discovery, a service call with FHIR R4 prefetch, and its errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def _obs(code: str, value: float, unit: str, when: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "system": UCUM, "code": unit},
    }


def _request(**prefetch_changes) -> dict:
    now = datetime.now(UTC)
    arrival = (now - timedelta(minutes=20)).isoformat(timespec="seconds")
    taken = (now - timedelta(minutes=10)).isoformat(timespec="seconds")
    vitals = [
        _obs("8867-4", 131, "/min", taken),
        _obs("9279-1", 27, "/min", taken),
        _obs("8480-6", 89, "mm[Hg]", taken),
        _obs("8462-4", 55, "mm[Hg]", taken),
        _obs("59408-5", 90, "%", taken),
        _obs("8310-5", 39.4, "Cel", taken),
    ]
    prefetch = {
        "patient": {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-05-01"},
        "encounter": {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "arrived",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
            "subject": {"reference": "Patient/p1"},
            "period": {"start": arrival},
        },
        "vitals": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in vitals]},
        **prefetch_changes,
    }
    return {
        "hook": "encounter-start",
        "hookInstance": "0b7d3e0e-6a4c-4d5e-9b1e-000000000001",
        "context": {"userId": "Practitioner/n1", "patientId": "p1", "encounterId": "e1"},
        "prefetch": prefetch,
    }


def test_discovery_is_public_and_lists_the_triage_service(service):
    res = service.client.get("/cds-services")
    assert res.status_code == 200
    (svc,) = res.json()["services"]
    assert svc["id"] == "vigil-triage" and svc["hook"] == "encounter-start" and "patient" in svc["prefetch"]


def test_service_call_answers_cards_with_a_risk_assessment(service):
    res = service.client.post("/cds-services/vigil-triage", json=_request(), headers=service.headers("triage"))
    assert res.status_code == 200, res.text
    cards = res.json()["cards"]
    main = cards[0]
    assert main["indicator"] == "critical"  # NEWS2: RR 27 (3) + SpO2 90 (3) + SBP 89 (3) + HR 131 (3) + 39.4 (2)
    assert len(main["summary"]) <= 140 and "level 1" in main["summary"].lower()
    resource = main["suggestions"][0]["actions"][0]["resource"]
    assert resource["resourceType"] == "RiskAssessment"
    assert resource["subject"] == {"reference": "Patient/p1"} and resource["encounter"] == {"reference": "Encounter/e1"}
    assert any(c["indicator"] == "warning" for c in cards[1:])  # the synthetic-data model says so
    audited = service.store.read_audit(limit=100)
    assert audited[-1].route == "/cds-services/vigil-triage"


def test_missing_patient_prefetch_is_412_and_bad_requests_422(service):
    h = service.headers("triage")
    body = _request()
    del body["prefetch"]["patient"]
    res = service.client.post("/cds-services/vigil-triage", json=body, headers=h)
    assert res.status_code == 412 and "patient" in res.json()["errors"][0]["field"]
    res = service.client.post("/cds-services/vigil-triage", json={**_request(), "hook": "order-sign"}, headers=h)
    assert res.status_code == 422 and res.json()["errors"][0]["field"] == "hook"
    assert service.client.post("/cds-services/nope", json=_request(), headers=h).status_code == 404
    assert service.client.post("/cds-services/vigil-triage", json=_request()).status_code == 401
