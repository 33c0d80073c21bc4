"""Worker threads: claim queued instances, run the second read, deliver the SR, notify the worklist; retry with
back-off.

Each worker loops: claim a due worklist notification, when one is configured; else, when a destination is set, an
item to deliver; else an item to analyse; else wait (``poll_s``, or until :meth:`WorkerPool.wake`). The model is
taken from the :class:`~serving.model_source.ModelHolder` for every item, so a reload applies to the next one.

Failures and what they do:

- the instance is not a decodable chest radiograph -> ``not_analysed`` with the typed error's field and message;
- no model loaded, audit store down, disk error -> back to ``received``, retried after back-off, the attempt not
  counted (the instance is not at fault);
- anything unexpected -> retried after back-off and counted; after ``max_attempts`` -> ``not_analysed``;
- a worker that dies leaves its lease; the item is claimed again when the lease runs out (or at once by the same
  node restarting); an item claimed more than ``max_attempts`` times is ``not_analysed`` (a poison instance);
- delivery fails -> ``analysed`` again with the next attempt after back-off; after ``max_attempts`` ->
  ``delivery_failed`` with the reason, logged at ERROR and listed; never dropped (see
  :meth:`~serving.dicom_node.queue.WorkQueue.requeue_delivery`);
- a worklist notification (HL7 v2 over MLLP and/or FHIR Task, :mod:`.notify`, sent by :mod:`.worker_notify`)
  fails -> ``pending`` again after back-off, the channels that acknowledged it not sent again; after
  ``max_attempts`` -> ``failed``, logged at ERROR and listed; never dropped (see
  :meth:`~serving.dicom_node.queue.WorkQueue.requeue_notify`). Its state is the item's own ``notify_*`` fields, so
  it neither waits for nor holds back the SR's delivery.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from typing import Any

from models.errors import StoreUnavailableError
from serving.dicom_node.analysis import analyse_item
from serving.dicom_node.delivery import DeliveryError, send_instances, send_stow
from serving.dicom_node.durable import owned_path, remove_quietly
from serving.dicom_node.queue import WorkQueue
from serving.dicom_node.records import ANALYSE, DELIVER, NOTIFY, QueueItem, backoff_delay
from serving.dicom_node.settings import DicomNodeSettings
from serving.dicom_node.worker_notify import notify_item
from serving.model_source import ModelHolder, ModelUnavailableError
from serving.store.database import Store

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)


class WorkerPool:
    """``settings.workers`` threads working the queue on behalf of node ``node_id``.

    Parameters
    ----------
    queue, holder, store : WorkQueue, ModelHolder, Store
        The work, the models, the audit store.
    settings : DicomNodeSettings
        Worker count, back-off, leases, destination, heat-map SC, keeping instances.
    node_id : str
        Prefix of every lease owner id of this pool (``<node_id>/w<n>/<random>``).
    rng : random.Random or None
        Jitter source of the back-off (seed it in tests).
    """

    def __init__(
        self,
        queue: WorkQueue,
        holder: ModelHolder,
        store: Store,
        settings: DicomNodeSettings,
        *,
        node_id: str,
        rng: random.Random | None = None,
    ) -> None:
        self.queue = queue
        self.holder = holder
        self.store = store
        self.settings = settings
        self.node_id = node_id
        self.destination = settings.destination_peer()
        self.targets = ", ".join(
            t
            for t in (
                str(self.destination) if self.destination else "",
                f"STOW-RS {settings.stow_url}" if settings.stow_url else "",
            )
            if t
        )
        self.output_dir = settings.resolved_storage_dir()
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker threads (none when ``settings.workers`` is 0)."""
        self._stop.clear()
        run = uuid.uuid4().hex[:8]
        for index in range(self.settings.workers):
            owner = f"{self.node_id}/w{index}/{run}"
            thread = threading.Thread(target=self._loop, args=(owner,), name=f"vigil-dicom-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float) -> bool:
        """Ask every worker to stop after its current item; wait up to ``timeout_s``. True when all stopped.

        A worker still busy after the timeout keeps its lease; the item is claimed again later (nothing lost).
        """
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning(
                "%d DICOM worker(s) still busy after %.0f s; their items will be claimed again", len(alive), timeout_s
            )
        self._threads = [t for t in self._threads if t.is_alive()]
        return not alive

    def wake(self) -> None:
        """Tell idle workers there may be work (called after each received instance)."""
        with self._wake:
            self._wake.notify_all()

    def _loop(self, owner: str) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step(owner)
            except StoreUnavailableError as exc:  # the queue itself is down: wait and try again
                log.error("DICOM queue unavailable: %s", exc)
                busy = False
            except Exception:  # a worker must never die of one item; the item's lease brings it back
                log.exception("DICOM worker %s failed; continuing", owner)
                busy = False
            if not busy and not self._stop.is_set():
                with self._wake:
                    self._wake.wait(self.settings.poll_s)

    # ------------------------------------------------------------------------------------ one step
    def step(self, owner: str) -> bool:
        """Claim and process one item (a due worklist notification first, then a delivery, then an analysis).
        False when nothing was due.

        Notification first: it is the point of flagging (an urgent film brought forward) and takes milliseconds.
        Delivery next: an SR that is ready leaves before the next instance is read, so in a burst the first
        results reach the workstation after about one read, not after the whole backlog has been analysed
        (docs/dicom_node_benchmark.md measured 22 s to the first SR with analysis first).
        """
        if self.settings.notifies:
            item = self.queue.claim(NOTIFY, owner, self.settings.lease_s)
            if item is not None:
                notify_item(
                    item, queue=self.queue, settings=self.settings, output_dir=self.output_dir, backoff=self._delay
                )
                return True
        if self.settings.delivers:
            item = self.queue.claim(DELIVER, owner, self.settings.lease_s)
            if item is not None:
                self._deliver(item)
                return True
        item = self.queue.claim(ANALYSE, owner, self.settings.lease_s)
        if item is not None:
            self._analyse(item)
            return True
        return False

    def _delay(self, attempt: int) -> float:
        with self._rng_lock:
            return backoff_delay(attempt, self.settings.backoff_base_s, self.settings.backoff_max_s, self._rng)

    def _analyse(self, item: QueueItem) -> None:
        cfg = self.settings
        now = time.time()
        if item.attempts > cfg.max_attempts:
            log.error(
                "instance %s: analysis did not finish in %d attempts; not analysed",
                item.sop_instance_uid,
                cfg.max_attempts,
            )
            self._finish_analysis(
                item,
                "not_analysed",
                {"reason_field": "file", "reason": f"the analysis did not finish in {cfg.max_attempts} attempts"},
            )
            return
        try:
            model = self.holder.get("imaging")
            analysis = analyse_item(
                item,
                model,
                self.store,
                self.output_dir,
                send_heatmap_sc=cfg.send_heatmap_sc,
                needs_delivery=cfg.delivers,
                needs_notify=cfg.notifies,
            )
        except (ModelUnavailableError, StoreUnavailableError, OSError) as exc:
            delay = self._delay(item.attempts)
            log.warning("instance %s: analysis postponed %.1f s: %s", item.sop_instance_uid, delay, type(exc).__name__)
            self.queue.transition(
                item,
                expect_state="analysing",
                state="received",
                attempts=item.attempts - 1,
                next_attempt_at=now + delay,
                last_error=f"analysis postponed: {type(exc).__name__}",
            )
            return
        except Exception as exc:  # unexpected: counted, so a poison instance ends as not analysed
            delay = self._delay(item.attempts)
            log.exception(
                "instance %s: analysis failed (attempt %d); retry in %.1f s",
                item.sop_instance_uid,
                item.attempts,
                delay,
            )
            if item.attempts >= cfg.max_attempts:
                self._finish_analysis(
                    item,
                    "not_analysed",
                    {
                        "reason_field": "file",
                        "reason": f"the analysis failed {item.attempts} times ({type(exc).__name__})",
                    },
                )
            else:
                self.queue.transition(
                    item,
                    expect_state="analysing",
                    state="received",
                    next_attempt_at=now + delay,
                    last_error=f"analysis failed: {type(exc).__name__}",
                )
            return
        self._finish_analysis(item, analysis.state, analysis.changes)

    def _finish_analysis(self, item: QueueItem, state: str, changes: dict[str, Any]) -> None:
        now = time.time()
        keep = self.settings.keep_instances
        written = self.queue.transition(
            item,
            expect_state="analysing",
            state=state,
            analysed_at=now,
            next_attempt_at=now,
            last_error=None,
            file_path=item.file_path if keep else None,
            **changes,
        )
        if written is None:  # our lease was taken over: what we wrote is not referenced
            for key in ("sr_path", "sc_path"):
                remove_quietly(changes.get(key), self.output_dir)
            return
        if not keep:
            remove_quietly(item.file_path, self.output_dir)
        log.info("instance %s %s%s", item.sop_instance_uid, state, " (flagged)" if written.flagged else "")

    def _deliver(self, item: QueueItem) -> None:
        cfg = self.settings
        assert cfg.delivers
        paths = [p for p in (owned_path(self.output_dir, item.sr_path), owned_path(self.output_dir, item.sc_path)) if p]
        try:
            if not paths:
                raise DeliveryError("no structured report was kept for this instance")
            if self.destination is not None:
                send_instances(paths, self.destination, calling_aet=cfg.ae_title, timeout_s=cfg.network_timeout_s)
            if cfg.stow_url:
                send_stow(
                    paths,
                    cfg.stow_url,
                    timeout_s=cfg.network_timeout_s,
                    authorization=cfg.stow_authorization.get_secret_value() if cfg.stow_authorization else None,
                    verify=str(cfg.tls_ca) if cfg.tls_ca is not None else True,
                )
        except Exception as exc:  # DeliveryError, or anything unexpected: retried the same way
            reason = exc.reason if isinstance(exc, DeliveryError) else f"delivery failed ({type(exc).__name__})"
            now = time.time()
            if item.delivery_attempts >= cfg.max_attempts:
                log.error(
                    "instance %s: SR delivery to %s failed %d times, last: %s; kept as delivery_failed",
                    item.sop_instance_uid,
                    self.targets,
                    item.delivery_attempts,
                    reason,
                )
                self.queue.transition(
                    item, expect_state="delivering", state="delivery_failed", last_error=reason, next_attempt_at=now
                )
            else:
                delay = self._delay(item.delivery_attempts)
                log.warning(
                    "instance %s: SR delivery attempt %d failed (%s); retry in %.1f s",
                    item.sop_instance_uid,
                    item.delivery_attempts,
                    reason,
                    delay,
                )
                self.queue.transition(
                    item, expect_state="delivering", state="analysed", last_error=reason, next_attempt_at=now + delay
                )
            return
        now = time.time()
        self.queue.transition(
            item, expect_state="delivering", state="delivered", delivered_at=now, next_attempt_at=now, last_error=None
        )
        log.info("instance %s: SR delivered to %s", item.sop_instance_uid, self.targets)
