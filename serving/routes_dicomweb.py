"""DICOMweb STOW-RS (PS3.18 10.5) into the DICOM node's durable queue, and the worklist of flagged studies.

``POST /dicomweb/studies[/{study}]`` takes ``multipart/related; type="application/dicom"``: each part is one
instance, written durably and queued exactly as a C-STORE would be (:class:`serving.dicom_node.intake.Intake`);
the node's workers (``vigil dicom-node``, or ``VIGIL_DICOM_NODE=true`` inside ``vigil serve``) analyse it and send
the SR on. The answer is the Store Instances Response Module as ``application/dicom+json``: per instance, a
ReferencedSOPSequence item on success or a FailedSOPSequence item with its FailureReason. 200 when every instance
was stored, 202 when some failed, 409 when none was. Into one study (``/dicomweb/studies/{study}``), an instance of
another study fails with 0xA900 and is neither stored, queued, analysed nor audited. Every answer carries
``Cache-Control: no-store``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from models.errors import InputValidationError
from models.labels import IMAGING_FINDINGS
from serving.dicom_node.records import STATES
from serving.errors import ApiError
from serving.schemas import problem_responses
from serving.state import StateDep, require
from serving.store_records import ApiKeyInfo

router = APIRouter(tags=["imaging"])

ImagingKey = Annotated[ApiKeyInfo, Depends(require("imaging"))]
DICOM_JSON = "application/dicom+json"
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_TYPE = re.compile(r'type="?([^";]+)"?', re.IGNORECASE)
#: PS3.18 FailureReason when a part is not a DICOM instance at all: 0xC000 "cannot understand".
_CANNOT_UNDERSTAND = 0xC000
_MAX_PARTS = 1000
#: PHI-bearing answers must not be kept by a browser or a proxy.
NO_STORE = {"Cache-Control": "no-store"}

_STOW_BODY = {"requestBody": {"required": True, "content": {
    'multipart/related; type="application/dicom"': {"schema": {"type": "string", "format": "binary"}}}}}
_STOW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {DICOM_JSON: {"schema": {"type": "object"}}},
          "description": "Every instance stored and queued (Store Instances Response Module, DICOM JSON)"},
    202: {"content": {DICOM_JSON: {"schema": {"type": "object"}}},
          "description": "Some instances stored, some failed (FailedSOPSequence says which and why)"},
    409: {"content": {DICOM_JSON: {"schema": {"type": "object"}}}, "description": "No instance could be stored"},
    **problem_responses("imaging", _413="Body over the size limit",
                        _415='Not multipart/related; type="application/dicom"',
                        _422="The multipart body or the study UID is malformed: names which"),
}


def split_multipart_related(content_type: str, body: bytes) -> list[bytes]:
    """The bodies of the parts of a ``multipart/related; type="application/dicom"`` request (RFC 2387).

    Raises ApiError 415 for another media type, InputValidationError naming ``body`` for a malformed body.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    declared = _TYPE.search(content_type)
    if kind != "multipart/related" or declared is None or declared.group(1).lower() != "application/dicom":
        raise ApiError(415, 'STOW-RS takes multipart/related; type="application/dicom" (each part one DICOM '
                            "instance)")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise InputValidationError("Content-Type", "multipart/related needs a boundary parameter")
    delimiter = b"--" + found.group(1).encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise InputValidationError("body", "the multipart body has no parts or no closing boundary")
    parts = []
    for chunk in chunks[1:-1]:
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise InputValidationError("body", "a multipart part has no blank line after its headers")
        part_type = re.search(rb"content-type:\s*([^\r\n;]+)", head, re.IGNORECASE)
        if part_type is not None and part_type.group(1).strip().lower() != b"application/dicom":
            raise ApiError(415, "each part must be application/dicom")
        parts.append(content.removesuffix(b"\r\n"))
    if len(parts) > _MAX_PARTS:
        raise InputValidationError("body", f"at most {_MAX_PARTS} instances per request; got {len(parts)}")
    return parts


def _tag(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def _stow(state: Any, key: ApiKeyInfo, parts: list[bytes], study: str | None) -> tuple[int, dict[str, Any]]:
    intake = state.dicom_intake()
    referenced, failed = [], []
    for data in parts:
        if len(data) < 132 or data[128:132] != b"DICM":  # STOW-RS carries DICOM Part 10 files (PS3.18 8.6.1.1)
            failed.append({"00081150": _tag("UI"), "00081155": _tag("UI"),
                           "00081197": _tag("US", _CANNOT_UNDERSTAND)})
            continue
        # An instance of another study than the URL's is refused by the intake before it is written or queued
        # (0xA900), so it is never analysed, audited or reported to PACS.
        result = intake.receive(data, sop_class_uid=None, sop_instance_uid=None, calling_aet=key.key_id,
                                source="dicomweb:stow-rs", study_instance_uid=study)
        item = {"00081150": _tag("UI", *([result.sop_class_uid] if result.sop_class_uid else [])),
                "00081155": _tag("UI", *([result.sop_instance_uid] if result.sop_instance_uid else []))}
        if result.ok:
            referenced.append(item)
        else:
            failed.append({**item, "00081197": _tag("US", int(result.status) or _CANNOT_UNDERSTAND)})
    body: dict[str, Any] = {}
    if referenced:
        body["00081199"] = _tag("SQ", *referenced)
    if failed:
        body["00081198"] = _tag("SQ", *failed)
    status = 200 if not failed else (202 if referenced else 409)
    return status, body


async def _stow_route(request: Request, state: Any, key: ApiKeyInfo, study: str | None) -> JSONResponse:
    parts = split_multipart_related(request.headers.get("content-type", ""), await request.body())
    status, body = await state.run_model(_stow, state, key, parts, study)
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON, headers=NO_STORE)


@router.post("/dicomweb/studies", responses=_STOW_RESPONSES, openapi_extra=_STOW_BODY,
             summary="DICOMweb STOW-RS: store instances and queue them for a second read")
async def stow(request: Request, state: StateDep, key: ImagingKey) -> JSONResponse:
    return await _stow_route(request, state, key, None)


@router.post("/dicomweb/studies/{study}", responses=_STOW_RESPONSES, openapi_extra=_STOW_BODY,
             summary="DICOMweb STOW-RS into one study (instances of another study fail with 0xA900)")
async def stow_study(study: str, request: Request, state: StateDep, key: ImagingKey) -> JSONResponse:
    if not re.fullmatch(r"[0-9][0-9.]{0,63}", study):
        raise InputValidationError("study", "the study must be a DICOM UID (digits and dots, at most 64)")
    return await _stow_route(request, state, key, study)


@router.get("/v1/imaging/flags", responses=problem_responses("imaging", _422="A filter is invalid: names it"),
            summary="Worklist: instances whose second read flagged a finding, newest change first",
            description="Each item carries the instance's and its study's UIDs, the flagged findings, the result, "
                        "the state of the SR's delivery and the SR's UIDs (to fetch it from PACS).")
async def flags(state: StateDep, _key: ImagingKey, response: Response,
                since: Annotated[datetime | None, Query(description="Changed at or after (ISO 8601 with zone)")]
                = None,
                finding: Annotated[str | None, Query(description=f"One of {', '.join(IMAGING_FINDINGS)}")] = None,
                status: Annotated[str | None, Query(description=f"Queue state: {', '.join(STATES)}")] = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    if finding is not None and finding not in IMAGING_FINDINGS:
        raise InputValidationError("finding", f"finding must be one of {list(IMAGING_FINDINGS)}; got {finding[:40]!r}")
    if status is not None and status not in STATES:
        raise InputValidationError("status", f"status must be one of {list(STATES)}; got {status[:40]!r}")
    items = await state.run_model(lambda: state.dicom_intake().queue.list_items(
        since=since, finding=finding, status=status, flagged_only=True, limit=limit))
    response.headers.update(NO_STORE)
    return {"items": [item.public() for item in items], "n": len(items)}
