"""The work queue on both back-ends (SQLite file, Redis under a unique prefix): identity on the SOP Instance UID,
claims and leases, owner-checked transitions, back-off, the worklist query, purge; and the node's settings."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from models.errors import ConfigError, InputValidationError
from serving.dicom_node.addresses import parse_peer
from serving.dicom_node.queue import open_queue
from serving.dicom_node.records import (
    ANALYSE,
    DELIVER,
    NOTIFY,
    STATES,
    NewInstance,
    QueueItem,
    backoff_delay,
    check_uid,
)
from serving.dicom_node.settings import DicomNodeSettings, load_dicom_settings

CR = "1.2.840.10008.5.1.4.1.1.1"


def _instance(n: int, sha: str = "a" * 64, refused: tuple[str, str] | None = None) -> NewInstance:
    return NewInstance(
        sop_instance_uid=f"1.2.3.{n}",
        sop_class_uid=CR,
        study_instance_uid=f"1.2.9.{n % 2}",
        series_instance_uid="1.2.8",
        transfer_syntax="1.2.840.10008.1.2.1",
        calling_aet="MOD",
        source="dicom:c-store",
        file_path=f"/nowhere/{n}.dcm",
        sha256=sha,
        size_bytes=10,
        not_analysed=refused,
    )


@pytest.fixture
def queue(queue_url):
    url, prefix = queue_url
    q = open_queue(url, redis_prefix=prefix or "unused:")
    yield q
    q.close()


def test_enqueue_is_idempotent_on_the_sop_instance_uid(queue):
    item, outcome, previous = queue.enqueue(_instance(1), now=100.0)
    assert (outcome, previous, item.state, item.received_at) == ("queued", None, "received", 100.0)
    again, outcome, previous = queue.enqueue(_instance(1, sha="b" * 64), now=101.0)
    assert outcome == "duplicate" and previous is not None and again.duplicates == 1
    assert again.sha256 == "a" * 64 and again.received_at == 100.0  # the first copy is the one kept
    assert queue.counts() == {**dict.fromkeys(STATES, 0), "received": 1}


def test_a_corrected_resend_of_a_not_analysed_instance_is_queued_again(queue):
    queue.enqueue(_instance(2, refused=("SOPClassUID", "not a radiograph")), now=1.0)
    assert queue.enqueue(_instance(2, refused=("SOPClassUID", "not a radiograph")), now=2.0)[1] == "duplicate"
    claimed = None
    item, outcome, previous = queue.enqueue(_instance(2, sha="c" * 64), now=3.0)
    assert outcome == "replaced" and previous.state == "not_analysed" and item.state == "received"
    assert item.reason is None and item.sha256 == "c" * 64 and item.duplicates == 2
    claimed = queue.claim(ANALYSE, "w", 10.0, now=4.0)
    assert claimed is not None and claimed.sop_instance_uid == "1.2.3.2"


def test_claims_take_the_oldest_due_item_and_a_lapsed_lease_is_claimed_again(queue):
    queue.enqueue(_instance(1), now=10.0)
    queue.enqueue(_instance(2), now=5.0)
    first = queue.claim(ANALYSE, "dead-worker", 30.0, now=20.0)
    assert first.sop_instance_uid == "1.2.3.2" and first.state == "analysing" and first.attempts == 1
    second = queue.claim(ANALYSE, "w2", 30.0, now=21.0)
    assert second.sop_instance_uid == "1.2.3.1"
    assert queue.claim(ANALYSE, "w2", 30.0, now=49.0) is None  # leases still running
    again = queue.claim(ANALYSE, "w3", 30.0, now=50.5)  # dead-worker's lease ran out at 50
    assert again.sop_instance_uid == "1.2.3.2" and again.attempts == 2 and again.lease_owner == "w3"
    # the dead worker coming back cannot overwrite what the new owner does
    assert queue.transition(first, expect_state="analysing", state="analysed", now=51.0) is None
    done = queue.transition(
        again, expect_state="analysing", state="not_analysed", reason_field="PixelData", reason="broken", now=52.0
    )
    assert done.state == "not_analysed" and done.lease_owner is None and done.reason_field == "PixelData"
    assert queue.get("1.2.3.2").reason == "broken"


def _delivered(queue, n: int) -> None:
    """Item ``1.2.3.<n>`` analysed (its SR and SC on disk) and delivered once."""
    queue.enqueue(_instance(n), now=0.0)
    item = queue.claim(ANALYSE, "w", 60.0, now=1.0)
    queue.transition(
        item,
        expect_state="analysing",
        state="analysed",
        needs_delivery=True,
        next_attempt_at=2.0,
        sr_sop_instance_uid="1.2.5.1",
        sr_path="/out/sr/1.dcm",
        sc_sop_instance_uid="1.2.5.2",
        sc_path="/out/sc/1.dcm",
        request_id="dicom-1",
        result={"flagged": False},
        now=2.0,
    )
    sending = queue.claim(DELIVER, "w", 60.0, now=3.0)
    queue.transition(sending, expect_state="delivering", state="delivered", delivered_at=4.0, now=4.0)


def test_a_resend_after_delivery_delivers_the_same_report_again_once(queue):
    _delivered(queue, 5)
    item, outcome, previous = queue.enqueue(_instance(5, sha="d" * 64), now=10.0)
    assert outcome == "redeliver" and previous.state == "delivered"
    assert (item.state, item.needs_delivery, item.delivery_attempts, item.duplicates) == ("analysed", True, 0, 1)
    kept = (
        "sr_sop_instance_uid",
        "sr_path",
        "sc_sop_instance_uid",
        "sc_path",
        "request_id",
        "result",
        "sha256",
        "attempts",
        "analysed_at",
    )
    assert {k: getattr(item, k) for k in kept} == {k: getattr(previous, k) for k in kept}  # same SR, same read
    assert queue.claim(ANALYSE, "w", 60.0, now=11.0) is None  # never a second analysis
    # Re-sent again while the re-delivery waits, then while it is under way: nothing more is queued.
    assert queue.enqueue(_instance(5), now=11.0)[1] == "duplicate"
    sending = queue.claim(DELIVER, "w", 60.0, now=12.0)
    assert sending.sop_instance_uid == "1.2.3.5" and sending.delivery_attempts == 1
    again, outcome, _ = queue.enqueue(_instance(5), now=12.5)
    assert outcome == "duplicate" and again.state == "delivering" and again.duplicates == 3
    assert queue.claim(DELIVER, "w2", 60.0, now=13.0) is None  # one delivery at a time, not two
    done = queue.transition(sending, expect_state="delivering", state="delivered", delivered_at=14.0, now=14.0)
    assert done.state == "delivered" and done.sr_sop_instance_uid == "1.2.5.1"
    assert queue.counts() == {**dict.fromkeys(STATES, 0), "delivered": 1}


def test_a_resend_after_a_failed_delivery_is_a_duplicate(queue):
    """``delivery_failed`` waits for an operator (requeue_delivery); a re-send does not retry it by itself."""
    queue.enqueue(_instance(8), now=0.0)
    item = queue.claim(ANALYSE, "w", 60.0, now=1.0)
    queue.transition(item, expect_state="analysing", state="delivery_failed", sr_path="/out/sr/8.dcm", now=2.0)
    assert queue.enqueue(_instance(8), now=3.0)[1] == "duplicate"
    assert queue.get("1.2.3.8").state == "delivery_failed"


def test_delivery_stage_retry_and_operator_requeue(queue):
    queue.enqueue(_instance(3), now=0.0)
    item = queue.claim(ANALYSE, "w", 60.0, now=1.0)
    queue.transition(
        item,
        expect_state="analysing",
        state="analysed",
        needs_delivery=True,
        next_attempt_at=2.0,
        result={"probabilities": {"effusion": 0.5}},
        flagged=True,
        flagged_findings=("effusion",),
        now=2.0,
    )
    assert queue.claim(DELIVER, "w", 60.0, now=1.5) is None  # not due yet
    sending = queue.claim(DELIVER, "w", 60.0, now=3.0)
    assert sending.state == "delivering" and sending.delivery_attempts == 1
    queue.transition(
        sending, expect_state="delivering", state="analysed", last_error="refused", next_attempt_at=9.0, now=4.0
    )
    assert queue.claim(DELIVER, "w", 60.0, now=8.0) is None
    sending = queue.claim(DELIVER, "w", 60.0, now=9.0)
    assert sending.delivery_attempts == 2 and sending.last_error == "refused"
    failed = queue.transition(sending, expect_state="delivering", state="delivery_failed", now=10.0)
    assert failed.state == "delivery_failed" and failed.stage() == (None, 0.0)
    assert queue.claim(DELIVER, "w", 60.0, now=1e9) is None  # kept, never retried by itself
    again = queue.requeue_delivery("1.2.3.3", now=11.0)
    assert again.state == "analysed" and again.delivery_attempts == 0
    assert queue.claim(DELIVER, "w", 60.0, now=12.0).sop_instance_uid == "1.2.3.3"


def _flagged_pending_notification(queue, n: int):
    """Item ``1.2.3.<n>`` analysed and flagged: waiting both for its SR's delivery and its worklist notification."""
    queue.enqueue(_instance(n), now=0.0)
    item = queue.claim(ANALYSE, "w", 60.0, now=1.0)
    return queue.transition(
        item,
        expect_state="analysing",
        state="analysed",
        needs_delivery=True,
        next_attempt_at=2.0,
        flagged=True,
        flagged_findings=("effusion",),
        sr_path="/out/sr/n.dcm",
        notify_state="pending",
        notify_next_at=2.0,
        now=2.0,
    )


def test_the_notification_has_its_own_stage_beside_the_delivery(queue):
    item = _flagged_pending_notification(queue, 4)
    assert item.stage() == (DELIVER, 2.0) and item.notify_due() == 2.0
    assert queue.claim(NOTIFY, "n", 60.0, now=1.5) is None  # not due yet
    notifying = queue.claim(NOTIFY, "n", 60.0, now=3.0)
    assert (notifying.notify_state, notifying.notify_attempts, notifying.notify_lease_owner) == ("sending", 1, "n")
    # The SR is delivered meanwhile, by another worker: neither lease disturbs the other.
    delivering = queue.claim(DELIVER, "d", 60.0, now=3.5)
    assert delivering is not None and delivering.notify_state == "sending"
    assert queue.claim(NOTIFY, "n2", 60.0, now=4.0) is None  # one notification at a time
    done = queue.transition(delivering, expect_state="delivering", state="delivered", delivered_at=5.0, now=5.0)
    assert done.state == "delivered" and done.notify_state == "sending" and done.notify_lease_owner == "n"
    # One channel acknowledged, the other did not: pending again after back-off, remembering which did.
    retry = queue.notify_transition(
        notifying,
        notify_state="pending",
        notified_channels=("hl7",),
        notify_error="FHIR Task answered HTTP 503",
        notify_next_at=9.0,
        now=6.0,
    )
    assert retry.state == "delivered" and retry.notified_channels == ("hl7",) and retry.notify_lease_owner is None
    assert queue.notify_transition(notifying, notify_state="sent", now=6.5) is None  # its lease was released
    assert queue.claim(NOTIFY, "n", 60.0, now=8.0) is None
    again = queue.claim(NOTIFY, "n", 60.0, now=9.0)
    assert again.notify_attempts == 2 and again.notified_channels == ("hl7",)
    failed = queue.notify_transition(again, notify_state="failed", notify_error="down", notify_next_at=None, now=10.0)
    assert failed.notify_due() is None and queue.claim(NOTIFY, "n", 60.0, now=1e9) is None  # kept for an operator
    assert [i.sop_instance_uid for i in queue.list_items(notification="failed")] == ["1.2.3.4"]
    assert queue.list_items(notification="sent") == []
    assert failed.public()["worklist_notification"] == {
        "state": "failed",
        "attempts": 2,
        "last_error": "down",
        "acknowledged_by": ["hl7"],
        "notified_utc": None,
        "next_attempt_utc": None,
    }
    # An unsent notification keeps its item from purge, whatever the item's own state.
    assert queue.purge(1e9) == [] and queue.get("1.2.3.4") is not None
    requeued = queue.requeue_notify("1.2.3.4", now=11.0)
    assert (requeued.notify_state, requeued.notify_attempts, requeued.notified_channels) == ("pending", 0, ("hl7",))
    assert queue.requeue_notify("1.2.3.4", now=11.5) is None  # not failed any more
    sending = queue.claim(NOTIFY, "n", 60.0, now=12.0)
    sent = queue.notify_transition(
        sending,
        notify_state="sent",
        notified_channels=("hl7", "fhir"),
        notified_at=12.5,
        notify_next_at=None,
        notify_error=None,
        now=12.5,
    )
    assert sent.public()["worklist_notification"]["acknowledged_by"] == ["hl7", "fhir"]
    assert [i.sop_instance_uid for i in queue.purge(1e9)] == ["1.2.3.4"]
    with pytest.raises(InputValidationError, match="notification must be one of"):
        queue.list_items(notification="lost")


def test_a_dead_notifier_is_released_at_restart_and_a_lapsed_lease_claimed_again(queue):
    _flagged_pending_notification(queue, 6)
    queue.claim(NOTIFY, "host:VIGIL:11112/w0/abc", 30.0, now=3.0)
    assert queue.claim(NOTIFY, "other", 30.0, now=32.0) is None
    assert queue.claim(NOTIFY, "other", 30.0, now=33.5).notify_attempts == 2  # the lease ran out at 33
    queue.release_leases("other", now=34.0)  # a restarted node frees its notification lease at once
    item = queue.get("1.2.3.6")
    assert (item.notify_state, item.notify_lease_owner, item.state) == ("pending", None, "analysed")
    assert queue.claim(NOTIFY, "x", 30.0, now=34.0) is not None


def test_a_queue_file_from_before_notifications_is_migrated_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE dicom_queue (sop_instance_uid TEXT PRIMARY KEY, sop_class_uid TEXT, "
        "study_instance_uid TEXT, series_instance_uid TEXT, transfer_syntax TEXT, calling_aet TEXT, "
        "source TEXT, file_path TEXT, sha256 TEXT, size_bytes INTEGER, state TEXT, received_at REAL, "
        "updated_at REAL, next_attempt_at REAL, attempts INTEGER, stage TEXT, due_at REAL)"
    )
    old.execute(
        "INSERT INTO dicom_queue VALUES ('1.2.3.1', ?, NULL, NULL, NULL, 'MOD', 'dicom:c-store', NULL, 'a', "
        "10, 'received', 1.0, 1.0, 1.0, 0, 'analyse', 1.0)",
        (CR,),
    )
    old.commit()
    old.close()
    queue = open_queue(f"sqlite:///{path}")
    try:
        kept = queue.get("1.2.3.1")
        assert kept.state == "received" and kept.notify_state is None and kept.notified_channels == ()
        assert queue.claim(ANALYSE, "w", 60.0, now=2.0).sop_instance_uid == "1.2.3.1"
        assert queue.claim(NOTIFY, "w", 60.0, now=2.0) is None
    finally:
        queue.close()


def test_release_leases_frees_only_this_nodes_items(queue):
    for n in (1, 2):
        queue.enqueue(_instance(n), now=0.0)
    mine = queue.claim(ANALYSE, "host:VIGIL:11112/w0/abc", 3600.0, now=1.0)
    theirs = queue.claim(ANALYSE, "other:VIGIL:11112/w0/def", 3600.0, now=1.0)
    assert queue.release_leases("host:VIGIL:11112/", now=2.0) == 1
    assert queue.get(mine.sop_instance_uid).state == "received"
    assert queue.get(theirs.sop_instance_uid).state == "analysing"
    assert queue.claim(ANALYSE, "x", 60.0, now=3.0).sop_instance_uid == mine.sop_instance_uid


def test_worklist_filters_and_order(queue):
    flags = {1: ("effusion",), 2: ("effusion", "pneumothorax"), 3: (), 4: None}
    for n, found in flags.items():
        queue.enqueue(_instance(n), now=float(n))
        item = queue.claim(ANALYSE, "w", 60.0, now=10.0 + n)
        state = "not_analysed" if found is None else "analysed"
        queue.transition(
            item,
            expect_state="analysing",
            state=state,
            flagged=None if found is None else bool(found),
            flagged_findings=found or (),
            now=20.0 + n,
        )
    uids = lambda items: [i.sop_instance_uid[-1] for i in items]  # noqa: E731
    assert uids(queue.list_items()) == ["4", "3", "2", "1"]
    assert uids(queue.list_items(flagged_only=True)) == ["2", "1"]
    assert uids(queue.list_items(finding="pneumothorax")) == ["2"]
    assert uids(queue.list_items(status="not_analysed")) == ["4"]
    assert uids(queue.list_items(status=["analysed"], since=22.0)) == ["3", "2"]
    assert uids(queue.list_items(since=datetime.fromtimestamp(23.0, UTC), limit=1)) == ["4"]
    public = queue.list_items(finding="effusion")[0].public()
    assert public["flagged_findings"] == ["effusion", "pneumothorax"] and "file_path" not in public
    assert public["updated_utc"] == "1970-01-01T00:00:22.000Z"
    with pytest.raises(InputValidationError, match="finding must be one of"):
        queue.list_items(finding="fracture")
    with pytest.raises(InputValidationError, match="status must be one of"):
        queue.list_items(status="done")
    with pytest.raises(InputValidationError, match="limit must be an integer"):
        queue.list_items(limit=0)
    with pytest.raises(InputValidationError, match="time zone"):
        queue.list_items(since=datetime(2026, 1, 1))


def test_purge_removes_finished_items_only(queue):
    queue.enqueue(_instance(1, refused=("SOPClassUID", "CT")), now=1.0)
    queue.enqueue(_instance(2), now=1.0)
    removed = queue.purge(100.0)
    assert [i.sop_instance_uid for i in removed] == ["1.2.3.1"]
    assert queue.get("1.2.3.1") is None and queue.get("1.2.3.2").state == "received"
    with pytest.raises(InputValidationError, match="only finished states"):
        queue.purge(100.0, states=("received",))


def test_item_round_trips_through_its_fields():
    item = QueueItem(
        sop_instance_uid="1.2",
        sop_class_uid=CR,
        study_instance_uid=None,
        series_instance_uid="1.3",
        transfer_syntax=None,
        calling_aet="MOD",
        source="dicom:c-store",
        file_path=None,
        sha256="",
        size_bytes=0,
        state="analysed",
        received_at=1.5,
        updated_at=2.25,
        next_attempt_at=3.0,
        result={"p": 0.1},
        flagged=False,
        flagged_findings=("a", "b"),
        needs_delivery=True,
        notify_state="pending",
        notify_next_at=4.5,
        notified_channels=("hl7",),
        notify_attempts=2,
    )
    raw = {k: ("" if v is None else str(v)) for k, v in item.to_fields().items()}  # as Redis gives them back
    assert QueueItem.from_fields(raw) == item
    assert QueueItem.from_fields(item.to_fields()) == item


def test_backoff_doubles_is_capped_and_jittered_within_half_to_full():
    rng = random.Random(7)
    for attempt in range(1, 12):
        nominal = min(60.0, 2.0 * 2 ** (attempt - 1))
        draws = [backoff_delay(attempt, 2.0, 60.0, rng) for _ in range(50)]
        assert all(nominal / 2 <= d <= nominal for d in draws)
        assert max(draws) - min(draws) > 0.1 * nominal  # jittered, not in step


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.840.10008.1.2", "1.2.840.10008.1.2"),
        ("999.999.01.23 ", "999.999.01.23"),
        ("1.2\x00", "1.2"),
        ("", None),
        ("1.2.x", None),
        ("../etc", None),
        ("1" * 65, None),
    ],
)
def test_check_uid(value, expected):
    assert check_uid(value) == expected


def test_settings_defaults_are_safe_and_bad_values_name_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_WORK_DIR", str(tmp_path))
    cfg = DicomNodeSettings()
    assert cfg.host == "127.0.0.1" and cfg.calling_aets() == () and cfg.destination_peer() is None
    assert cfg.resolved_queue_url() == f"sqlite:///{tmp_path.resolve() / 'dicom_queue.db'}"
    assert cfg.resolved_storage_dir() == tmp_path.resolve() / "dicom-in"
    monkeypatch.setenv("VIGIL_DICOM_ALLOWED_CALLING_AETS", " MOD1, PACS ,")
    monkeypatch.setenv("VIGIL_DICOM_DESTINATION", "PACS@[::1]:104")
    cfg = load_dicom_settings()
    assert cfg.calling_aets() == ("MOD1", "PACS") and parse_peer(cfg.destination).host == "::1"
    with pytest.raises(ConfigError, match="VIGIL_DICOM_DESTINATION"):
        load_dicom_settings(destination="PACS:104")
    with pytest.raises(ConfigError, match="VIGIL_DICOM_ALLOWED_CALLING_AETS"):
        load_dicom_settings(allowed_calling_aets="TOO-LONG-AE-TITLE-X")
    with pytest.raises(ConfigError, match="VIGIL_DICOM_QUEUE_URL"):
        load_dicom_settings(queue_url="postgresql://x/y")
    with pytest.raises(ConfigError, match="in-memory"):
        open_queue("sqlite:///:memory:")
