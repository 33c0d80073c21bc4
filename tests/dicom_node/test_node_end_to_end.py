"""The whole node on the real fixtures: a modality sends every fixture by C-STORE, workers read each with the model,
audit it, and C-STORE the TID 1500 SR and the heat-map SC to a destination SCP, which checks what it got."""

from __future__ import annotations

import io

import pytest
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage

from models.imaging.sr_read import read_second_read_sr

pytestmark = pytest.mark.slow  # stores every fixture through a running node

NEGATIVE_REASONS = {
    "966.dcm": "PixelData",
    "Fake_MONOHR1.dcm": "PhotometricInterpretation",
    "RG2_JPLY.dcm": "BodyPartExamined",
}
OTHER_CR_REASONS = {
    "RG2_JLSL.dcm": "BodyPartExamined",
    "RG2_JPLL.dcm": "BodyPartExamined",
    "RG2_JPLY_fixed.dcm": "BodyPartExamined",
    "RG3_J2KR.dcm": "BodyPartExamined",
    "CR-ModalitySequenceLUT.dcm": "PhotometricInterpretation",
}
PENDING = ("received", "analysing", "analysed", "delivering")


def _idle(node) -> bool:
    counts = node.queue.counts()
    return not any(counts[s] for s in PENDING)


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # CR-ModalitySequenceLUT's UIDs have leading zeros
@pytest.mark.parametrize("queue_url", ["sqlite"], indirect=True)
def test_every_fixture_is_read_reported_and_delivered(
    node_factory, destination, fixtures_dir, dicom_tools, audit_store, tmp_path
):
    node = node_factory(destination=destination.address, send_heatmap_sc=True, workers=2)
    node.start()

    # The negatives first: accepted at the protocol level, then not analysed with the attribute named.
    negatives = {p.name: dicom_tools.load(p) for p in dicom_tools.files(fixtures_dir, "negative")}
    assert dicom_tools.send(node.port, list(negatives.values())).statuses == [0x0000] * len(negatives)
    dicom_tools.wait_for(lambda: _idle(node) and node.queue.counts()["not_analysed"] == len(negatives))
    for name, ds in negatives.items():
        item = node.queue.get(str(ds.SOPInstanceUID))
        assert (item.state, item.reason_field) == ("not_analysed", NEGATIVE_REASONS[name]), name
        assert item.reason and item.reason_field in item.reason and item.sr_sop_instance_uid is None

    # Then everything else. 966_fixed, the SIIM image and RG2_JPLY_fixed share their SOP Instance UIDs with the
    # negatives: different bytes after "not analysed" count as a corrected re-send and are read afresh.
    chest = {p.name: dicom_tools.load(p) for p in dicom_tools.files(fixtures_dir, "chest", "derived")}
    other = {p.name: dicom_tools.load(p) for p in dicom_tools.files(fixtures_dir, "other_cr")}
    sent = dicom_tools.send(node.port, [*chest.values(), *other.values()])
    assert sent.statuses == [0x0000] * (len(chest) + len(other))
    dicom_tools.wait_for(lambda: _idle(node) and node.queue.counts()["delivered"] == len(chest), timeout_s=120)

    for name, ds in other.items():
        item = node.queue.get(str(ds.SOPInstanceUID))
        assert (item.state, item.reason_field) == ("not_analysed", OTHER_CR_REASONS[name]), name
    assert node.queue.get(str(negatives["RG2_JPLY.dcm"].SOPInstanceUID)).duplicates == 1

    received = destination.datasets()
    reports = {str(ds.SOPInstanceUID): ds for ds in received if ds.SOPClassUID == Comprehensive3DSRStorage}
    captures = {str(ds.SOPInstanceUID): ds for ds in received if ds.SOPClassUID == SecondaryCaptureImageStorage}
    assert len(reports) == len(captures) == len(chest) and len(received) == 2 * len(chest)
    assert set(destination.calling) == {"VIGIL"}
    audits = {r.request_id: r for r in audit_store.read_audit(limit=100)}
    assert len(audits) == len(chest)
    for name, source in chest.items():
        item = node.queue.get(str(source.SOPInstanceUID))
        assert item.state == "delivered" and item.delivered_at >= item.analysed_at >= item.received_at, name
        sr_ds = reports[item.sr_sop_instance_uid]
        assert sr_ds.SeriesInstanceUID == item.sr_series_instance_uid
        assert sr_ds.StudyInstanceUID == item.sr_study_instance_uid == source.StudyInstanceUID
        buffer = io.BytesIO()
        sr_ds.save_as(buffer, enforce_file_format=True)
        read = read_second_read_sr(buffer.getvalue())
        assert read["referenced_sop_instance_uid"] == source.SOPInstanceUID
        assert read["algorithm"]["version"] == item.model_version == "7"
        for finding, probability in item.result["probabilities"].items():
            assert read["findings"][finding]["probability"] == pytest.approx(probability, abs=1e-6)
            assert read["findings"][finding]["flagged"] == item.result["flags"][finding]
        assert read["any_flagged"] == item.flagged == bool(item.flagged_findings)
        sc = captures[item.sc_sop_instance_uid]
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.SamplesPerPixel == 3
        audit = audits[item.request_id]
        assert (audit.route, audit.client, audit.input_sha256) == ("dicom:c-store", "MODALITY", item.sha256)
        assert audit.output["sr_sop_instance_uid"] == item.sr_sop_instance_uid
        assert {f["finding"]: f["probability"] for f in audit.output["findings"]} == item.result["probabilities"]

    # The worklist: flagged items carry the SR's UIDs; the received instances themselves were not kept.
    flagged = node.list_items(flagged_only=True, limit=100)
    assert flagged and all(i.public()["structured_report"]["sop_instance_uid"] for i in flagged)
    some = flagged[0].flagged_findings[0]
    assert {i.sop_instance_uid for i in node.list_items(finding=some, limit=100)} == {
        i.sop_instance_uid for i in flagged if some in i.flagged_findings
    }
    leftovers = [p for p in (tmp_path / "dicom-in").rglob("*.dcm") if p.parent.parent.name not in ("sr", "sc")]
    assert leftovers == []
    assert audit_store.verify_audit_chain()[0]
