"""STOW-RS delivery of the results (serving.dicom_node.delivery.send_stow) against a small HTTP archive stand-in
that answers what real archives answer (200, 202 with or without failed instances, 409), and the setting's checks.
Orthanc as the real archive is in test_node_orthanc.py."""

from __future__ import annotations

import http.server
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from models.errors import ConfigError
from serving.dicom_node.delivery import DeliveryError, send_stow
from serving.dicom_node.settings import DicomNodeSettings
from serving.settings import load_validated
from tests.net import free_port, http_server

STUDY = "1.2.826.0.1.3680043.8.498.1"


def _result(path: Path, sop_class: str = "1.2.840.10008.5.1.4.1.1.88.34") -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = STUDY
    ds.save_as(path, enforce_file_format=True)
    return path


class Archive(http.server.BaseHTTPRequestHandler):
    """Answers every POST with ``status`` and ``body`` (class attributes, set by the test); keeps what it was sent."""

    status, body, received = 200, b"{}", []
    url = ""

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append((self.path, dict(self.headers), self.rfile.read(length)))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def archive() -> Iterator[type[Archive]]:
    stand_in = type("StandIn", (Archive,), {"received": []})
    with http_server(stand_in) as port:
        stand_in.url = f"http://127.0.0.1:{port}/dicom-web"
        yield stand_in


def test_200_stores_both_files_in_one_request_into_their_study(archive, tmp_path):
    sr, sc = _result(tmp_path / "sr.dcm"), _result(tmp_path / "sc.dcm", "1.2.840.10008.5.1.4.1.1.7")
    send_stow([sr, sc], archive.url, timeout_s=5, authorization="Bearer archive-token")
    ((path, headers, body),) = archive.received
    assert path == f"/dicom-web/studies/{STUDY}" and headers["Authorization"] == "Bearer archive-token"
    assert headers["Content-Type"].startswith('multipart/related; type="application/dicom"; boundary=')
    assert body.count(b"Content-Type: application/dicom\r\n") == 2
    assert sr.read_bytes() in body and sc.read_bytes() in body


def test_202_without_failed_instances_is_delivered(archive, tmp_path):
    archive.status, archive.body = 202, json.dumps({"00081199": {"vr": "SQ", "Value": [{}]}}).encode()
    send_stow([_result(tmp_path / "sr.dcm")], archive.url, timeout_s=5)


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (202, {"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [0xA700]}}]}}, "reason 0xA700"),
        (202, b"not json", "unreadable response"),
        (409, {"00081198": {"vr": "SQ", "Value": [{}]}}, "answered HTTP 409"),
        (503, b"", "answered HTTP 503"),
    ],
)
def test_a_refusal_is_a_delivery_error_naming_the_status(archive, tmp_path, status, body, reason):
    archive.status, archive.body = status, body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(DeliveryError, match=reason):
        send_stow([_result(tmp_path / "sr.dcm")], archive.url, timeout_s=5)


def test_an_archive_that_is_down_is_a_delivery_error(tmp_path):
    with pytest.raises(DeliveryError, match=r"STOW-RS to http://127\.0\.0\.1:\d+/dicom-web failed \(ConnectError\)"):
        send_stow([_result(tmp_path / "sr.dcm")], f"http://127.0.0.1:{free_port()}/dicom-web", timeout_s=2)


def test_results_of_two_studies_are_not_sent_together(archive, tmp_path):
    other = _result(tmp_path / "other.dcm")
    from pydicom import dcmread

    ds = dcmread(other)
    ds.StudyInstanceUID = generate_uid()
    ds.save_as(other)
    with pytest.raises(DeliveryError, match="one study"):
        send_stow([_result(tmp_path / "sr.dcm"), other], archive.url, timeout_s=5)
    assert archive.received == []


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://pacs/dicom-web", "http\\(s\\) URL"),
        ("http:///dicom-web", "http\\(s\\) URL"),
        ("http://pacs/dicom-web?x=1", "no query"),
        ("http://user:secret@pacs/dicom-web", "must not carry credentials"),
    ],
)
def test_a_bad_stow_url_is_refused_naming_the_setting_and_never_echoing_it(tmp_path, url, problem):
    with pytest.raises(ConfigError, match=problem) as caught:
        load_validated(DicomNodeSettings, "VIGIL_DICOM_", work_dir=tmp_path, stow_url=url)
    assert str(caught.value).startswith("setting VIGIL_DICOM_STOW_URL:") and "secret" not in str(caught.value)
    with pytest.raises(ValidationError):
        DicomNodeSettings(work_dir=tmp_path, stow_url=url)


def test_a_stow_url_alone_makes_the_node_deliver(tmp_path):
    settings = DicomNodeSettings(work_dir=tmp_path, stow_url="https://pacs.example/dicom-web/")
    assert settings.delivers and settings.destination is None and settings.stow_url == "https://pacs.example/dicom-web"
    assert not DicomNodeSettings(work_dir=tmp_path).delivers
