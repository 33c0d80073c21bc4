"""Outcomes in the store (serving.store.outcomes): checked against the audit trail in the transaction that writes
them, one per prediction, append-only, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from models.errors import InputValidationError, OutcomeConflictError
from models.outcomes import validate_outcome
from serving.store.database import Store
from serving.store.records import AuditRecord


def _prediction(store: Store, request_id: str, output: dict, *, status: int = 200, n: int = 1) -> list[int]:
    """Audit ``n`` predictions of ``request_id`` answering ``output``; their seqs."""
    rows = store.write_audits(
        [
            AuditRecord(
                request_id=request_id,
                time_utc="2026-12-07T10:00:00.000Z",
                client="k",
                route="/v1/triage",
                model_name="vigil-triage",
                model_version="1",
                model_sha256="0" * 64,
                input_sha256="1" * 64,
                output=output,
                status=status,
            )
            for _ in range(n)
        ]
    )
    return [row.seq for row in rows]  # type: ignore[misc]


TRIAGE_OUT = {"acuity": {"level": 3}}
IMAGING_OUT = {"findings": [], "flagged": False}


def _outcome(**link):
    return validate_outcome({**link, "observed_utc": "2026-12-07T14:00:00Z", "triage": {"admitted": True}})


def test_an_outcome_is_stored_and_read_back_without_touching_the_audit(store):
    (seq,) = _prediction(store, "r1", TRIAGE_OUT)
    before = store.read_audit()
    (stored,) = store.record_outcomes([_outcome(audit_id=seq)], "client-a")
    assert not isinstance(stored, Exception)
    assert (stored.audit_id, stored.request_id, stored.task, stored.client) == (seq, "r1", "triage", "client-a")
    assert store.read_outcomes() == [stored]
    assert store.read_audit() == before and store.verify_audit_chain() == (True, None)


def test_each_link_problem_is_its_own_error_and_the_rest_are_stored(store):
    (single,) = _prediction(store, "single", TRIAGE_OUT)
    _prediction(store, "batch", TRIAGE_OUT, n=3)
    (refused,) = _prediction(store, "refused", {"detail": "invalid"}, status=422)
    (imaging,) = _prediction(store, "img", IMAGING_OUT)
    early = validate_outcome({"audit_id": single, "observed_utc": "2026-12-07T09:59:59Z", "triage": {"admitted": True}})
    results = store.record_outcomes(
        [
            _outcome(audit_id=999),
            _outcome(request_id="nobody"),
            _outcome(request_id="batch"),
            _outcome(audit_id=refused),
            _outcome(audit_id=imaging),
            early,
            _outcome(request_id="single"),
            _outcome(audit_id=single),
        ],
        "c",
    )
    errors = [(r.field, type(r).__name__) if isinstance(r, Exception) else "stored" for r in results]
    assert errors == [
        ("audit_id", "InputValidationError"),
        ("request_id", "InputValidationError"),
        ("request_id", "InputValidationError"),
        ("audit_id", "InputValidationError"),
        ("audit_id", "InputValidationError"),
        ("observed_utc", "InputValidationError"),
        "stored",
        ("audit_id", "OutcomeConflictError"),  # the same prediction, earlier in this batch
    ]
    messages = [str(r) for r in results]
    assert "no prediction has audit_id 999" in messages[0]
    assert "made 3 predictions (a batch)" in messages[2] and "audit_id" in messages[2]
    assert "was not answered with a prediction (status 422)" in messages[3]
    assert "is a imaging prediction; this outcome is a triage outcome" in messages[4]
    assert "before its prediction was made" in messages[5]
    assert [o.audit_id for o in store.read_outcomes()] == [single]


def test_a_second_outcome_for_a_prediction_is_a_conflict_and_the_first_is_kept(store):
    (seq,) = _prediction(store, "r1", TRIAGE_OUT)
    (first,) = store.record_outcomes([_outcome(audit_id=seq)], "a")
    second = validate_outcome({"audit_id": seq, "observed_utc": "2026-12-08T00:00:00Z", "triage": {"admitted": False}})
    (again,) = store.record_outcomes([second], "b")
    assert isinstance(again, OutcomeConflictError) and f"outcome_id {first.outcome_id}" in str(again)
    assert [o.values for o in store.read_outcomes()] == [{"admitted": True}]


def test_concurrent_writers_store_one_outcome_per_prediction(store):
    """Eight threads race to feed back the same outcome: the store's lock makes the duplicate check and the insert
    one step, so exactly one wins and seven get a conflict (never a database error)."""
    (seq,) = _prediction(store, "r1", TRIAGE_OUT)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: store.record_outcomes([_outcome(audit_id=seq)], "c")[0], range(8)))
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, OutcomeConflictError) for r in results if isinstance(r, Exception))
    assert len(store.read_outcomes()) == 1


def test_the_outcome_table_refuses_update_and_delete(store, store_url):
    (seq,) = _prediction(store, "r1", TRIAGE_OUT)
    store.record_outcomes([_outcome(audit_id=seq)], "c")
    engine = sa.create_engine(store_url)
    try:
        for statement in ("UPDATE vigil_outcomes SET client = 'x'", "DELETE FROM vigil_outcomes"):
            with pytest.raises(sa.exc.DatabaseError, match="vigil_outcomes is append-only"):
                with engine.begin() as conn:
                    conn.execute(sa.text(statement))
    finally:
        engine.dispose()
    assert len(store.read_outcomes()) == 1


@pytest.mark.parametrize(("kwargs", "field"), [({"limit": 0}, "limit"), ({"since_id": -1}, "since_id")])
def test_read_outcomes_checks_its_arguments(store, kwargs, field):
    with pytest.raises(InputValidationError) as caught:
        store.read_outcomes(**kwargs)
    assert caught.value.field == field


def _read_of(uid: str) -> dict:
    return {"findings": [], "flagged": False, "source": {"sop_instance_uid": uid}}


def _imaging(**link):
    return validate_outcome({**link, "observed_utc": "2026-12-07T14:00:00Z", "imaging": {"findings": {"effusion": 1}}})


def test_a_radiologists_read_finds_its_second_read_by_the_images_uid(store):
    (once,) = _prediction(store, "a", _read_of("1.2.3.1"))
    _prediction(store, "b", _read_of("1.2.3.2"))
    _prediction(store, "c", _read_of("1.2.3.2"))  # the same instance read again (a resend)
    _prediction(store, "d", _read_of("1.2.3.3"), status=422)  # refused: not a read, not indexed
    _prediction(store, "e", {**TRIAGE_OUT, "source": {"sop_instance_uid": "1.2.3.4"}})  # not a second read
    results = store.record_outcomes(
        [_imaging(sop_instance_uid=u) for u in ("1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.4", "1.2.3.9")], "pacs"
    )
    assert not isinstance(results[0], Exception) and results[0].audit_id == once
    assert "was read 2 times (audit_ids 2, 3)" in str(results[1]) and "audit_id" in str(results[1])
    assert all("no second read of the instance" in str(r) for r in results[2:])
    assert all(r.field == "sop_instance_uid" for r in results[1:])
    (again,) = store.record_outcomes([_imaging(audit_id=once)], "pacs")
    assert isinstance(again, OutcomeConflictError)  # the same prediction, whichever link named it


def test_the_instance_index_refuses_update_and_delete(store, store_url):
    _prediction(store, "a", _read_of("1.2.3.1"))
    engine = sa.create_engine(store_url)
    try:
        for statement in (
            "UPDATE vigil_audit_instances SET sop_instance_uid = '9'",
            "DELETE FROM vigil_audit_instances",
        ):
            with pytest.raises(sa.exc.DatabaseError, match="vigil_audit_instances is append-only"):
                with engine.begin() as conn:
                    conn.execute(sa.text(statement))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT seq, sop_instance_uid FROM vigil_audit_instances")).all() == [
                (1, "1.2.3.1")
            ]
    finally:
        engine.dispose()
