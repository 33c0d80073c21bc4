"""Worklist notifications of a flagged second read: an HL7 v2.5.1 ORU^R01 over MLLP and/or a FHIR R4 Task.

The point of a second read is to bring urgent films forward. When the node flags an instance it tells the RIS (or
any worklist that takes HL7 v2 or FHIR), beside sending the SR to the PACS and independently of it: each flagged
item has its own notification state, attempts and back-off in the queue (:mod:`.records`), so a RIS that is down
never holds back the SR and a PACS that is down never holds back the notification.

What is sent is built from the SR the node wrote (patient and study identifiers as the source carried them) and the
queued result (the flagged findings with their probabilities and operating thresholds, the model and its version):

- **HL7 v2.5.1 ORU^R01** (:func:`serving.dicom_node.notify_hl7.oru_r01`, sent by
  :func:`serving.dicom_node.notify_mllp.send_mllp`): MSH, PID (when the source has a PatientID), ORC/OBR of the
  chest radiograph (OBR-3 and ORC-3 the AccessionNumber, OBR-25 ``P``: preliminary, a second read is not a report),
  NTE with the imaging decision-support statement, TQ1 with the configured priority, then one OBX per flagged
  finding (NM probability, OBX-7 the operating threshold as ``<t``, OBX-8 ``A``, OBX-11 ``P``, OBX-18 the model)
  and OBX of the Study, SR and source image UIDs so the RIS can open them. The message control id is the same on
  every retry (the receiver can drop a duplicate whose ACK was lost). Original-mode acknowledgement: ``AA`` (or
  ``CA``) is success; ``AE``/``AR``, no answer, a refused connection or a TLS failure is a
  :class:`~serving.dicom_node.delivery.DeliveryError`, retried with back-off.
- **FHIR R4 Task** (:func:`serving.dicom_node.notify_fhir.fhir_task`, sent by
  :func:`serving.dicom_node.notify_fhir.post_fhir_task`): ``status`` requested, ``intent`` proposal (decision
  support suggests; a clinician decides), ``priority`` as configured, ``focus`` the ImagingStudy by its Study
  Instance UID, ``for`` the Patient by identifier, ``reasonCode`` the flagged findings, ``input`` their
  probabilities, ``note`` the decision-support statement. POSTed as a conditional create (``If-None-Exist`` on the
  Task's identifier, the SR's SOP Instance UID), so a retry never makes a second Task.

This module holds what both are built from (:class:`Notice`, gathered by :func:`notice_of`) and the channels
(:data:`CHANNELS`, :func:`channels_to_send`); :mod:`.notify_hl7` builds the ORU^R01, :mod:`.notify_mllp` sends it,
:mod:`.notify_fhir` builds and POSTs the Task.

Neither message carries more patient data than the SR itself; errors name the status or the failure, never the
receiver's answer (it may echo patient data).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pydicom

from models.labels import IMAGING_FINDING_CODES
from serving.dicom_node.delivery import DeliveryError
from serving.dicom_node.records import QueueItem

__all__ = ["CHANNELS", "FlaggedFinding", "Notice", "channels_to_send", "format_number", "notice_of"]

#: The notification channels, in the order they are sent.
CHANNELS: Final = ("hl7", "fhir")


def format_number(value: float) -> str:
    """A probability or an operating threshold as the notifications write it: three decimals."""
    return f"{value:.3f}"


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
            f"{f.code[2]} {format_number(f.probability)} (threshold {format_number(f.threshold)})"
            for f in self.findings
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


def channels_to_send(configured: Sequence[str], done: Sequence[str]) -> list[str]:
    """The configured channels that have not yet acknowledged this item's notification, in :data:`CHANNELS` order."""
    return [c for c in CHANNELS if c in configured and c not in done]
