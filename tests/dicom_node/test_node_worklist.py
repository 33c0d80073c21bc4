"""Worklist notifications through a running node (issue 19, item 3), on both queue back-ends: each flagged read is
notified to a real MLLP listener (python-hl7's server; every message validated by hl7apy STRICT) and to a FHIR
endpoint (every Task validated by fhir.resources), once per channel, independently of the SR's delivery; a channel
that is down is retried without re-sending to the one that acknowledged; after max_attempts the notification is
listed as failed by `vigil dicom-queue failed` and re-sent by `vigil dicom-queue renotify`."""

from __future__ import annotations

import pytest
from pydicom.uid import Comprehensive3DSRStorage
from typer.testing import CliRunner

from tests.dicom_node.worklist import fhir_receiver, mllp_receiver
from tests.net import free_port

pytestmark = [pytest.mark.slow, pytest.mark.realdata]  # analyses real films through a running node


def _chest(dicom_tools, fixtures_dir):
    return [dicom_tools.load(p) for p in dicom_tools.files(fixtures_dir, "chest")]


def test_each_flagged_read_notifies_the_ris_once_per_channel_and_a_channel_down_is_retried_alone(
    node_factory, destination, fixtures_dir, dicom_tools
):
    films = _chest(dicom_tools, fixtures_dir)
    with mllp_receiver() as ris, fhir_receiver() as fhir:
        fhir.refuse_first = 2  # the FHIR server refuses each Task twice (503); the MLLP listener is up
        node = node_factory(
            destination=destination.address,
            notify_hl7=f"127.0.0.1:{ris.port}",
            notify_fhir_url=fhir.url,
            notify_priority="stat",
            workers=1,
            max_attempts=5,
            notify_hl7_receiving_facility="RAD",
        )
        node.start()
        assert dicom_tools.send(node.port, films).statuses == [0x0000] * len(films)
        items = dicom_tools.wait_for(
            lambda: (
                (got := [node.queue.get(str(f.SOPInstanceUID)) for f in films])
                and all(
                    i and i.state in ("delivered", "not_analysed") and i.notify_state in (None, "sent", "failed")
                    for i in got
                )
                and got
            ),
            timeout_s=120,
        )
        assert node.stop()
    flagged = [i for i in items if i.flagged]
    assert flagged, "the test model flags none of the chest fixtures: nothing here would be notified"
    assert all(i.notify_state is None for i in items if not i.flagged)  # nothing to say about the others
    # Each flagged read: sent on the third try, the HL7 channel (acknowledged on the first) never sent again.
    assert all(
        (i.notify_state, i.notify_attempts, i.notified_channels) == ("sent", 3, ("hl7", "fhir")) for i in flagged
    ), [(i.notify_state, i.notify_attempts, i.notify_error) for i in flagged]
    done = flagged

    # One HL7 message and one Task per flagged read, though the FHIR channel was tried again and again.
    assert ris.errors == [] and fhir.errors == []
    by_sr = {i.sr_sop_instance_uid: i for i in done}
    sr_uids = []
    for message in ris.messages:
        observations = {str(obx[3][0][0]): obx for obx in message.segments("OBX")}
        sr_uids.append(str(observations["SRUID"][5]))
        item = by_sr[sr_uids[-1]]
        assert str(message.segment("MSH")[6]) == "RAD" and str(message["TQ1.F9"]) == "S"
        assert str(observations["110180"][5]) == item.study_instance_uid
        assert {str(obx[3][0][0]) for obx in message.segments("OBX") if str(obx[2]) == "NM"} == {
            code for code, finding in _codes().items() if finding in item.flagged_findings
        }
    assert sorted(sr_uids) == sorted(by_sr)
    assert sorted(t["identifier"][0]["value"] for t in fhir.tasks) == sorted(f"urn:oid:{u}" for u in by_sr)
    assert all(t["priority"] == "stat" and t["intent"] == "proposal" for t in fhir.tasks)
    for item in done:
        assert item.public()["worklist_notification"]["acknowledged_by"] == ["hl7", "fhir"]
        assert item.state == "delivered" and item.sr_sop_instance_uid in {
            str(ds.SOPInstanceUID) for ds in destination.datasets() if ds.SOPClassUID == Comprehensive3DSRStorage
        }


def _codes() -> dict[str, str]:
    from models.labels import IMAGING_FINDING_CODES

    return {code: name for name, (code, _, _) in IMAGING_FINDING_CODES.items()}


@pytest.mark.parametrize("queue_url", ["sqlite"], indirect=True)
def test_a_ris_down_for_good_is_listed_and_renotified_by_an_operator(
    node_factory, destination, fixtures_dir, dicom_tools, tmp_path, queue_url
):
    from vigil.cli import app

    port = free_port()
    node = node_factory(
        destination=destination.address,
        notify_hl7=f"127.0.0.1:{port}",
        workers=1,
        max_attempts=2,
        backoff_base_s=0.05,
        backoff_max_s=0.1,
    )
    node.start()
    films = _chest(dicom_tools, fixtures_dir)
    dicom_tools.send(node.port, films)
    settled = dicom_tools.wait_for(
        lambda: (
            (got := [node.queue.get(str(f.SOPInstanceUID)) for f in films])
            and all(i and i.state in ("delivered", "not_analysed") and i.notify_state in (None, "failed") for i in got)
            and got
        ),
        timeout_s=120,
    )
    item = node.queue.list_items(notification="failed", limit=100)[0]
    assert item.notify_attempts == 2 and "ConnectionRefusedError" in item.notify_error
    assert {i.state for i in settled if i.flagged} == {"delivered"}  # the SRs went anyway

    env = {"VIGIL_DICOM_QUEUE_URL": queue_url[0], "VIGIL_WORK_DIR": str(tmp_path)}
    listed = CliRunner().invoke(app, ["dicom-queue", "failed"], env=env)
    assert listed.exit_code == 0 and item.sop_instance_uid in listed.output and "worklist notification" in listed.output
    with mllp_receiver(port=port) as ris:
        again = CliRunner().invoke(app, ["dicom-queue", "renotify", item.sop_instance_uid], env=env)
        assert again.exit_code == 0, again.output
        sent = dicom_tools.wait_for(
            lambda: (i := node.queue.get(item.sop_instance_uid)) and i.notify_state == "sent" and i
        )
    assert sent.notified_channels == ("hl7",) and len(ris.messages) == 1 and ris.errors == []
    unknown = CliRunner().invoke(app, ["dicom-queue", "renotify", "1.2.3.4"], env=env)
    assert unknown.exit_code == 2 and "1.2.3.4" in unknown.output
    assert node.stop()
