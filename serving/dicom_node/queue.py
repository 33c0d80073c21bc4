"""The durable work queue of received DICOM instances: the interface and its rules, and the factory of back-ends.

:class:`WorkQueue` holds the rules (the transitions of :mod:`.records`, applied by an atomic read-check-write of
one item); a back-end supplies that atomic update, the query of claimable items and the worklist query.
Open one with :func:`open_queue`: ``sqlite:///path.db`` gives the
:class:`serving.dicom_node.queue_sqlite.SqliteQueue` (the default), ``redis://...`` the
:class:`serving.dicom_node.queue_redis.RedisQueue`.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from models.errors import ConfigError, InputValidationError
from models.labels import IMAGING_FINDINGS
from serving.dicom_node.records import (
    ANALYSE,
    NOTIFY,
    NOTIFY_STATES,
    STATES,
    TERMINAL_STATES,
    EnqueueOutcome,
    NewInstance,
    QueueItem,
    Stage,
    claimed,
    merge_resent,
    notify_claimed,
    notify_released,
    released,
)

__all__ = ["Decide", "WorkQueue", "open_queue"]

log = logging.getLogger(__name__)

Decide = Callable[[QueueItem | None], QueueItem | None]
_CANDIDATES = 8
MAX_LIST = 1000


class WorkQueue(ABC):
    """Received instances and their progress; thread-safe, and shareable between processes.

    Every write failure raises :class:`models.errors.StoreUnavailableError`.
    """

    kind: str = ""

    # ------------------------------------------------------------------------------------ back-end primitives
    @abstractmethod
    def _update(self, sop_instance_uid: str, decide: Decide) -> QueueItem | None:
        """Atomically: read the item, call ``decide(item_or_None)``, write what it returns (None: no write).

        Returns what was written, or None.
        """

    @abstractmethod
    def _due(self, stage: Stage, now: float, limit: int) -> list[str]:
        """Up to ``limit`` SOP Instance UIDs waiting in ``stage`` and due at ``now``, oldest due first."""

    @abstractmethod
    def get(self, sop_instance_uid: str) -> QueueItem | None:
        """The item of one SOP Instance UID, or None."""

    @abstractmethod
    def _select(
        self,
        *,
        since: float | None,
        status: tuple[str, ...],
        finding: str | None,
        flagged_only: bool,
        limit: int,
        callers: tuple[tuple[str, str], ...] | None = None,
        notification: str | None = None,
    ) -> list[QueueItem]:
        """The worklist query (arguments already checked); newest change first; with ``callers``, only items whose
        (source, calling_aet) is one of them; with ``notification``, only items whose ``notify_state`` it is."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Number of items in each state (every state present, zeros included)."""

    @abstractmethod
    def _owned(self, owner_prefix: str) -> list[str]:
        """SOP Instance UIDs of the items leased (for analysis, delivery or notification) to an owner whose id starts
        with ``owner_prefix``."""

    @abstractmethod
    def _terminal_before(self, before: float, states: tuple[str, ...]) -> list[str]:
        """SOP Instance UIDs in one of ``states`` whose last change is older than ``before``."""

    @abstractmethod
    def _delete(self, sop_instance_uid: str, expect_state: str) -> QueueItem | None:
        """Delete the item if it is still in ``expect_state``; return it."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    # ------------------------------------------------------------------------------------ intake
    def enqueue(
        self, instance: NewInstance, *, now: float | None = None
    ) -> tuple[QueueItem, EnqueueOutcome, QueueItem | None]:
        """Queue a received instance, idempotently on its SOP Instance UID.

        Returns ``(item, outcome, previous)``: outcome ``"queued"`` (new), ``"duplicate"`` (already held: nothing
        changes but its duplicate count; the caller deletes the bytes it just wrote), ``"replaced"`` (the held
        item had ended ``not_analysed`` and these bytes differ: queued afresh; the caller deletes the previous
        item's files) or ``"redeliver"`` (the held item's SR was delivered: it waits for delivery again with the
        same SR and SC, not for a second analysis; the caller deletes the bytes it just wrote). See
        :func:`serving.dicom_node.records.merge_resent`.
        """
        stamp = time.time() if now is None else now
        outcome: list[tuple[EnqueueOutcome, QueueItem | None]] = []

        def decide(current: QueueItem | None) -> QueueItem:
            item, what = merge_resent(current, instance, stamp)
            outcome[:] = [(what, current)]
            return item

        written = self._update(instance.sop_instance_uid, decide)
        assert written is not None
        return written, outcome[0][0], outcome[0][1]

    # ------------------------------------------------------------------------------------ workers
    def claim(self, stage: Stage, owner: str, lease_s: float, *, now: float | None = None) -> QueueItem | None:
        """Claim the item of ``stage`` that has waited longest (a new one, a retry that is due, or one whose
        worker's lease ran out); None when nothing is due. For :data:`~.records.NOTIFY` the claim takes the item's
        notification lease only (``notify_lease_owner``), so its delivery may be claimed at the same time."""
        stamp = time.time() if now is None else now

        def take(item: QueueItem | None) -> QueueItem | None:
            if item is None:
                return None
            if stage == NOTIFY:
                return notify_claimed(item, owner, lease_s, stamp)
            return claimed(item, stage, owner, lease_s, stamp)

        for uid in self._due(stage, stamp, _CANDIDATES):
            got = self._update(uid, take)
            if got is not None:
                return got
        return None

    def transition(
        self, item: QueueItem, *, expect_state: str, now: float | None = None, **changes: Any
    ) -> QueueItem | None:
        """Release the lease ``item`` holds and apply ``changes``, if the item is still in ``expect_state`` and
        leased to the same owner (a worker whose lease ran out and was claimed again writes nothing: None)."""
        stamp = time.time() if now is None else now

        def decide(current: QueueItem | None) -> QueueItem | None:
            if current is None or current.state != expect_state or current.lease_owner != item.lease_owner:
                return None
            return released(current, now=stamp, **changes)

        written = self._update(item.sop_instance_uid, decide)
        if written is None:
            log.warning(
                "queue item %s was no longer leased to %s; its %s result was dropped in favour of the current owner",
                item.sop_instance_uid,
                item.lease_owner,
                expect_state,
            )
        return written

    def notify_transition(self, item: QueueItem, *, now: float | None = None, **changes: Any) -> QueueItem | None:
        """Release the notification lease ``item`` holds and apply ``changes`` (``notify_*`` fields), if its
        notification is still ``sending`` under the same owner (else None: another worker took it over)."""
        stamp = time.time() if now is None else now

        def decide(current: QueueItem | None) -> QueueItem | None:
            if (
                current is None
                or current.notify_state != "sending"
                or current.notify_lease_owner != item.notify_lease_owner
            ):
                return None
            return notify_released(current, now=stamp, **changes)

        written = self._update(item.sop_instance_uid, decide)
        if written is None:
            log.warning(
                "queue item %s: its notification was no longer leased to %s; the result was dropped in "
                "favour of the current owner",
                item.sop_instance_uid,
                item.notify_lease_owner,
            )
        return written

    def release_leases(self, owner_prefix: str, *, now: float | None = None) -> int:
        """Make items leased to owners ``owner_prefix*`` claimable at once (a restarted node recovering its own
        work: its previous process is gone), their notifications too. Returns how many items."""
        stamp = time.time() if now is None else now
        count = 0
        for uid in self._owned(owner_prefix):

            def decide(item: QueueItem | None) -> QueueItem | None:
                if item is None:
                    return None
                mine = (item.lease_owner or "").startswith(owner_prefix)
                notifying = (item.notify_lease_owner or "").startswith(owner_prefix)
                if not (mine or notifying):
                    return None
                if mine:
                    item = released(
                        item,
                        now=stamp,
                        state="received" if item.stage()[0] == ANALYSE else "analysed",
                        next_attempt_at=stamp,
                    )
                if notifying:
                    item = notify_released(item, now=stamp, notify_state="pending", notify_next_at=stamp)
                return item

            count += self._update(uid, decide) is not None
        return count

    def requeue_delivery(self, sop_instance_uid: str, *, now: float | None = None) -> QueueItem | None:
        """Send a ``delivery_failed`` item again (an operator's retry): attempts start from zero."""
        stamp = time.time() if now is None else now

        def decide(item: QueueItem | None) -> QueueItem | None:
            if item is None or item.state != "delivery_failed":
                return None
            return released(
                item, now=stamp, state="analysed", needs_delivery=True, delivery_attempts=0, next_attempt_at=stamp
            )

        return self._update(sop_instance_uid, decide)

    def requeue_notify(self, sop_instance_uid: str, *, now: float | None = None) -> QueueItem | None:
        """Send a ``failed`` worklist notification again (an operator's retry): attempts start from zero, and only
        the channels that never acknowledged it are sent to."""
        stamp = time.time() if now is None else now

        def decide(item: QueueItem | None) -> QueueItem | None:
            if item is None or item.notify_state != "failed":
                return None
            return notify_released(item, now=stamp, notify_state="pending", notify_attempts=0, notify_next_at=stamp)

        return self._update(sop_instance_uid, decide)

    def purge(self, before: float, *, states: Iterable[str] = ("delivered", "not_analysed")) -> list[QueueItem]:
        """Delete items in ``states`` last changed before ``before``; returns them so the caller removes their
        files. ``delivery_failed`` is purged only when named (it is kept until someone has looked). An item whose
        worklist notification is not yet sent (pending, sending, or failed and not re-sent) is never purged: a
        flagged study the RIS was not told of stays listed until it is."""
        wanted = tuple(states)
        unknown = [s for s in wanted if s not in TERMINAL_STATES and s != "analysed"]
        if unknown:
            raise InputValidationError("states", f"only finished states can be purged; got {unknown[0]!r}")
        removed = []
        for uid in self._terminal_before(before, wanted):
            item = self.get(uid)
            unsent = item is not None and item.notify_state in ("pending", "sending", "failed")
            if (
                item is not None
                and item.state in wanted
                and not unsent
                and not (item.state == "analysed" and item.needs_delivery)
            ):
                gone = self._delete(uid, item.state)
                if gone is not None:
                    removed.append(gone)
        return removed

    # ------------------------------------------------------------------------------------ worklist
    def list_items(
        self,
        *,
        since: datetime | float | None = None,
        finding: str | None = None,
        status: str | Iterable[str] | None = None,
        flagged_only: bool = False,
        limit: int = 100,
        callers: Iterable[tuple[str, str]] | None = None,
        notification: str | None = None,
    ) -> list[QueueItem]:
        """Items for a worklist, newest change first.

        Parameters
        ----------
        since : datetime or float or None
            Only items whose state changed at or after this time (aware datetime, or epoch seconds): a
            workstation polling with the time of its last poll sees every item that moved since.
        finding : str or None
            Only items flagged for this finding (one of :data:`models.labels.IMAGING_FINDINGS`).
        status : str or iterable of str or None
            Only items in these states (see :data:`serving.dicom_node.records.STATES`).
        flagged_only : bool
            Only items with at least one flagged finding.
        limit : int
            At most this many, in [1, 1000].
        callers : iterable of (str, str) or None
            Only items received from one of these (source, calling_aet) pairs (a per-client worklist); None for
            every item, an empty iterable for none.
        notification : str or None
            Only items whose worklist notification is in this state (one of
            :data:`serving.dicom_node.records.NOTIFY_STATES`), e.g. ``"failed"``.
        """
        if isinstance(since, datetime):
            if since.tzinfo is None:
                raise InputValidationError("since", "since must carry a time zone (e.g. ...Z)")
            since = since.timestamp()
        states = (status,) if isinstance(status, str) else tuple(status or ())
        bad = [s for s in states if s not in STATES]
        if bad:
            raise InputValidationError("status", f"status must be one of {', '.join(STATES)}; got {bad[0][:30]!r}")
        if finding is not None and finding not in IMAGING_FINDINGS:
            raise InputValidationError(
                "finding", f"finding must be one of {', '.join(IMAGING_FINDINGS)}; got {finding[:30]!r}"
            )
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise InputValidationError("limit", f"limit must be an integer in [1, {MAX_LIST}]; got {limit!r:.20}")
        if notification is not None and notification not in NOTIFY_STATES:
            raise InputValidationError(
                "notification",
                f"notification must be one of {', '.join(NOTIFY_STATES)}; got {str(notification)[:30]!r}",
            )
        chosen = None if callers is None else tuple((str(src), str(aet)) for src, aet in callers)
        if chosen == ():
            return []
        return self._select(
            since=since,
            status=states,
            finding=finding,
            flagged_only=flagged_only,
            limit=limit,
            callers=chosen,
            notification=notification,
        )


def open_queue(url: str, *, redis_prefix: str = "vigil:dicom:") -> WorkQueue:
    """Open the queue a URL names: ``sqlite:///path.db`` or ``redis://host:port/db`` (also ``rediss://``)."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path or path == ":memory:":
            raise ConfigError("queue_url must name a SQLite file (an in-memory queue would lose instances)")
        from serving.dicom_node.queue_sqlite import SqliteQueue

        return SqliteQueue(Path(path))
    if url.startswith(("redis://", "rediss://", "unix://")):
        from serving.dicom_node.queue_redis import RedisQueue

        return RedisQueue(url, prefix=redis_prefix)
    raise ConfigError("queue_url must be sqlite:///path.db or redis://host:port/db")
