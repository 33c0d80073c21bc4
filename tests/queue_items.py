"""A queue item as the DICOM node's intake would record one it has just received: for tests that run the
analysis step (:func:`serving.dicom_node.analysis.analyse_item`) on a file without a running node."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from serving.dicom_node.records import QueueItem


def received_item(
    path: Path, data: bytes, *, source: str = "dicom:c-store", transfer_syntax: str | None = None
) -> QueueItem:
    """A ``received`` item for the CR instance ``data``, stored at ``path`` (UID 1.2.3, from MODALITY)."""
    now = time.time()
    return QueueItem(
        sop_instance_uid="1.2.3",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        study_instance_uid=None,
        series_instance_uid=None,
        transfer_syntax=transfer_syntax,
        calling_aet="MODALITY",
        source=source,
        file_path=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        state="received",
        received_at=now,
        updated_at=now,
        next_attempt_at=now,
    )
