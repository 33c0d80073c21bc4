"""The FHIR R4 Task of a worklist notification (:func:`fhir_task`) and its POST as a conditional create
(:func:`post_fhir_task`), so that a retry never makes a second Task. See :mod:`serving.dicom_node.notify`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from models.model_card import IMAGING_DECISION_SUPPORT_STATEMENT
from serving.dicom_node.delivery import DeliveryError
from serving.dicom_node.notify import Notice
from serving.fhir.codes import SNOMED, VIGIL_FHIR

__all__ = ["fhir_task", "post_fhir_task"]

DICOM_UID_SYSTEM: Final = "urn:dicom:uid"
FINDING_SYSTEM: Final = f"{VIGIL_FHIR}/CodeSystem/imaging-finding"


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
