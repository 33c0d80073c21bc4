"""A worker's notification step: the worklist notification of a flagged item, sent to each configured channel
(HL7 v2 ORU^R01 over MLLP, FHIR Task) that has not acknowledged it yet, with the outcome written to the item's
``notify_*`` fields: ``sent``; ``pending`` again after back-off; or, after ``max_attempts``, ``failed``, logged at
ERROR and listed. Called by :class:`serving.dicom_node.worker.WorkerPool` for each item it claims for
:data:`~serving.dicom_node.records.NOTIFY`; the messages themselves are built in :mod:`.notify` and its modules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from serving.dicom_node.delivery import DeliveryError
from serving.dicom_node.durable import owned_path
from serving.dicom_node.notify import Notice, channels_to_send, notice_of
from serving.dicom_node.notify_fhir import fhir_task, post_fhir_task
from serving.dicom_node.notify_hl7 import oru_r01
from serving.dicom_node.notify_mllp import send_mllp
from serving.dicom_node.queue import WorkQueue
from serving.dicom_node.records import QueueItem
from serving.dicom_node.settings import DicomNodeSettings

__all__ = ["notify_item", "send_notice"]

log = logging.getLogger(__name__)


def notify_item(
    item: QueueItem,
    *,
    queue: WorkQueue,
    settings: DicomNodeSettings,
    output_dir: Path,
    backoff: Callable[[int], float],
) -> None:
    """Send the worklist notification of a flagged item to each configured channel that has not acknowledged it
    yet; record which did, retry the rest with back-off, or list it as failed after ``max_attempts``.

    Parameters
    ----------
    item : QueueItem
        The item, claimed for :data:`~serving.dicom_node.records.NOTIFY` (its notification lease held).
    queue : WorkQueue
        Where the outcome is written (:meth:`~serving.dicom_node.queue.WorkQueue.notify_transition`).
    settings : DicomNodeSettings
        The channels, the receivers, ``max_attempts`` and the network timeout.
    output_dir : Path
        The folder the item's SR must be in (the notice is read from it).
    backoff : callable
        The back-off delay in seconds after a given number of attempts.
    """
    done = list(item.notified_channels)
    reasons: list[str] = []
    pending = channels_to_send(settings.notify_channels(), done)
    if item.notify_attempts > settings.max_attempts:  # claimed again and again without finishing (a worker died)
        reasons.append(f"the notification did not finish in {settings.max_attempts} attempts")
        pending = []
    notice = None
    if pending:
        try:
            sr_path = owned_path(output_dir, item.sr_path)
            if sr_path is None:
                raise DeliveryError("no structured report was kept for this instance")
            notice = notice_of(item, sr_path)
        except DeliveryError as exc:
            reasons.append(exc.reason)
            pending = []
    for channel in pending:
        assert notice is not None
        try:
            send_notice(channel, notice, settings)
            done.append(channel)
        except Exception as exc:  # DeliveryError, a TLS file gone (ConfigError), or anything unexpected
            reasons.append(
                exc.reason
                if isinstance(exc, DeliveryError)
                else f"{channel} notification failed ({type(exc).__name__})"
            )
    now = time.time()
    if not reasons:
        queue.notify_transition(
            item,
            notify_state="sent",
            notified_channels=tuple(done),
            notified_at=now,
            notify_next_at=None,
            notify_error=None,
        )
        log.info("instance %s: worklist notified (%s)", item.sop_instance_uid, ", ".join(done))
        return
    reason = "; ".join(reasons)
    if item.notify_attempts >= settings.max_attempts:
        log.error(
            "instance %s: the worklist notification of a flagged read failed %d times, last: %s; kept as "
            "failed (vigil dicom-queue failed)",
            item.sop_instance_uid,
            item.notify_attempts,
            reason,
        )
        queue.notify_transition(
            item, notify_state="failed", notified_channels=tuple(done), notify_error=reason, notify_next_at=None
        )
        return
    delay = backoff(item.notify_attempts)
    log.warning(
        "instance %s: worklist notification attempt %d failed (%s); retry in %.1f s",
        item.sop_instance_uid,
        item.notify_attempts,
        reason,
        delay,
    )
    queue.notify_transition(
        item, notify_state="pending", notified_channels=tuple(done), notify_error=reason, notify_next_at=now + delay
    )


def send_notice(channel: str, notice: Notice, settings: DicomNodeSettings) -> None:
    """Send ``notice`` on one channel: the ORU^R01 over MLLP (``"hl7"``) or the FHIR Task (``"fhir"``).

    Raises
    ------
    DeliveryError
        The receiver refused it, did not answer, or could not be reached.
    """
    if channel == "hl7":
        host, port, tls = settings.notify_hl7_peer()
        message = oru_r01(
            notice,
            priority=settings.notify_priority,
            sending_facility=settings.notify_hl7_sending_facility,
            receiving_application=settings.notify_hl7_receiving_application,
            receiving_facility=settings.notify_hl7_receiving_facility,
        )
        send_mllp(
            message,
            host,
            port,
            control_id=notice.control_id,
            timeout_s=settings.network_timeout_s,
            tls=tls.context() if tls is not None else None,
        )
        return
    assert settings.notify_fhir_url is not None
    secret = settings.notify_fhir_authorization
    post_fhir_task(
        fhir_task(notice, priority=settings.notify_priority),
        settings.notify_fhir_url,
        timeout_s=settings.network_timeout_s,
        authorization=secret.get_secret_value() if secret else None,
        verify=str(settings.tls_ca) if settings.tls_ca is not None else True,
    )
