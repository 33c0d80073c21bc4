"""The second read of one queued instance: model, audit record, the TID 1500 SR and the optional heat-map SC.

:func:`analyse_item` returns the changes the queue records. The result, its audit row and the SR are built by
:mod:`serving.imaging_result`, as for ``POST /v1/imaging/second-read``; the queue keeps the result's
:func:`serving.imaging_result.queued_result` form. A typed input error (not a chest radiograph,
undecodable, inverted, ...) gives ``not_analysed`` with the error's field and message; a missing model or an
unavailable audit store raises (the worker retries later: a read is never kept unaudited). The SR and the SC are
made here, once, and written to disk, so every delivery attempt sends the same SOP Instance UIDs and a PACS that
receives one twice sees a duplicate, not a second report.

Auditing is at least once: if the process stops after the audit record is written and before the queue records
the result, the instance is read again and audited again (same input sha256, new request id).
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from models.errors import ImagingInputError, InputValidationError
from models.imaging.heatmap_sc import heatmap_secondary_capture
from models.imaging.sr import sr_to_bytes
from serving.dicom_node.durable import owned_path, write_durably
from serving.dicom_node.records import QueueItem
from serving.imaging_result import audit_output, queued_result, second_read_result, structured_report
from serving.model_source import LoadedModel
from serving.store.database import Store

__all__ = ["Analysis", "analyse_item"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Analysis:
    """What one analysis produced: the queue state and the changes to record with it."""

    state: str  # "analysed" or "not_analysed"
    changes: dict[str, Any]


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def analyse_item(
    item: QueueItem,
    model: LoadedModel,
    store: Store,
    output_dir: Path,
    *,
    send_heatmap_sc: bool,
    needs_delivery: bool,
    needs_notify: bool = False,
) -> Analysis:
    """Read one queued instance with ``model``, audit it, write its SR (and SC); the queue changes to record.

    With ``needs_notify`` (a worklist is configured), a flagged read also waits for its worklist notification
    (``notify_state="pending"``, due at once).

    Raises
    ------
    models.errors.StoreUnavailableError
        The audit store cannot be written (retry later; the read is not recorded).
    OSError
        The instance cannot be read from disk for a reason other than its content, or the SR cannot be written.
    """
    source = owned_path(output_dir, item.file_path)
    if source is None or not source.is_file():
        return Analysis(
            "not_analysed", {"reason_field": "file", "reason": "the stored instance is missing from the storage folder"}
        )
    try:
        read = model.runtime.second_read_dicom(source)
        sr = structured_report(read, model)
        sc = heatmap_secondary_capture(read) if send_heatmap_sc else None
    except (ImagingInputError, InputValidationError) as exc:
        log.info("instance %s not analysed: %s (%s)", item.sop_instance_uid, exc.field, type(exc).__name__)
        return Analysis("not_analysed", {"reason_field": exc.field, "reason": exc.message})
    request_id = f"dicom-{uuid.uuid4().hex}"
    result = second_read_result(read, model, request_id)
    sr_uids = {
        "sr_sop_instance_uid": str(sr.SOPInstanceUID),
        "sr_series_instance_uid": str(sr.SeriesInstanceUID),
        "sr_study_instance_uid": str(sr.StudyInstanceUID),
    }
    audited = audit_output(
        result,
        sop_instance_uid=item.sop_instance_uid,
        **sr_uids,
        heatmap_sop_instance_uid=str(sc.SOPInstanceUID) if sc is not None else None,
    )
    store.write_audits(
        [
            model.audit_record(
                request_id=request_id,
                client=item.calling_aet[:64] or "unknown",
                route=item.source,
                input_sha256=item.sha256,
                output=audited,
            )
        ]
    )
    queued = queued_result(result)
    sr_path = write_durably(output_dir / "sr", sr_to_bytes(sr))
    sc_path = write_durably(output_dir / "sc", _part10(sc)) if sc is not None else None
    return Analysis(
        "analysed",
        {
            "result": queued,
            "flagged": read.flagged,
            "flagged_findings": tuple(queued["flagged_findings"]),
            "model_version": model.resolved.version,
            "request_id": request_id,
            "needs_delivery": needs_delivery,
            **sr_uids,
            "sr_path": str(sr_path),
            "sc_sop_instance_uid": str(sc.SOPInstanceUID) if sc is not None else None,
            "sc_path": str(sc_path) if sc_path else None,
            **(
                {"notify_state": "pending", "notify_next_at": time.time(), "notify_attempts": 0}
                if needs_notify and read.flagged
                else {}
            ),
        },
    )
