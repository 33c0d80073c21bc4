"""The scoring step every triage edge of the HTTP API shares: score validated records, audit each, count them.

``POST /v1/triage``, ``POST /v1/triage/batch`` (:mod:`serving.api.triage`) and the CDS Hooks service
(:mod:`serving.api.cds`) call :func:`score_records`; the results themselves are built by
:func:`serving.triage_result.build_results` (no HTTP there). Kept apart from the routes so that no route module
imports another.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import Request

from models.triage.decision import age_band_labels
from serving.api.state import ServiceState, audit_record, input_digest, write_audit
from serving.store.records import ApiKeyInfo
from serving.triage_result import build_results

__all__ = ["prediction_groups", "score_records"]


def prediction_groups(records: list[dict[str, Any]]) -> list[dict[str, str | None]]:
    """The coarse groups of each validated record's patient, kept beside its audit row for monitoring by group:
    sex, age band (:data:`models.triage.decision.AGE_BANDS`), and the ethnicity and site the client sent."""
    ages = np.array([np.nan if r.get("age_years") is None else float(r["age_years"]) for r in records])
    bands = age_band_labels(ages)
    return [
        {"sex": r.get("sex"), "age_band": band, "ethnicity": r.get("ethnicity"), "site": r.get("site")}
        for r, band in zip(records, bands, strict=True)
    ]


def score_records(
    state: ServiceState,
    request: Request,
    key: ApiKeyInfo,
    route: str,
    raws: list[dict[str, Any]],
    records: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Score validated records and audit each before anything is returned (runs in a worker thread)."""
    model = state.holder.get("triage")
    results = build_results(model, records)
    for result in results:
        result["request_id"] = request.state.request_id
    audited = write_audit(
        state,
        [
            audit_record(request, key, route, model, input_digest(raw), result)
            for raw, result in zip(raws, results, strict=True)
        ],
        prediction_groups(records),
    )
    for result, row in zip(results, audited, strict=True):
        result["audit_id"] = row.seq  # after the audit: a row cannot hold its own seq
    version = model.resolved.version
    state.metrics.predictions.labels("triage", version).inc(len(results))
    state.metrics.flags.labels("news2_floor_raised").inc(sum(r["flags"]["news2_floor_raised_level"] for r in results))
    state.metrics.flags.labels("safety_floor_raised").inc(sum(r["flags"]["safety_floor_raised_level"] for r in results))
    return results
