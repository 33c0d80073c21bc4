"""Worklist notifications of a flagged second read: an HL7 v2.5.1 ORU^R01 over MLLP and/or a FHIR R4 Task.

The point of a second read is to bring urgent films forward. When the node flags an instance it tells the RIS (or
any worklist that takes HL7 v2 or FHIR), beside sending the SR to the PACS and independently of it: each flagged
item has its own notification state, attempts and back-off in the queue (:mod:`.records`), so a RIS that is down
never holds back the SR and a PACS that is down never holds back the notification.

What is sent is built from the SR the node wrote (patient and study identifiers as the source carried them) and the
queued result (the flagged findings with their probabilities and operating thresholds, the model and its version):

- **HL7 v2.5.1 ORU^R01** (:func:`oru_r01`): MSH, PID (when the source has a PatientID), ORC/OBR of the chest
  radiograph (OBR-3 and ORC-3 the AccessionNumber, OBR-25 ``P``: preliminary, a second read is not a report),
  NTE with the imaging decision-support statement, TQ1 with the configured priority, then one OBX per flagged
  finding (NM probability, OBX-7 the operating threshold as ``<t``, OBX-8 ``A``, OBX-11 ``P``, OBX-18 the model)
  and OBX of the Study, SR and source image UIDs so the RIS can open them. The message control id is the same on
  every retry (the receiver can drop a duplicate whose ACK was lost). Original-mode acknowledgement: ``AA`` (or
  ``CA``) is success; ``AE``/``AR``, no answer, a refused connection or a TLS failure is a
  :class:`~serving.dicom_node.delivery.DeliveryError`, retried with back-off.
- **FHIR R4 Task** (:func:`fhir_task`): ``status`` requested, ``intent`` proposal (decision support suggests; a
  clinician decides), ``priority`` as configured, ``focus`` the ImagingStudy by its Study Instance UID, ``for`` the
  Patient by identifier, ``reasonCode`` the flagged findings, ``input`` their probabilities, ``note`` the
  decision-support statement. POSTed as a conditional create (``If-None-Exist`` on the Task's identifier, the SR's
  SOP Instance UID), so a retry never makes a second Task.

Neither message carries more patient data than the SR itself; errors name the status or the failure, never the
receiver's answer (it may echo patient data).
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import pydicom

from models.imaging.sr import PLAIN_CHEST_XRAY
from models.labels import IMAGING_FINDING_CODES
from models.model_card import IMAGING_DECISION_SUPPORT_STATEMENT
from serving.dicom_node.delivery import DeliveryError
from serving.dicom_node.records import QueueItem
from serving.fhir.codes import SNOMED, VIGIL_FHIR

__all__ = ["CHANNELS", "FlaggedFinding", "Notice", "fhir_task", "notice_of", "oru_r01", "post_fhir_task", "send_mllp"]

#: The notification channels, in the order they are sent.
CHANNELS: Final = ("hl7", "fhir")
#: HL7 v2 table 0485 (TQ1-9 priority) and FHIR request-priority, by Vigil's setting.
PRIORITIES: Final[dict[str, str]] = {"stat": "S", "asap": "A", "routine": "R"}
#: MLLP block framing (HL7 v2 Minimal Lower Layer Protocol, release 2).
START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\x0d"
DICOM_UID_SYSTEM: Final = "urn:dicom:uid"
FINDING_SYSTEM: Final = f"{VIGIL_FHIR}/CodeSystem/imaging-finding"
#: The concepts naming the UIDs in the last OBX segments: the study, the source image, the SR.
UID_CODES: Final = (
    ("110180", "DCM", "Study Instance UID"),
    ("SRCIMG", "99VIGIL", "Source image SOP Instance UID"),
    ("SRUID", "99VIGIL", "Second read SR SOP Instance UID"),
)
_MAX_ACK_BYTES = 64 * 1024
_DA = re.compile(r"\d{8}")
_TM = re.compile(r"\d{2,6}")


@dataclass(frozen=True)
class FlaggedFinding:
    """One flagged finding: Vigil's name, its code (value, scheme, meaning), probability and operating threshold."""

    name: str
    code: tuple[str, str, str]
    probability: float
    threshold: float


@dataclass(frozen=True)
class Notice:
    """What a worklist notification says, gathered from the SR on disk and the queued result."""

    sop_instance_uid: str  # the source image
    study_instance_uid: str
    sr_sop_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str  # DICOM PN, alphabetic group
    birth_date: str
    sex: str
    accession_number: str
    study_date: str
    study_time: str
    model_name: str
    model_version: str
    analysed_at: float
    findings: tuple[FlaggedFinding, ...] = field(default_factory=tuple)

    @property
    def summary(self) -> str:
        """The flagged findings in words: ``Pneumothorax 0.871 (threshold 0.420), ...``."""
        return ", ".join(
            f"{f.code[2]} {_number(f.probability)} (threshold {_number(f.threshold)})" for f in self.findings
        )

    @property
    def control_id(self) -> str:
        """HL7 MSH-10 (at most 20 characters in v2.5.1): the same on every retry of this SR's notification."""
        return "V" + hashlib.sha256(self.sr_sop_instance_uid.encode()).hexdigest()[:19].upper()


def notice_of(item: QueueItem, sr_path: Path) -> Notice:
    """The :class:`Notice` of a flagged, analysed item whose SR is at ``sr_path``.

    Raises
    ------
    DeliveryError
        The SR cannot be read, or the item holds no flagged result (nothing to notify).
    """
    try:
        sr = pydicom.dcmread(io.BytesIO(Path(sr_path).read_bytes()), stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise DeliveryError(f"the structured report to notify from cannot be read ({type(exc).__name__})") from exc
    result = item.result or {}
    probabilities = result.get("probabilities") or {}
    thresholds = result.get("thresholds") or {}
    findings = []
    for name in item.flagged_findings:
        probability, threshold = probabilities.get(name), thresholds.get(name)
        if name not in IMAGING_FINDING_CODES or probability is None or threshold is None:
            raise DeliveryError(f"the queued result has no probability or threshold for flagged finding {name!r}")
        findings.append(FlaggedFinding(name, IMAGING_FINDING_CODES[name], float(probability), float(threshold)))
    if not findings:
        raise DeliveryError("the item has no flagged finding to notify")
    model = result.get("model") or {}

    def text(keyword: str) -> str:
        value = sr.get(keyword, "")
        return "" if value is None else str(value).strip()

    return Notice(
        sop_instance_uid=item.sop_instance_uid,
        study_instance_uid=text("StudyInstanceUID"),
        sr_sop_instance_uid=text("SOPInstanceUID"),
        patient_id=text("PatientID"),
        issuer_of_patient_id=text("IssuerOfPatientID"),
        patient_name=text("PatientName").split("=")[0],
        birth_date=text("PatientBirthDate"),
        sex=text("PatientSex").upper(),
        accession_number=text("AccessionNumber"),
        study_date=text("StudyDate"),
        study_time=text("StudyTime"),
        model_name=str(model.get("name") or "imaging"),
        model_version=str(item.model_version or model.get("version") or ""),
        analysed_at=item.analysed_at or item.updated_at,
        findings=tuple(findings),
    )


# ---------------------------------------------------------------------------------------------- HL7 v2
def hl7_escape(value: str) -> str:
    """``value`` with HL7 v2's delimiters escaped (PS: the escape character first) and control characters (CR,
    LF, tab, ...) made spaces, so nothing from a DICOM header can end a field, a segment or the message."""
    out = (
        value.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
    )
    return "".join(" " if ord(c) < 0x20 or ord(c) == 0x7F else c for c in out)


def _components(*parts: str) -> str:
    """Escaped components joined with ``^``, trailing empty ones dropped."""
    joined = "^".join(hl7_escape(p) for p in parts)
    return joined.rstrip("^")


def _dtm(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%d%H%M%S+0000")


def _study_dtm(date: str, time_: str) -> str:
    """DICOM StudyDate/StudyTime as HL7 DTM (local time, as DICOM gives it); empty when the date is not DA."""
    if not _DA.fullmatch(date):
        return ""
    clock = time_.split(".")[0]
    return date + (clock if _TM.fullmatch(clock) and len(clock) % 2 == 0 else "")


def _xpn(dicom_pn: str) -> str:
    """DICOM PN (family^given^middle^prefix^suffix) as HL7 XPN (family^given^second^suffix^prefix)."""
    parts = (dicom_pn.split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = parts
    return _components(family, given, middle, suffix, prefix)


def _number(value: float) -> str:
    return f"{value:.3f}"


def oru_r01(
    notice: Notice,
    *,
    priority: str,
    sending_facility: str = "",
    receiving_application: str = "",
    receiving_facility: str = "",
    now: float | None = None,
) -> str:
    """The HL7 v2.5.1 ORU^R01 of ``notice``: segments separated by CR, without the MLLP framing."""
    stamp = _dtm(datetime.now(UTC).timestamp() if now is None else now)
    analysed = _dtm(notice.analysed_at)
    segments: list[list[str]] = [
        [
            "MSH",
            "^~\\&",
            "VIGIL",
            hl7_escape(sending_facility),
            hl7_escape(receiving_application),
            hl7_escape(receiving_facility),
            stamp,
            "",
            "ORU^R01^ORU_R01",
            notice.control_id,
            "P",
            "2.5.1",
            "",
            "",
            "",
            "",
            "",
            "UNICODE UTF-8",
        ]
    ]
    if notice.patient_id:
        sex = notice.sex if notice.sex in ("M", "F", "O") else ("U" if notice.sex else "")
        segments.append(
            [
                "PID",
                "1",
                "",
                _components(notice.patient_id, "", "", notice.issuer_of_patient_id),
                "",
                _xpn(notice.patient_name),
                "",
                notice.birth_date if _DA.fullmatch(notice.birth_date) else "",
                sex,
            ]
        )
    accession = hl7_escape(notice.accession_number)
    segments.append(["ORC", "RE", "", accession])
    procedure = PLAIN_CHEST_XRAY  # the SR's "Procedure reported"
    obr = [
        "OBR",
        "1",
        "",
        accession,
        _components(procedure.value, procedure.meaning, procedure.scheme_designator),
        "",
        "",
        _study_dtm(notice.study_date, notice.study_time),
    ]
    obr += [""] * (22 - len(obr)) + [analysed, "", "RAD", "P"]  # OBR-22 status change, OBR-24 section, OBR-25
    segments.append(obr)
    flagged = notice.summary
    segments.append(
        ["NTE", "1", "L", hl7_escape(f"Vigil second read flagged: {flagged}. {IMAGING_DECISION_SUPPORT_STATEMENT}")]
    )
    segments.append(["TQ1", "1", "", "", "", "", "", "", "", _components(PRIORITIES[priority])])
    equipment = _components(f"{notice.model_name} {notice.model_version}".strip(), "VIGIL")
    set_id = 0
    for finding in notice.findings:
        set_id += 1
        value, scheme, meaning = finding.code
        segments.append(
            [
                "OBX",
                str(set_id),
                "NM",
                _components(value, meaning, scheme),
                "",
                _number(finding.probability),
                "",
                f"<{_number(finding.threshold)}",
                "A",
                "",
                "",
                "P",
                "",
                "",
                analysed,
                "",
                "",
                "",
                equipment,
            ]
        )
    uids = (notice.study_instance_uid, notice.sop_instance_uid, notice.sr_sop_instance_uid)
    for (value, scheme, meaning), uid in zip(UID_CODES, uids, strict=True):
        if uid:
            set_id += 1
            segments.append(
                [
                    "OBX",
                    str(set_id),
                    "ST",
                    _components(value, meaning, scheme),
                    "",
                    hl7_escape(uid),
                    "",
                    "",
                    "",
                    "",
                    "",
                    "P",
                ]
            )
    return "\r".join("|".join(seg) if seg[0] == "MSH" else "|".join(seg).rstrip("|") for seg in segments) + "\r"


def _ack_status(ack: bytes, control_id: str) -> tuple[str, str]:
    """(MSA-1, MSA-3 text) of an ACK that acknowledges ``control_id``."""
    text = ack.decode("utf-8", errors="replace")
    segments = [s for s in re.split(r"[\r\n]+", text) if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 4:
        raise DeliveryError("the HL7 receiver's answer is not an HL7 message")
    separator = segments[0][3]
    msa = next((s.split(separator) for s in segments if s.startswith("MSA" + separator)), None)
    if msa is None or len(msa) < 3:
        raise DeliveryError("the HL7 receiver's answer has no MSA segment")
    if msa[2] != control_id:
        raise DeliveryError("the HL7 receiver acknowledged another message (MSA-2 does not match)")
    return msa[1], msa[3] if len(msa) > 3 else ""


def send_mllp(
    message: str, host: str, port: int, *, control_id: str, timeout_s: float, tls: ssl.SSLContext | None = None
) -> None:
    """Send ``message`` over MLLP to ``host:port`` (over TLS with ``tls``) and wait for its ACK.

    Raises
    ------
    DeliveryError
        Connection refused or timed out, TLS failure, no or malformed ACK, or an ACK other than AA/CA (naming its
        code, never its text: it may echo the message).
    """
    target = f"MLLP {host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
            try:
                sock.sendall(START_BLOCK + message.encode("utf-8") + END_BLOCK)
                answer = b""
                while END_BLOCK not in answer:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
                    if len(answer) > _MAX_ACK_BYTES:
                        raise DeliveryError(f"{target} answered more than {_MAX_ACK_BYTES} bytes")
            finally:
                if sock is not raw:
                    sock.close()
    except DeliveryError:
        raise
    except ssl.SSLError as exc:
        raise DeliveryError(f"{target}: TLS failed ({type(exc).__name__})") from exc
    except OSError as exc:
        raise DeliveryError(f"{target} failed ({type(exc).__name__})") from exc
    start, end = answer.find(START_BLOCK), answer.find(END_BLOCK)
    if start < 0 or end < start:
        raise DeliveryError(f"{target} closed the connection without an acknowledgement")
    code, _ = _ack_status(answer[start + 1 : end], control_id)
    if code not in ("AA", "CA"):
        raise DeliveryError(f"{target} answered {code[:2] or 'an empty code'} (not accepted)")


# ---------------------------------------------------------------------------------------------- FHIR R4
def _fhir_coding(code: tuple[str, str, str]) -> dict[str, str]:
    value, scheme, meaning = code
    return {"system": SNOMED if scheme == "SCT" else FINDING_SYSTEM, "code": value, "display": meaning}


def _fhir_uid(uid: str) -> dict[str, str]:
    return {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}


def fhir_task(notice: Notice, *, priority: str, now: float | None = None) -> dict[str, Any]:
    """The FHIR R4 Task of ``notice``: a proposal to read the flagged study with the given priority."""
    authored = datetime.fromtimestamp(datetime.now(UTC).timestamp() if now is None else now, UTC)
    flagged = notice.summary
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [_fhir_uid(notice.sr_sop_instance_uid)],
        "status": "requested",
        "intent": "proposal",
        "priority": priority,
        "code": {"text": "Read the chest radiograph flagged by Vigil's second read"},
        "description": f"Vigil second read flagged: {flagged}",
        "focus": {
            "type": "ImagingStudy",
            "identifier": _fhir_uid(notice.study_instance_uid),
            "display": "Chest radiograph"
            + (f", accession {notice.accession_number}" if notice.accession_number else ""),
        },
        "authoredOn": authored.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "requester": {"type": "Device", "display": f"Vigil {notice.model_name} {notice.model_version}".strip()},
        "reasonCode": {"coding": [_fhir_coding(f.code) for f in notice.findings], "text": flagged},
        "note": [{"text": IMAGING_DECISION_SUPPORT_STATEMENT}],
        "input": [
            {
                "type": {"coding": [_fhir_coding(f.code)], "text": f"{f.code[2]}: probability"},
                "valueDecimal": round(f.probability, 3),
            }
            for f in notice.findings
        ],
    }
    if notice.patient_id:
        identifier: dict[str, Any] = {"value": notice.patient_id}
        if notice.issuer_of_patient_id:
            identifier["assigner"] = {"display": notice.issuer_of_patient_id}
        task["for"] = {"type": "Patient", "identifier": identifier}
    return task


def post_fhir_task(
    task: dict[str, Any],
    base_url: str,
    *,
    timeout_s: float,
    authorization: str | None = None,
    verify: str | bool = True,
) -> None:
    """POST ``task`` to ``<base_url>/Task`` as a conditional create on its identifier (200 or 201 is success).

    Raises
    ------
    DeliveryError
        Naming the HTTP status or the failure, never the response body.
    """
    import httpx

    identifier = task["identifier"][0]
    search = f"identifier={quote(identifier['system'], safe=':')}|{quote(identifier['value'], safe=':.')}"
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json", "If-None-Exist": search}
    if authorization:
        headers["Authorization"] = authorization
    try:
        response = httpx.post(f"{base_url}/Task", json=task, headers=headers, timeout=timeout_s, verify=verify)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"FHIR Task to {base_url} failed ({type(exc).__name__})") from exc
    if response.status_code not in (200, 201):
        raise DeliveryError(f"FHIR Task to {base_url} answered HTTP {response.status_code}")


def channels_to_send(configured: Sequence[str], done: Sequence[str]) -> list[str]:
    """The configured channels that have not yet acknowledged this item's notification, in :data:`CHANNELS` order."""
    return [c for c in CHANNELS if c in configured and c not in done]
