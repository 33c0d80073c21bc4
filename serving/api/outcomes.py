"""Outcome routes: a site feeds back what happened after a prediction (one outcome, or a nightly batch).

``POST /v1/outcomes`` stores one outcome (201), ``POST /v1/outcomes/batch`` many, each on its own (an unknown
prediction or a duplicate in a batch does not keep the others out). The outcome vocabulary and its validation are
:mod:`models.outcomes`; the checks against the audit trail (the prediction exists, was answered, is of the
outcome's task, came before the outcome, has no outcome yet) and the append-only table are
:mod:`serving.store.outcomes`. Needs a key with the ``outcomes`` scope. Nothing here changes a prediction or its
audit row.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from models.errors import InputValidationError
from models.labels import IMAGING_FINDINGS
from models.outcomes import MAX_REQUEST_ID, TRIAGE_OUTCOMES, validate_outcome
from serving.api.errors import item_problem
from serving.api.json_body import batch_items, read_json
from serving.api.schemas import OutcomeBatchResult, StoredOutcomeOut, problem_responses
from serving.api.state import StateDep, require
from serving.store.records import ApiKeyInfo

router = APIRouter(tags=["outcomes"])

OutcomesKey = Annotated[ApiKeyInfo, Depends(require("outcomes"))]

_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["observed_utc"],
    "description": "Exactly one of audit_id, request_id and sop_instance_uid (imaging only); exactly one of triage "
    "and imaging.",
    "properties": {
        "audit_id": {"type": "integer", "minimum": 1, "description": "The prediction's audit_id (in its answer)"},
        "request_id": {
            "type": "string",
            "maxLength": MAX_REQUEST_ID,
            "description": "The prediction's request id; only for a request that made one prediction",
        },
        "sop_instance_uid": {
            "type": "string",
            "maxLength": 64,
            "pattern": "^(0|[1-9][0-9]*)(\\.(0|[1-9][0-9]*))*$",
            "description": "For an imaging outcome: the SOP Instance UID of the image, when Vigil read it once",
        },
        "observed_utc": {"type": "string", "description": "When the outcome was observed, ISO-8601 UTC"},
        "triage": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                name: (
                    {"type": "integer", "minimum": 1, "maximum": 5} if name == "final_acuity" else {"type": "boolean"}
                )
                | {"description": meaning}
                for name, meaning in TRIAGE_OUTCOMES.items()
            },
        },
        "imaging": {
            "type": "object",
            "additionalProperties": False,
            "required": ["findings"],
            "properties": {
                "findings": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {f: {"type": "integer", "enum": [0, 1]} for f in IMAGING_FINDINGS},
                }
            },
        },
    },
    "example": {
        "audit_id": 1042,
        "observed_utc": "2026-12-07T14:05:00Z",
        "triage": {"admitted": True, "final_acuity": 2},
    },
}
_ERRORS = problem_responses(
    "outcomes",
    _413="Body over the size limit",
    _415="Not application/json",
    _503="The store is unavailable",
)


@router.post(
    "/v1/outcomes",
    status_code=201,
    response_model=StoredOutcomeOut,
    responses={
        **_ERRORS,
        409: problem_responses(None, _409="The prediction already has an outcome")[409],
        422: problem_responses(
            None,
            _422="Invalid outcome, unknown prediction, wrong task, or observed before the "
            "prediction: the error names the field",
        )[422],
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _OUTCOME_SCHEMA}}}},
    summary="Feed back the outcome of one prediction",
    description="Links what happened (admission, critical care, death in the ED, the senior clinician's final "
    "acuity; or the reporting radiologist's read per finding) to a prediction by its audit_id (or request_id, or "
    "for a radiologist's read the image's sop_instance_uid). "
    "Stored append-only beside the audit trail; one outcome per prediction (a second is 409).",
)
async def outcome_one(request: Request, state: StateDep, key: OutcomesKey) -> Any:
    outcome = validate_outcome(await read_json(request))
    (stored,) = await run_in_threadpool(state.store.record_outcomes, [outcome], key.key_id)
    if isinstance(stored, InputValidationError):
        raise stored
    state.metrics.outcomes.labels(stored.task).inc()
    return JSONResponse(stored.to_dict(), status_code=201)


@router.post(
    "/v1/outcomes/batch",
    response_model=OutcomeBatchResult,
    responses={**_ERRORS, 422: problem_responses(None, _422='The body is not {"outcomes": [...]}')[422]},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["outcomes"],
                        "properties": {"outcomes": {"type": "array", "minItems": 1, "items": _OUTCOME_SCHEMA}},
                    }
                }
            },
        }
    },
    summary="Feed back many outcomes (a nightly export)",
    description='`{"outcomes": [...]}` up to the service\'s batch limit. Each outcome is checked and stored on its '
    "own: one that fails (invalid, unknown prediction, duplicate) gets a problem in its item and the others are "
    "stored.",
)
async def outcome_batch(request: Request, state: StateDep, key: OutcomesKey) -> Any:
    raws = batch_items(await read_json(request), "outcomes", "outcome", state.settings.max_batch)
    items: list[dict[str, Any]] = [{"index": i, "outcome": None, "error": None} for i in range(len(raws))]
    valid = []
    for i, raw in enumerate(raws):
        try:
            valid.append((i, validate_outcome(raw, where=f"outcomes[{i}].")))
        except InputValidationError as exc:
            items[i]["error"] = item_problem(exc)
    if valid:
        stored = await run_in_threadpool(state.store.record_outcomes, [o for _, o in valid], key.key_id)
        for (i, _), done in zip(valid, stored, strict=True):
            if isinstance(done, InputValidationError):
                done.field = f"outcomes[{i}].{done.field}"
                items[i]["error"] = item_problem(done)
            else:
                items[i]["outcome"] = done.to_dict()
                state.metrics.outcomes.labels(done.task).inc()
    n_stored = sum(item["outcome"] is not None for item in items)
    return {
        "request_id": request.state.request_id,
        "n": len(raws),
        "n_stored": n_stored,
        "n_failed": len(raws) - n_stored,
        "items": items,
    }
