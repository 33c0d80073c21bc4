"""`vigil audit verify`, the keyed anchors of the audit chain head, and the INSERT/SELECT-only PostgreSQL role.

Each tamper case is what an administrator with full rights on the database can do (drop the append-only triggers,
then change, delete or re-chain rows); the hash chain alone misses some of them, the anchors do not. Runs on SQLite
and on a throw-away schema of the PostgreSQL server at 127.0.0.1 (skipped with the reason when none answers;
``VIGIL_TEST_PG_URL`` points elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from models.errors import ConfigError
from models.outcomes import validate_outcome
from serving.store.audit_anchor import ANCHOR_FILE_NAME, AuditAnchor, AuditAnchorSettings, open_anchor
from serving.store.audit_chain import anchor_head, verify_audit
from serving.store.database import Store
from serving.store.records import GENESIS_HASH, AuditRecord, audit_row_hash, canonical_json
from tests.postgres import PG_URL, schema_url

KEY = b"k3y-for-tests-only-0123456789abcdef"  # 35 bytes
PHI = "Jane Q. Patient 1957-03-14"  # stands for anything identifying that an audit row may hold


@pytest.fixture(autouse=True)
def _no_anchor_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: none of the runner's own VIGIL_AUDIT_ANCHOR_* variables."""
    for name in ("PATH", "KEY", "KEY_FILE"):
        monkeypatch.delenv(f"VIGIL_AUDIT_ANCHOR_{name}", raising=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'serving.db'}"
    return schema_url(request.getfixturevalue("pg_schema"))


@pytest.fixture
def anchor(tmp_path: Path) -> AuditAnchor:
    return AuditAnchor(tmp_path / "anchors" / ANCHOR_FILE_NAME, KEY)


@pytest.fixture
def store(store_url: str, anchor: AuditAnchor) -> Iterator[Store]:
    anchor.path.parent.mkdir()
    s = Store(store_url, anchor=anchor)
    s.create_schema()
    yield s
    s.dispose()


@pytest.fixture
def admin(store: Store, store_url: str) -> Iterator[sa.Engine]:
    """An engine with full rights, the append-only triggers dropped: what a rogue administrator has."""
    engine = sa.create_engine(store_url)
    on_table = " ON vigil_audit" if store.kind == "PostgreSQL" else ""
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TRIGGER vigil_audit_no_update{on_table}"))
        conn.execute(sa.text(f"DROP TRIGGER vigil_audit_no_delete{on_table}"))
    yield engine
    engine.dispose()


def _record(i: int, **changes: object) -> AuditRecord:
    base = AuditRecord(
        request_id=f"req-{i}",
        time_utc="2025-03-01T10:00:00.000Z",
        client="Kx7Qm2Lp9Rt4",
        route="/v1/triage",
        model_name="vigil-triage",
        model_version="3",
        model_sha256="a" * 64,
        input_sha256=hashlib.sha256(str(i).encode()).hexdigest(),
        output={"acuity": {"level": 2, "p": [0.1, 0.7, 0.2]}, "note": PHI},
        status=200,
    )
    return replace(base, **changes)


def _fill(store: Store, n: int = 6) -> None:
    """``n`` rows: singles, then a batch of three (one anchor per commit)."""
    for i in range(n - 3):
        store.write_audit(_record(i))
    store.write_audits([_record(i) for i in range(n - 3, n)])


def _rechain(conn: sa.Connection) -> None:
    """Recompute every prev_hash and row_hash, renumbering seq from 1: needs no key, and the chain then holds."""
    rows = conn.execute(sa.text("SELECT * FROM vigil_audit ORDER BY seq")).mappings().all()
    conn.execute(sa.text("DELETE FROM vigil_audit"))
    prev = GENESIS_HASH
    for seq, row in enumerate(rows, start=1):
        fields = {
            k: row[k]
            for k in (
                "request_id",
                "time_utc",
                "client",
                "route",
                "model_name",
                "model_version",
                "model_sha256",
                "input_sha256",
                "status",
            )
        }
        record = AuditRecord(**fields, output=json.loads(row["output_json"]), seq=seq)
        row_hash = audit_row_hash(prev, record)
        conn.execute(
            sa.text(
                "INSERT INTO vigil_audit (seq, request_id, time_utc, client, route, model_name, model_version, "
                "model_sha256, input_sha256, output_json, status, prev_hash, row_hash) VALUES (:seq, :request_id, "
                ":time_utc, :client, :route, :model_name, :model_version, :model_sha256, :input_sha256, :output_json, "
                ":status, :prev_hash, :row_hash)"
            ),
            {
                **fields,
                "seq": seq,
                "output_json": canonical_json(record.output),
                "prev_hash": prev,
                "row_hash": row_hash,
            },
        )
        prev = row_hash


def _tamper(admin: sa.Engine, *statements: str, rechain: bool = False) -> None:
    with admin.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)  # not sa.text: JSON colons are not bind parameters
        if rechain:
            _rechain(conn)


# ---------------------------------------------------------------------------------------------- intact
def test_intact_chain_matches_one_anchor_per_commit(store: Store, anchor: AuditAnchor) -> None:
    _fill(store, 6)
    lines = anchor.path.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 6]  # three singles, then one batch
    assert all(PHI not in line and "req-" not in line for line in lines)
    report = verify_audit(store, anchor)
    assert report.ok, report.problems
    assert (report.rows, report.anchors, report.newest_anchor_seq, report.unanchored_rows) == (6, 4, 6, 0)
    assert report.broken_seq is None and "intact: 6 rows" in report.summary()


def test_empty_store_and_no_anchor_file_verify(store: Store, anchor: AuditAnchor) -> None:
    report = verify_audit(store, anchor)
    assert report.ok and report.rows == 0 and report.anchors == 0 and not anchor.path.exists()


def test_rows_written_after_the_newest_anchor_are_reported_not_failed(
    store: Store, store_url: str, anchor: AuditAnchor
) -> None:
    _fill(store, 4)
    unanchored = Store(store_url)  # e.g. a process killed between its commit and its anchor
    unanchored.write_audits([_record(10), _record(11)])
    unanchored.dispose()
    report = verify_audit(store, anchor)
    assert report.ok and report.rows == 6 and report.unanchored_rows == 2
    assert "2 newer rows not anchored yet" in report.summary()


# ---------------------------------------------------------------------------------------------- tampering
def test_edited_row_is_detected(store: Store, admin: sa.Engine, anchor: AuditAnchor) -> None:
    _fill(store)
    _tamper(admin, "UPDATE vigil_audit SET status = 500 WHERE seq = 3")
    report = verify_audit(store, anchor)
    assert not report.ok and report.broken_seq == 3
    assert report.problems == ("seq 3: its row_hash does not match its content",)


def test_deleted_middle_row_is_detected(store: Store, admin: sa.Engine, anchor: AuditAnchor) -> None:
    _fill(store)
    _tamper(admin, "DELETE FROM vigil_audit WHERE seq = 2")
    report = verify_audit(store, anchor)
    assert not report.ok and report.broken_seq == 2 and "seq 2 is missing" in report.problems[0]


def test_deleted_newest_rows_are_detected(store: Store, admin: sa.Engine, anchor: AuditAnchor) -> None:
    _fill(store)
    _tamper(admin, "DELETE FROM vigil_audit WHERE seq >= 5")
    assert store.verify_audit_chain() == (True, None), "the hash chain alone cannot see this"
    report = verify_audit(store, anchor)
    assert not report.ok and report.broken_seq == 5
    assert report.problems == ("the store ends at seq 4 but seq 6 was anchored: rows 5..6 were deleted",)


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "problem"),
    [
        (
            'UPDATE vigil_audit SET output_json = \'{"acuity":{"level":5}}\' WHERE seq = 2',
            2,
            "seq 2 differs from its anchor: seq 2 was changed, inserted or removed and the chain recomputed",
        ),
        (
            "UPDATE vigil_audit SET status = 500 WHERE seq = 5",
            6,  # inside the batch 4..6, anchored at 6
            "seq 6 differs from its anchor: one of seq 4..6 was changed, inserted or removed and the chain recomputed",
        ),
        (
            "DELETE FROM vigil_audit WHERE seq = 2",
            2,  # and the later rows renumbered
            "seq 2 differs from its anchor: seq 2 was changed, inserted or removed and the chain recomputed",
        ),
        (
            "DELETE FROM vigil_audit WHERE seq = 4",
            6,
            "the store ends at seq 5 but seq 6 was anchored: row 6 was deleted",
        ),
    ],
)
def test_rows_changed_or_removed_then_rechained_without_the_key_are_detected(
    store: Store, admin: sa.Engine, anchor: AuditAnchor, tamper: str, bad_seq: int, problem: str
) -> None:
    _fill(store)
    _tamper(admin, tamper, rechain=True)
    assert store.verify_audit_chain() == (True, None), "the hash chain alone cannot see this"
    report = verify_audit(store, anchor)
    assert not report.ok and report.broken_seq == bad_seq
    assert report.problems == (problem,)


def test_anchor_forged_without_the_key_is_detected(store: Store, admin: sa.Engine, anchor: AuditAnchor) -> None:
    _fill(store)
    _tamper(admin, "DELETE FROM vigil_audit WHERE seq >= 5")
    head = store.read_audit(since_seq=3)[0]
    forged = AuditAnchor(anchor.path, b"x" * 32).line(4, head.row_hash, "2025-03-01T10:00:00.000Z")
    with anchor.path.open("a") as handle:  # an anchor for the truncated head, made with a guessed key
        handle.write(forged)
    report = verify_audit(store, anchor)
    assert (
        not report.ok
        and report.problems[-1] == f"anchor line 5 of {anchor.path}: made with another key (its key id differs)"
    )
    entry = json.loads(forged)
    entry["kid"] = anchor.kid  # the key id is public; the MAC still cannot be made without the key
    genuine = anchor.path.read_text().splitlines()[:4]
    anchor.path.write_text("\n".join([*genuine, canonical_json(entry)]) + "\n")
    report = verify_audit(store, anchor)
    assert (
        not report.ok
        and report.problems[-1] == f"anchor line 5 of {anchor.path}: its MAC does not match (forged or altered)"
    )


def test_key_holder_who_rewrites_and_reanchors_is_still_detected(
    store: Store, admin: sa.Engine, anchor: AuditAnchor
) -> None:
    _fill(store)
    _tamper(admin, "UPDATE vigil_audit SET status = 201 WHERE seq = 6", rechain=True)
    anchor.append(6, store.read_audit(since_seq=5)[0].row_hash or "")  # the file is append-only: old lines stay
    report = verify_audit(store, anchor)
    assert not report.ok and "it anchors seq 6 to a different row_hash than an earlier line" in report.problems[-1]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json at all\n", "not JSON"),
        ('{"v":1}\n', "not a version-1 anchor"),
        ("[" * 1500 + "\n", "not a complete line"),
        ('{"kid":"x","mac":"y","row_hash":"z","seq":"1","time_utc":"t","v":1}\n', "wrong type"),
        ("[" * 1000 + "\n", "not JSON"),
    ],
)
def test_malformed_anchor_lines_fail_verification(store: Store, anchor: AuditAnchor, line: str, reason: str) -> None:
    _fill(store, 4)
    with anchor.path.open("a") as handle:
        handle.write(line)
    report = verify_audit(store, anchor)
    assert not report.ok and report.broken_seq is None and reason in report.problems[0]


def test_missing_anchor_file_fails_until_the_head_is_anchored(store_url: str, tmp_path: Path) -> None:
    plain = Store(store_url)  # a trail written before anchoring was turned on
    plain.create_schema()
    for i in range(3):
        plain.write_audit(_record(i))
    anchor = AuditAnchor(tmp_path / "late.jsonl", KEY)
    report = verify_audit(plain, anchor)
    assert not report.ok and "does not exist although the store holds 3 rows" in report.problems[0]
    anchored = anchor_head(plain, anchor)
    assert anchored.ok and anchored.newest_anchor_seq == 3 and len(anchor.path.read_text().splitlines()) == 1
    assert verify_audit(plain, anchor).ok
    assert anchor_head(plain, anchor).anchors == 1, "an anchored head is not anchored twice"
    plain.dispose()


def test_anchor_head_refuses_a_broken_chain(store: Store, admin: sa.Engine, anchor: AuditAnchor) -> None:
    _fill(store)
    _tamper(admin, "DELETE FROM vigil_audit WHERE seq >= 5")
    before = anchor.path.read_bytes()
    assert not anchor_head(store, anchor).ok
    assert anchor.path.read_bytes() == before


# ---------------------------------------------------------------------------------------------- writing anchors
def test_failed_anchor_write_keeps_the_audit_row_and_logs_without_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    anchor = AuditAnchor(tmp_path / "gone" / "anchors.jsonl", KEY)  # its folder does not exist (unmounted)
    store = Store(f"sqlite:///{tmp_path / 'serving.db'}", anchor=anchor)
    store.create_schema()
    with caplog.at_level(logging.INFO):
        written = store.write_audit(_record(1))
    assert written.seq == 1 and store.read_audit() == [written]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "seq 1 could not be written" in errors[0]
    assert all(KEY.decode() not in r.getMessage() and PHI not in r.getMessage() for r in caplog.records)
    (tmp_path / "gone").mkdir()
    with caplog.at_level(logging.INFO, logger="vigil.audit.anchor"):
        store.write_audit(_record(2))
    assert verify_audit(store, anchor).ok, "the next anchor covers the row whose anchor failed"
    logged = [r.getMessage() for r in caplog.records if r.name == "vigil.audit.anchor"]
    assert logged == anchor.path.read_text().splitlines(), "each anchor is also logged, for a remote syslog"
    store.dispose()


def test_anchor_lines_of_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    import threading

    url = f"sqlite:///{tmp_path / 'serving.db'}"
    anchor = AuditAnchor(tmp_path / "anchors.jsonl", KEY)
    reader = Store(url)
    reader.create_schema()

    def write(tag: str) -> None:
        s = Store(url, anchor=anchor)
        for i in range(40):
            s.write_audit(_record(i, request_id=f"{tag}-{i}"))
        s.dispose()

    threads = [threading.Thread(target=write, args=(f"t{t}",)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    report = verify_audit(reader, anchor)
    reader.dispose()
    assert report.ok and report.rows == 160 and report.anchors == 160


# ---------------------------------------------------------------------------------------------- settings
def test_open_anchor_reads_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_anchor() is None
    monkeypatch.setenv("VIGIL_AUDIT_ANCHOR_PATH", "")  # empty means unset, not the working folder
    assert open_anchor() is None
    monkeypatch.setenv("VIGIL_AUDIT_ANCHOR_PATH", str(tmp_path))
    monkeypatch.setenv("VIGIL_AUDIT_ANCHOR_KEY", KEY.decode())
    from_env = open_anchor()
    assert from_env is not None and from_env.path == tmp_path / ANCHOR_FILE_NAME  # a folder gets the file inside
    key_file = tmp_path / "anchor.key"
    key_file.write_bytes(KEY + b"\n")
    from_file = open_anchor(AuditAnchorSettings(path=tmp_path / "a.jsonl", key=None, key_file=key_file))
    assert from_file is not None and from_file.kid == from_env.kid, "the trailing newline is not part of the key"
    assert KEY.decode() not in repr(from_file)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"key": KEY.decode()}, "VIGIL_AUDIT_ANCHOR_KEY is set but VIGIL_AUDIT_ANCHOR_PATH is not"),
        ({"path": "anchors.jsonl"}, "needs exactly one of VIGIL_AUDIT_ANCHOR_KEY and VIGIL_AUDIT_ANCHOR_KEY_FILE"),
        ({"path": "anchors.jsonl", "key": KEY.decode(), "key_file": "anchor.key"}, "got 2"),
        ({"path": "anchors.jsonl", "key_file": "missing.key"}, "VIGIL_AUDIT_ANCHOR_KEY_FILE .* cannot be read"),
        ({"path": "anchors.jsonl", "key_file": "short.key"}, "must hold at least 32 bytes; got 9"),
        ({"path": "no-such-folder/anchors.jsonl", "key": KEY.decode()}, "VIGIL_AUDIT_ANCHOR_PATH: the folder"),
    ],
)
def test_bad_anchor_settings_name_the_setting(tmp_path: Path, settings: dict[str, str], message: str) -> None:
    (tmp_path / "anchor.key").write_bytes(KEY)
    (tmp_path / "short.key").write_bytes(b"too-short\n")
    values = {k: (v if k == "key" else tmp_path / v) for k, v in settings.items()}
    with pytest.raises(ConfigError, match=message) as caught:
        open_anchor(AuditAnchorSettings(**values))
    assert KEY.decode() not in str(caught.value)


def test_short_key_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.store.audit_anchor import load_anchor_settings

    monkeypatch.setenv("VIGIL_AUDIT_ANCHOR_KEY", "secret-but-short")
    with pytest.raises(ConfigError, match=r"setting VIGIL_AUDIT_ANCHOR_KEY: .*at least 32 bytes") as caught:
        load_anchor_settings()
    assert "secret-but-short" not in str(caught.value)


# ---------------------------------------------------------------------------------------------- the command
def _cli_env(store_url: str, anchor: AuditAnchor) -> dict[str, str | None]:
    return {
        "VIGIL_AUDIT_URL": store_url,
        "VIGIL_AUDIT_ANCHOR_PATH": str(anchor.path),
        "VIGIL_AUDIT_ANCHOR_KEY": KEY.decode(),
        "VIGIL_AUDIT_ANCHOR_KEY_FILE": None,
    }  # None: unset


def test_vigil_audit_verify_exit_codes_and_no_phi(
    store: Store, store_url: str, admin: sa.Engine, anchor: AuditAnchor, tmp_path: Path
) -> None:
    from vigil.cli import app as cli

    _fill(store)
    env = _cli_env(store_url, anchor)
    ok = CliRunner().invoke(cli, ["audit", "verify"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "audit chain intact: 6 rows, matching 4 anchors" in ok.stdout and json.loads(ok.stdout.splitlines()[0])["ok"]
    _tamper(admin, "DELETE FROM vigil_audit WHERE seq >= 5")
    broken = CliRunner().invoke(cli, ["audit", "verify"], env=env)
    assert broken.exit_code == 1
    assert "AUDIT CHAIN BROKEN at seq 5: the store ends at seq 4 but seq 6 was anchored" in broken.stderr
    for text in (broken.stdout, broken.stderr):
        assert PHI not in text and "req-" not in text and KEY.decode() not in text
    no_anchor = CliRunner().invoke(
        cli, ["audit", "verify"], env={**env, "VIGIL_AUDIT_ANCHOR_PATH": None, "VIGIL_AUDIT_ANCHOR_KEY": None}
    )
    assert no_anchor.exit_code == 0 and "hash chain only" in no_anchor.stdout  # deletion invisible without anchor
    other_key = tmp_path / "other.key"
    other_key.write_bytes(b"y" * 32)
    wrong = CliRunner().invoke(cli, ["audit", "verify", "--anchor-key-file", str(other_key)], env=env)
    assert wrong.exit_code == 1 and "made with another key" in wrong.stderr


def test_vigil_audit_verify_bad_store_or_settings_exit_2(tmp_path: Path) -> None:
    from vigil.cli import app as cli

    anchor = AuditAnchor(tmp_path / "anchors.jsonl", KEY)
    env = _cli_env(f"sqlite:///{tmp_path / 'never-created.db'}", anchor)
    missing = CliRunner().invoke(cli, ["audit", "verify"], env=env)
    assert missing.exit_code == 2 and "SQLite store" in missing.stderr and "is unavailable" in missing.stderr
    short = CliRunner().invoke(cli, ["audit", "verify"], env={**env, "VIGIL_AUDIT_ANCHOR_KEY": "short"})
    assert short.exit_code == 2 and "VIGIL_AUDIT_ANCHOR_KEY" in short.stderr and "short" not in short.stdout


def test_vigil_audit_anchor_anchors_an_unanchored_trail(store_url: str, tmp_path: Path) -> None:
    from vigil.cli import app as cli

    plain = Store(store_url)
    plain.create_schema()
    plain.write_audits([_record(i) for i in range(3)])
    plain.dispose()
    anchor = AuditAnchor(tmp_path / "anchors.jsonl", KEY)
    env = _cli_env(store_url, anchor)
    assert CliRunner().invoke(cli, ["audit", "verify"], env=env).exit_code == 1
    done = CliRunner().invoke(cli, ["audit", "anchor"], env=env)
    assert done.exit_code == 0 and "newest seq 3" in done.stdout
    assert CliRunner().invoke(cli, ["audit", "verify"], env=env).exit_code == 0
    unset = CliRunner().invoke(
        cli, ["audit", "anchor"], env={**env, "VIGIL_AUDIT_ANCHOR_PATH": None, "VIGIL_AUDIT_ANCHOR_KEY": None}
    )
    assert unset.exit_code == 2 and "VIGIL_AUDIT_ANCHOR_PATH is not set" in unset.stderr


# ---------------------------------------------------------------------------------------------- the service
def test_service_anchors_each_audited_prediction(
    tmp_path: Path, model_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from serving.api.app import create_app
    from serving.settings import ServingSettings

    monkeypatch.setenv("VIGIL_AUDIT_ANCHOR_PATH", str(tmp_path))
    monkeypatch.setenv("VIGIL_AUDIT_ANCHOR_KEY", KEY.decode())
    monkeypatch.delenv("VIGIL_AUDIT_ANCHOR_KEY_FILE", raising=False)
    cfg = ServingSettings(work_dir=tmp_path, model_source="local", model_dir=model_folder, threads=1)
    admin_store = Store(cfg.store_url())
    admin_store.create_schema()
    key = admin_store.create_key("ed-north", ["triage"])[1]
    record = {
        "age_years": 30,
        "sex": "male",
        "heart_rate": 72,
        "resp_rate": 14,
        "sbp": 125,
        "dbp": 80,
        "spo2": 99,
        "temperature_c": 36.8,
        "consciousness": "A",
    }
    with TestClient(create_app(cfg)) as client:  # the app's own store, anchored from the environment
        for _ in range(2):
            assert client.post("/v1/triage", json=record, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    report = verify_audit(admin_store, open_anchor())
    assert report.ok and report.rows == 2 and report.anchors == 2
    admin_store.dispose()


# ---------------------------------------------------------------------------------------------- PostgreSQL role
def test_postgres_insert_select_role_appends_but_cannot_rewrite(pg_schema: str, tmp_path: Path) -> None:
    """The role of docs/audit.md: the service keeps working; UPDATE, DELETE, TRUNCATE, trigger changes refused."""
    superuser = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with superuser.connect() as conn:
        may = conn.execute(sa.text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"))
        if not may.scalar():
            superuser.dispose()
            pytest.skip("the PostgreSQL test user may not create roles")
    owner = Store(schema_url(pg_schema))
    owner.create_schema()  # run once by the owner (e.g. `vigil keys create` with the owner's URL)
    key = owner.create_key("ed-north", ["triage"])[1]
    role = f"vigil_app_{uuid.uuid4().hex[:12]}"  # roles are per server: a unique name per test run
    with superuser.connect() as conn:  # the SQL of docs/audit.md, with the test's role and schema names
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(sa.text(f'GRANT USAGE ON SCHEMA "{pg_schema}" TO "{role}"'))
        conn.execute(sa.text(f'GRANT SELECT, INSERT ON "{pg_schema}".vigil_audit TO "{role}"'))
        conn.execute(sa.text(f'GRANT SELECT ON "{pg_schema}".vigil_api_keys TO "{role}"'))
        conn.execute(sa.text(f'GRANT SELECT, INSERT ON "{pg_schema}".vigil_audit_instances TO "{role}"'))
        conn.execute(sa.text(f'GRANT SELECT, INSERT ON "{pg_schema}".vigil_prediction_groups TO "{role}"'))
        conn.execute(sa.text(f'GRANT SELECT, INSERT ON "{pg_schema}".vigil_outcomes TO "{role}"'))
        conn.execute(sa.text(f'GRANT USAGE ON SEQUENCE "{pg_schema}".vigil_outcomes_outcome_id_seq TO "{role}"'))
    anchor = AuditAnchor(tmp_path / "anchors.jsonl", KEY)
    service = Store(schema_url(pg_schema, user=role), anchor=anchor)
    as_role = sa.create_engine(schema_url(pg_schema, user=role))
    try:
        service.create_schema()  # what each worker does at start-up: a no-op, not a permission error
        assert service.authenticate(key) is not None
        service.write_audit(_record(1))
        read = {"findings": [], "source": {"sop_instance_uid": "1.2.3"}}  # a second read: its instance is indexed
        groups = [{"sex": "female", "age_band": "65-74"}, None]  # a triage patient's groups are kept beside its row
        service.write_audits([_record(2), _record(3, output=read)], groups)
        assert verify_audit(service, anchor).ok
        outcome = validate_outcome(
            {"audit_id": 1, "observed_utc": "2099-01-01T00:00:00Z", "triage": {"admitted": True}}
        )
        assert not isinstance(service.record_outcomes([outcome], "ed-north")[0], Exception)  # outcomes are fed back
        refused = [
            "UPDATE vigil_audit SET status = 500 WHERE seq = 1",
            "DELETE FROM vigil_audit WHERE seq = 3",
            "TRUNCATE vigil_audit",
            "DROP TRIGGER vigil_audit_no_delete ON vigil_audit",
            "ALTER TABLE vigil_audit DISABLE TRIGGER ALL",
            "UPDATE vigil_api_keys SET scopes = 'admin'",
            "UPDATE vigil_outcomes SET client = 'x'",
            "DELETE FROM vigil_outcomes",
            "TRUNCATE vigil_outcomes",
            "DELETE FROM vigil_audit_instances",
            "UPDATE vigil_prediction_groups SET sex = 'x'",
            "CREATE OR REPLACE FUNCTION vigil_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN RETURN NEW; END$$",
        ]
        for statement in refused:
            with (
                pytest.raises(sa.exc.ProgrammingError, match=r"permission denied|must be owner"),
                as_role.begin() as conn,
            ):
                conn.exec_driver_sql(statement)
        assert [r.seq for r in owner.read_audit()] == [1, 2, 3] and owner.verify_audit_chain() == (True, None)
    finally:
        as_role.dispose()
        service.dispose()
        owner.dispose()
        with superuser.connect() as conn:
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE "{role}"'))
        superuser.dispose()
