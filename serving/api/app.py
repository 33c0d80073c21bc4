"""The FastAPI application factory of the Vigil service.

``create_app(settings, locator=...)`` builds one app; models are loaded and the key/audit store opened in the
lifespan, never at import. ``vigil serve`` composes it with the MLflow registry locator; tests pass their own
settings, locator and store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from models.errors import ConfigError, StoreUnavailableError
from models.model_card import DECISION_SUPPORT_STATEMENT, IMAGING_DECISION_SUPPORT_STATEMENT
from models.onnx_file import default_threads
from serving.api import cds, dicomweb, imaging, ops, outcomes, triage
from serving.api.errors import install_error_handlers
from serving.api.metrics import ServiceMetrics
from serving.api.middleware import RequestContextMiddleware
from serving.api.schemas import Problem
from serving.api.state import ServiceState
from serving.model_source import TASKS, LocalFolderLocator, ModelHolder, ModelLocator, Task
from serving.settings import ServingSettings, get_settings
from serving.store.audit_anchor import open_anchor
from serving.store.database import Store

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
DESCRIPTION = f"""Triage scores for A&E systems and second-read flags for radiology workstations.

**Triage:** {DECISION_SUPPORT_STATEMENT}

**Chest X-ray second read:** {IMAGING_DECISION_SUPPORT_STATEMENT}

Authenticate with an API key (`vigil keys create`) as `Authorization: Bearer <key>` or `X-API-Key`, each header
sent once (a repeated one is refused with 401); each key has scopes (`triage`, `imaging`, `admin`). Every
prediction is audited before it is returned; if the audit store is unavailable the prediction is refused (503).
Errors are RFC 9457 problem+json.
"""


def default_locator(settings: ServingSettings) -> ModelLocator:
    """The locator a bare ``create_app(settings)`` can build: the local ONNX folder."""
    if settings.model_source == "local":
        if settings.model_dir is None:
            raise ConfigError("setting VIGIL_MODEL_DIR: required when VIGIL_MODEL_SOURCE=local")
        return LocalFolderLocator(settings.model_dir)
    raise ConfigError(
        "setting VIGIL_MODEL_SOURCE=registry: the MLflow registry locator is composed by `vigil serve` "
        "(workflows.serve.create_service); pass a locator, or use VIGIL_MODEL_SOURCE=local"
    )


def _body_limits(settings: ServingSettings) -> Any:
    def limit_for(path: str) -> int:
        if path.startswith(("/v1/imaging", "/dicomweb")):
            return settings.max_dicom_bytes
        return settings.max_json_bytes

    return limit_for


def create_app(
    settings: ServingSettings | None = None,
    *,
    locator: ModelLocator | None = None,
    store: Store | None = None,
    tasks: tuple[Task, ...] = TASKS,
) -> FastAPI:
    """Build the service.

    Parameters
    ----------
    settings : ServingSettings, optional
        Defaults to :func:`serving.settings.get_settings` (the environment).
    locator : ModelLocator, optional
        Where models come from; default from ``settings`` (see :func:`default_locator`).
    store : Store, optional
        The key and audit store; default ``settings.store_url()``.
    tasks : tuple of str
        The tasks this service answers.
    """
    settings = settings or get_settings()
    locator = locator or default_locator(settings)
    store = store or Store(settings.store_url(), anchor=open_anchor())  # VIGIL_AUDIT_ANCHOR_*: docs/audit.md
    threads = settings.threads or default_threads()
    holder = ModelHolder(locator, allow_unreleased=settings.allow_unreleased, threads=threads, tasks=tasks)
    metrics = ServiceMetrics()
    state = ServiceState(settings=settings, holder=holder, store=store, metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio

        state.limiter = anyio.CapacityLimiter(max(2, threads))
        try:
            await run_in_threadpool(state.ensure_store)
            if not any(k.revoked_utc is None for k in await run_in_threadpool(store.list_keys)):
                log.warning(
                    "no API key exists yet: every prediction route answers 401 until one is made with "
                    "`vigil keys create --client NAME --scope triage` (or imaging, admin)"
                )
        except StoreUnavailableError as exc:
            log.error("audit store unavailable at start-up: %s; predictions are refused until it returns", exc)
        if settings.allow_unreleased:
            log.warning("VIGIL_ALLOW_UNRELEASED is set: models without a passing release gate may be served")
        await run_in_threadpool(holder.load_all)
        if settings.dicom_node:
            from serving.dicom_node.node import DicomNode
            from serving.dicom_node.settings import load_dicom_settings

            state.dicom_node = DicomNode(load_dicom_settings(work_dir=settings.work_dir), holder, store)
            await run_in_threadpool(state.dicom_node.start)
        poller = asyncio.create_task(_poll(holder, settings.reload_poll_s)) if settings.reload_poll_s > 0 else None
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            if state.dicom_node is not None:
                await run_in_threadpool(state.dicom_node.stop)
            if state._intake is not None:
                state._intake.queue.close()
            store.dispose()
            close = getattr(locator, "close", None)
            if callable(close):
                close()

    # redirect_slashes=False: '/v1/triage/' is a 404, never a redirect built from the client's Host header
    # (which would be answered before authentication).
    # /docs and /redoc load their scripts from a public CDN: off unless VIGIL_DOCS asks for them.
    app = FastAPI(
        title="Vigil",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url="/docs" if settings.docs else None,
        redoc_url="/redoc" if settings.docs else None,
        openapi_tags=[
            {"name": "triage", "description": "Triage scores for A&E systems"},
            {"name": "cds-hooks", "description": "CDS Hooks 2.0 service over FHIR R4"},
            {"name": "imaging", "description": "Chest X-ray second read"},
            {"name": "operations", "description": "Health, readiness, metrics, models"},
        ],
    )
    app.state.vigil = state
    install_error_handlers(app)
    app.include_router(triage.router)
    app.include_router(cds.router)
    app.include_router(imaging.router)
    app.include_router(dicomweb.router)
    app.include_router(outcomes.router)
    app.include_router(ops.router)
    # The last added is the outermost: every request, a refused Host included, gets a request id and is counted.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.trusted_host_list(), www_redirect=False)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        limit_for=_body_limits(settings),
        body_idle_timeout_s=settings.http_body_idle_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
    )
    app.openapi = _with_problem_schema(app)  # type: ignore[method-assign]
    return app


def _with_problem_schema(app: FastAPI) -> Any:
    """``app.openapi`` plus the :class:`serving.api.schemas.Problem` schema that every error response refers to.

    Error responses are documented as ``application/problem+json`` by reference
    (:func:`serving.api.schemas.problem_responses`), not through FastAPI's ``model=`` (which would document them as
    application/json), so FastAPI does not collect the schema itself.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            doc.setdefault("components", {}).setdefault("schemas", {})["Problem"] = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}", mode="serialization"
            )
        return app.openapi_schema  # type: ignore[return-value]

    return openapi


async def _poll(holder: ModelHolder, every_s: float) -> None:
    """Reload each task's model every ``every_s`` seconds (a new release is picked up without a restart)."""
    while True:
        await asyncio.sleep(every_s)
        for task in holder.tasks:
            await run_in_threadpool(holder.reload, task)


def openapi_document() -> dict[str, Any]:
    """The service's OpenAPI description, without loading a model or opening a store."""
    from pathlib import Path

    settings = ServingSettings(model_source="local", model_dir=Path("unused"))
    app = create_app(settings, store=Store("sqlite:///unused-openapi.db"))
    return app.openapi()
