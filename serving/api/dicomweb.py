"""DICOMweb STOW-RS (PS3.18 10.5) into the DICOM node's durable queue, and the worklist of flagged studies.

``POST /dicomweb/studies[/{study}]`` takes ``multipart/related; type="application/dicom"``: each part is one
instance, written durably and queued exactly as a C-STORE would be (:class:`serving.dicom_node.intake.Intake`);
the node's workers (``vigil dicom-node``, or ``VIGIL_DICOM_NODE=true`` inside ``vigil serve``) analyse it and send
the SR on. The answer is the Store Instances Response Module as ``application/dicom+json``: per instance, a
ReferencedSOPSequence item on success or a FailedSOPSequence item with its FailureReason. 200 when every instance
was stored, 202 when some failed, 409 when none was. Into one study (``/dicomweb/studies/{study}``), an instance of
another study fails with 0xA900 and is neither stored, queued, analysed nor audited. Every answer carries
``Cache-Control: no-store``.

The body is parsed as it arrives (:mod:`serving.api.multipart_stream`), never held whole: parts are spooled (1 MiB in
memory per request, then a private file under ``<work_dir>/stow-spool``); the 1,001st part, a part over
``VIGIL_MAX_INSTANCE_BYTES`` (413 naming it) or a malformed delimiter stop the reading at once, and such an answer
closes the connection. At most ``VIGIL_MAX_CONCURRENT_STOW`` uploads run at once per process; another is 503 with
``Retry-After`` before its body is read.

The worklist (``GET /v1/imaging/flags``) shows a key the instances of its own client only: those sent by STOW-RS
with any key issued to the same client, and those C-STOREd by the AE titles ``VIGIL_WORKLIST_AETS`` gives that
client. A key with the ``admin`` scope sees every instance.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from models.errors import InputValidationError
from models.labels import IMAGING_FINDINGS
from serving.api.errors import ApiError
from serving.api.http_limits import upload_slot
from serving.api.multipart_stream import FEED_BYTES, MultipartReader, Part, stow_boundary
from serving.api.schemas import problem_responses
from serving.api.state import StateDep, require
from serving.dicom_node.records import STATES
from serving.store.records import ApiKeyInfo

log = logging.getLogger(__name__)

router = APIRouter(tags=["imaging"])

ImagingKey = Annotated[ApiKeyInfo, Depends(require("imaging"))]
DICOM_JSON = "application/dicom+json"
#: The queue's ``source`` of instances received by STOW-RS (their ``calling_aet`` is the sending key's id) and of
#: those received by C-STORE (their ``calling_aet`` is the sender's AE title).
STOW_SOURCE: Final = "dicomweb:stow-rs"
C_STORE_SOURCE: Final = "dicom:c-store"
#: PS3.18 FailureReason when a part is not a DICOM instance at all: 0xC000 "cannot understand".
_CANNOT_UNDERSTAND = 0xC000
_MAX_PARTS = 1000
#: A request's spool stays in memory up to this size, then moves to a file.
_SPOOL_MEMORY_BYTES = 1024 * 1024
_RETRY_AFTER_S = 5
#: PHI-bearing answers must not be kept by a browser or a proxy.
NO_STORE = {"Cache-Control": "no-store"}

_STOW_BODY = {
    "requestBody": {
        "required": True,
        "content": {'multipart/related; type="application/dicom"': {"schema": {"type": "string", "format": "binary"}}},
    }
}
_STOW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {DICOM_JSON: {"schema": {"type": "object"}}},
        "description": "Every instance stored and queued (Store Instances Response Module, DICOM JSON)",
    },
    202: {
        "content": {DICOM_JSON: {"schema": {"type": "object"}}},
        "description": "Some instances stored, some failed (FailedSOPSequence says which and why)",
    },
    409: {"content": {DICOM_JSON: {"schema": {"type": "object"}}}, "description": "No instance could be stored"},
    **problem_responses(
        "imaging",
        _413="Body, or one instance, over its size limit (names the instance)",
        _415='Not multipart/related; type="application/dicom"',
        _422="The multipart body or the study UID is malformed, or over 1,000 instances: names which",
        _503="Too many STOW-RS uploads at once: retry after Retry-After seconds",
    ),
}


def _spool_dir(state: Any) -> Path:
    """``<work_dir>/stow-spool`` (0700): large parts are spooled here, not to a /tmp that may be memory."""
    folder = Path(state.settings.work_dir) / "stow-spool"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def _tag(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def _take_in(intake: Any, reader: MultipartReader, part: Part, key: ApiKeyInfo, study: str | None) -> Any:
    """Hand one part to the intake: as a file in its storage folder where the intake takes files (never the whole
    instance in memory), else as bytes. None when the part is not a DICOM Part 10 file (PS3.18 8.6.1.1)."""
    head = reader.read(part, 132)
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    # An instance of another study than the URL's is refused by the intake before it is written or queued
    # (0xA900), so it is never analysed, audited or reported to PACS.
    given = {
        "sop_class_uid": None,
        "sop_instance_uid": None,
        "calling_aet": key.key_id,
        "source": STOW_SOURCE,
        "study_instance_uid": study,
    }
    receive_file = getattr(intake, "receive_file", None)
    if receive_file is None:
        return intake.receive(reader.read(part), **given)
    folder = Path(intake.storage_dir) / ".stow-spool"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return receive_file(reader.copy_to(part, folder), **given)  # the intake takes (moves or deletes) the file


def _stow(state: Any, key: ApiKeyInfo, reader: MultipartReader, study: str | None) -> tuple[int, dict[str, Any]]:
    """Take in each part in turn, in a worker thread."""
    intake = state.dicom_intake()
    referenced, failed = [], []
    for part in reader.finish():
        result = _take_in(intake, reader, part, key, study)
        if result is None:
            failed.append({"00081150": _tag("UI"), "00081155": _tag("UI"), "00081197": _tag("US", _CANNOT_UNDERSTAND)})
            continue
        item = {
            "00081150": _tag("UI", *([result.sop_class_uid] if result.sop_class_uid else [])),
            "00081155": _tag("UI", *([result.sop_instance_uid] if result.sop_instance_uid else [])),
        }
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


def _closing(exc: InputValidationError | ApiError) -> ApiError:
    """The same error, answered with ``Connection: close``: the rest of the body is not read."""
    if isinstance(exc, ApiError):
        return ApiError(
            exc.status, exc.detail, errors=exc.errors, headers={**exc.headers, "Connection": "close"}, type_=exc.type
        )
    return ApiError(
        422, exc.message, errors=[{"field": exc.field, "message": exc.message}], headers={"Connection": "close"}
    )


async def _read_parts(request: Request, reader: MultipartReader) -> None:
    """Feed the body to ``reader`` as it arrives, in slices of at most FEED_BYTES, letting other requests run
    between slices; a limit crossed stops the reading there."""
    try:
        async for chunk in request.stream():
            for start in range(0, len(chunk), FEED_BYTES):
                reader.feed(chunk[start : start + FEED_BYTES])
                if len(chunk) > FEED_BYTES:
                    await asyncio.sleep(0)
    except (InputValidationError, ApiError) as exc:
        raise _closing(exc) from exc


async def _stow_route(request: Request, state: Any, key: ApiKeyInfo, study: str | None) -> JSONResponse:
    try:
        boundary = stow_boundary(request.headers.get("content-type", ""))  # 415 or 422 before any body is read
    except (InputValidationError, ApiError) as exc:
        raise _closing(exc) from exc
    with (
        upload_slot(
            request,
            "STOW-RS uploads",
            state.settings.max_concurrent_stow,
            setting="VIGIL_MAX_CONCURRENT_STOW",
            retry_after_s=_RETRY_AFTER_S,
        ),
        MultipartReader(
            boundary,
            max_parts=_MAX_PARTS,
            max_part_bytes=state.settings.max_instance_bytes,
            memory_bytes=_SPOOL_MEMORY_BYTES,
            spool_dir=_spool_dir(state),
        ) as reader,
    ):
        await _read_parts(request, reader)
        status, body = await state.run_model(_stow, state, key, reader, study)
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON, headers=NO_STORE)


@router.post(
    "/dicomweb/studies",
    responses=_STOW_RESPONSES,
    openapi_extra=_STOW_BODY,
    summary="DICOMweb STOW-RS: store instances and queue them for a second read",
)
async def stow(request: Request, state: StateDep, key: ImagingKey) -> JSONResponse:
    return await _stow_route(request, state, key, None)


@router.post(
    "/dicomweb/studies/{study}",
    responses=_STOW_RESPONSES,
    openapi_extra=_STOW_BODY,
    summary="DICOMweb STOW-RS into one study (instances of another study fail with 0xA900)",
)
async def stow_study(study: str, request: Request, state: StateDep, key: ImagingKey) -> JSONResponse:
    if not re.fullmatch(r"[0-9][0-9.]{0,63}", study):
        raise InputValidationError("study", "the study must be a DICOM UID (digits and dots, at most 64)")
    return await _stow_route(request, state, key, study)


def worklist_callers(state: Any, key: ApiKeyInfo) -> list[tuple[str, str]] | None:
    """The (source, calling_aet) pairs whose instances ``key`` may see on the worklist; None for every instance.

    A key with the ``admin`` scope sees every instance. Any other key sees its own client's: those sent by STOW-RS
    with a key issued to that client (revoked keys included: the instances stay the client's) and those C-STOREd
    by the AE titles ``VIGIL_WORKLIST_AETS`` gives the client. Runs in a worker thread (it reads the key store).
    """
    if "admin" in key.scopes:
        return None
    key_ids = sorted({k.key_id for k in state.store.list_keys() if k.client == key.client} | {key.key_id})
    aets = state.settings.worklist_aets.get(key.client, [])
    return [*((STOW_SOURCE, k) for k in key_ids), *((C_STORE_SOURCE, a) for a in aets)]


@router.get(
    "/v1/imaging/flags",
    responses=problem_responses("imaging", _422="A filter is invalid: names it"),
    summary="Worklist: instances whose second read flagged a finding, newest change first",
    description="Each item carries the instance's and its study's UIDs, the flagged findings, the result, "
    "the state of the SR's delivery and the SR's UIDs (to fetch it from PACS), and the state of "
    "its worklist notification (HL7 v2 / FHIR Task, where the node sends them). A key sees its "
    "own client's instances (sent by STOW-RS with the client's keys, or C-STOREd by the AE "
    "titles VIGIL_WORKLIST_AETS gives the client); a key with the admin scope sees all.",
)
async def flags(
    state: StateDep,
    key: ImagingKey,
    response: Response,
    since: Annotated[datetime | None, Query(description="Changed at or after (ISO 8601 with zone)")] = None,
    finding: Annotated[str | None, Query(description=f"One of {', '.join(IMAGING_FINDINGS)}")] = None,
    status: Annotated[str | None, Query(description=f"Queue state: {', '.join(STATES)}")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    if finding is not None and finding not in IMAGING_FINDINGS:
        raise InputValidationError("finding", f"finding must be one of {list(IMAGING_FINDINGS)}; got {finding[:40]!r}")
    if status is not None and status not in STATES:
        raise InputValidationError("status", f"status must be one of {list(STATES)}; got {status[:40]!r}")
    callers = await run_in_threadpool(worklist_callers, state, key)
    items = await state.run_model(
        lambda: state.dicom_intake().queue.list_items(
            since=since, finding=finding, status=status, flagged_only=True, limit=limit, callers=callers
        )
    )
    response.headers.update(NO_STORE)
    return {"items": [item.public() for item in items], "n": len(items)}
