"""One pure-ASGI middleware for every request: request id, body size limit and read deadlines, security headers,
metrics and an access log.

A request body must keep arriving: no gap between two pieces longer than ``body_idle_timeout_s`` and all of it
within ``body_timeout_s`` of the headers; otherwise 408 and the connection is closed (issue 14 finding 4: slow
uploads held connections for ever). The deadline on the headers themselves is the server's
(:mod:`serving.api.http_limits`): the application is not called before they are complete.

The access log holds the method, the route template, the status, the latency, the request id and the API key's
id: never a body, a query string or a header value (they may carry patient data or a key). The method and route
in the log and in the metrics are the bounded labels of :mod:`serving.api.metrics`, never what the client sent.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.metrics import ServiceMetrics, method_label, route_label, status_label

log = logging.getLogger("vigil.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Added to every response: browsers must not sniff a JSON or text body into something executable.
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"),)


def _problem_bytes(status: int, title: str, detail: str, request_id: str, path: str) -> bytes:
    return json.dumps(
        {
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": path,
            "request_id": request_id,
        }
    ).encode()


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
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
    body_idle_timeout_s, body_timeout_s : float or None
        Longest wait for the next piece of a body, and for all of it from the headers; None: no deadline.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServiceMetrics,
        limit_for: Callable[[str], int],
        body_idle_timeout_s: float | None = None,
        body_timeout_s: float | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.limit_for = limit_for
        self.body_idle_timeout_s = body_idle_timeout_s or math.inf
        self.body_timeout_s = body_timeout_s or math.inf

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
                status_holder["started"] = True
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
            body_done = False
            body_deadline = time.monotonic() + self.body_timeout_s

            async def receive_wrapper() -> Message:
                nonlocal received, body_done
                if body_done:  # afterwards the app only waits for a disconnect: no deadline
                    return await receive()
                wait = min(self.body_idle_timeout_s, body_deadline - time.monotonic())
                try:
                    with anyio.fail_after(max(wait, 0.0) if wait < math.inf else None):
                        message = await receive()
                except TimeoutError:
                    raise _TooSlow from None
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise _TooLarge
                    body_done = not message.get("more_body", False)
                else:
                    body_done = True
                return message

            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except _TooLarge:
                if not status_holder.get("started"):
                    await self._reply_413(scope, send_wrapper, request_id, limit)
            except _TooSlow:
                log.info("request body not received in time (rid=%s): connection closed", request_id)
                if not status_holder.get("started"):
                    await self._reply(
                        scope,
                        send_wrapper,
                        request_id,
                        408,
                        "Request timeout",
                        "the request body did not arrive in time; the connection is closed",
                    )
        elapsed = time.perf_counter() - started
        template = route_label(scope.get("route"))
        method = method_label(scope.get("method"))
        status = status_holder["status"]
        self.metrics.requests.labels(template, method, status_label(status)).inc()
        self.metrics.latency.labels(template).observe(elapsed)
        client = scope.get("state", {}).get("client", "-")
        log.info("%s %s %d %.1fms rid=%s client=%s", method, template, status, elapsed * 1000, request_id, client)

    async def _reply_413(self, scope: Scope, send: Send, request_id: str, limit: int) -> None:
        await self._reply(
            scope,
            send,
            request_id,
            413,
            "Content too large",
            f"request body exceeds the limit of {limit} bytes for this route",
        )

    @staticmethod
    async def _reply(scope: Scope, send: Send, request_id: str, status: int, title: str, detail: str) -> None:
        """A problem+json answer that closes the connection (the rest of the body is not read)."""
        body = _problem_bytes(status, title, detail, request_id, scope.get("path", ""))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
