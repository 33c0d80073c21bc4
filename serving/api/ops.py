"""Operations routes: liveness, readiness, Prometheus metrics, the models served, and reload."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from models.errors import StoreUnavailableError
from serving.api.schemas import ModelsOut, problem_responses
from serving.api.state import StateDep, require
from serving.model_source import TASKS
from serving.store.records import ApiKeyInfo

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])

AnyKey = Annotated[ApiKeyInfo, Depends(require(None))]
AdminKey = Annotated[ApiKeyInfo, Depends(require("admin"))]
_AUTH = problem_responses(None)


@router.get("/healthz", summary="Liveness: the process answers", responses={200: {"description": "alive"}})
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


#: The DICOM node touches its heartbeat file every second; older than this, the node is reported unavailable.
HEARTBEAT_MAX_AGE_S = 5.0


def node_heartbeat_problem(path: Path, now: float | None = None) -> str | None:
    """Why the DICOM node behind ``path`` (its heartbeat file) is not to be counted on, or None when it is."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return f"no heartbeat file {path}: the node is not running (see the log of vigil serve)"
    except OSError as exc:
        return f"heartbeat file {path} cannot be read ({type(exc).__name__})"
    if age > HEARTBEAT_MAX_AGE_S:
        return f"the node's last heartbeat is {age:.0f} s old (more than {HEARTBEAT_MAX_AGE_S:g} s)"
    return None


@router.get(
    "/readyz",
    summary="Readiness: every model loaded, the audit store reachable (and the DICOM node up, when "
    "vigil serve runs it)",
    description="Public, so it names each component and says only `ok` or `unavailable`; why a component is "
    "unavailable goes to the service's log (and, for a model, to `GET /v1/models`).",
    responses={503: {"description": "Not ready; the body names each component that is unavailable"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    # A public route: the reasons (a registry URI, a database user, host and driver error) go to the log only.
    checks: dict[str, str] = {}
    for task, (model, reason) in state.holder.status().items():
        checks[f"model:{task}"] = "ok" if model is not None else "unavailable"
        if model is None:
            log.warning("not ready: model:%s unavailable: %s", task, reason)
    try:
        await run_in_threadpool(state.ensure_store)
        await run_in_threadpool(state.store.ping)
        checks["audit_store"] = "ok"
    except StoreUnavailableError as exc:
        checks["audit_store"] = "unavailable"
        log.warning("not ready: audit_store unavailable: %s", exc)
    heartbeat = state.settings.dicom_node_heartbeat
    if heartbeat is not None:
        problem = node_heartbeat_problem(heartbeat)
        checks["dicom_node"] = "ok" if problem is None else "unavailable"
        if problem is not None:
            log.warning("not ready: dicom_node unavailable: %s", problem)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


@router.get("/metrics", summary="Prometheus metrics (text exposition format)", responses=_AUTH, response_class=Response)
async def metrics(state: StateDep, _key: AdminKey) -> Response:
    for task, (model, _reason) in state.holder.status().items():
        state.metrics.model_loaded.labels(task).set(1 if model is not None else 0)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get(
    "/v1/models",
    response_model=ModelsOut,
    responses=_AUTH,
    summary="The models served: versions, model cards and release-gate records",
)
async def models(state: StateDep, _key: AnyKey) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    status = state.holder.status()
    for task in TASKS:
        if task not in status:
            continue
        model, reason = status[task]
        if model is None:
            out.append({"task": task, "loaded": False, "error": reason})
            continue
        card = model.runtime.card
        out.append(
            {
                "task": task,
                "loaded": True,
                "model": model.ref(),
                "card": _card_dict(card),
                "release_gate": dict(model.resolved.release_gate),
                "origin": model.resolved.origin,
            }
        )
    return {"models": out}


def _card_dict(card: Any) -> dict[str, Any]:
    import json

    return json.loads(card.to_json())


@router.post(
    "/v1/admin/reload",
    responses=_AUTH,
    summary="Load the newest released version of each model now",
    description="Requests in flight finish on the model they started with; a model that fails its checks "
    "is not swapped in and the one being served stays.",
)
async def reload(state: StateDep, _key: AdminKey) -> dict[str, Any]:
    outcomes = [await run_in_threadpool(state.holder.reload, task) for task in state.holder.tasks]
    return {"reloads": outcomes}
