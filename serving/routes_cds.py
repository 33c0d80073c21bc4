"""CDS Hooks 2.0: discovery and the triage service, taking FHIR R4 vital-sign Observations in prefetch."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from models.errors import InputValidationError
from models.triage_record import validate_record
from serving import fhir_codes, fhir_record, fhir_response
from serving.errors import ApiError
from serving.routes_triage import read_json, score_records
from serving.schemas import NO_MODEL_OR_AUDIT, problem_responses
from serving.state import StateDep, require
from serving.store_records import ApiKeyInfo

router = APIRouter(tags=["cds-hooks"])

TriageKey = Annotated[ApiKeyInfo, Depends(require("triage"))]

_ERRORS = problem_responses(
    "triage", _404="No such CDS service",
    _412="A prefetch the service needs (the Patient) is missing (CDS Hooks 2.0)",
    _422="The CDS Hooks request or its FHIR prefetch is invalid: names the path", _503=NO_MODEL_OR_AUDIT)
_REQUEST_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["hook", "hookInstance", "context", "prefetch"],
    "properties": {"hook": {"type": "string"}, "hookInstance": {"type": "string"},
                   "context": {"type": "object"}, "prefetch": {"type": "object"},
                   "fhirServer": {"type": "string"}, "fhirAuthorization": {"type": ["object", "null"]}}}}}}}


@router.get("/cds-services", summary="CDS Hooks discovery",
            description="Lists Vigil's CDS services (public, as the CDS Hooks specification expects).")
async def discovery() -> dict[str, Any]:
    return fhir_response.cds_discovery()


@router.post("/cds-services/{service_id}", responses=_ERRORS, openapi_extra=_REQUEST_BODY,
             summary="CDS Hooks service call: FHIR R4 vital signs in prefetch -> cards",
             description="Builds a triage record from the prefetched Patient, vital-sign Observations (LOINC) and "
                         "Encounter, scores it like POST /v1/triage, and answers with CDS Hooks cards carrying "
                         "the result and a FHIR R4 RiskAssessment suggestion.")
async def call_service(service_id: str, request: Request, state: StateDep, key: TriageKey) -> dict[str, Any]:
    if service_id != fhir_codes.SERVICE_ID:
        raise ApiError(404, f"no CDS service '{service_id[:64]}'; see GET /cds-services")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InputValidationError("body", "a CDS Hooks request must be a JSON object")
    now = datetime.now(UTC)
    raw, notes = fhir_record.record_from_cds_request(body, now=now)
    record = validate_record(raw)
    result = (await state.run_model(score_records, state, request, key, f"/cds-services/{fhir_codes.SERVICE_ID}",
                                      [raw], [record]))[0]
    patient, encounter = fhir_record.context_references(body)
    response = fhir_response.cds_response(result, now=now, patient_reference=patient, encounter_reference=encounter)
    if notes:
        response.setdefault("cards", []).append({
            "uuid": str(uuid.uuid4()), "summary": "Some FHIR data could not be used", "indicator": "info",
            "detail": "\n".join(f"- {n}" for n in notes[:20]), "source": {"label": "Vigil"}})
    return response
