"""What one app instance holds (settings, models, store, metrics) and the dependencies routes use.

Authentication: an API key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. No key, or an unknown or
revoked one, or either header sent more than once (which copy counts would otherwise depend on the proxy), is 401
with ``WWW-Authenticate``; a valid key without the route's scope is 403 (RFC 9110 and RFC 6750). Keys are stored
hashed (:mod:`serving.store.keys`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from serving.api.auth import parse_presented_key
from serving.api.errors import ApiError
from serving.api.metrics import ServiceMetrics
from serving.model_source import LoadedModel, ModelHolder
from serving.settings import ServingSettings
from serving.store.database import Store
from serving.store.records import ApiKeyInfo, AuditRecord

#: The two ways to present an API key, as OpenAPI security schemes: the routes' ``require`` dependency and the CDS
#: Hooks service (which also takes a JWT in the same header) declare them.
BEARER_KEY = HTTPBearer(auto_error=False, description="An API key issued by `vigil keys create`")
HEADER_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same API key, as a header")
_KEY_HEADERS = ("authorization", "x-api-key")


@dataclass
class ServiceState:
    """Everything the routes of one app share."""

    settings: ServingSettings
    holder: ModelHolder
    store: Store
    metrics: ServiceMetrics
    schema_ready: bool = False
    limiter: Any = None  # anyio.CapacityLimiter, made in the lifespan (it needs the event loop)
    dicom_node: Any = None  # serving.dicom_node.node.DicomNode when this process runs the node
    _intake: Any = None

    def dicom_intake(self) -> Any:
        """The DICOM node's intake (durable write + queue) for STOW-RS: the running node's, or one over the same
        queue and storage folder when the node runs in another process (``vigil dicom-node``)."""
        if self.dicom_node is not None:
            return self.dicom_node.intake
        if self._intake is None:
            from serving.dicom_node.intake import Intake
            from serving.dicom_node.queue import open_queue
            from serving.dicom_node.settings import load_dicom_settings

            cfg = load_dicom_settings(work_dir=self.settings.work_dir)
            queue = open_queue(cfg.resolved_queue_url(), redis_prefix=cfg.queue_prefix)
            self._intake = Intake(queue, cfg.resolved_storage_dir(), max_instance_bytes=cfg.max_instance_bytes)
        return self._intake

    async def run_model(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run model work in a worker thread, at most ``limiter`` at once.

        Dozens of scorings sharing the GIL at once only lengthen every one of them (p99 at C=16 was 168 ms with
        Starlette's 40 threads, 77 ms with 2: docs/serving_benchmark.md).
        """
        import functools

        import anyio

        if self.limiter is None:
            self.limiter = anyio.CapacityLimiter(2)
        return await anyio.to_thread.run_sync(functools.partial(func, *args), limiter=self.limiter)

    def ensure_store(self) -> None:
        """Create the store's tables if that has not succeeded yet (the store may have been down at start-up).

        Raises StoreUnavailableError while the store cannot be reached.
        """
        if not self.schema_ready:
            self.store.create_schema()  # idempotent, and safe when several workers race
            self.schema_ready = True

    def authenticate(self, presented: str) -> ApiKeyInfo | None:
        """The key's record, or None for an unknown or revoked key (one worker-thread hop per request)."""
        self.ensure_store()
        return self.store.authenticate(presented)


def get_state(request: Request) -> ServiceState:
    return request.app.state.vigil


StateDep = Annotated[ServiceState, Depends(get_state)]


def require(scope: str | None) -> Callable[..., Awaitable[ApiKeyInfo]]:
    """A dependency admitting a valid key; with ``scope``, only a key holding that scope."""

    async def dependency(
        request: Request,
        state: StateDep,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_KEY)] = None,
        header: Annotated[str | None, Security(HEADER_KEY)] = None,
    ) -> ApiKeyInfo:
        challenge = 'Bearer realm="vigil"'
        repeated = [name for name in _KEY_HEADERS if len(request.headers.getlist(name)) > 1]
        if repeated:
            raise ApiError(
                401,
                f"the '{repeated[0]}' header was sent more than once; send one API key, once",
                headers={"WWW-Authenticate": f'{challenge}, error="invalid_request"'},
            )
        presented = parse_presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
        if presented is None:
            raise ApiError(
                401,
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers={"WWW-Authenticate": challenge},
            )
        info = await run_in_threadpool(state.authenticate, presented)
        if info is None:
            raise ApiError(
                401,
                "the API key is not valid (unknown, malformed or revoked)",
                headers={"WWW-Authenticate": f'{challenge}, error="invalid_token"'},
            )
        request.state.client = info.key_id
        if scope is not None and scope not in info.scopes:
            raise ApiError(
                403,
                f"this API key does not have the '{scope}' scope",
                headers={"WWW-Authenticate": f'{challenge}, error="insufficient_scope", scope="{scope}"'},
            )
        return info

    return dependency


def input_digest(data: bytes | Any) -> str:
    """sha256 of the request input: raw bytes, or canonical JSON of a parsed record."""
    if not isinstance(data, bytes):
        data = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()


def audit_record(
    request: Request,
    client: ApiKeyInfo,
    route: str,
    model: LoadedModel,
    input_sha256: str,
    output: dict[str, Any],
    status: int = 200,
) -> AuditRecord:
    """The audit record of one prediction (written before the prediction is returned).

    Its ``request_id`` is the one the server made; an ``X-Request-ID`` the client sent is kept in the output as
    ``client_request_id`` (a client can repeat it; it never identifies a record).
    """
    offered = getattr(request.state, "client_request_id", None)
    if offered is not None:
        output = {**output, "client_request_id": offered}
    return model.audit_record(
        request_id=request.state.request_id,
        client=client.key_id,
        route=route,
        input_sha256=input_sha256,
        output=output,
        status=status,
    )


def write_audit(
    state: ServiceState, records: list[AuditRecord], groups: list[dict[str, str | None]] | None = None
) -> list[AuditRecord]:
    """Write audit records in one transaction (all or none), in a worker thread; a failure propagates as
    StoreUnavailableError -> 503, and nothing is returned to the client. Returns them with their seq (the audit id
    an answer carries, by which a site feeds its outcome back). ``groups``: see
    :meth:`serving.store.audit_trail.AuditTrail.write_audits`."""
    from models.errors import StoreUnavailableError

    try:
        return state.store.write_audits(records, groups)
    except StoreUnavailableError:
        state.metrics.audit_failures.inc()
        raise
