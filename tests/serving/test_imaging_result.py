"""One second read, one result: the HTTP route and the DICOM node audit the same row (serving/imaging_result.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from serving.imaging_result import audit_output, queued_result, second_read_result
from tests.queue_items import received_item

#: What each edge adds to the audited result: what it delivered.
HTTP_ONLY = {"response_media_type"}
NODE_ONLY = {
    "sop_instance_uid",
    "sr_sop_instance_uid",
    "sr_series_instance_uid",
    "sr_study_instance_uid",
    "heatmap_sop_instance_uid",
}


def _dicom() -> bytes:
    """A drawn frontal film (dark lungs, bright mediastinum) as DICOM, which the quality gate admits."""
    from evaluation.safety_imaging_cases import film_to_dicom

    y, x = np.mgrid[0:120, 0:100] / np.array([120, 100])[:, None, None]
    image = 0.2 + 0.55 * np.exp(-(((x - 0.5) / 0.1) ** 2)) + 0.3 * y + 0.03 * np.sin(25 * y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return film_to_dicom(np.clip(image, 0, 1).astype(np.float32), PatientAge="045Y")


def test_a_second_read_is_audited_alike_through_http_and_through_the_dicom_node(service, tmp_path) -> None:
    from serving.dicom_node.analysis import analyse_item

    data = _dicom()
    res = service.client.post(
        "/v1/imaging/second-read",
        content=data,
        headers=service.headers("imaging", **{"Content-Type": "application/dicom"}),
    )
    assert res.status_code == 200, res.text
    model = service.client.app.state.vigil.holder.get("imaging")  # the very model that answered over HTTP
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "one.dcm"
    path.write_bytes(data)
    item = received_item(path, data)
    analysis = analyse_item(item, model, service.store, tmp_path, send_heatmap_sc=True, needs_delivery=False)
    assert analysis.state == "analysed", analysis.changes

    rows = {r.request_id: r for r in service.store.read_audit(limit=10)}
    http, node = rows[res.json()["request_id"]], rows[analysis.changes["request_id"]]
    key_id = service.store.authenticate(service.keys["imaging"]).key_id
    assert (http.route, http.client) == ("/v1/imaging/second-read", key_id)
    assert (node.route, node.client) == ("dicom:c-store", "MODALITY")
    assert http.input_sha256 == node.input_sha256 == item.sha256
    assert (http.model_name, http.model_version, http.model_sha256) == (
        node.model_name,
        node.model_version,
        node.model_sha256,
    )
    # the same fields, but for what each edge delivered ...
    assert set(http.output) - HTTP_ONLY == set(node.output) - NODE_ONLY
    assert HTTP_ONLY <= set(http.output) and NODE_ONLY <= set(node.output)
    assert http.output["response_media_type"] == "application/json"
    assert node.output["sr_sop_instance_uid"] == analysis.changes["sr_sop_instance_uid"]
    # ... and the same values, but for the request id and the timings of each read
    same = set(http.output) - HTTP_ONLY - {"request_id", "timings_ms"}
    assert {"findings", "model", "flagged", "heatmap_finding", "source"} <= same
    assert {k: http.output[k] for k in same} == {k: node.output[k] for k in same}
    assert http.output["request_id"] == http.request_id and node.output["request_id"] == node.request_id

    # the queue keeps the same result keyed by finding, as its readers (worklist, notifications) expect
    queued = analysis.changes["result"]
    by_finding = {f["finding"]: f for f in node.output["findings"]}
    assert queued["probabilities"] == {f: row["probability"] for f, row in by_finding.items()}
    assert queued["flags"] == {f: row["flagged"] for f, row in by_finding.items()}
    assert list(analysis.changes["flagged_findings"]) == [f for f, row in by_finding.items() if row["flagged"]]


def test_the_queued_result_is_the_read_keyed_by_finding(model_folder) -> None:
    """An oracle: each map of the queued form recomputed from the model's read itself."""
    from serving.model_source import LocalFolderLocator, ModelHolder

    holder = ModelHolder(LocalFolderLocator(model_folder), allow_unreleased=False, threads=1, tasks=("imaging",))
    holder.load_all()
    model = holder.get("imaging")
    model.runtime.thresholds = dict.fromkeys(model.runtime.findings, 0.0)  # every evaluated finding is flagged
    read = model.runtime.second_read_dicom(_dicom())
    result = second_read_result(read, model, "r-1")
    queued = queued_result(result)
    assert queued == {
        "model": model.ref(),
        "probabilities": read.shown_probabilities,
        "thresholds": read.thresholds,
        "finding_status": read.status,
        "finding_status_reason": read.status_reason,
        "flags": read.flags,
        "flagged": read.flagged,
        "flagged_findings": read.flagged_findings,
        "source": read.source,
        "timings_ms": result["timings_ms"],
        "decision_support_statement": result["decision_support_statement"],
    }
    assert read.flagged_findings and queued["flagged"]  # the flags are exercised, not all False
    assert [f["finding"] for f in result["findings"]] == list(read.probabilities)
    assert "request_id" not in queued  # a column of the queue, not part of its result


def test_a_delivered_field_never_replaces_a_field_of_the_result() -> None:
    result = {"request_id": "r-1", "flagged": True}
    assert audit_output(result, response_media_type="image/png") == {**result, "response_media_type": "image/png"}
    with pytest.raises(ValueError, match=r"must not replace fields of the result; got \['flagged'\]"):
        audit_output(result, flagged=False)
