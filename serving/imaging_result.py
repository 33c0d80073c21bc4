"""From a model's second read (:class:`models.imaging.onnx.SecondRead`) to the result and its audit row (no HTTP here).

Both edges that read a chest radiograph build their result here: ``POST /v1/imaging/second-read``
(:mod:`serving.api.imaging`) and the DICOM node (:mod:`serving.dicom_node.analysis`). Each audits
:func:`audit_output` of :func:`second_read_result`, so the audit row of a second read is the same whichever edge it
came through; only the client, the route and what that edge delivered (the response's media type; the instance's,
the SR's and the heat-map SC's UIDs) differ. The HTTP response is the result with the heat-map PNG added. The DICOM
node keeps :func:`queued_result` in its queue: the same result keyed by finding, the form that
``GET /v1/imaging/flags``, the worklist notifications (:mod:`serving.dicom_node.notify`) and ``vigil dicom-queue``
read, and that queues written before this module hold.
"""

from __future__ import annotations

from typing import Any

from models.imaging.onnx import SecondRead
from models.labels import IMAGING_FINDING_CODES
from models.model_card import IMAGING_DECISION_SUPPORT_STATEMENT
from serving.model_source import LoadedModel

__all__ = ["audit_output", "finding_results", "queued_result", "second_read_result", "structured_report"]


def finding_results(read: SecondRead) -> list[dict[str, Any]]:
    """One :class:`serving.api.schemas.FindingOut`-shaped dict per finding, in the model's finding order: its
    code, status and reason, probability (None where the finding was not evaluated), operating threshold and flag."""
    shown = read.shown_probabilities
    return [
        {
            "finding": f,
            "code": dict(zip(("value", "scheme", "meaning"), IMAGING_FINDING_CODES[f], strict=True)),
            "status": read.status[f],
            "status_reason": read.status_reason[f],
            "probability": shown[f],
            "operating_threshold": read.thresholds[f],
            "flagged": read.flags[f],
        }
        for f in read.probabilities
    ]


def second_read_result(read: SecondRead, model: LoadedModel, request_id: str) -> dict[str, Any]:
    """The result of one second read by ``model``: a :class:`serving.api.schemas.SecondReadResult`-shaped dict
    without the heat-map PNG (which only the HTTP response carries)."""
    return {
        "request_id": request_id,
        "model": model.ref(),
        "flagged": read.flagged,
        "findings": finding_results(read),
        "heatmap_finding": read.top_finding,
        "source": dict(read.source),
        "timings_ms": {k: round(v, 3) for k, v in read.timings_ms.items()},
        "decision_support_statement": IMAGING_DECISION_SUPPORT_STATEMENT,
    }


def audit_output(result: dict[str, Any], **delivered: Any) -> dict[str, Any]:
    """The ``output`` of a second read's audit row: ``result`` (from :func:`second_read_result`) and what the edge
    delivered (``response_media_type`` over HTTP; the instance's, SR's and SC's UIDs from the DICOM node).

    Raises
    ------
    ValueError
        A delivered field would replace a field of the result (the result is audited as it was built).
    """
    replaced = sorted(set(delivered) & set(result))
    if replaced:
        raise ValueError(f"delivered fields must not replace fields of the result; got {replaced}")
    return {**result, **delivered}


def queued_result(result: dict[str, Any]) -> dict[str, Any]:
    """The form of ``result`` (from :func:`second_read_result`) the DICOM node's queue keeps: per-finding maps of
    the probability (None where not evaluated), status and reason, operating threshold and flag, the flagged
    findings, the model, the source, the timings and the statement. The request id is a column of the queue."""
    rows = result["findings"]
    return {
        "model": result["model"],
        "probabilities": {r["finding"]: r["probability"] for r in rows},
        "thresholds": {r["finding"]: r["operating_threshold"] for r in rows},
        "finding_status": {r["finding"]: r["status"] for r in rows},
        "finding_status_reason": {r["finding"]: r["status_reason"] for r in rows},
        "flags": {r["finding"]: r["flagged"] for r in rows},
        "flagged": result["flagged"],
        "flagged_findings": [r["finding"] for r in rows if r["flagged"]],
        "source": result["source"],
        "timings_ms": result["timings_ms"],
        "decision_support_statement": result["decision_support_statement"],
    }


def structured_report(read: SecondRead, model: LoadedModel) -> Any:
    """The TID 1500 Structured Report of ``read``, naming ``model`` (its card's name and its registry version).

    Raises
    ------
    models.errors.OutsideIntendedUseError
        No finding was evaluated on this image (:meth:`models.imaging.onnx.SecondRead.structured_report`).
    """
    return read.structured_report(model.runtime.card.name, model.resolved.version)
