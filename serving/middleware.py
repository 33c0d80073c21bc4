"""One pure-ASGI middleware for every request: request id, body size limit, security headers, metrics and an
access log.

The access log holds the method, the route template, the status, the latency, the request id and the API key's
id: never a body, a query string or a header value (they may carry patient data or a key). The method and route
in the log and in the metrics are the bounded labels of :mod:`serving.metrics`, never what the client sent.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import ServiceMetrics, method_label, route_label, status_label

log = logging.getLogger("vigil.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Added to every response: browsers must not sniff a JSON or text body into something executable.
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"),)


def _problem_bytes(status: int, title: str, detail: str, request_id: str, path: str) -> bytes:
    return json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail,
                       "instance": path, "request_id": request_id}).encode()


class _TooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Request id (made here and answered as ``X-Request-ID``; a well-formed ``X-Request-ID`` from the client is kept
    as ``client_request_id``, never used as the id), body limits, ``X-Content-Type-Options: nosniff`` on every
    response, metrics and the access log.

    Parameters
    ----------
    app : ASGIApp
        The wrapped application.
    metrics : ServiceMetrics
        Where request counts and latencies go.
    limit_for : callable
        Maps a request path to its largest accepted body in bytes.
    """

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.metrics = metrics
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        # The request id is the audit record's identity, so the server makes it; a well-formed id the client sent
        # is kept beside it (client_request_id in the audit output) for the client's own correlation.
        offered = headers.get("x-request-id", "")
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        scope["state"]["client_request_id"] = offered if _REQUEST_ID.match(offered) else None
        path = scope.get("path", "")
        limit = self.limit_for(path)
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode()), *SECURITY_HEADERS]
            await send(message)

        declared = headers.get("content-length")
        too_large = False
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                too_large = False
        if too_large:
            await self._reply_413(scope, send_wrapper, request_id, limit)
        else:
            received = 0

            async def receive_wrapper() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise _TooLarge
                return message

            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except _TooLarge:
                await self._reply_413(scope, send_wrapper, request_id, limit)
        elapsed = time.perf_counter() - started
        template = route_label(scope.get("route"))
        method = method_label(scope.get("method"))
        status = status_holder["status"]
        self.metrics.requests.labels(template, method, status_label(status)).inc()
        self.metrics.latency.labels(template).observe(elapsed)
        client = scope.get("state", {}).get("client", "-")
        log.info("%s %s %d %.1fms rid=%s client=%s", method, template, status, elapsed * 1000, request_id, client)

    async def _reply_413(self, scope: Scope, send: Send, request_id: str, limit: int) -> None:
        body = _problem_bytes(413, "Content too large", f"request body exceeds the limit of {limit} bytes for this "
                              "route", request_id, scope.get("path", ""))
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
