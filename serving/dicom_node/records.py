"""What the DICOM work queue keeps per received instance, and the state machine over it, as pure Python.

States (``QueueItem.state``)::

    received --claim--> analysing --> analysed --(destination set)--claim--> delivering --> delivered
                                  \\-> not_analysed (reason)                  \\-> delivering again after back-off
                                                                               \\-> delivery_failed (after max)

A flagged read also waits, beside that, for its worklist notification (an HL7 v2 ORU^R01 over MLLP and/or a FHIR
Task, :mod:`.notify`) with its own state, attempts, lease and back-off (``notify_*``): a RIS that is down never
holds back the SR, nor a PACS that is down the notification::

    notify_state: None (nothing to send) | pending --claim--> sending --> sent
                                                                      \\-> pending again after back-off
                                                                      \\-> failed (after max; re-sent by an operator)

A claim sets a lease (``lease_owner``, ``lease_until``). An item whose lease has run out (its worker died) is
claimed again; analysis is cut short as ``not_analysed`` after ``max_attempts`` such claims (a poison instance
must not take the node down in a loop). Every transition is a function from one :class:`QueueItem` to the next,
checked against the state and lease owner the caller expects, so both back-ends (:mod:`.queue_sqlite` SQLite,
:mod:`.queue_redis` Redis) apply the same rules by an atomic read-check-write of one item.

Identity is the SOP Instance UID: a re-sent instance never makes a second analysis. Two re-sends do change the
item: one that ended ``not_analysed`` and comes again with different bytes (a corrected re-send) is replaced and
analysed afresh; one whose SR was ``delivered`` goes back to ``analysed`` to deliver the same SR (and heat-map SC)
again, once, with the same UIDs (a workstation that lost it asks again by re-sending the image). A re-send while
that re-delivery is pending changes nothing but the duplicate count.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = [
    "ANALYSE",
    "DELIVER",
    "NOTIFY",
    "NOTIFY_STATES",
    "STATES",
    "TERMINAL_STATES",
    "NewInstance",
    "QueueItem",
    "Stage",
    "backoff_delay",
    "check_uid",
    "iso",
]

State = Literal["received", "analysing", "analysed", "not_analysed", "delivering", "delivered", "delivery_failed"]
STATES: Final[tuple[str, ...]] = (
    "received",
    "analysing",
    "analysed",
    "not_analysed",
    "delivering",
    "delivered",
    "delivery_failed",
)
#: States no worker will move an item out of by itself.
TERMINAL_STATES: Final = frozenset({"not_analysed", "delivered", "delivery_failed"})
Stage = Literal["analyse", "deliver", "notify"]
ANALYSE: Final[Stage] = "analyse"
DELIVER: Final[Stage] = "deliver"
#: The worklist notification's stage: an item waits in it beside (not instead of) the analyse/deliver stage.
NOTIFY: Final[Stage] = "notify"
NOTIFY_STATES: Final[tuple[str, ...]] = ("pending", "sending", "sent", "failed")
_UID_RE = re.compile(r"[0-9][0-9.]{0,63}")


def check_uid(value: object) -> str | None:
    """``value`` as a UID string when it looks like one (digits and dots, 1-64 characters), else None.

    Deliberately more lenient than PS3.5 (real archives hold UIDs with leading zeros), but never lets anything
    that is not digits and dots become a key or reach a log line.
    """
    text = str(value or "").strip().rstrip("\x00")
    return text if _UID_RE.fullmatch(text) else None


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC with milliseconds and ``Z``; None stays None."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, with "equal jitter".

    ``d = min(max_s, base_s * 2 ** (attempt - 1))``, then a uniform draw in ``[d / 2, d]``: never less than half
    the nominal delay (so retries do back off) and spread so that many failures do not retry in step.
    """
    nominal = min(max_s, base_s * 2 ** max(0, attempt - 1))
    draw = (rng or random).random()
    return nominal / 2 + draw * nominal / 2


@dataclass(frozen=True)
class NewInstance:
    """An instance just written to disk (or recorded without its bytes), before it is queued."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    transfer_syntax: str | None
    calling_aet: str
    source: str  # "dicom:c-store" or "dicomweb:stow-rs"
    file_path: str | None  # None when the bytes were not kept (an instance that is not analysed)
    sha256: str
    size_bytes: int
    not_analysed: tuple[str, str] | None = None  # (field, message) when refused before queueing


@dataclass(frozen=True)
class QueueItem:
    """One received instance in the work queue. Times are epoch seconds (UTC)."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    transfer_syntax: str | None
    calling_aet: str
    source: str
    file_path: str | None
    sha256: str
    size_bytes: int
    state: str
    received_at: float
    updated_at: float
    next_attempt_at: float
    attempts: int = 0  # analysis claims
    delivery_attempts: int = 0
    lease_owner: str | None = None
    lease_until: float | None = None
    reason_field: str | None = None  # not_analysed: the DICOM keyword (or "file") at fault
    reason: str | None = None
    last_error: str | None = None  # the latest delivery (or retried analysis) failure
    request_id: str | None = None  # of the audit record of the analysis
    result: dict[str, Any] | None = None
    flagged: bool | None = None
    flagged_findings: tuple[str, ...] = ()
    model_version: str | None = None
    needs_delivery: bool = False
    sr_sop_instance_uid: str | None = None
    sr_series_instance_uid: str | None = None
    sr_study_instance_uid: str | None = None
    sr_path: str | None = None
    sc_sop_instance_uid: str | None = None
    sc_path: str | None = None
    duplicates: int = 0
    analysed_at: float | None = None
    delivered_at: float | None = None
    notify_state: str | None = None  # None: nothing to notify; else one of NOTIFY_STATES
    notify_attempts: int = 0
    notify_next_at: float | None = None
    notify_lease_owner: str | None = None
    notify_lease_until: float | None = None
    notify_error: str | None = None  # the latest notification failure
    notified_channels: tuple[str, ...] = ()  # channels that acknowledged ("hl7", "fhir"): not sent again on retry
    notified_at: float | None = None

    # ------------------------------------------------------------------------------------ scheduling
    def stage(self) -> tuple[Stage | None, float]:
        """The work stage this item waits in and when it becomes claimable (``(None, 0)`` when it waits for none)."""
        if self.state == "received":
            return ANALYSE, self.next_attempt_at
        if self.state == "analysing":
            return ANALYSE, self.lease_until or 0.0
        if self.state == "analysed" and self.needs_delivery:
            return DELIVER, self.next_attempt_at
        if self.state == "delivering":
            return DELIVER, self.lease_until or 0.0
        return None, 0.0

    def notify_due(self) -> float | None:
        """When the worklist notification becomes claimable (the retry time, or the end of the lease of the worker
        sending it); None when none waits."""
        if self.notify_state == "pending":
            return self.notify_next_at or 0.0
        if self.notify_state == "sending":
            return self.notify_lease_until or 0.0
        return None

    def public(self) -> dict[str, Any]:
        """JSON-ready view for APIs and logs of the worklist: UIDs, state, reason, result, SR UIDs, times.

        No file paths, no hashes of the bytes and nothing from the patient module.
        """
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "sop_class_uid": self.sop_class_uid,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "transfer_syntax": self.transfer_syntax,
            "calling_aet": self.calling_aet,
            "source": self.source,
            "state": self.state,
            "attempts": self.attempts,
            "delivery_attempts": self.delivery_attempts,
            "not_analysed_reason": (
                {"field": self.reason_field, "message": self.reason} if self.state == "not_analysed" else None
            ),
            "last_error": self.last_error,
            "flagged": self.flagged,
            "flagged_findings": list(self.flagged_findings),
            "model_version": self.model_version,
            "result": self.result,
            "request_id": self.request_id,
            "structured_report": (
                {
                    "sop_instance_uid": self.sr_sop_instance_uid,
                    "series_instance_uid": self.sr_series_instance_uid,
                    "study_instance_uid": self.sr_study_instance_uid,
                }
                if self.sr_sop_instance_uid
                else None
            ),
            "heatmap_sop_instance_uid": self.sc_sop_instance_uid,
            "received_utc": iso(self.received_at),
            "analysed_utc": iso(self.analysed_at),
            "delivered_utc": iso(self.delivered_at),
            "updated_utc": iso(self.updated_at),
            "next_attempt_utc": iso(self.next_attempt_at) if self.stage()[0] else None,
            "duplicates": self.duplicates,
            "worklist_notification": (
                {
                    "state": self.notify_state,
                    "attempts": self.notify_attempts,
                    "last_error": self.notify_error,
                    "acknowledged_by": list(self.notified_channels),
                    "notified_utc": iso(self.notified_at),
                    "next_attempt_utc": iso(self.notify_next_at) if self.notify_state == "pending" else None,
                }
                if self.notify_state
                else None
            ),
        }

    # ------------------------------------------------------------------------------------ (de)serialisation
    def to_fields(self) -> dict[str, Any]:
        """Flat column values: the result as JSON text, findings comma-wrapped (``",a,b,"``), bools as 0/1."""
        out = dataclasses.asdict(self)
        out["result"] = None if self.result is None else json.dumps(self.result, sort_keys=True, allow_nan=False)
        out["flagged_findings"] = "," + ",".join(self.flagged_findings) + "," if self.flagged_findings else ""
        out["notified_channels"] = ",".join(self.notified_channels)
        out["flagged"] = None if self.flagged is None else int(self.flagged)
        out["needs_delivery"] = int(self.needs_delivery)
        return out

    @classmethod
    def from_fields(cls, row: dict[str, Any]) -> QueueItem:
        """The inverse of :meth:`to_fields` (values may arrive as strings, as from Redis)."""
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name, kind in kinds.items():
            raw = row.get(name)
            if raw is None or (raw == "" and name not in ("sha256", "calling_aet", "source")):
                values[name] = None
            elif name == "result":
                values[name] = json.loads(raw)
            elif name in ("flagged_findings", "notified_channels"):
                values[name] = tuple(f for f in str(raw).split(",") if f)
            elif name in ("flagged", "needs_delivery"):
                values[name] = bool(int(raw))
            elif "int" in str(kind):
                values[name] = int(raw)
            elif "float" in str(kind):
                values[name] = float(raw)
            else:
                values[name] = str(raw)
        values["flagged_findings"] = values["flagged_findings"] or ()
        values["notified_channels"] = values["notified_channels"] or ()
        values["needs_delivery"] = bool(values["needs_delivery"])
        for name in ("attempts", "delivery_attempts", "duplicates", "notify_attempts"):
            values[name] = values[name] or 0
        return cls(**values)


# ---------------------------------------------------------------------------------------------- transitions
def new_item(instance: NewInstance, now: float) -> QueueItem:
    """The queue item of a newly received instance (``not_analysed`` at once when it was refused on receipt)."""
    refused = instance.not_analysed
    return QueueItem(
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        study_instance_uid=instance.study_instance_uid,
        series_instance_uid=instance.series_instance_uid,
        transfer_syntax=instance.transfer_syntax,
        calling_aet=instance.calling_aet,
        source=instance.source,
        file_path=instance.file_path,
        sha256=instance.sha256,
        size_bytes=instance.size_bytes,
        state="not_analysed" if refused else "received",
        received_at=now,
        updated_at=now,
        next_attempt_at=now,
        reason_field=refused[0] if refused else None,
        reason=refused[1] if refused else None,
        analysed_at=now if refused else None,
    )


EnqueueOutcome = Literal["queued", "duplicate", "replaced", "redeliver"]


def merge_resent(current: QueueItem | None, instance: NewInstance, now: float) -> tuple[QueueItem, EnqueueOutcome]:
    """What receiving ``instance`` does to the item already held for its SOP Instance UID (if any).

    ``"queued"``: a new item. ``"replaced"``: the held item ended ``not_analysed`` and these bytes differ (a
    corrected re-send), queued afresh. ``"redeliver"``: the held item's SR was delivered; it waits for delivery
    again (attempts from zero), keeping its result, SR and SC and their UIDs: the model is not run again. A held
    item in any other state (waiting, being analysed, re-delivery pending, ``delivery_failed``) is a
    ``"duplicate"``: only its duplicate count changes.
    """
    if current is None:
        return new_item(instance, now), "queued"
    corrected = current.state == "not_analysed" and instance.not_analysed is None and instance.sha256 != current.sha256
    if corrected:
        fresh = new_item(instance, now)
        return dataclasses.replace(fresh, duplicates=current.duplicates + 1), "replaced"
    if current.state == "delivered" and current.sr_path:
        return dataclasses.replace(
            current,
            state="analysed",
            needs_delivery=True,
            delivery_attempts=0,
            next_attempt_at=now,
            last_error=None,
            duplicates=current.duplicates + 1,
            updated_at=now,
        ), "redeliver"
    return dataclasses.replace(current, duplicates=current.duplicates + 1, updated_at=now), "duplicate"


def claimed(item: QueueItem, stage: Stage, owner: str, lease_s: float, now: float) -> QueueItem | None:
    """``item`` claimed by ``owner`` for ``stage`` when it is claimable now, else None."""
    waits_in, due = item.stage()
    if waits_in != stage or due > now:
        return None
    if stage == ANALYSE:
        return dataclasses.replace(
            item,
            state="analysing",
            attempts=item.attempts + 1,
            lease_owner=owner,
            lease_until=now + lease_s,
            updated_at=now,
        )
    return dataclasses.replace(
        item,
        state="delivering",
        delivery_attempts=item.delivery_attempts + 1,
        lease_owner=owner,
        lease_until=now + lease_s,
        updated_at=now,
    )


def released(item: QueueItem, *, now: float, **changes: Any) -> QueueItem:
    """``item`` with its lease dropped and ``changes`` applied."""
    return dataclasses.replace(item, lease_owner=None, lease_until=None, updated_at=now, **changes)


def notify_claimed(item: QueueItem, owner: str, lease_s: float, now: float) -> QueueItem | None:
    """``item``'s worklist notification claimed by ``owner`` when it is due now, else None (the item's own
    analyse/deliver lease is untouched: a notification and a delivery of one item may run at once)."""
    due = item.notify_due()
    if due is None or due > now:
        return None
    return dataclasses.replace(
        item,
        notify_state="sending",
        notify_attempts=item.notify_attempts + 1,
        notify_lease_owner=owner,
        notify_lease_until=now + lease_s,
        updated_at=now,
    )


def notify_released(item: QueueItem, *, now: float, **changes: Any) -> QueueItem:
    """``item`` with its notification lease dropped and ``changes`` (``notify_*`` fields) applied."""
    return dataclasses.replace(item, notify_lease_owner=None, notify_lease_until=None, updated_at=now, **changes)
