"""The DICOM node: Storage SCP + durable queue + workers, started and stopped as one.

``start()`` opens the queue, recovers the leases of this node's previous run (its process is gone: nothing
else may use this node id), starts the workers and then the SCP. ``stop()`` stops accepting associations first,
lets open ones and in-flight work finish for up to ``stop_timeout_s``, and leaves everything unfinished in the
queue for the next start. The STOW-RS route shares :attr:`DicomNode.intake`; the worklist route
:meth:`DicomNode.list_items` (or the queue directly, from another process).
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from models.errors import ConfigError
from serving.dicom_node.durable import remove_quietly
from serving.dicom_node.intake import Intake
from serving.dicom_node.queue import WorkQueue, open_queue
from serving.dicom_node.records import QueueItem
from serving.dicom_node.scp import StorageSCP
from serving.dicom_node.settings import DicomNodeSettings
from serving.dicom_node.worker import WorkerPool
from serving.model_source import ModelHolder
from serving.store.database import Store

__all__ = ["DicomNode"]

log = logging.getLogger(__name__)


class DicomNode:
    """Receive studies over DICOM, second-read them, send the SR on.

    Parameters
    ----------
    settings : DicomNodeSettings
        See :mod:`serving.dicom_node.settings`.
    holder : ModelHolder
        Serves the imaging model (reloads apply to the next instance).
    store : Store
        The audit store; every analysis writes one audit record (route ``dicom:c-store``, client = calling AE).
    queue : WorkQueue or None
        An open queue to use instead of ``settings.resolved_queue_url()`` (the node then does not close it).
    node_id : str or None
        Identity of this node's leases; default ``<hostname>:<ae_title>:<port>``. Two running nodes must never
        share one (a starting node frees the leases of its id).
    rng : random.Random or None
        Back-off jitter source.
    """

    def __init__(
        self,
        settings: DicomNodeSettings,
        holder: ModelHolder,
        store: Store,
        *,
        queue: WorkQueue | None = None,
        node_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.store = store
        self.node_id = node_id or f"{socket.gethostname()}:{settings.ae_title}:{settings.port}"
        self._own_queue = queue is None
        self._queue = queue
        self._rng = rng
        self._intake: Intake | None = None
        self._workers: WorkerPool | None = None
        self._scp: StorageSCP | None = None
        self._lock = threading.Lock()
        self.started_utc: str | None = None

    # ------------------------------------------------------------------------------------ parts
    @property
    def queue(self) -> WorkQueue:
        if self._queue is None:
            self._queue = open_queue(self.settings.resolved_queue_url(), redis_prefix=self.settings.queue_prefix)
        return self._queue

    @property
    def intake(self) -> Intake:
        """Durable write + queue, for the SCP and for STOW-RS (``intake.receive(bytes, ...)``)."""
        if self._intake is None:
            self._intake = Intake(
                self.queue, self.settings.resolved_storage_dir(), max_instance_bytes=self.settings.max_instance_bytes
            )
        return self._intake

    @property
    def port(self) -> int | None:
        """The port the SCP listens on, or None."""
        return self._scp.port if self._scp is not None else None

    @property
    def running(self) -> bool:
        return self.started_utc is not None

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Open the queue, recover this node's leases, start the workers and the SCP (idempotent)."""
        with self._lock:
            if self.running:
                return
            intake = self.intake
            freed = self.queue.release_leases(self.node_id + "/")
            if freed:
                log.info("recovered %d item(s) this node was working on when it last stopped", freed)
            self._workers = WorkerPool(
                self.queue, self.holder, self.store, self.settings, node_id=self.node_id, rng=self._rng
            )
            self._workers.start()
            self._scp = StorageSCP(self.settings, intake, on_received=self._workers.wake)
            try:
                self._scp.start()
            except (OSError, ConfigError):  # port taken, or a TLS file changed since the settings were loaded
                self._workers.stop(0)
                raise
            self.started_utc = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            counts = self.queue.counts()
            log.info(
                "DICOM node %s started: %d worker(s), queue %s (%d waiting to be analysed, %d to be "
                "delivered), destination %s, STOW-RS %s, worklist notifications %s",
                self.node_id,
                self.settings.workers,
                self.queue.kind,
                counts["received"] + counts["analysing"],
                counts["analysed"] + counts["delivering"],
                self.settings.destination or "none",
                self.settings.stow_url or "none",
                self._worklist_targets(),
            )

    def _worklist_targets(self) -> str:
        cfg = self.settings
        targets = [
            f"HL7 v2 MLLP{'+TLS' if cfg.notify_hl7_tls else ''} {cfg.notify_hl7}" if cfg.notify_hl7 else "",
            f"FHIR Task {cfg.notify_fhir_url}" if cfg.notify_fhir_url else "",
        ]
        return ", ".join(t for t in targets if t) or "none"

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop accepting, let in-flight work finish (up to ``timeout_s``, default ``settings.stop_timeout_s``).

        Returns True when every worker finished in time. Unfinished items stay queued for the next start.
        """
        wait = self.settings.stop_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            if not self.running:
                self._close_queue()
                return True
            deadline = time.monotonic() + wait
            if self._scp is not None:
                self._scp.stop(timeout_s=wait)
            done = self._workers.stop(max(0.0, deadline - time.monotonic())) if self._workers else True
            self.started_utc = None
            if done:
                self._close_queue()
            log.info("DICOM node %s stopped", self.node_id)
            return done

    def _close_queue(self) -> None:
        if self._own_queue and self._queue is not None:
            self._queue.close()
            self._queue, self._intake = None, None

    def __enter__(self) -> DicomNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------ queries
    def list_items(self, **filters: Any) -> list[QueueItem]:
        """The worklist query (see :meth:`serving.dicom_node.queue.WorkQueue.list_items`)."""
        return self.queue.list_items(**filters)

    def status(self) -> dict[str, Any]:
        """For the ops routes: whether it listens, where, the queue's counts per state."""
        return {
            "node_id": self.node_id,
            "running": self.running,
            "started_utc": self.started_utc,
            "ae_title": self.settings.ae_title,
            "listening": bool(self._scp and self._scp.listening),
            "port": self.port,
            "queue": self.queue.kind,
            "counts": self.queue.counts(),
            "destination": self.settings.destination,
            "stow_url": self.settings.stow_url,
            "worklist_notifications": self._worklist_targets(),
        }

    def purge(self, older_than: timedelta, *, states: tuple[str, ...] = ("delivered", "not_analysed")) -> int:
        """Delete finished items last changed more than ``older_than`` ago, and their files. Returns how many."""
        removed = self.queue.purge(time.time() - older_than.total_seconds(), states=states)
        for item in removed:
            for path in (item.file_path, item.sr_path, item.sc_path):
                remove_quietly(path, self.settings.resolved_storage_dir())
        return len(removed)
