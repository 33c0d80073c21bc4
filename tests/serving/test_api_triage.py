"""POST /v1/triage and /v1/triage/batch against a real (small) ONNX model, audited in a real SQLite store."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.labels import acuity_label
from models.triage.news2 import news2
from models.triage.record import validate_record
from serving.api.schemas import TriageBatchResult, TriageResult

SICK = {
    "age_years": 71,
    "sex": "female",
    "arrival_mode": "ambulance",
    "chief_complaint": "shortness of breath",
    "heart_rate": 135,
    "resp_rate": 30,
    "sbp": 88,
    "dbp": 50,
    "spo2": 86,
    "temperature_c": 39.5,
    "consciousness": "V",
    "gcs": 12,
    "on_supplemental_oxygen": True,
    "pain_score": 3,
}
WELL = {
    "age_years": 30,
    "sex": "male",
    "arrival_mode": "walk_in",
    "chief_complaint": "ankle sprain",
    "heart_rate": 72,
    "resp_rate": 14,
    "sbp": 125,
    "dbp": 80,
    "spo2": 99,
    "temperature_c": 36.8,
    "consciousness": "A",
    "gcs": 15,
    "on_supplemental_oxygen": False,
    "pain_score": 4,
}


def _post(service, record, **headers):
    return service.client.post("/v1/triage", json=record, headers=service.headers("triage", **headers))


def test_one_record_gives_a_complete_result(service):
    res = _post(service, WELL)
    assert res.status_code == 200, res.text
    body = TriageResult.model_validate(res.json()).model_dump()
    assert body["request_id"] == res.headers["x-request-id"]
    assert body["model"]["name"] == "vigil-triage" and body["model"]["version"] == "7"
    assert body["model"]["release_status"] == "pass" and not body["model"]["unreleased_override"]
    assert body["model"]["synthetic_data"] is True and body["flags"]["synthetic_model"] is True
    level = body["acuity"]["level"]
    assert body["acuity"]["label"] == acuity_label(level)
    assert sum(body["acuity"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    expected = news2(validate_record(WELL))
    assert body["news2"]["score"] == expected.score and body["news2"]["band"] == expected.band
    assert body["news2"]["clinical_response"] == expected.response
    assert "clinician" in body["decision_support_statement"]
    assert body["flags"]["missing_inputs"] == []
    assert body["floor"] == {"level": 5, "source": "none", "reasons": [], "raised_level": False}
    assert body["red_flags"] == []
    assert body["acuity"]["raised_by_safety_floor"] is False and body["flags"]["safety_floor_raised_level"] is False


def test_news2_floor_is_never_undercut(service):
    body = _post(service, SICK).json()
    score = news2(validate_record(SICK))
    assert score.band == "high" and body["news2"]["minimum_acuity"] == 1
    assert body["acuity"]["level"] == 1
    assert body["acuity"]["raised_by_news2_floor"] == (body["acuity"]["model_level"] > 1)
    assert body["flags"]["news2_floor_raised_level"] == body["acuity"]["raised_by_news2_floor"]
    # ACVPU V gives level 2; NEWS2 high gives 1: the floor applied is NEWS2's, and it names it
    assert body["floor"]["level"] == 1 and body["floor"]["source"] == "news2"
    assert body["floor"]["reasons"] == [f"NEWS2 {score.score} (high risk)"]
    raised = body["acuity"]["model_level"] > 1
    assert body["floor"]["raised_level"] == body["acuity"]["raised_by_safety_floor"] == raised
    news_fields = [f["field"] for f in body["contributing_factors"] if f["source"] == "news2"]
    assert news_fields[0] in {p for p, pts in score.components.items() if pts == 3}
    assert set(news_fields) == {p for p, pts in score.components.items() if pts > 0}


@pytest.mark.parametrize(("acvpu", "level"), [("P", 1), ("U", 1), ("V", 2), ("C", 2)])
def test_acvpu_floor_is_applied_and_named(service, acvpu, level):
    body = _post(service, {**WELL, "consciousness": acvpu, "gcs": None}).json()
    assert body["floor"]["level"] == level and body["floor"]["source"] == "acvpu"
    assert body["floor"]["reasons"] == [f"consciousness {acvpu}"]
    assert body["acuity"]["level"] <= level
    assert body["acuity"]["raised_by_safety_floor"] == (body["acuity"]["model_level"] > level)


def test_safety_floor_raises_are_counted_in_metrics(service):
    body = _post(service, {**WELL, "consciousness": "U", "gcs": None}).json()
    text = service.client.get("/metrics", headers=service.headers("admin")).text
    raised = float(body["flags"]["safety_floor_raised_level"])
    assert f'vigil_safety_flags_total{{kind="safety_floor_raised"}} {raised}' in text


def test_red_flag_complaint_sets_the_floor_and_is_listed(service):
    body = _post(service, {**WELL, "chief_complaint": "stroke symptoms, feeling tired since this morning"}).json()
    assert body["acuity"]["level"] <= 2
    assert body["floor"] == {
        "level": 2,
        "source": "red_flag_complaint",
        "reasons": ["complaint: Stroke symptoms"],
        "raised_level": body["acuity"]["model_level"] > 2,
    }
    (flag,) = body["red_flags"]
    assert flag["id"] == "stroke" and flag["floor_level"] == 2 and "NICE NG128" in flag["source"]
    negated = _post(service, {**WELL, "chief_complaint": "ankle sprain, no chest pain"}).json()
    assert negated["red_flags"] == [] and negated["floor"]["source"] == "none"


def test_well_infant_is_not_floored_by_the_adult_news2(service):
    infant = {
        "age_years": 0.5,
        "sex": "female",
        "arrival_mode": "walk_in",
        "chief_complaint": "cough",
        "heart_rate": 130,
        "resp_rate": 35,
        "spo2": 98,
        "temperature_c": 37.0,
        "consciousness": "A",
    }
    body = _post(service, infant).json()
    assert body["news2"]["score"] == 5  # scored and shown, but NEWS2 is not applied under 16
    assert body["news2"]["minimum_acuity"] == 5
    assert body["floor"] == {"level": 5, "source": "none", "reasons": [], "raised_level": False}
    assert body["acuity"]["level"] == body["acuity"]["model_level"]
    assert body["flags"]["news2_not_validated"] is True and body["flags"]["news2_floor_raised_level"] is False
    sick = _post(service, {**infant, "resp_rate": 65}).json()
    assert sick["floor"]["level"] == 2 and sick["floor"]["source"] == "paediatric"
    assert sick["floor"]["reasons"] == ["respiratory rate 65/min >= 60 (NICE NG51 high risk, under 1 year)"]
    assert sick["acuity"]["level"] <= 2


def test_model_factors_name_supplied_fields_and_their_effects(service):
    body = _post(service, SICK).json()
    model_factors = [f for f in body["contributing_factors"] if f["source"] == "model"]
    for factor in model_factors:
        assert SICK.get(factor["field"]) is not None
        assert set(factor["effect"]) == {"admitted", "critical"}
        assert max(abs(v) for v in factor["effect"].values()) >= 0.01
    magnitudes = [max(abs(v) for v in f["effect"].values()) for f in model_factors]
    assert magnitudes == sorted(magnitudes, reverse=True)


def test_missing_and_out_of_range_inputs_are_flagged(service):
    record = {k: v for k, v in WELL.items() if k not in ("heart_rate", "temperature_c")}
    record["age_years"] = 119
    body = _post(service, record).json()
    assert {"heart_rate", "temperature_c"} <= set(body["flags"]["missing_inputs"])
    assert body["news2"]["partial"] is True and "heart_rate" in body["news2"]["missing"]
    assert "age_years" in body["flags"]["out_of_training_range"]
    child = _post(service, {**WELL, "age_years": 9}).json()
    assert child["flags"]["news2_not_validated"] is True


def test_every_prediction_is_audited_before_it_is_returned(service):
    res = _post(service, WELL, **{"X-Request-ID": "ed-42.abc"})
    server_id = res.headers["x-request-id"]
    assert res.status_code == 200 and server_id != "ed-42.abc" and res.json()["request_id"] == server_id
    record = [r for r in service.store.read_audit(limit=1000) if r.request_id == server_id]
    assert len(record) == 1
    audit = record[0]
    assert audit.output["client_request_id"] == "ed-42.abc"  # the client's id is kept beside the server's
    assert audit.route == "/v1/triage" and audit.model_version == "7" and audit.status == 200
    canonical = json.dumps(WELL, sort_keys=True, separators=(",", ":")).encode()
    assert audit.input_sha256 == hashlib.sha256(canonical).hexdigest()
    assert audit.output["acuity"] == res.json()["acuity"]
    key = next(k for k in service.store.list_keys() if k.client == "test-triage")
    assert audit.client == key.key_id and service.keys["triage"] not in json.dumps(audit.output)
    assert service.store.verify_audit_chain() == (True, None)


def test_audit_store_failure_refuses_the_prediction(service, monkeypatch):
    from models.errors import StoreUnavailableError

    def down(records, groups=None):
        raise StoreUnavailableError("sqlite store unavailable: disk I/O error")

    before = len(service.store.read_audit(limit=10_000))
    monkeypatch.setattr(service.store, "write_audits", down)
    res = _post(service, WELL)
    assert res.status_code == 503 and res.headers["content-type"].startswith("application/problem+json")
    assert "acuity" not in res.text and "audit" in res.json()["detail"]
    assert res.headers["retry-after"]
    monkeypatch.undo()
    assert len(service.store.read_audit(limit=10_000)) == before
    assert _post(service, WELL).status_code == 200  # recovers when the store returns


@pytest.mark.parametrize(
    ("record", "field", "words"),
    [
        ({**WELL, "heart_rate": 400}, "heart_rate", "heart_rate"),
        ({**WELL, "hr": 80}, "hr", "not a triage record field"),
        ({**WELL, "sex": "x"}, "sex", "sex"),
        ({k: v for k, v in WELL.items() if k != "age_years"}, "age_years", "age_years"),
        ({**WELL, "dbp": 130}, "dbp", "below 'sbp'"),
    ],
)
def test_invalid_records_are_422_naming_the_field(service, record, field, words):
    res = _post(service, record)
    assert res.status_code == 422 and res.headers["content-type"].startswith("application/problem+json")
    problem = res.json()
    assert problem["status"] == 422 and problem["request_id"] == res.headers["x-request-id"]
    assert any(e["field"] == field and words in e["message"] for e in problem["errors"]), problem


def test_bad_bodies_and_media_types(service):
    h = service.headers("triage")
    res = service.client.post("/v1/triage", content=b"{not json", headers={**h, "Content-Type": "application/json"})
    assert res.status_code == 422 and res.json()["errors"][0]["field"] == "body"
    res = service.client.post("/v1/triage", json=[WELL], headers=h)
    assert res.status_code == 422 and "JSON object" in res.json()["detail"]
    res = service.client.post("/v1/triage", content=b"age=3", headers={**h, "Content-Type": "text/plain"})
    assert res.status_code == 415 and res.json()["title"] == "Unsupported media type"
    huge = json.dumps({**WELL, "chief_complaint": "x" * 2_000_000})
    res = service.client.post("/v1/triage", content=huge, headers={**h, "Content-Type": "application/json"})
    assert res.status_code == 413 and "limit" in res.json()["detail"]


def test_batch_scores_good_records_and_reports_bad_ones(service):
    records = [WELL, {**WELL, "spo2": 20}, SICK, "not an object"]
    res = service.client.post("/v1/triage/batch", json={"records": records}, headers=service.headers("triage"))
    assert res.status_code == 200, res.text
    body = TriageBatchResult.model_validate(res.json()).model_dump()
    assert body["n"] == 4 and body["n_failed"] == 2
    assert body["items"][1]["error"]["errors"][0]["field"] == "records[1].spo2"
    assert body["items"][3]["error"]["errors"][0]["field"] == "records[3]"
    single = _post(service, SICK).json()
    batch_item = body["items"][2]["result"]
    assert batch_item["acuity"]["level"] == single["acuity"]["level"]
    for outcome, risk in single["risks"].items():
        assert batch_item["risks"][outcome]["probability"] == pytest.approx(risk["probability"], abs=1e-5)
    audited = [r for r in service.store.read_audit(limit=1000) if r.route == "/v1/triage/batch"]
    assert len(audited) == 2


def test_batch_limits(service, tmp_path, model_folder):
    h = service.headers("triage")
    assert service.client.post("/v1/triage/batch", json={"records": []}, headers=h).status_code == 422
    assert service.client.post("/v1/triage/batch", json={"rows": [WELL]}, headers=h).status_code == 422
    res = service.client.post("/v1/triage/batch", json={"records": [WELL] * 1001}, headers=h)
    assert res.status_code == 422 and "at most 1000" in res.json()["detail"]


def test_fhir_risk_assessment_form(service):
    res = _post(service, SICK, Accept="application/fhir+json")
    assert res.status_code == 200 and res.headers["content-type"].startswith("application/fhir+json")
    resource = res.json()
    assert resource["resourceType"] == "RiskAssessment" and resource["status"] == "final"
    plain = _post(service, SICK).json()
    by_outcome = {p["outcome"]["text"]: p.get("probabilityDecimal") for p in resource["prediction"]}
    for risk in plain["risks"].values():
        assert by_outcome[risk["definition"]] == pytest.approx(risk["probability"])
    assert any(f"level {plain['acuity']['level']}" in text for text in by_outcome)


_VITALS = st.fixed_dictionaries(
    {
        "age_years": st.integers(16, 100),
        "sex": st.sampled_from(["female", "male", "unknown"]),
        "heart_rate": st.one_of(st.none(), st.integers(25, 220)),
        "resp_rate": st.one_of(st.none(), st.integers(4, 60)),
        "sbp": st.one_of(st.none(), st.integers(60, 240)),
        "spo2": st.one_of(st.none(), st.integers(70, 100)),
        "temperature_c": st.one_of(st.none(), st.floats(32, 42, allow_nan=False)),
        "consciousness": st.one_of(st.none(), st.sampled_from(["A", "C", "V", "P", "U"])),
        "on_supplemental_oxygen": st.one_of(st.none(), st.booleans()),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=_VITALS)
def test_served_level_is_never_less_urgent_than_news2_demands(service, record):
    body = _post(service, record).json()
    floor = news2(validate_record(record)).minimum_acuity
    assert body["news2"]["minimum_acuity"] == floor
    assert body["acuity"]["level"] <= floor
    # From 16 the served level is the model's raised to the safety floor, of which NEWS2 is one rule; ACVPU
    # C/V (level 2) and P/U (level 1) are another (clinically intended: Manchester "altered conscious level").
    acvpu_floor = {"U": 1, "P": 1, "V": 2, "C": 2}.get(record["consciousness"] or "A", 5)

    # NICE NG51 adult high-risk vital signs give level 2 (a single NEWS2 3 would give only 3).
    def beyond(name, test):
        return record[name] is not None and test(record[name])

    ng51 = (
        beyond("resp_rate", lambda v: v >= 25)
        or beyond("sbp", lambda v: v <= 90)
        or beyond("heart_rate", lambda v: v > 130)
        or (beyond("spo2", lambda v: v < 92) and record["on_supplemental_oxygen"] is not True)
    )
    assert body["floor"]["level"] == min(floor, acvpu_floor, 2 if ng51 else 5)
    assert body["acuity"]["level"] == min(body["acuity"]["model_level"], body["floor"]["level"])


def test_a_client_cannot_choose_or_repeat_audit_record_ids(service):
    """Issue 14 finding 11: X-Request-ID from the client was the audit record's id, so one client could make
    several records share it (or take another's). The server makes every id; the client's is kept beside it."""
    answers = [_post(service, WELL, **{"X-Request-ID": "same-id"}) for _ in range(2)]
    ids = [res.headers["x-request-id"] for res in answers]
    assert all(res.status_code == 200 for res in answers) and len(set(ids)) == 2 and "same-id" not in ids
    audits = service.store.read_audit(limit=1000)
    assert sorted(r.request_id for r in audits) == sorted(ids)
    assert [r.output["client_request_id"] for r in audits] == ["same-id", "same-id"]
    unnamed = _post(service, WELL, **{"X-Request-ID": "not an id; <b>"})
    audit = next(r for r in service.store.read_audit(limit=1000) if r.request_id == unnamed.headers["x-request-id"])
    assert "client_request_id" not in audit.output  # a malformed one is not kept
