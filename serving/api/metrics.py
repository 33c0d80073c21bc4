"""Prometheus metrics of the service (``GET /metrics``).

Each app gets its own registry (tests make many apps in one process). With several worker processes,
``vigil serve --workers N`` sets ``PROMETHEUS_MULTIPROC_DIR`` and the scrape aggregates every worker's files.
Every label value comes from a fixed set, whatever a client sends (:func:`method_label`, :func:`route_label`,
:func:`status_label`): an HTTP method or path chosen by a client never becomes a label, so the number of series
cannot grow with traffic. Never a path with an identifier, never patient data.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

#: HTTP methods counted by name; any other method is counted as ``"other"``.
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
#: Statuses counted by code; any other is counted by its class (``"4xx"``), or ``"other"`` outside 100-599.
STATUSES = frozenset(
    {200, 201, 202, 204, 206, 304, 400, 401, 403, 404, 405, 406, 409, 411, 412, 413, 415, 422, 429, 500, 502, 503, 504}
)
#: The route label of a request that matched no route (an unknown path).
UNMATCHED = "unmatched"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def method_label(method: object) -> str:
    """``method`` when it is one of :data:`METHODS`, else ``"other"``."""
    return method if isinstance(method, str) and method in METHODS else "other"


def route_label(route: object) -> str:
    """The template of the route a request matched (``/cds-services/{service_id}``), else :data:`UNMATCHED`.

    Only a route object the app itself declared is read (its ``path`` is the template, never the request's path).
    """
    template = getattr(route, "path", None)
    return template if isinstance(template, str) and template else UNMATCHED


def status_label(status: object) -> str:
    """``"404"`` for a status in :data:`STATUSES`, its class (``"4xx"``) for another, ``"other"`` outside 100-599."""
    if not isinstance(status, int) or not 100 <= status <= 599:
        return "other"
    return str(status) if status in STATUSES else f"{status // 100}xx"


class ServiceMetrics:
    """The counters, histograms and gauges one app updates."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode values go to files and the scrape collects them: register nowhere.
        kwargs: dict = {"registry": None if self.multiprocess else self.registry}
        self.requests = Counter(
            "vigil_http_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            **kwargs,
        )
        self.latency = Histogram(
            "vigil_http_request_duration_seconds",
            "Request latency by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            **kwargs,
        )
        self.predictions = Counter(
            "vigil_predictions_total",
            "Predictions returned (each audited), by task",
            ["task", "model_version"],
            **kwargs,
        )
        self.outcomes = Counter(
            "vigil_outcomes_total", "Outcomes fed back and stored (POST /v1/outcomes), by task", ["task"], **kwargs
        )
        self.audit_failures = Counter(
            "vigil_audit_failures_total", "Predictions refused because the audit store could not be written", **kwargs
        )
        self.flags = Counter(
            "vigil_safety_flags_total",
            "Triage results where the NEWS2 floor (news2_floor_raised) or any safety-floor rule "
            "(safety_floor_raised) raised the level, and second reads with a flag",
            ["kind"],
            **kwargs,
        )
        gauge_kwargs = dict(kwargs)
        if self.multiprocess:
            gauge_kwargs["multiprocess_mode"] = "max"
        self.model_loaded = Gauge(
            "vigil_model_loaded", "1 when a model is loaded for the task", ["task"], **gauge_kwargs
        )

    def render(self) -> bytes:
        """The text exposition format of every metric (all workers' when in multiprocess mode)."""
        if self.multiprocess:
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
