"""Chest X-ray second read: a DICOM instance in; probabilities, flags, heat map and the TID 1500 SR out."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import InputValidationError
from models.imaging.sr import sr_to_bytes
from serving.api.errors import ApiError
from serving.api.http_limits import upload_slot
from serving.api.schemas import NO_MODEL_OR_AUDIT, SecondReadResult, problem_responses
from serving.api.state import ServiceState, StateDep, audit_record, input_digest, require, write_audit
from serving.imaging_result import audit_output, second_read_result, structured_report
from serving.store.records import ApiKeyInfo

router = APIRouter(tags=["imaging"])

ImagingKey = Annotated[ApiKeyInfo, Depends(require("imaging"))]
DICOM = "application/dicom"
PNG = "image/png"
#: The SR, the heat map and the JSON all carry patient data: no browser or proxy may keep them.
NO_STORE = {"Cache-Control": "no-store"}

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            DICOM: {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            DICOM: {"schema": {"type": "string", "format": "binary"}},
            PNG: {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "JSON by default; the TID 1500 SR with `Accept: application/dicom`; the heat map PNG with "
        "`Accept: image/png`",
    },
    **problem_responses(
        "imaging",
        _413="Body over the size limit",
        _415="Neither application/dicom nor multipart/form-data",
        _422="Not a decodable frontal chest radiograph: the error names the attribute",
        _503=f"{NO_MODEL_OR_AUDIT}; or VIGIL_MAX_CONCURRENT_SECOND_READS second reads already in progress (retry "
        "after Retry-After seconds)",
    ),
}


#: Seconds a client is told to wait when every second-read slot is taken.
_RETRY_AFTER_S = 2


async def read_dicom_body(request: Request) -> bytes:
    """The DICOM bytes of an ``application/dicom`` body or of the ``file`` part of a multipart form."""
    kind = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if kind == DICOM:
        data = await request.body()
    elif kind == "multipart/form-data":
        try:
            async with request.form(max_files=1, max_fields=4) as form:  # closes the spooled files
                part = form.get("file")
                if part is None or isinstance(part, str):
                    raise InputValidationError(
                        "file", "the multipart form must carry the DICOM instance as a file part named 'file'"
                    )
                data = await part.read()
        except StarletteHTTPException as exc:
            # Starlette answers a form it cannot parse (no boundary, too many parts) with a bare 400; it is invalid
            # input like any other: 422 naming the body.
            raise InputValidationError("body", f"the multipart form cannot be read: {exc.detail}") from exc
    else:
        raise ApiError(
            415, "send one DICOM instance as application/dicom, or as the 'file' part of multipart/form-data"
        )
    if not data:
        raise InputValidationError("body", "the DICOM instance is empty")
    return data


def _second_read(
    state: ServiceState, request: Request, key: ApiKeyInfo, data: bytes, accept: str
) -> tuple[dict[str, Any], bytes | None, str]:
    model = state.holder.get("imaging")
    read = model.runtime.second_read_dicom(data)
    png = read.heatmap_png()
    result = second_read_result(read, model, request.state.request_id)
    payload: bytes | None = None
    media = "application/json"
    if DICOM in accept:
        payload = sr_to_bytes(structured_report(read, model))
        media = DICOM
    elif PNG in accept:
        payload, media = png, PNG
    audited = audit_output(result, response_media_type=media)
    (row,) = write_audit(
        state, [audit_record(request, key, "/v1/imaging/second-read", model, input_digest(data), audited)]
    )
    result["audit_id"] = row.seq  # after the audit: a row cannot hold its own seq
    state.metrics.predictions.labels("imaging", model.resolved.version).inc()
    if read.flagged:
        state.metrics.flags.labels("second_read_flagged").inc()
    result["heatmap_png_base64"] = base64.b64encode(png).decode("ascii")
    return result, payload, media


@router.post(
    "/v1/imaging/second-read",
    response_model=SecondReadResult,
    responses=_RESPONSES,
    openapi_extra=_BODY,
    summary="Second read of one chest radiograph (DICOM)",
    description="Per-finding probabilities, flags where a finding reaches its operating threshold (chosen "
    "for 90% sensitivity on validation), a class-activation heat map and, with "
    "`Accept: application/dicom`, a TID 1500 Structured Report to store next to the image. "
    "Decision support: a radiologist reads every image.",
)
async def second_read(request: Request, state: StateDep, key: ImagingKey, response: Response) -> Any:
    # Each body is held in memory until the model reads it: at most VIGIL_MAX_CONCURRENT_SECOND_READS at once.
    with upload_slot(
        request,
        "second reads",
        state.settings.max_concurrent_second_reads,
        setting="VIGIL_MAX_CONCURRENT_SECOND_READS",
        retry_after_s=_RETRY_AFTER_S,
    ):
        data = await read_dicom_body(request)
        accept = request.headers.get("accept", "")
        result, payload, media = await state.run_model(_second_read, state, request, key, data, accept)
    if payload is not None:
        return Response(
            payload,
            media_type=media,
            headers={
                "X-Vigil-Flagged": str(result["flagged"]).lower(),
                "X-Vigil-Audit-ID": str(result["audit_id"]),  # as in the JSON form: to feed the read back by
                **NO_STORE,
            },
        )
    response.headers.update(NO_STORE)
    return result
