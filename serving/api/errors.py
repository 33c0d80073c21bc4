"""Errors as RFC 9457 problem+json: the domain hierarchy of :mod:`models.errors` mapped to HTTP statuses.

Bad input is 422 naming the field, a wrong media type 415, a body over the limit 413, no model or no audit
store 503; anything unexpected is a 500 that carries only the request id (its traceback goes to the log,
without the request body). A client that disconnects before its body is complete is logged at INFO: that is the
client's doing, not a fault of the service. Nothing here echoes a request body or a header value into a log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from models.errors import InputValidationError, ModelArtifactError, RecordValidationErrors, StoreUnavailableError
from serving.api.metrics import route_label
from serving.model_source import ModelUnavailableError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    412: "Precondition failed",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class ApiError(Exception):
    """An HTTP error raised by a route: status, detail, optional per-field errors and headers."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        type_: str = "about:blank",
    ) -> None:
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.type = type_
        super().__init__(detail)


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def problem(
    request: Request | None,
    status: int,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    type_: str = "about:blank",
) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {"type": type_, "title": _TITLES.get(status, "Error"), "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
        rid = request_id_of(request)
        if rid:
            body["request_id"] = rid
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def validation_errors(exc: InputValidationError | RecordValidationErrors) -> list[dict[str, Any]]:
    """Each problem as ``{"field", "message"}`` (and ``"row"`` for batch items)."""
    items = exc.errors if isinstance(exc, RecordValidationErrors) else [exc]
    out = []
    for err in items:
        entry: dict[str, Any] = {"field": err.field, "message": err.message}
        if err.row is not None:
            entry["row"] = err.row
        out.append(entry)
    return out


def _loc_field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def item_problem(
    exc: InputValidationError | RecordValidationErrors, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The problem+json body of one failed item of a batch (``errors``: its field errors, default
    :func:`validation_errors` of ``exc``); 409 for an error that says so (``http_status``), else 422."""
    errors = errors if errors is not None else validation_errors(exc)
    status = getattr(exc, "http_status", 422)
    return {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": errors[0]["message"],
        "errors": errors,
    }


def install_error_handlers(app: FastAPI) -> None:
    """Register the problem+json handlers on ``app``."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem(request, exc.status, exc.detail, errors=exc.errors, headers=exc.headers, type_=exc.type)

    @app.exception_handler(RecordValidationErrors)
    @app.exception_handler(InputValidationError)
    async def _invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, (InputValidationError, RecordValidationErrors))
        errors = validation_errors(exc)
        detail = errors[0]["message"] if len(errors) == 1 else f"{len(errors)} fields failed validation"
        # CDS Hooks 2.0: a service missing prefetched data it requires SHALL answer 412 Precondition Failed.
        # An outcome for a prediction that already has one (models.errors.OutcomeConflictError): 409 Conflict.
        status = 412 if getattr(exc, "precondition", False) else getattr(exc, "http_status", 422)
        return problem(request, status, detail, errors=errors)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _loc_field(e.get("loc", ())), "message": str(e.get("msg", "invalid"))} for e in exc.errors()
        ]
        detail = f"'{errors[0]['field']}': {errors[0]['message']}" if errors else "invalid request"
        return problem(request, 422, detail, errors=errors)

    @app.exception_handler(ModelUnavailableError)
    async def _no_model(request: Request, exc: ModelUnavailableError) -> JSONResponse:
        return problem(request, 503, str(exc), headers={"Retry-After": "30"})

    @app.exception_handler(ModelArtifactError)
    async def _bad_model(request: Request, exc: ModelArtifactError) -> JSONResponse:
        return problem(request, 503, f"model unavailable: {exc}", headers={"Retry-After": "30"})

    @app.exception_handler(StoreUnavailableError)
    async def _no_store(request: Request, exc: StoreUnavailableError) -> JSONResponse:
        log.error("store unavailable (request %s): %s", request_id_of(request), exc)
        return problem(
            request,
            503,
            "the audit store is unavailable, so no prediction can be returned "
            "(Vigil never answers unaudited); retry later",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(ClientDisconnect)
    async def _disconnected(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # Nobody is left to read the answer; it is sent only so that the request ends (and is counted) normally.
        log.info(
            "client disconnected before its request body was complete (request %s) on %s",
            request_id_of(request),
            route_label(request.scope.get("route")),
        )
        return problem(request, 400, "the client disconnected before the request body was complete")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
        return problem(request, exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The traceback is logged; the request body is not (it may hold patient data).
        log.error(
            "unexpected error (request %s) on %s",
            request_id_of(request),
            request.url.path,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return problem(request, 500, "unexpected error; quote the request id when reporting it")
