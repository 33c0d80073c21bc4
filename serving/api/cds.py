"""CDS Hooks 2.0: discovery and the triage service, taking FHIR R4 vital-sign Observations in prefetch.

Who may call the service is ``VIGIL_CDS_AUTH``'s choice (:class:`serving.settings.ServingSettings`): an API key
with the triage scope (``api_key``, the default), the signed JWT of CDS Hooks' "Trusting CDS Clients" from an
allow-listed EHR (``jwt``; :mod:`serving.fhir.cds_jwt`), or either (``jwt_or_api_key``). Discovery stays public.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from models.errors import InputValidationError
from models.triage.record import validate_record
from serving.api.errors import ApiError
from serving.api.json_body import read_json
from serving.api.schemas import NO_MODEL_OR_AUDIT, problem_responses
from serving.api.state import BEARER_KEY, HEADER_KEY, StateDep, require
from serving.api.triage_scoring import score_records
from serving.fhir import codes as fhir_codes
from serving.fhir import record as fhir_record
from serving.fhir import response as fhir_response
from serving.fhir.cds_jwt import CdsTokenError, CdsTokenVerifier, build_verifier, looks_like_jwt
from serving.store.records import ApiKeyInfo

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build the CDS JWT verifier at start-up, so that a bad allow-list or JWK Set file stops the service."""
    app.state.cds_verifier = build_verifier(app.state.vigil.settings)
    yield


router = APIRouter(tags=["cds-hooks"], lifespan=_lifespan)

_CDS_JWT = HTTPBearer(
    scheme_name="CdsHooksJWT",
    bearerFormat="JWT",
    auto_error=False,
    description="CDS Hooks 2.0 client authentication (VIGIL_CDS_AUTH=jwt or jwt_or_api_key): a JWT signed ES384 "
    "or RS384 by an allow-listed EHR's key (JWK Set), with iss, aud = the URL of the CDS service "
    "called, exp (at most VIGIL_CDS_JWT_MAX_LIFETIME_S away), iat and a jti used once",
)
_api_key = require("triage")
_CHALLENGE = 'Bearer realm="vigil-cds"'
_ERRORS = problem_responses(
    "triage",
    _404="No such CDS service",
    _412="A prefetch the service needs (the Patient) is missing (CDS Hooks 2.0)",
    _422="The CDS Hooks request or its FHIR prefetch is invalid: names the path",
    _503=NO_MODEL_OR_AUDIT,
)
_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["hook", "hookInstance", "context", "prefetch"],
                    "properties": {
                        "hook": {"type": "string"},
                        "hookInstance": {"type": "string"},
                        "context": {"type": "object"},
                        "prefetch": {"type": "object"},
                        "fhirServer": {"type": "string"},
                        "fhirAuthorization": {"type": ["object", "null"]},
                    },
                }
            }
        },
    }
}
_ERRORS[401] = {
    **_ERRORS[401],
    "description": (
        "No credential, or an invalid one: an unknown or revoked API key, or a CDS Hooks JWT that is malformed, "
        "from an issuer not on the allow-list, names an unknown kid, fails its signature, has another aud, is "
        "expired, not yet valid or too long-lived, or repeats a jti (the detail names which)"
    ),
}
_ERRORS[403] = {**_ERRORS[403], "description": "The API key, or the JWT's issuer, lacks the 'triage' scope"}


def _verifier(request: Request) -> CdsTokenVerifier | None:
    if not hasattr(request.app.state, "cds_verifier"):  # an app used without its lifespan
        request.app.state.cds_verifier = build_verifier(request.app.state.vigil.settings)
    verifier: CdsTokenVerifier | None = request.app.state.cds_verifier
    return verifier


def _refuse(detail: str, error: str = "invalid_token") -> ApiError:
    return ApiError(401, detail, headers={"WWW-Authenticate": f'{_CHALLENGE}, error="{error}"'})


async def cds_caller(
    request: Request,
    state: StateDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_KEY)] = None,
    header: Annotated[str | None, Security(HEADER_KEY)] = None,
    jwt: Annotated[HTTPAuthorizationCredentials | None, Security(_CDS_JWT)] = None,
) -> ApiKeyInfo:
    """The caller of a CDS service, as ``VIGIL_CDS_AUTH`` admits it; a JWT's issuer becomes ``cds:<name>``."""
    mode = state.settings.cds_auth
    if mode == "api_key":
        return await _api_key(request, state)
    if len(request.headers.getlist("authorization")) > 1:
        raise _refuse(
            "the 'authorization' header was sent more than once; send one credential, once", "invalid_request"
        )
    parts = request.headers.get("authorization", "").split()
    token = parts[1] if len(parts) == 2 and parts[0].lower() == "bearer" else None
    if token is None or not looks_like_jwt(token):
        if mode == "jwt_or_api_key":
            return await _api_key(request, state)
        raise ApiError(
            401,
            "this CDS service needs a CDS Hooks JWT from a trusted EHR: 'Authorization: Bearer "
            "<JWT>' (API keys are not accepted here: VIGIL_CDS_AUTH=jwt)",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    if request.headers.get("x-api-key") is not None:
        raise _refuse("send either a CDS Hooks JWT or an API key, not both", "invalid_request")
    verifier = _verifier(request)
    assert verifier is not None
    path = f"/cds-services/{request.path_params.get('service_id', '')}"
    try:
        client = await run_in_threadpool(verifier.verify, token, path=path)
    except CdsTokenError as exc:
        log.info("CDS Hooks JWT refused: %s", exc.reason)
        if exc.status == 401:
            raise _refuse(str(exc)) from exc
        raise ApiError(exc.status, str(exc), headers={"Retry-After": "30"}) from exc
    info = ApiKeyInfo(
        key_id=f"cds:{client.name}", client=client.iss[:64], scopes=client.scopes, created_utc="", revoked_utc=None
    )
    request.state.client = info.key_id
    if "triage" not in info.scopes:
        raise ApiError(
            403,
            f"the CDS client '{client.name}' is not granted the 'triage' scope",
            headers={"WWW-Authenticate": f'{_CHALLENGE}, error="insufficient_scope", scope="triage"'},
        )
    return info


CdsCaller = Annotated[ApiKeyInfo, Depends(cds_caller)]


@router.get(
    "/cds-services",
    summary="CDS Hooks discovery",
    description="Lists Vigil's CDS services (public, as the CDS Hooks specification expects).",
)
async def discovery() -> dict[str, Any]:
    return fhir_response.cds_discovery()


@router.post(
    "/cds-services/{service_id}",
    responses=_ERRORS,
    openapi_extra=_REQUEST_BODY,
    summary="CDS Hooks service call: FHIR R4 vital signs in prefetch -> cards",
    description="Builds a triage record from the prefetched Patient, vital-sign Observations (LOINC) and "
    "Encounter, scores it like POST /v1/triage, and answers with CDS Hooks cards carrying "
    "the result and a FHIR R4 RiskAssessment suggestion. Authenticates with an API key "
    "(triage scope) or, as the site sets VIGIL_CDS_AUTH, the EHR's signed CDS Hooks JWT "
    "(CdsHooksJWT: aud must be this endpoint's URL, each jti once).",
)
async def call_service(service_id: str, request: Request, state: StateDep, key: CdsCaller) -> dict[str, Any]:
    if service_id != fhir_codes.SERVICE_ID:
        raise ApiError(404, f"no CDS service '{service_id[:64]}'; see GET /cds-services")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InputValidationError("body", "a CDS Hooks request must be a JSON object")
    now = datetime.now(UTC)
    raw, notes = fhir_record.record_from_cds_request(body, now=now)
    record = validate_record(raw)
    result = (
        await state.run_model(
            score_records, state, request, key, f"/cds-services/{fhir_codes.SERVICE_ID}", [raw], [record]
        )
    )[0]
    patient, encounter = fhir_record.context_references(body)
    response = fhir_response.cds_response(result, now=now, patient_reference=patient, encounter_reference=encounter)
    if notes:
        response.setdefault("cards", []).append(
            {
                "uuid": str(uuid.uuid4()),
                "summary": "Some FHIR data could not be used",
                "indicator": "info",
                "detail": "\n".join(f"- {n}" for n in notes[:20]),
                "source": {"label": "Vigil"},
            }
        )
    return response
