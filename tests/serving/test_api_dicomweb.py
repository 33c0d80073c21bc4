"""STOW-RS into the DICOM node's queue, analysis by the node running inside the service, and the worklist."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from pydicom import dcmread

FIXTURES = (
    Path(os.environ.get("VIGIL_DATA_DIR", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
    / "imaging"
    / "dicom_fixtures"
)
CHEST = ["chest/RG1_JLSN.dcm", "chest/RG1_J2KI.dcm"]


def _multipart(parts: list[bytes], boundary: str = "vigil-test-boundary") -> tuple[bytes, str]:
    body = (
        b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts
        )
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


@pytest.fixture
def node_service(service_factory, tmp_path, model_folder, monkeypatch):
    if not (FIXTURES / "chest").is_dir():
        pytest.skip(f"DICOM fixtures not found at {FIXTURES}")
    monkeypatch.setenv("VIGIL_DICOM_POLL_S", "0.1")
    monkeypatch.setenv("VIGIL_DICOM_PORT", "0")
    with service_factory(tmp_path, model_folder, dicom_node=True) as svc:
        yield svc


@pytest.mark.realdata
def test_stow_rs_stores_queues_and_reports_each_instance(node_service):
    svc = node_service
    datas = [(FIXTURES / name).read_bytes() for name in CHEST]
    uids = [dcmread(io.BytesIO(d), stop_before_pixels=True).SOPInstanceUID for d in datas]
    body, ctype = _multipart([*datas, b"not DICOM at all" * 20])
    res = svc.client.post("/dicomweb/studies", content=body, headers=svc.headers("imaging", **{"Content-Type": ctype}))
    assert res.status_code == 202 and res.headers["content-type"].startswith("application/dicom+json")
    stored = [i["00081155"]["Value"][0] for i in res.json()["00081199"]["Value"]]
    assert stored == uids
    (failed,) = res.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]
    node = svc.client.app.state.vigil.dicom_node
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(node.queue.get(u).state in ("received", "analysing") for u in uids):
        time.sleep(0.2)
    items = [node.queue.get(u) for u in uids]
    assert all(i.state == "analysed" for i in items), [i.state for i in items]
    flags = svc.client.get("/v1/imaging/flags", headers=svc.headers("imaging")).json()
    assert {i["sop_instance_uid"] for i in flags["items"]} == {i.sop_instance_uid for i in items if i.flagged}
    for entry in flags["items"]:
        assert entry["structured_report"]["sop_instance_uid"] and entry["flagged_findings"]
    audited = [r for r in svc.store.read_audit(limit=100) if r.route == "dicomweb:stow-rs"]
    assert len(audited) == 2


@pytest.mark.realdata
def test_stow_rs_errors(node_service):
    svc = node_service
    data = (FIXTURES / CHEST[0]).read_bytes()
    body, ctype = _multipart([data])
    res = svc.client.post(
        "/dicomweb/studies/1.2.3.4", content=body, headers=svc.headers("imaging", **{"Content-Type": ctype})
    )
    assert res.status_code == 409 and res.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    res = svc.client.post(
        "/dicomweb/studies", content=data, headers=svc.headers("imaging", **{"Content-Type": "application/dicom"})
    )
    assert res.status_code == 415
    res = svc.client.post(
        "/dicomweb/studies", content=b"--x\r\n", headers=svc.headers("imaging", **{"Content-Type": ctype})
    )
    assert res.status_code == 422 and res.json()["errors"][0]["field"] == "body"
    assert (
        svc.client.post(
            "/dicomweb/studies", content=body, headers=svc.headers("triage", **{"Content-Type": ctype})
        ).status_code
        == 403
    )


def test_flags_filters_are_validated(service):
    h = service.headers("imaging")
    assert service.client.get("/v1/imaging/flags?finding=cancer", headers=h).status_code == 422
    assert service.client.get("/v1/imaging/flags?status=lost", headers=h).status_code == 422
    res = service.client.get("/v1/imaging/flags?since=yesterday", headers=h)
    assert res.status_code == 422 and res.json()["errors"][0]["field"] == "since"
    ok = service.client.get("/v1/imaging/flags?finding=effusion&since=2026-01-01T00:00:00Z", headers=h)
    assert ok.status_code == 200 and ok.json() == {"items": [], "n": 0}


@pytest.mark.realdata
def test_stow_rs_into_a_study_refuses_an_instance_of_another_study_before_intake(node_service):
    """Issue 14 finding 9: the mismatching instance is in the failed list (0xA900) and is never queued, analysed,
    audited or sent on; the instance of the URL's study beside it is."""
    svc = node_service
    ours, other = (FIXTURES / CHEST[0]).read_bytes(), (FIXTURES / "chest" / "CR-MONO1-10-chest").read_bytes()
    ours_ds, other_ds = (dcmread(io.BytesIO(d), stop_before_pixels=True, force=True) for d in (ours, other))
    assert ours_ds.StudyInstanceUID != other_ds.StudyInstanceUID
    if other[128:132] != b"DICM":  # the legacy file has no preamble: give it one, as STOW-RS requires
        buffer = io.BytesIO()
        dcmread(io.BytesIO(other), force=True).save_as(buffer, enforce_file_format=True)
        other = buffer.getvalue()
    body, ctype = _multipart([ours, other])
    res = svc.client.post(
        f"/dicomweb/studies/{ours_ds.StudyInstanceUID}",
        content=body,
        headers=svc.headers("imaging", **{"Content-Type": ctype}),
    )
    assert res.status_code == 202 and res.headers["cache-control"] == "no-store"
    assert [i["00081155"]["Value"] for i in res.json()["00081199"]["Value"]] == [[ours_ds.SOPInstanceUID]]
    (failed,) = res.json()["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [other_ds.SOPInstanceUID] and failed["00081197"]["Value"] == [0xA900]
    node = svc.client.app.state.vigil.dicom_node
    assert node.queue.get(str(other_ds.SOPInstanceUID)) is None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and node.queue.get(ours_ds.SOPInstanceUID).state in ("received", "analysing"):
        time.sleep(0.2)
    assert node.queue.get(ours_ds.SOPInstanceUID).state == "analysed"
    assert [i.sop_instance_uid for i in node.queue.list_items(limit=10)] == [ours_ds.SOPInstanceUID]
    assert len([r for r in svc.store.read_audit(limit=100) if r.route == "dicomweb:stow-rs"]) == 1


def test_dicomweb_answers_are_not_cached(service):
    """Issue 14 finding 15: the worklist carries patient identifiers."""
    res = service.client.get("/v1/imaging/flags", headers=service.headers("imaging"))
    assert res.status_code == 200 and res.headers["cache-control"] == "no-store"


@pytest.mark.slow  # a real HTTP server and a client Vigil did not write
@pytest.mark.realdata
def test_dicomweb_client_stores_by_stow_rs_and_the_node_analyses_what_it_sent(node_service):
    """dicomweb-client (a STOW-RS client no one on the team wrote) stores two chest films over real HTTP; the
    response it parses names both, and the node inside the service analyses both."""
    from dicomweb_client.api import DICOMwebClient

    from tests.net import running

    svc = node_service
    datasets = [dcmread(FIXTURES / name) for name in CHEST]
    with running(svc.client.app) as port:  # the app's lifespan already ran inside the TestClient
        client = DICOMwebClient(f"http://127.0.0.1:{port}/dicomweb", headers=svc.headers("imaging"))
        response = client.store_instances(datasets)
    stored = [item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence]
    assert stored == [ds.SOPInstanceUID for ds in datasets]
    assert "FailedSOPSequence" not in response
    node = svc.client.app.state.vigil.dicom_node
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(node.queue.get(u).state in ("received", "analysing") for u in stored):
        time.sleep(0.2)
    assert [node.queue.get(u).state for u in stored] == ["analysed", "analysed"]
