"""Server-level limits on slow and numerous HTTP clients (issue 14 finding 4), for uvicorn's h11 protocol.

uvicorn 0.54 times out an idle keep-alive connection (``timeout_keep_alive``) but nothing else: a socket that
sends part of its request headers (or nothing at all after its first byte) held its connection for ever, and the
keep-alive timer is cancelled by any byte received. :class:`DeadlineH11Protocol` gives every connection a deadline
for its request headers, counted from the moment it starts waiting for them (the connection, or the end of the
previous response): past it, unless a request is being answered, the connection is closed. The request body has
its own deadlines in :class:`serving.api.middleware.RequestContextMiddleware` (the application sees it; the server
does not know a slow body from slow processing). :func:`uvicorn_limits` gives ``uvicorn.run`` the matching
concurrency limit. A reverse proxy in front (docs/reverse_proxy.md) adds per-address limits, which a single
process cannot enforce fairly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from serving.api.errors import ApiError
from serving.settings import ServingSettings, get_settings

__all__ = ["DeadlineH11Protocol", "UploadSlots", "upload_slot", "uvicorn_limits"]

log = logging.getLogger(__name__)


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers.

    The deadline is ``header_timeout_s`` when a subclass sets it, else ``VIGIL_HTTP_HEADER_TIMEOUT_S``
    (:class:`serving.settings.ServingSettings`, read once per process). Module-level, so that uvicorn can pickle it
    into its worker processes.
    """

    header_timeout_s: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.header_timeout_s is None:
            self.header_timeout_s = get_settings().http_header_timeout_s
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any, *args: Any, **kwargs: Any) -> None:
        super().connection_made(transport, *args, **kwargs)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        # Armed before the parent handles any pipelined request, which then counts as being answered.
        if not self.transport.is_closing():
            self._arm_header_deadline()
        super().on_response_complete()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        assert self.header_timeout_s is not None
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        answering = self.cycle is not None and not self.cycle.response_complete
        if answering or self.transport.is_closing():
            return  # a request is being answered: its body has deadlines of its own
        log.info("closed a connection that sent no complete request headers within %.1f s", self.header_timeout_s)
        self.transport.close()


def uvicorn_limits(settings: ServingSettings) -> dict[str, Any]:
    """The ``uvicorn.run`` keyword arguments that bound numerous clients, from ``settings`` (pass
    ``http=DeadlineH11Protocol``, or a subclass, beside them for the header deadline)."""
    return {"limit_concurrency": settings.http_limit_concurrency}


class UploadSlots:
    """At most ``limit`` uploads of one kind at once per process (STOW-RS, second reads): a request that finds
    them all taken is answered 503 with ``Retry-After`` before its body is read, so the bodies held at once are
    bounded by the limit. Used on the event loop only (no lock needed)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0

    def try_acquire(self) -> bool:
        if self.busy >= self.limit:
            return False
        self.busy += 1
        return True

    def release(self) -> None:
        self.busy -= 1


@contextmanager
def upload_slot(request: Request, kind: str, limit: int, *, setting: str, retry_after_s: int) -> Iterator[None]:
    """Hold one of this app's ``limit`` slots for ``kind`` (e.g. "STOW-RS uploads") while the block runs; with every
    slot taken, 503 with ``Retry-After`` (and the connection closed) before the request's body is read.

    The slots live on the app (one set per ``kind`` per worker process); ``setting`` names the environment variable
    that sets ``limit``, for the log line.
    """
    registry: dict[str, UploadSlots] | None = getattr(request.app.state, "upload_slots", None)
    if registry is None:
        registry = request.app.state.upload_slots = {}
    if kind not in registry:
        registry[kind] = UploadSlots(limit)
    slots = registry[kind]
    if not slots.try_acquire():
        log.warning("%s refused: %d already in progress (%s)", kind, slots.limit, setting)
        raise ApiError(
            503,
            f"{slots.limit} {kind} are already in progress; retry shortly",
            headers={"Retry-After": str(retry_after_s), "Connection": "close"},
        )
    try:
        yield
    finally:
        slots.release()
