"""Worklist notifications (serving.dicom_node.notify and its notify_hl7, notify_mllp, notify_fhir): the HL7 v2.5.1
ORU^R01 and the FHIR R4 Task a flagged read makes, read back by libraries Vigil does not write them with
(python-hl7, hl7apy STRICT, fhir.resources), sent over MLLP to python-hl7's MLLP server and POSTed to a FHIR
stand-in; and the settings that turn them on."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from models.errors import ConfigError
from models.model_card import IMAGING_DECISION_SUPPORT_STATEMENT
from serving.dicom_node.delivery import DeliveryError
from serving.dicom_node.notify import Notice, channels_to_send
from serving.dicom_node.notify_fhir import fhir_task, post_fhir_task
from serving.dicom_node.notify_hl7 import hl7_escape
from serving.dicom_node.notify_mllp import send_mllp
from serving.dicom_node.settings import DicomNodeSettings
from serving.settings import load_validated
from tests.dicom_node.worklist import NOTICE, fhir_receiver, mllp_receiver
from tests.dicom_node.worklist import oru as _oru
from tests.net import free_port


def test_the_oru_r01_is_valid_hl7_v251_and_python_hl7_reads_every_field_back_exactly():
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    text = _oru()
    strict = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    strict.validate()  # raises on any structure, datatype or table error
    assert strict.name == "ORU_R01"

    import hl7

    msg = hl7.parse(text)
    assert str(msg.segment("MSH")[9]) == "ORU^R01^ORU_R01" and str(msg.segment("MSH")[12]) == "2.5.1"
    assert str(msg.segment("MSH")[10]) == NOTICE.control_id and len(NOTICE.control_id) <= 20
    # Delimiters in the source header come back as they were, in the right components, never splitting a field
    # (python-hl7's accessor unescapes; the segment's fields are the raw text).
    assert str(msg["PID.F3.R1.C1"]) == "MRN|42^7"
    assert str(msg["PID.F3.R1.C4"]) == "HOSP&A"
    assert str(msg["PID.F5.R1.C1"]) == "O'Brien"
    assert str(msg["PID.F5.R1.C2"]) == "Mary~Ann"
    assert str(msg["PID.F5.R1.C3"]) == "J\\X"
    assert (str(msg["PID.F5.R1.C4"]), str(msg["PID.F5.R1.C5"])) == ("III", "Dr")  # XPN: suffix, then prefix
    assert (str(msg.segment("PID")[7]), str(msg.segment("PID")[8])) == ("19600102", "F")
    assert str(msg.segment("OBR")[3]) == str(msg.segment("ORC")[3]) == "ACC-1"
    obr, tq1 = msg.segment("OBR"), msg.segment("TQ1")
    assert (str(obr[7]), str(obr[24]), str(obr[25]), str(tq1[9])) == ("20261201101112", "RAD", "P", "A")
    assert IMAGING_DECISION_SUPPORT_STATEMENT in msg.unescape(str(msg.segment("NTE")[3]))
    results = {str(obx[3][0][0]): obx for obx in msg.segments("OBX")}
    pneumothorax = results["36118008"]
    assert (
        str(pneumothorax[2]),
        str(pneumothorax[5]),
        str(pneumothorax[7]),
        str(pneumothorax[8]),
        str(pneumothorax[11]),
    ) == ("NM", "0.871", "<0.420", "A", "P")
    assert str(pneumothorax[18]) == "cxr-second-read 7^VIGIL"
    assert str(results["NODMASS"][3][0][2]) == "99VIGIL"
    assert str(results["110180"][5]) == NOTICE.study_instance_uid
    assert str(results["SRUID"][5]) == NOTICE.sr_sop_instance_uid


def test_a_header_cannot_end_a_segment_or_inject_one():
    hostile = Notice(
        **{**NOTICE.__dict__, "patient_name": "Doe^John\rOBX|9|ST|X||injected", "accession_number": "A\nB"}
    )
    text = _oru(hostile)
    assert [line[:3] for line in text.strip("\r").split("\r")] == [
        "MSH",
        "PID",
        "ORC",
        "OBR",
        "NTE",
        "TQ1",
        "OBX",
        "OBX",
        "OBX",
        "OBX",
        "OBX",
    ]
    assert "injected" in text and "|9|ST|X||injected" not in text
    assert hl7_escape("a|b^c~d\\e&f") == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f"


def test_no_patient_id_means_no_pid_segment_and_still_a_valid_message():
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    text = _oru(Notice(**{**NOTICE.__dict__, "patient_id": "", "accession_number": ""}), priority="stat")
    assert "\rPID|" not in text and "TQ1|1||||||||S" in text
    parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()


def test_the_task_validates_against_fhir_r4_models_and_says_what_to_read_and_why():
    from fhir.resources.R4B.task import Task

    task = fhir_task(NOTICE, priority="stat", now=1_796_000_100.0)
    Task.model_validate(task)
    assert (task["status"], task["intent"], task["priority"]) == ("requested", "proposal", "stat")
    assert task["identifier"] == [{"system": "urn:dicom:uid", "value": f"urn:oid:{NOTICE.sr_sop_instance_uid}"}]
    assert task["focus"]["identifier"]["value"] == f"urn:oid:{NOTICE.study_instance_uid}"
    assert task["for"]["identifier"] == {"value": "MRN|42^7", "assigner": {"display": "HOSP&A"}}
    assert [c["code"] for c in task["reasonCode"]["coding"]] == ["36118008", "NODMASS"]
    assert task["reasonCode"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert [i["valueDecimal"] for i in task["input"]] == [0.871, 0.51]
    assert task["note"] == [{"text": IMAGING_DECISION_SUPPORT_STATEMENT}]
    assert "for" not in fhir_task(Notice(**{**NOTICE.__dict__, "patient_id": ""}), priority="asap")


def test_mllp_delivery_is_acknowledged_by_a_real_mllp_listener():
    with mllp_receiver() as ris:
        send_mllp(_oru(), "127.0.0.1", ris.port, control_id=NOTICE.control_id, timeout_s=5)
        send_mllp(_oru(), "127.0.0.1", ris.port, control_id=NOTICE.control_id, timeout_s=5)  # a retry: same id
    assert ris.errors == [] and len(ris.messages) == 2
    assert {str(m.segment("MSH")[10]) for m in ris.messages} == {NOTICE.control_id}
    assert str(ris.messages[0]["PID.F5.R1.C1"]) == "O'Brien"


@pytest.mark.parametrize("code", ["AE", "AR"])
def test_an_ack_other_than_accept_is_a_delivery_error_naming_the_code(code):
    with mllp_receiver(ack_code=code) as ris, pytest.raises(DeliveryError, match=f"answered {code} "):
        send_mllp(_oru(), "127.0.0.1", ris.port, control_id=NOTICE.control_id, timeout_s=5)


def test_an_ack_of_another_message_is_not_taken_for_ours():
    with mllp_receiver() as ris, pytest.raises(DeliveryError, match="MSA-2 does not match"):
        send_mllp(_oru(), "127.0.0.1", ris.port, control_id="SOMETHING-ELSE", timeout_s=5)


def test_a_listener_that_is_down_is_a_delivery_error():
    with pytest.raises(DeliveryError, match=r"MLLP 127\.0\.0\.1:\d+ failed \(ConnectionRefusedError\)"):
        send_mllp(_oru(), "127.0.0.1", free_port(), control_id=NOTICE.control_id, timeout_s=2)


def test_the_task_is_a_conditional_create_so_a_retry_makes_no_second_task():
    task = fhir_task(NOTICE, priority="asap")
    with fhir_receiver() as server:
        post_fhir_task(task, server.url, timeout_s=5, authorization="Bearer ris-token")
        post_fhir_task(task, server.url, timeout_s=5)
    assert server.errors == [] and len(server.tasks) == 1 and len(server.requests) == 2
    path, headers, _ = server.requests[0]
    assert path == "/fhir/Task" and headers["Authorization"] == "Bearer ris-token"
    assert headers["Content-Type"] == "application/fhir+json"
    assert headers["If-None-Exist"] == f"identifier=urn:dicom:uid|urn:oid:{NOTICE.sr_sop_instance_uid}"


def test_a_fhir_server_refusing_the_task_is_a_delivery_error_naming_the_status():
    with fhir_receiver() as server:
        server.status = 503
        with pytest.raises(DeliveryError, match="answered HTTP 503"):
            post_fhir_task(fhir_task(NOTICE, priority="asap"), server.url, timeout_s=5)


def test_only_channels_that_never_acknowledged_are_sent_again():
    assert channels_to_send(("hl7", "fhir"), ()) == ["hl7", "fhir"]
    assert channels_to_send(("fhir", "hl7"), ("hl7",)) == ["fhir"]
    assert channels_to_send(("hl7",), ("hl7",)) == []


def test_notification_settings_are_checked_at_the_edge(tmp_path):
    settings = DicomNodeSettings(
        work_dir=tmp_path,
        notify_hl7="ris.local:2575",
        notify_fhir_url="https://ris.local/fhir/",
        notify_priority="stat",
    )
    assert settings.notifies and settings.notify_channels() == ("hl7", "fhir")
    assert settings.notify_hl7_peer() == ("ris.local", 2575, None)
    assert settings.notify_fhir_url == "https://ris.local/fhir"
    assert not DicomNodeSettings(work_dir=tmp_path).notifies
    assert DicomNodeSettings(work_dir=tmp_path, notify_hl7="[::1]:2575").notify_hl7_peer()[:2] == ("::1", 2575)
    for bad, problem in [
        ({"notify_hl7": "ris.local"}, "host:port"),
        ({"notify_hl7": "ris:99999"}, "host:port"),
        ({"notify_fhir_url": "https://u:secret@ris/fhir"}, "must not carry credentials"),
        ({"notify_fhir_url": "ftp://ris/fhir"}, "http\\(s\\) URL"),
        ({"notify_hl7_receiving_application": "RIS^X"}, "without \\|"),
        ({"notify_priority": "whenever"}, "stat"),
        ({"notify_hl7": "ris:2575", "notify_hl7_tls": True}, "VIGIL_DICOM_TLS_CA"),
    ]:
        with pytest.raises(ValidationError, match=problem):
            DicomNodeSettings(work_dir=tmp_path, **bad)
        with pytest.raises(ConfigError, match=problem) as caught:  # what `vigil dicom-node` reports: no value echoed
            load_validated(DicomNodeSettings, "VIGIL_DICOM_", work_dir=tmp_path, **bad)
        assert str(caught.value).startswith(f"setting VIGIL_DICOM_{next(iter(bad)).upper()}")
        assert "secret" not in str(caught.value)
