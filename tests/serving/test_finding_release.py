"""Finding-level release and intended use, end to end: a finding the gate did not release, or one read outside its
intended population, is never shown or flagged by the HTTP route, the DICOM node's analysis or the TID 1500 SR."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from models.imaging.onnx import ImagingOnnxModel
from models.imaging.sr_read import read_second_read_sr
from models.intended_use import (
    EVALUATED,
    NOT_VALIDATED,
    OUTSIDE,
    FindingRelease,
    IntendedUse,
    Population,
    dicom_age_years,
    finding_release_from_json,
    intended_use_from_json,
)
from models.labels import IMAGING_FINDINGS
from models.onnx_file import sha256_file
from serving.model_source import LocalFolderLocator, ModelHolder, ResolvedModel, write_local_release

CHILDREN = Population("frontal films of children aged 1 to 5 years", 1.0, 6.0, ("PA", "AP"))
ADULTS = Population("frontal films of adults aged 18 and over", 18.0, None, ("PA", "AP"))
RELEASE = FindingRelease(
    {"pneumonia": CHILDREN, "effusion": ADULTS},
    {f: "below its performance floor" for f in IMAGING_FINDINGS if f not in ("pneumonia", "effusion")},
)
USE = IntendedUse(
    "chest films sent for a second read",
    ({"name": "elsewhere", "population": "another country", "reason": "not in training"},),
)


def film() -> np.ndarray:
    """A drawn frontal film (dark lungs, bright mediastinum) that the quality gate admits."""
    y, x = np.mgrid[0:120, 0:100] / np.array([120, 100])[:, None, None]
    image = (
        0.2
        + 0.55 * np.exp(-(((x - 0.5) / 0.1) ** 2))
        + 0.3 * y
        + 0.3 * np.exp(-((x - 0.3) ** 2 + (y - 0.5) ** 2) / 0.01)
        + 0.03 * np.sin(25 * y)
    )
    return np.clip(image, 0, 1).astype(np.float32)


def dicom(**header: str) -> bytes:
    """The drawn film as DICOM; ``header`` may hold malformed values (written as a site's device might)."""
    import warnings

    from evaluation.safety_imaging_cases import film_to_dicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return film_to_dicom(film(), **header)


# ---------------------------------------------------------------------------------------------- the contract
@pytest.mark.parametrize(
    ("header", "age", "source"),
    [
        ({"PatientAge": "045Y"}, 45.0, "PatientAge"),
        ({"PatientAge": "006M"}, 0.5, "PatientAge"),
        ({"PatientAge": "010W"}, 70 / 365.25, "PatientAge"),
        ({"PatientBirthDate": "20200115", "StudyDate": "20230115"}, 3.0, "PatientBirthDate and StudyDate"),
        (
            {"PatientAge": "45", "PatientBirthDate": "19800101", "ContentDate": "20200101"},
            40.0,
            "PatientBirthDate and ContentDate",
        ),
    ],
)
def test_age_is_read_from_the_dicom_header(header, age, source) -> None:
    value, where = dicom_age_years(dcmread(io.BytesIO(dicom(**header))))
    assert value == pytest.approx(age, abs=0.01) and where == source


@pytest.mark.parametrize(
    ("header", "named"),
    [
        ({}, "PatientAge is not recorded"),
        ({"PatientAge": "forty"}, "PatientAge is not of the form"),
        ({"PatientBirthDate": "20300101", "StudyDate": "20200101"}, "PatientBirthDate is after StudyDate"),
        ({"PatientBirthDate": "2020-01-01", "StudyDate": "20230101"}, "PatientBirthDate is missing or not a date"),
    ],
)
def test_an_unknown_or_malformed_age_is_unknown_and_says_why(header, named) -> None:
    value, where = dicom_age_years(dcmread(io.BytesIO(dicom(**header))))
    assert value is None and named in where


def test_status_per_finding_follows_the_release_and_the_population() -> None:
    assert RELEASE.status("pneumonia", 3.0, "PA")[0] == EVALUATED
    status, reason = RELEASE.status("pneumonia", 45.0, "PA")
    assert status == OUTSIDE and "PatientAge" in reason and "children aged 1 to 5" in reason
    status, reason = RELEASE.status("pneumonia", None, "PA")
    assert status == OUTSIDE and "PatientAge" in reason  # an image that does not say is never inside
    assert RELEASE.status("pneumonia", 3.0, "AP")[0] == EVALUATED
    assert RELEASE.status("effusion", 45.0, "PA")[0] == EVALUATED
    status, reason = RELEASE.status("cardiomegaly", 45.0, "PA")
    assert status == NOT_VALIDATED and "performance floor" in reason


def test_release_records_round_trip_and_foreign_findings_are_refused() -> None:
    from models.errors import ModelArtifactError

    assert finding_release_from_json(RELEASE.to_json(), IMAGING_FINDINGS) == RELEASE
    assert intended_use_from_json(USE.to_json()) == USE
    assert finding_release_from_json(None, IMAGING_FINDINGS) is None
    with pytest.raises(ModelArtifactError, match="does not have"):
        finding_release_from_json(json.dumps({"released": {"fracture": CHILDREN.to_dict()}}), IMAGING_FINDINGS)
    with pytest.raises(ModelArtifactError, match="not a valid"):
        finding_release_from_json("{not json", IMAGING_FINDINGS)


# ---------------------------------------------------------------------------------------------- the runtime
def test_a_disabled_finding_is_never_flagged_even_above_its_threshold(registered) -> None:
    everything = ImagingOnnxModel(registered.imaging_onnx)
    released = ImagingOnnxModel(registered.imaging_onnx, release=RELEASE)
    for model in (everything, released):
        model.thresholds = dict.fromkeys(model.findings, 0.0)  # every finding's probability passes its threshold
    data = dicom(PatientAge="003Y")
    assert everything.second_read_dicom(data).flagged_findings == list(IMAGING_FINDINGS)
    read = released.second_read_dicom(data)
    assert read.flagged_findings == ["pneumonia"]  # effusion is for adults; the rest are not validated
    assert read.status["effusion"] == OUTSIDE and read.status["cardiomegaly"] == NOT_VALIDATED
    assert read.shown_probabilities["effusion"] is None and read.shown_probabilities["pneumonia"] is not None
    assert read.top_finding == "pneumonia"
    probs, _ = released.run(np.zeros((1, 1, released.image_size, released.image_size), np.float32))
    assert released.flags(probs)[0].tolist() == [f in ("pneumonia", "effusion") for f in IMAGING_FINDINGS]


def test_no_evaluated_finding_gives_no_flag_no_heat_map_and_no_sr(registered) -> None:
    from models.errors import OutsideIntendedUseError

    model = ImagingOnnxModel(registered.imaging_onnx, release=RELEASE)
    model.thresholds = dict.fromkeys(model.findings, 0.0)
    read = model.second_read_dicom(dicom())  # no age: neither released finding can be placed
    assert not read.flagged and read.top_finding is None and read.evaluated_findings == []
    assert set(read.shown_probabilities.values()) == {None}
    png = read.heatmap_png()  # the image alone, no map
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not evaluated"):
        read.heatmap_png("pneumonia")
    with pytest.raises(OutsideIntendedUseError) as raised:
        read.structured_report("vigil-cxr", "7")
    assert raised.value.field == "PatientAge" and "no finding of this model is released" in raised.value.message


# ---------------------------------------------------------------------------------------------- serving
@pytest.fixture(scope="module")
def released_folder(registered, tmp_path_factory) -> Path:
    from tests.conftest import PASSING_GATE

    folder = tmp_path_factory.mktemp("finding-release")
    gate = {**PASSING_GATE, "findings": RELEASE.to_json(), "intended_use": USE.to_json()}
    for task, name, path in (
        ("triage", "vigil-triage", registered.triage_onnx),
        ("imaging", "vigil-cxr", registered.imaging_onnx),
    ):
        write_local_release(folder, ResolvedModel(task, name, "7", path, sha256_file(path), dict(gate), "test"))
    return folder


def _zero_thresholds(service) -> None:
    runtime = service.client.app.state.vigil.holder.get("imaging").runtime
    runtime.thresholds = dict.fromkeys(runtime.findings, 0.0)


def test_http_json_sr_and_models_show_only_what_was_released_for_this_patient(
    service_factory, tmp_path, released_folder
) -> None:
    with service_factory(tmp_path, released_folder) as service:
        _zero_thresholds(service)
        headers = service.headers("imaging", **{"Content-Type": "application/dicom"})
        res = service.client.post("/v1/imaging/second-read", content=dicom(PatientAge="045Y"), headers=headers)
        assert res.status_code == 200, res.text
        body = res.json()
        by = {f["finding"]: f for f in body["findings"]}
        assert [f for f in by if by[f]["flagged"]] == ["effusion"] and body["heatmap_finding"] == "effusion"
        assert by["pneumonia"]["status"] == "outside intended use" and by["pneumonia"]["probability"] is None
        assert "PatientAge" in by["pneumonia"]["status_reason"] and "45" not in by["pneumonia"]["status_reason"]
        assert by["nodule_mass"]["status"] == "not validated" and by["nodule_mass"]["probability"] is None
        model = body["model"]
        assert model["intended_use"] == USE.population and model["not_validated_for"][0]["name"] == "elsewhere"
        assert set(model["findings_released"]) == {"pneumonia", "effusion"}
        assert "cardiomegaly" in model["findings_not_validated"]
        audited = next(r for r in service.store.read_audit(limit=10) if r.request_id == body["request_id"])
        assert {f["finding"]: f["probability"] for f in audited.output["findings"]}["pneumonia"] is None

        sr_res = service.client.post(
            "/v1/imaging/second-read",
            content=dicom(PatientAge="045Y"),
            headers={**headers, "Accept": "application/dicom"},
        )
        sr = read_second_read_sr(sr_res.content)
        assert set(sr["findings"]) == {"effusion"} and sr["findings"]["effusion"]["flagged"]
        assert set(sr["not_evaluated"]) == set(IMAGING_FINDINGS) - {"effusion"}
        assert sr_res.headers["X-Vigil-Flagged"] == "true"

        models = service.client.get("/v1/models", headers=service.headers("all")).json()["models"]
        for entry in models:
            assert entry["model"]["intended_use"] == USE.population
            assert entry["model"]["not_validated_for"] == [dict(USE.not_validated_for[0])]


def test_triage_responses_carry_the_intended_use(service_factory, tmp_path, released_folder) -> None:
    with service_factory(tmp_path, released_folder) as service:
        record = {
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
        }
        res = service.client.post("/v1/triage", json=record, headers=service.headers("triage"))
        assert res.status_code == 200, res.text
        assert res.json()["model"]["not_validated_for"][0]["population"] == "another country"


def test_the_dicom_node_analysis_flags_and_reports_only_evaluated_findings(released_folder, tmp_path) -> None:
    from serving.dicom_node.analysis import analyse_item
    from serving.store.database import Store
    from tests.queue_items import received_item

    audit_store = Store(f"sqlite:///{tmp_path / 'serving.db'}")
    audit_store.create_schema()

    holder = ModelHolder(LocalFolderLocator(released_folder), allow_unreleased=False, threads=1, tasks=("imaging",))
    holder.load_all()
    model = holder.get("imaging")
    model.runtime.thresholds = dict.fromkeys(model.runtime.findings, 0.0)
    data = dicom(PatientAge="004Y")
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "one.dcm"
    path.write_bytes(data)
    item = received_item(path, data, source="c-store")
    analysis = analyse_item(item, model, audit_store, tmp_path, send_heatmap_sc=True, needs_delivery=False)
    assert analysis.state == "analysed"
    assert analysis.changes["flagged_findings"] == ("pneumonia",)
    result = analysis.changes["result"]
    assert result["probabilities"]["effusion"] is None
    assert result["finding_status"]["effusion"] == "outside intended use"
    sr = read_second_read_sr(Path(analysis.changes["sr_path"]).read_bytes())
    assert set(sr["findings"]) == {"pneumonia"} and "effusion" in sr["not_evaluated"]
    assert analysis.changes["sc_sop_instance_uid"] is not None  # a heat map of pneumonia

    path.write_bytes(dicom(PatientAge="045Y", ViewPosition="AP"))  # an adult: pneumonia is for children
    model.runtime.release = FindingRelease({"pneumonia": CHILDREN}, {})
    outside = analyse_item(item, model, audit_store, tmp_path, send_heatmap_sc=True, needs_delivery=False)
    assert outside.state == "not_analysed" and outside.changes["reason_field"] == "PatientAge"
    assert "children aged 1 to 5" in outside.changes["reason"]


def test_an_override_without_a_release_record_evaluates_every_finding(registered, tmp_path) -> None:
    folder = tmp_path / "unreleased"
    write_local_release(
        folder,
        ResolvedModel(
            "imaging",
            "vigil-cxr",
            "8",
            registered.imaging_onnx,
            sha256_file(registered.imaging_onnx),
            {"status": "fail"},
            "test",
        ),
    )
    holder = ModelHolder(LocalFolderLocator(folder), allow_unreleased=True, threads=1, tasks=("imaging",))
    holder.load_all()
    model = holder.get("imaging")
    assert model.runtime.release is None and model.unreleased_override
    assert model.ref()["intended_use"] is None and "findings_released" not in model.ref()


def test_a_malformed_release_record_is_refused_at_load_not_per_request(registered, tmp_path) -> None:
    from tests.conftest import PASSING_GATE

    folder = tmp_path / "bad-record"
    write_local_release(
        folder,
        ResolvedModel(
            "imaging",
            "vigil-cxr",
            "9",
            registered.imaging_onnx,
            sha256_file(registered.imaging_onnx),
            {**PASSING_GATE, "intended_use": "{not json"},
            "test",
        ),
    )
    holder = ModelHolder(LocalFolderLocator(folder), allow_unreleased=False, threads=1, tasks=("imaging",))
    holder.load_all()
    model, reason = holder.status()["imaging"]
    assert model is None and "release_gate.intended_use is not a valid record" in reason
