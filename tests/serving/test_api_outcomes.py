"""POST /v1/outcomes and /v1/outcomes/batch: a site feeds back what happened after a prediction, by the audit_id
every answer now carries; errors name the field, a duplicate is 409, and the audit trail is never touched."""

from __future__ import annotations

from tests.fuzzing import synthetic_dicom
from tests.serving.records import WELL

LATER = "2099-01-01T00:00:00Z"  # after any prediction these tests make


def _triage(service, n: int = 1) -> list[dict]:
    if n == 1:
        res = service.client.post("/v1/triage", json=WELL, headers=service.headers("triage"))
        assert res.status_code == 200, res.text
        return [res.json()]
    res = service.client.post("/v1/triage/batch", json={"records": [WELL] * n}, headers=service.headers("triage"))
    assert res.status_code == 200, res.text
    return [item["result"] for item in res.json()["items"]]


def _post(service, body, who="outcomes", path="/v1/outcomes"):
    return service.client.post(path, json=body, headers=service.headers(who))


def test_every_answer_carries_its_audit_id(service):
    (one,) = _triage(service)
    batch = _triage(service, 2)
    audited = {row.seq: row for row in service.store.read_audit()}
    assert [one["audit_id"], *(r["audit_id"] for r in batch)] == sorted(audited)
    assert audited[one["audit_id"]].request_id == one["request_id"]
    dicom, _ = synthetic_dicom()
    headers = service.headers("imaging", **{"Content-Type": "application/dicom"})
    read = service.client.post("/v1/imaging/second-read", content=dicom, headers=headers)
    assert read.status_code == 200, read.text
    sr = service.client.post(
        "/v1/imaging/second-read", content=dicom, headers={**headers, "Accept": "application/dicom"}
    )
    assert sr.status_code == 200 and int(sr.headers["X-Vigil-Audit-ID"]) == read.json()["audit_id"] + 1


def test_a_triage_outcome_is_stored_once_and_the_audit_is_untouched(service):
    (result,) = _triage(service)
    before = service.store.read_audit()
    body = {"audit_id": result["audit_id"], "observed_utc": LATER, "triage": {"admitted": True, "final_acuity": 2}}
    res = _post(service, body)
    assert res.status_code == 201, res.text
    stored = res.json()
    assert stored["audit_id"] == result["audit_id"] and stored["request_id"] == result["request_id"]
    assert stored["triage"] == {"admitted": True, "final_acuity": 2} and stored["task"] == "triage"
    again = _post(service, {**body, "triage": {"admitted": False}})
    assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")
    assert again.json()["errors"][0]["field"] == "audit_id" and "already has an outcome" in again.json()["detail"]
    assert [o.values for o in service.store.read_outcomes()] == [{"admitted": True, "final_acuity": 2}]
    assert service.store.read_audit() == before and service.store.verify_audit_chain() == (True, None)


def test_an_outcome_by_request_id_and_the_errors_that_name_the_field(service):
    (result,) = _triage(service)
    batch = _triage(service, 2)
    ok = _post(service, {"request_id": result["request_id"], "observed_utc": LATER, "triage": {"died_in_ed": False}})
    assert ok.status_code == 201, ok.text
    cases = [
        ({"request_id": batch[0]["request_id"], "triage": {"admitted": True}}, "request_id", "a batch"),
        ({"audit_id": 10_000, "triage": {"admitted": True}}, "audit_id", "no prediction has audit_id 10000"),
        ({"audit_id": batch[0]["audit_id"], "imaging": {"findings": {"effusion": 1}}}, "audit_id", "triage prediction"),
        ({"audit_id": batch[0]["audit_id"], "triage": {"admitted": "yes"}}, "triage.admitted", "true or false"),
    ]
    for body, field, words in cases:
        res = _post(service, {"observed_utc": LATER, **body})
        assert res.status_code == 422, (body, res.text)
        assert res.json()["errors"][0]["field"] == field and words in res.json()["detail"], res.json()
    early = _post(
        service,
        {"audit_id": batch[1]["audit_id"], "observed_utc": "2020-01-01T00:00:00Z", "triage": {"admitted": True}},
    )
    assert early.status_code == 422 and early.json()["errors"][0]["field"] == "observed_utc"
    assert len(service.store.read_outcomes()) == 1


def test_an_imaging_read_is_fed_back_per_finding_by_audit_id_or_by_the_images_uid(service):
    headers = service.headers("imaging", **{"Content-Type": "application/dicom"})
    reads = []
    for _ in range(2):
        dicom, _study = synthetic_dicom()
        reads.append(service.client.post("/v1/imaging/second-read", content=dicom, headers=headers).json())
    body = {"audit_id": reads[0]["audit_id"], "observed_utc": LATER, "imaging": {"findings": {"pneumothorax": 0}}}
    res = _post(service, body)
    assert res.status_code == 201 and res.json()["imaging"] == {"findings": {"pneumothorax": 0}}, res.text
    uid = reads[1]["source"]["sop_instance_uid"]
    by_uid = _post(service, {"sop_instance_uid": uid, "observed_utc": LATER, "imaging": {"findings": {"effusion": 1}}})
    assert by_uid.status_code == 201 and by_uid.json()["audit_id"] == reads[1]["audit_id"], by_uid.text


def test_a_batch_stores_each_outcome_on_its_own(service):
    results = _triage(service, 3)
    body = {
        "outcomes": [
            {"audit_id": results[0]["audit_id"], "observed_utc": LATER, "triage": {"admitted": True}},
            {"audit_id": results[1]["audit_id"], "observed_utc": LATER, "triage": {"final_acuity": 9}},
            {"audit_id": 10_000, "observed_utc": LATER, "triage": {"admitted": True}},
            {"audit_id": results[0]["audit_id"], "observed_utc": LATER, "triage": {"admitted": False}},
            {"audit_id": results[2]["audit_id"], "observed_utc": LATER, "triage": {"critical_care": True}},
        ]
    }
    res = _post(service, body, path="/v1/outcomes/batch")
    assert res.status_code == 200, res.text
    out = res.json()
    assert (out["n"], out["n_stored"], out["n_failed"]) == (5, 2, 3)
    statuses = [(item["error"] or {}).get("status", "stored") for item in out["items"]]
    assert statuses == ["stored", 422, 422, 409, "stored"]
    fields = [item["error"]["errors"][0]["field"] for item in out["items"] if item["error"]]
    assert fields == ["outcomes[1].triage.final_acuity", "outcomes[2].audit_id", "outcomes[3].audit_id"]
    assert [o.audit_id for o in service.store.read_outcomes()] == [results[0]["audit_id"], results[2]["audit_id"]]


def test_the_batch_body_is_checked_before_anything_is_stored(service):
    for body, words in (([], "must be"), ({"outcomes": []}, "at least one"), ({"outcomes": {}}, "must be")):
        res = _post(service, body, path="/v1/outcomes/batch")
        assert (
            res.status_code == 422 and res.json()["errors"][0]["field"] == "outcomes" and words in res.json()["detail"]
        )
    assert service.store.read_outcomes() == []


def test_only_a_key_with_the_outcomes_scope_may_feed_back(service):
    (result,) = _triage(service)
    body = {"audit_id": result["audit_id"], "observed_utc": LATER, "triage": {"admitted": True}}
    assert _post(service, body, who="triage").status_code == 403
    assert service.client.post("/v1/outcomes", json=body).status_code == 401
    assert _post(service, body, who="all").status_code == 201
