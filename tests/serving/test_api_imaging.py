"""POST /v1/imaging/second-read on the real DICOM fixtures (../shared/data/imaging/dicom_fixtures)."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
from pydicom import config, dcmread

from models.imaging.sr_read import read_second_read_sr
from models.model_card import decision_support_statement
from serving.api.schemas import SecondReadResult

FIXTURES = (
    Path(os.environ.get("VIGIL_DATA_DIR", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
    / "imaging"
    / "dicom_fixtures"
)
CHEST = FIXTURES / "chest" / "RG1_JLSN.dcm"  # MONOCHROME1, JPEG-LS
SIIM = FIXTURES / "chest" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"  # small JPEG baseline


def _fixture(path: Path) -> bytes:
    if not path.is_file():
        pytest.skip(f"DICOM fixtures not found at {FIXTURES}")
    return path.read_bytes()


def _post(service, data: bytes, content_type: str = "application/dicom", **headers):
    return service.client.post(
        "/v1/imaging/second-read",
        content=data,
        headers=service.headers("imaging", **{"Content-Type": content_type, **headers}),
    )


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name",
    [
        "chest/RG1_JLSN.dcm",
        "chest/RG1_J2KI.dcm",
        "chest/966_fixed.dcm",
        "chest/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
    ],
)
def test_second_read_json_on_real_fixtures(service, name):
    data = _fixture(FIXTURES / name)
    res = _post(service, data)
    assert res.status_code == 200, res.text
    body = SecondReadResult.model_validate(res.json()).model_dump()
    assert [f["finding"] for f in body["findings"]][:2] == ["effusion", "cardiomegaly"]
    for f in body["findings"]:
        assert f["flagged"] == (f["probability"] >= f["operating_threshold"])
    assert body["flagged"] == any(f["flagged"] for f in body["findings"])
    assert base64.b64decode(body["heatmap_png_base64"])[:8] == b"\x89PNG\r\n\x1a\n"
    source = dcmread(io.BytesIO(data))
    assert body["source"]["sop_instance_uid"] == source.SOPInstanceUID
    assert "PatientID" not in res.text and "clinician" in body["decision_support_statement"]
    audited = [r for r in service.store.read_audit(limit=100) if r.request_id == body["request_id"]]
    assert len(audited) == 1 and audited[0].route == "/v1/imaging/second-read"
    assert "heatmap_png_base64" not in audited[0].output


@pytest.mark.realdata
def test_structured_report_with_accept_dicom_matches_the_json(service):
    data = _fixture(CHEST)
    as_json = _post(service, data).json()
    res = _post(service, data, Accept="application/dicom")
    assert res.status_code == 200 and res.headers["content-type"] == "application/dicom"
    sr = read_second_read_sr(res.content)
    for f in as_json["findings"]:
        assert sr["findings"][f["finding"]]["probability"] == pytest.approx(f["probability"], abs=1e-6)
        assert sr["findings"][f["finding"]]["flagged"] == f["flagged"]
    assert dcmread(io.BytesIO(res.content)).StudyInstanceUID == dcmread(io.BytesIO(data)).StudyInstanceUID
    png = _post(service, data, Accept="image/png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


@pytest.mark.realdata
def test_structured_report_of_a_source_with_malformed_dates(service):
    """966_fixed has a hash as its PatientBirthDate and a 56-character AccessionNumber (SH allows 16): the SR is
    still made, with both empty (Type 2) rather than invalid (this suite turns pydicom's length warning into an
    error)."""
    data = _fixture(FIXTURES / "chest" / "966_fixed.dcm")
    res = _post(service, data, Accept="application/dicom")
    assert res.status_code == 200, res.text
    sr = dcmread(io.BytesIO(res.content))
    assert sr.PatientBirthDate == "" and sr.SOPInstanceUID != dcmread(io.BytesIO(data)).SOPInstanceUID
    assert "AccessionNumber" in sr and sr.AccessionNumber == ""


def _with_long_accession_number(data: bytes) -> bytes:
    """The instance with a 40-character AccessionNumber, as some RIS write them (pydicom's own length warning on
    setting and writing it is the test's doing, so it is silenced here only)."""
    ds = dcmread(io.BytesIO(data))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.AccessionNumber = "RIS-" + "9" * 36
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.realdata
def test_structured_report_of_a_source_with_a_long_accession_number(service, tmp_path, caplog):
    """The SR is made and valid: AccessionNumber empty, a warning names the attribute (not the value); pydicom reads
    it strictly and dcmtk's dsrdump without a warning. The model's name and version are in ContributingEquipment."""
    data = _with_long_accession_number(_fixture(SIIM))
    res = _post(service, data, Accept="application/dicom")
    assert res.status_code == 200, res.text
    with config.strict_reading():
        sr = dcmread(io.BytesIO(res.content))
        for element in sr.iterall():
            _ = element.value
    assert sr.AccessionNumber == "" and sr.StudyInstanceUID == dcmread(io.BytesIO(data)).StudyInstanceUID
    assert "source AccessionNumber is 40 characters" in caplog.text and "RIS-9999" not in caplog.text
    version = _post(service, data).json()["model"]["version"]
    (vigil,) = [e for e in sr.ContributingEquipmentSequence if e.Manufacturer == "Vigil"]
    assert (vigil.ManufacturerModelName, vigil.SoftwareVersions) == (sr.ManufacturerModelName, version)
    assert (
        vigil.PurposeOfReferenceCodeSequence[0].CodeValue,
        vigil.PurposeOfReferenceCodeSequence[0].CodingSchemeDesignator,
    ) == ("109102", "DCM")
    assert read_second_read_sr(res.content)["algorithm"]["version"] == version
    dsrdump = shutil.which("dsrdump")
    if dsrdump is not None:  # dcmtk, where installed
        path = tmp_path / "sr.dcm"
        path.write_bytes(res.content)
        done = subprocess.run(
            [dsrdump, "-ll", "warn", str(path)], capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0 and not [
            line for line in (done.stdout + done.stderr).splitlines() if line.startswith(("W:", "E:", "F:"))
        ]


@pytest.mark.realdata
def test_every_imaging_output_carries_the_imaging_statement(service):
    """The JSON, the SR and the imaging model card say what a second reader is; triage keeps its statement."""
    imaging = decision_support_statement("imaging")
    data = _fixture(SIIM)
    body = _post(service, data).json()
    assert body["decision_support_statement"] == imaging and "NEWS2" not in imaging
    assert read_second_read_sr(_post(service, data, Accept="application/dicom").content)["statement"] == imaging
    models = service.client.get("/v1/models", headers=service.headers("imaging")).json()["models"]
    cards = {m["task"]: m["card"]["decision_support_statement"] for m in models}
    assert cards == {"imaging": imaging, "triage": decision_support_statement("triage")}


@pytest.mark.realdata
def test_multipart_upload(service):
    data = _fixture(CHEST)
    res = service.client.post(
        "/v1/imaging/second-read",
        files={"file": ("x.dcm", data, "application/dicom")},
        headers=service.headers("imaging"),
    )
    assert res.status_code == 200, res.text
    res = service.client.post(
        "/v1/imaging/second-read",
        files={"other": ("x.dcm", data, "application/dicom")},
        headers=service.headers("imaging"),
    )
    assert res.status_code == 422 and res.json()["errors"][0]["field"] == "file"


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("negative/Fake_MONOHR1.dcm", "PhotometricInterpretation"),
        ("negative/966.dcm", "PixelData"),
        ("other_cr/RG3_J2KR.dcm", "BodyPartExamined"),
    ],
)
def test_bad_instances_are_422_naming_the_attribute(service, name, field):
    res = _post(service, _fixture(FIXTURES / name))
    assert res.status_code == 422, res.text
    assert res.json()["errors"][0]["field"] == field


def test_not_dicom_wrong_type_and_size(service):
    res = _post(service, b"this is not a DICOM file at all" * 10)
    assert res.status_code == 422 and res.headers["content-type"].startswith("application/problem+json")
    assert (
        _post(
            service,
            b"",
        ).status_code
        == 422
    )
    assert _post(service, b"\x00" * 200, content_type="image/jpeg").status_code == 415
    triage_only = service.client.post(
        "/v1/imaging/second-read",
        content=b"x",
        headers=service.headers("triage", **{"Content-Type": "application/dicom"}),
    )
    assert triage_only.status_code == 403


@pytest.mark.realdata
@pytest.mark.parametrize("accept", ["application/json", "application/dicom", "image/png"])
def test_second_read_answers_are_not_cached(service, accept):
    """Issue 14 finding 15: the JSON, the SR and the heat map all carry patient data."""
    res = _post(service, _fixture(CHEST), Accept=accept)
    assert res.status_code == 200 and res.headers["content-type"].startswith(accept)
    assert res.headers["cache-control"] == "no-store"
