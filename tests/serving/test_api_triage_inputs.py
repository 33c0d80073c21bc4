"""Only what was learnt is used: a field the model never learnt is named in the response and moves nothing."""

from __future__ import annotations

import dataclasses

from models.triage.features import NOT_LEARNT_REASON

RECORD = {
    "age_years": 45,
    "sex": "male",
    "arrival_mode": "walk_in",
    "chief_complaint": "back pain",
    "heart_rate": 76,
    "resp_rate": 16,
    "sbp": 128,
    "dbp": 80,
    "spo2": 98,
    "temperature_c": 36.9,
    "consciousness": "A",
}  # given, so that a GCS cannot fill it in at validation


def _post(service, record):
    res = service.client.post("/v1/triage", json=record, headers=service.headers("triage"))
    assert res.status_code == 200, res.text
    return res.json()


def test_unlearnt_inputs_are_listed_and_do_not_move_the_model(service):
    # The suite's model is trained on synthetic data that records GCS and ACVPU; make it one that did not (as
    # a model trained on NHAMCS is) by declaring them unlearnt on the served encoder.
    runtime = service.client.app.state.vigil.holder.get("triage").runtime
    original = runtime.encoder
    runtime.encoder = dataclasses.replace(original, unused_inputs=("gcs", "on_supplemental_oxygen"))
    try:
        plain = _post(service, RECORD)
        with_site_fields = _post(service, {**RECORD, "gcs": 15, "on_supplemental_oxygen": True})
        assert plain["flags"]["not_used_by_model"] == []
        assert with_site_fields["flags"]["not_used_by_model"] == ["gcs", "on_supplemental_oxygen"]
        assert with_site_fields["risks"] == plain["risks"]
        assert with_site_fields["acuity"]["model_level"] == plain["acuity"]["model_level"]
        explained = {f["field"] for f in with_site_fields["contributing_factors"] if f["source"] == "model"}
        assert not explained & {"gcs", "on_supplemental_oxygen"}
    finally:
        runtime.encoder = original
    assert NOT_LEARNT_REASON in service.client.get("/openapi.json").text


def test_model_factors_name_their_reference(service):
    body = _post(service, {**RECORD, "heart_rate": 150})
    hr = [f for f in body["contributing_factors"] if f["source"] == "model" and f["field"] == "heart_rate"]
    assert hr and "vs. a typical" in hr[0]["detail"]
    assert "not recorded" not in hr[0]["detail"]
