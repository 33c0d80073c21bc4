"""Workflow gaps of the node found by driving it by hand (issue 19, item 4), on both queue back-ends:

- an instance C-STOREd again after its SR was delivered gets the same SR (and heat-map SC) delivered again, once:
  the model is not run again and no new UID is made; a re-send while that re-delivery is pending queues nothing;
- a source whose AccessionNumber is longer than SH's 16 characters still gets a valid SR (AccessionNumber empty),
  and so does its heat-map SC;
- the SR and the worklist result carry the imaging decision-support statement, not the triage one.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import warnings

import pytest
from pydicom import config, dcmread
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage

from models.imaging.sr_read import read_second_read_sr
from models.model_card import decision_support_statement

pytestmark = pytest.mark.slow  # re-delivers through a running node

#: A small real chest radiograph (JPEG baseline secondary capture): fast to decode.
SIIM = "chest/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def _received(destination, sop_class: str) -> list[str]:
    """SOP Instance UIDs of the ``sop_class`` instances the destination received, in order."""
    return [str(ds.SOPInstanceUID) for ds in destination.datasets() if ds.SOPClassUID == sop_class]


@pytest.mark.realdata
def test_a_resend_after_delivery_delivers_the_same_sr_again_without_a_second_read(
    node_factory, destination, fixtures_dir, dicom_tools, audit_store
):
    node = node_factory(
        destination=destination.address,
        send_heatmap_sc=True,
        workers=1,
        max_attempts=50,
        backoff_base_s=0.1,
        backoff_max_s=0.2,
    )
    node.start()
    source = dicom_tools.load(fixtures_dir / SIIM)
    uid = str(source.SOPInstanceUID)
    assert dicom_tools.send(node.port, [source]).statuses == [0x0000]
    first = dicom_tools.wait_for(lambda: (i := node.queue.get(uid)) and i.state == "delivered" and i)
    assert _received(destination, Comprehensive3DSRStorage) == [first.sr_sop_instance_uid]

    # The workstation lost the SR and the destination is briefly refusing: the image is sent again, twice.
    destination.fail_with = 0xA700
    assert dicom_tools.send(node.port, [source]).statuses == [0x0000]
    pending = dicom_tools.wait_for(
        lambda: (i := node.queue.get(uid)) and i.delivery_attempts >= 1 and i.state == "analysed" and i.last_error and i
    )
    assert pending.needs_delivery and pending.duplicates == 1
    assert dicom_tools.send(node.port, [source]).statuses == [0x0000]  # while the re-delivery is pending
    assert node.queue.get(uid).duplicates == 2 and node.queue.counts()["received"] == 0
    destination.fail_with = None
    again = dicom_tools.wait_for(
        lambda: (i := node.queue.get(uid)) and i.state == "delivered" and i.delivered_at > first.delivered_at and i
    )

    # The same SR and SC, delivered once more (the pending re-send added no third copy); no second read.
    assert _received(destination, Comprehensive3DSRStorage) == [first.sr_sop_instance_uid] * 2
    assert _received(destination, SecondaryCaptureImageStorage) == [first.sc_sop_instance_uid] * 2
    sent = [
        data
        for data, ds in zip(destination.received, destination.datasets(), strict=True)
        if ds.SOPClassUID == Comprehensive3DSRStorage
    ]
    assert sent[0] == sent[1]  # byte for byte: the SR written once, at analysis
    assert (again.sr_sop_instance_uid, again.sc_sop_instance_uid, again.request_id, again.attempts) == (
        first.sr_sop_instance_uid,
        first.sc_sop_instance_uid,
        first.request_id,
        first.attempts,
    )
    assert [r.request_id for r in audit_store.read_audit(limit=100)] == [first.request_id]  # the model ran once
    assert node.queue.counts()["delivered"] == 1 and node.stop()


def _with_long_accession_number(source):
    """``source`` with a 40-character AccessionNumber, as some RIS write them (pydicom's own length warning on
    setting it is the test's doing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source.AccessionNumber = "RIS-" + "9" * 36
    return source


@pytest.mark.realdata
def test_a_source_with_a_long_accession_number_gets_a_valid_sr_and_sc(
    node_factory, destination, fixtures_dir, dicom_tools, tmp_path, caplog
):
    node = node_factory(destination=destination.address, send_heatmap_sc=True, workers=1)
    node.start()
    source = _with_long_accession_number(dicom_tools.load(fixtures_dir / SIIM))
    with warnings.catch_warnings():  # pynetdicom encodes the over-long value as it is (pydicom warns, by length)
        warnings.simplefilter("ignore")
        assert dicom_tools.send(node.port, [source]).statuses == [0x0000]
    item = dicom_tools.wait_for(
        lambda: (
            (i := node.queue.get(str(source.SOPInstanceUID)))
            and i.state in ("delivered", "not_analysed", "delivery_failed")
            and i
        )
    )
    assert item.state == "delivered", item.reason
    assert "source AccessionNumber is 40 characters" in caplog.text and "RIS-9999" not in caplog.text
    by_class = {}
    for data in destination.received:
        with config.strict_reading():  # every value valid for its VR, or pydicom raises
            ds = dcmread(io.BytesIO(data))
            for element in ds.iterall():
                _ = element.value
        by_class[str(ds.SOPClassUID)] = (ds, data)
    sr, sr_bytes = by_class[Comprehensive3DSRStorage]
    sc, _ = by_class[SecondaryCaptureImageStorage]
    for derived in (sr, sc):
        assert derived.AccessionNumber == "" and derived.StudyInstanceUID == source.StudyInstanceUID
    parsed = read_second_read_sr(sr_bytes)
    assert parsed["referenced_sop_instance_uid"] == source.SOPInstanceUID
    assert parsed["statement"] == decision_support_statement("imaging") == item.result["decision_support_statement"]
    (vigil,) = [e for e in sr.ContributingEquipmentSequence if e.Manufacturer == "Vigil"]
    assert vigil.SoftwareVersions == item.model_version == parsed["algorithm"]["version"]
    dsrdump = shutil.which("dsrdump")
    if dsrdump is not None:  # dcmtk, where installed
        path = tmp_path / "sr.dcm"
        path.write_bytes(sr_bytes)
        done = subprocess.run(
            [dsrdump, "-ll", "warn", str(path)], capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0 and not [
            line for line in (done.stdout + done.stderr).splitlines() if line.startswith(("W:", "E:", "F:"))
        ]
    assert node.stop()
