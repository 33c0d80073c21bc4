"""Prometheus metrics of the service (``GET /metrics``).

Each app gets its own registry (tests make many apps in one process). With several worker processes,
``vigil serve --workers N`` sets ``PROMETHEUS_MULTIPROC_DIR`` and the scrape aggregates every worker's files.
Labels carry route templates and statuses only: never a path with an identifier, never patient data.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The counters, histograms and gauges one app updates."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode values go to files and the scrape collects them: register nowhere.
        kwargs: dict = {"registry": None if self.multiprocess else self.registry}
        self.requests = Counter("vigil_http_requests_total", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], **kwargs)
        self.latency = Histogram("vigil_http_request_duration_seconds", "Request latency by route template",
                                 ["route"], buckets=LATENCY_BUCKETS, **kwargs)
        self.predictions = Counter("vigil_predictions_total", "Predictions returned (each audited), by task",
                                   ["task", "model_version"], **kwargs)
        self.audit_failures = Counter("vigil_audit_failures_total",
                                      "Predictions refused because the audit store could not be written", **kwargs)
        self.flags = Counter("vigil_safety_flags_total",
                             "Triage results where the NEWS2 floor (news2_floor_raised) or any safety-floor rule "
                             "(safety_floor_raised) raised the level, and second reads with a flag", ["kind"], **kwargs)
        gauge_kwargs = dict(kwargs)
        if self.multiprocess:
            gauge_kwargs["multiprocess_mode"] = "max"
        self.model_loaded = Gauge("vigil_model_loaded", "1 when a model is loaded for the task",
                                  ["task"], **gauge_kwargs)

    def render(self) -> bytes:
        """The text exposition format of every metric (all workers' when in multiprocess mode)."""
        if self.multiprocess:
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
