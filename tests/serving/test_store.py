"""The key and audit store, on SQLite (a temporary file) and PostgreSQL (a throw-away schema on 127.0.0.1:5432).

PostgreSQL tests are skipped, with the reason, when no server answers there; ``VIGIL_TEST_PG_URL`` points them at
another one. Each PostgreSQL test gets a fresh schema ``vigil_test_<uuid>`` on the connection's search_path.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from models.errors import ConfigError, InputValidationError, StoreUnavailableError
from serving.store.database import Store
from serving.store.records import GENESIS_HASH, SCOPES, AuditRecord, audit_row_hash, split_key

WELL_FORMED_KEY = "vgl_" + "A" * 12 + "_" + "B" * 43


@pytest.fixture
def raw(store_url: str) -> Iterator[sa.Engine]:
    """A plain engine on the same database, for what the API must not do (read secrets, rewrite the audit)."""
    engine = sa.create_engine(store_url)
    yield engine
    engine.dispose()


def _record(i: int = 0, **changes: object) -> AuditRecord:
    base = AuditRecord(
        request_id=f"req-{i}",
        time_utc="2025-03-01T10:00:00.000Z",
        client="Kx7Qm2Lp9Rt4",
        route="/v1/triage",
        model_name="vigil-triage",
        model_version="3",
        model_sha256="a" * 64,
        input_sha256=hashlib.sha256(str(i).encode()).hexdigest(),
        output={"acuity": {"level": 2, "p": [0.1, 0.7, 0.2]}, "note": "décision"},
        status=200,
    )
    return replace(base, **changes)


def _write_many(url: str, n: int, tag: str, ready: Any = None, go: Any = None) -> None:
    """Worker of the threads and of the second process: ``n`` audit writes through its own store.

    With ``ready``/``go`` (multiprocessing events) it connects first, says so, and starts writing on the signal,
    so that the writers of both processes overlap.
    """
    s = Store(url)
    try:
        if ready is not None and go is not None:
            s.ping()
            ready.set()
            if not go.wait(timeout=30):
                raise TimeoutError("no start signal")
        for i in range(n):
            s.write_audit(_record(i, request_id=f"{tag}-{i}"))
    finally:
        s.dispose()


# ---------------------------------------------------------------------------------------------- keys
def test_create_key_returns_a_key_that_authenticates(store: Store) -> None:
    info, key = store.create_key("ward-7", ["imaging", "triage", "triage"])
    assert split_key(key) is not None and key.startswith(f"vgl_{info.key_id}_")
    assert info.scopes == ("triage", "imaging") and info.client == "ward-7" and info.revoked_utc is None
    assert info.created_utc.endswith("Z")
    assert store.authenticate(key) == info
    other, other_key = store.create_key("ward-8", ["admin"])
    assert other_key != key and other.key_id != info.key_id
    assert store.list_keys() == [info, other] or store.list_keys() == [other, info]
    assert store.authenticate(other_key) == other


def test_revoked_key_fails(store: Store) -> None:
    info, key = store.create_key("ward-7", ["triage"])
    assert store.revoke_key(info.key_id) is True
    assert store.authenticate(key) is None
    assert store.revoke_key(info.key_id) is False, "already revoked"
    assert store.revoke_key("NoSuchKeyId1") is False
    assert store.revoke_key("short") is False
    (listed,) = store.list_keys()
    assert listed.key_id == info.key_id and listed.revoked_utc is not None and listed.revoked_utc.endswith("Z")


def test_tampered_or_malformed_key_fails(store: Store) -> None:
    info, key = store.create_key("ward-7", ["triage"])
    _other, other_key = store.create_key("ward-8", ["triage"])
    last = key[-1]
    assert store.authenticate(key[:-1] + ("A" if last != "A" else "B")) is None
    # the right key id with another key's secret
    assert store.authenticate(f"vgl_{info.key_id}_{split_key(other_key)[1]}") is None  # type: ignore[index]
    for bad in ("", key[:-1], key + "x", key.upper(), key.replace("vgl_", "vgx_"), f"Bearer {key}", " " + key):
        assert store.authenticate(bad) is None, bad
    assert store.authenticate(key) == info


def test_only_the_key_hash_is_stored(store: Store, raw: sa.Engine) -> None:
    _info, key = store.create_key("ward-7", ["triage"])
    secret = split_key(key)[1]  # type: ignore[index]
    with raw.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text("SELECT * FROM vigil_api_keys"))]
    stored = " ".join(str(v) for row in rows for v in row)
    assert key not in stored and secret not in stored
    assert hashlib.sha256(key.encode()).hexdigest() in stored


@pytest.mark.parametrize(
    ("client", "scopes", "field"),
    [
        ("", ["triage"], "client"),
        ("x" * 65, ["triage"], "client"),
        ("ward\n7", ["triage"], "client"),
        ("ward\x00", ["triage"], "client"),
        ("ward-7", ["triage", "root"], "scopes"),
        ("ward-7", [], "scopes"),
        ("ward-7", "triage", "scopes"),
    ],
)
def test_create_key_refuses_bad_client_or_scopes(store: Store, client: str, scopes: list[str], field: str) -> None:
    with pytest.raises(InputValidationError, match=f"'{field}'") as caught:
        store.create_key(client, scopes)
    assert caught.value.field == field
    assert store.list_keys() == []


def test_scopes_constant() -> None:
    assert SCOPES == ("triage", "imaging", "outcomes", "admin")


# ---------------------------------------------------------------------------------------------- audit
def test_audit_write_read_and_chain(store: Store) -> None:
    assert store.verify_audit_chain() == (True, None)
    written = [store.write_audit(_record(i)) for i in range(5)]
    assert [r.seq for r in written] == [1, 2, 3, 4, 5]
    prev = GENESIS_HASH
    for r in written:
        assert r.prev_hash == prev
        # oracle: the documented recipe, recomputed here without the store's code
        body = {k: v for k, v in vars(r).items() if k not in ("prev_hash", "row_hash")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert r.row_hash == hashlib.sha256((prev + canonical).encode()).hexdigest() == audit_row_hash(prev, r)
        prev = r.row_hash
    assert store.read_audit() == written
    assert store.read_audit(limit=2) == written[:2]
    assert store.read_audit(since_seq=3) == written[3:]
    assert store.read_audit(since_seq=5) == []
    assert store.verify_audit_chain() == (True, None)


def test_write_audits_appends_a_batch_atomically(store: Store) -> None:
    first = store.write_audit(_record(0))
    batch = store.write_audits([_record(i) for i in range(1, 4)])
    assert [r.seq for r in batch] == [2, 3, 4]
    assert batch[0].prev_hash == first.row_hash
    assert store.read_audit() == [first, *batch]
    assert store.write_audits([]) == []
    with pytest.raises(InputValidationError, match="'status'"):
        store.write_audits([_record(5), _record(6, status=1000)])
    assert len(store.read_audit()) == 4, "nothing of a refused batch is written"
    assert store.verify_audit_chain() == (True, None)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"time_utc": "2025-03-01T10:00:00+01:00"}, "time_utc"),
        ({"time_utc": "yesterday"}, "time_utc"),
        ({"model_sha256": "ABC"}, "model_sha256"),
        ({"input_sha256": "A" * 64}, "input_sha256"),
        ({"status": 42}, "status"),
        ({"status": True}, "status"),
        ({"output": {"p": float("nan")}}, "output"),
        ({"output": {"when": object()}}, "output"),
        ({"output": [1, 2]}, "output"),
        ({"client": ""}, "client"),
        ({"route": "/v1/triage\r\nX-Evil: 1"}, "route"),
        ({"seq": 7}, "seq"),
    ],
)
def test_write_audit_refuses_bad_records(store: Store, changes: dict[str, object], field: str) -> None:
    with pytest.raises(InputValidationError) as caught:
        store.write_audit(_record(**changes))
    assert caught.value.field == field
    assert store.read_audit() == []


def test_read_audit_refuses_bad_paging(store: Store) -> None:
    with pytest.raises(InputValidationError, match="'limit'"):
        store.read_audit(limit=0)
    with pytest.raises(InputValidationError, match="'since_seq'"):
        store.read_audit(since_seq=-1)


def test_database_refuses_update_and_delete_of_the_audit(store: Store, raw: sa.Engine) -> None:
    store.write_audit(_record(1))
    store.create_schema()  # idempotent: the triggers are still there, the row too
    statements = ["UPDATE vigil_audit SET status = 500 WHERE seq = 1", "DELETE FROM vigil_audit WHERE seq = 1"]
    if store.kind == "PostgreSQL":
        statements.append("TRUNCATE vigil_audit")
    for statement in statements:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), raw.begin() as conn:
            conn.execute(sa.text(statement))
    assert [r.status for r in store.read_audit()] == [200]
    assert store.verify_audit_chain() == (True, None)


@pytest.mark.parametrize(
    ("tamper", "bad_seq"),
    [
        ('UPDATE vigil_audit SET output_json = \'{"acuity":{"level":5}}\' WHERE seq = 3', 3),
        ("UPDATE vigil_audit SET status = 500 WHERE seq = 4", 4),
        ("UPDATE vigil_audit SET output_json = 'not json' WHERE seq = 2", 2),
        ("DELETE FROM vigil_audit WHERE seq = 2", 2),
        ("DELETE FROM vigil_audit WHERE seq = 1", 1),
    ],
)
def test_broken_chain_is_detected(store: Store, raw: sa.Engine, tamper: str, bad_seq: int) -> None:
    for i in range(5):
        store.write_audit(_record(i))
    on_table = " ON vigil_audit" if store.kind == "PostgreSQL" else ""
    with raw.begin() as conn:  # an administrator with DDL rights can do this; the chain still tells
        conn.execute(sa.text(f"DROP TRIGGER vigil_audit_no_update{on_table}"))
        conn.execute(sa.text(f"DROP TRIGGER vigil_audit_no_delete{on_table}"))
        conn.exec_driver_sql(tamper)  # not sa.text: the JSON's colons are not bind parameters
    assert store.verify_audit_chain() == (False, bad_seq)


def test_concurrent_threads_serialise_the_chain(store: Store, store_url: str) -> None:
    threads = [threading.Thread(target=_write_many, args=(store_url, 50, f"t{t}")) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    records = store.read_audit(limit=1000)
    assert [r.seq for r in records] == list(range(1, 201))
    assert sorted(r.request_id for r in records) == sorted(f"t{t}-{i}" for t in range(4) for i in range(50))
    assert store.verify_audit_chain() == (True, None)


def test_second_process_writes_the_same_chain(store: Store, store_url: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    ready, go = spawn.Event(), spawn.Event()
    child = spawn.Process(target=_write_many, args=(store_url, 50, "child", ready, go))
    child.start()
    try:
        for _ in range(600):  # up to 30 s, but fail at once if the child dies before it is ready
            if ready.wait(timeout=0.05):
                break
            assert child.is_alive(), f"the second process exited early (exit code {child.exitcode})"
        else:
            pytest.fail("the second process did not become ready in 30 s")
        go.set()
        _write_many(store_url, 50, "parent")
    finally:
        child.join(timeout=60)
    assert child.exitcode == 0
    records = store.read_audit(limit=1000)
    assert [r.seq for r in records] == list(range(1, 101))
    assert sorted(r.request_id for r in records) == sorted(f"{t}-{i}" for t in ("child", "parent") for i in range(50))
    assert store.verify_audit_chain() == (True, None)


# ---------------------------------------------------------------------------------------------- failures
def test_store_without_schema_fails_ping(store_url: str) -> None:
    s = Store(store_url)
    try:
        with pytest.raises(StoreUnavailableError, match=s.kind):
            s.ping()
        s.create_schema()
        s.ping()
    finally:
        s.dispose()


def test_sqlite_store_is_in_wal_mode(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path / 'serving.db'}")
    s.create_schema()
    s.dispose()
    with sqlite3.connect(tmp_path / "serving.db") as conn:  # journal_mode=WAL persists in the file
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_sqlite_in_a_missing_folder_is_unavailable(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path / 'no-such-folder' / 'serving.db'}")  # no connection yet, so no error
    for call in (s.ping, s.create_schema, lambda: s.write_audit(_record()), lambda: s.authenticate(WELL_FORMED_KEY)):
        with pytest.raises(StoreUnavailableError, match=r"SQLite store .* unavailable: unable to open"):
            call()
    assert s.authenticate("malformed") is None  # refused before any database access
    s.dispose()


def test_sqlite_read_only_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "serving.db"
    writer = Store(f"sqlite:///{path}")
    writer.create_schema()
    writer.dispose()
    # mode=ro rather than chmod: the tests may run as root, whom file modes do not stop
    s = Store(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        s.ping()  # reading works
        with pytest.raises(StoreUnavailableError, match="readonly"):
            s.write_audit(_record())
        with pytest.raises(StoreUnavailableError, match="readonly"):
            s.create_key("ward-7", ["triage"])
    finally:
        s.dispose()


def test_postgresql_unreachable_hides_the_password() -> None:
    for url in (
        "postgresql+psycopg://vigil:S3cr3t-pw@127.0.0.1:1/test",
        "postgresql://vigil@127.0.0.1:1/test?password=S3cr3t-pw",
    ):
        s = Store(url, connect_timeout_s=1)
        with pytest.raises(StoreUnavailableError, match=r"PostgreSQL store .* unavailable") as caught:
            s.ping()
        assert "S3cr3t-pw" not in str(caught.value) and "S3cr3t-pw" not in repr(s)
        assert "S3cr3t-pw" not in str(caught.value.__cause__)
        s.dispose()


def test_writer_blocked_past_the_lock_timeout_is_unavailable(store: Store, store_url: str, raw: sa.Engine) -> None:
    store.write_audit(_record(1))
    impatient = Store(store_url, lock_timeout_s=0.2)
    try:
        if store.kind == "SQLite":
            holder = sqlite3.connect(make_url(store_url).database, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(StoreUnavailableError, match="locked"):
                    impatient.write_audit(_record(2))
            finally:
                holder.rollback()
                holder.close()
        else:
            with raw.begin() as conn:
                conn.execute(sa.text("LOCK TABLE vigil_audit IN ACCESS EXCLUSIVE MODE"))
                with pytest.raises(StoreUnavailableError, match="lock timeout"):
                    impatient.write_audit(_record(2))
        assert impatient.write_audit(_record(3)).seq == 2, "the failed write left no trace"
    finally:
        impatient.dispose()
    assert store.verify_audit_chain() == (True, None)


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql://vigil:S3cr3t-pw@db/vigil", "unsupported scheme 'mysql'"),
        ("postgresql+psycopg2://vigil:S3cr3t-pw@db/vigil", "unsupported scheme"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("not a url", "not a SQLAlchemy URL"),
    ],
)
def test_unsupported_url_is_a_config_error(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        Store(url)
    assert "audit_url" in str(caught.value) and "S3cr3t-pw" not in str(caught.value)


def test_bad_timeout_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="lock_timeout_s"):
        Store("sqlite:///x.db", lock_timeout_s=0)
