"""The HL7 v2.5.1 ORU^R01 of a worklist notification (:func:`oru_r01`), without its MLLP framing.

Every value taken from a DICOM header goes through :func:`hl7_escape`, so nothing in it can end a field, a segment
or the message. See :mod:`serving.dicom_node.notify` for what the message says and
:mod:`serving.dicom_node.notify_mllp` for how it is sent.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

from models.imaging.sr import PLAIN_CHEST_XRAY
from models.model_card import IMAGING_DECISION_SUPPORT_STATEMENT
from serving.dicom_node.notify import Notice, format_number

__all__ = ["PRIORITIES", "UID_CODES", "hl7_escape", "oru_r01"]

#: HL7 v2 table 0485 (TQ1-9 priority) by Vigil's setting (whose values are FHIR's request-priority codes).
PRIORITIES: Final[dict[str, str]] = {"stat": "S", "asap": "A", "routine": "R"}
#: The concepts naming the UIDs in the last OBX segments: the study, the source image, the SR.
UID_CODES: Final = (
    ("110180", "DCM", "Study Instance UID"),
    ("SRCIMG", "99VIGIL", "Source image SOP Instance UID"),
    ("SRUID", "99VIGIL", "Second read SR SOP Instance UID"),
)
_DA = re.compile(r"\d{8}")
_TM = re.compile(r"\d{2,6}")


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
                format_number(finding.probability),
                "",
                f"<{format_number(finding.threshold)}",
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
