"""Triage routes: one record, a batch, and the FHIR R4 RiskAssessment form of the same result."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from models.errors import InputValidationError, RecordValidationErrors
from models.triage.record import validate_record
from serving.api.errors import item_problem, validation_errors
from serving.api.json_body import batch_items, read_json
from serving.api.schemas import (
    NO_MODEL_OR_AUDIT,
    TriageBatchResult,
    TriageResult,
    problem_responses,
    triage_record_json_schema,
)
from serving.api.state import StateDep, require
from serving.api.triage_scoring import score_records
from serving.store.records import ApiKeyInfo

router = APIRouter(tags=["triage"])

TriageKey = Annotated[ApiKeyInfo, Depends(require("triage"))]
FHIR_JSON = "application/fhir+json"

_ERRORS = problem_responses(
    "triage",
    _413="Body over the size limit",
    _415="Not application/json",
    _422="Invalid record: each error names the field",
    _503=NO_MODEL_OR_AUDIT,
)


_RECORD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": triage_record_json_schema(),
                "example": {
                    "age_years": 71,
                    "sex": "female",
                    "arrival_mode": "ambulance",
                    "chief_complaint": "shortness of breath",
                    "heart_rate": 118,
                    "resp_rate": 26,
                    "sbp": 96,
                    "dbp": 60,
                    "spo2": 90,
                    "temperature_c": 38.4,
                    "consciousness": "A",
                    "on_supplemental_oxygen": False,
                    "pain_score": 3,
                },
            }
        },
    }
}


_ONE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {FHIR_JSON: {"schema": {"type": "object", "description": "A FHIR R4 RiskAssessment resource"}}},
        "description": "The result as JSON; as a FHIR R4 RiskAssessment with `Accept: application/fhir+json`",
    },
    **_ERRORS,
}


@router.post(
    "/v1/triage",
    response_model=TriageResult,
    responses=_ONE_RESPONSES,
    openapi_extra=_RECORD_BODY,
    summary="Triage score of one patient",
    description="Recommended acuity (1-5, Manchester/ECDS) never below the NEWS2 safety floor, calibrated "
    "P(admission) and P(critical care), NEWS2 with its clinical response, the main contributing "
    "factors, and flags. With `Accept: application/fhir+json` the same result is returned as a "
    "FHIR R4 RiskAssessment. Decision support: a clinician decides.",
)
async def triage_one(request: Request, state: StateDep, key: TriageKey) -> Any:
    raw = await read_json(request)
    if not isinstance(raw, dict):
        raise InputValidationError(
            "body", f"the body must be a JSON object (one triage record); got {type(raw).__name__}"
        )
    record = validate_record(raw)
    result = (await state.run_model(score_records, state, request, key, "/v1/triage", [raw], [record]))[0]
    if FHIR_JSON in request.headers.get("accept", ""):
        from serving.fhir.response import risk_assessment

        resource = risk_assessment(result, patient_reference=None, encounter_reference=None, now=_now())
        return JSONResponse(resource, media_type=FHIR_JSON)
    return result


_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["records"],
                    "properties": {"records": {"type": "array", "minItems": 1, "items": triage_record_json_schema()}},
                }
            }
        },
    }
}


@router.post(
    "/v1/triage/batch",
    response_model=TriageBatchResult,
    responses=_ERRORS,
    openapi_extra=_BATCH_BODY,
    summary="Triage scores of many patients",
    description='`{"records": [...]}` up to the service\'s batch limit. Each record is validated on its '
    "own: a record that fails gets a problem in its item and the others are still scored.",
)
async def triage_batch(request: Request, state: StateDep, key: TriageKey) -> Any:
    raws = batch_items(await read_json(request), "records", "record", state.settings.max_batch, shown="triage records")
    good: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    items: list[dict[str, Any]] = [{"index": i, "result": None, "error": None} for i in range(len(raws))]
    for i, raw in enumerate(raws):
        try:
            if not isinstance(raw, dict):
                raise InputValidationError(
                    f"records[{i}]", f"each record must be a JSON object; got {type(raw).__name__}"
                )
            good.append((i, raw, validate_record(raw)))
        except (InputValidationError, RecordValidationErrors) as exc:
            errors = [
                {**e, "field": e["field"] if e["field"].startswith("records[") else f"records[{i}].{e['field']}"}
                for e in validation_errors(exc)
            ]
            items[i]["error"] = item_problem(exc, errors)
    if good:
        results = await state.run_model(
            score_records, state, request, key, "/v1/triage/batch", [g[1] for g in good], [g[2] for g in good]
        )
        for (i, _, _), result in zip(good, results, strict=True):
            items[i]["result"] = result
    return {"request_id": request.state.request_id, "n": len(raws), "n_failed": len(raws) - len(good), "items": items}


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
