"""The SQLite back-end of the DICOM work queue (the default, ``sqlite:///path.db``): its schema, the migration of a
queue file written by an earlier Vigil, and the queries behind :class:`serving.dicom_node.queue.WorkQueue`.

SQLite runs in WAL mode with ``synchronous=FULL``: a commit is on disk before it returns, because a C-STORE
success tells the modality it may delete its copy. Several processes may share the file (the node and the API
process that takes STOW-RS); writers serialise on ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from models.errors import StoreUnavailableError
from serving.dicom_node.queue import Decide, WorkQueue
from serving.dicom_node.records import NOTIFY, STATES, QueueItem, Stage

__all__ = ["SqliteQueue"]

log = logging.getLogger(__name__)

_COLUMNS = tuple(f.name for f in fields(QueueItem))
_TYPES = {"int": "INTEGER", "float": "REAL"}


def _column_sql(name: str, kind: str) -> str:
    base = next((sql for py, sql in _TYPES.items() if py in kind), "TEXT")
    if name in ("flagged", "needs_delivery"):
        base = "INTEGER"
    return f"{name} {base}" + (" PRIMARY KEY" if name == "sop_instance_uid" else "")


_TABLE = (
    "CREATE TABLE IF NOT EXISTS dicom_queue ("
    + ", ".join(_column_sql(f.name, str(f.type)) for f in fields(QueueItem))
    + ", stage TEXT, due_at REAL, notify_due_at REAL)"
)
#: Created after the columns a queue file from an earlier version lacks have been added (:meth:`SqliteQueue._migrate`).
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS dicom_queue_due ON dicom_queue (stage, due_at)",
    "CREATE INDEX IF NOT EXISTS dicom_queue_updated ON dicom_queue (updated_at)",
    "CREATE INDEX IF NOT EXISTS dicom_queue_state ON dicom_queue (state, updated_at)",
    "CREATE INDEX IF NOT EXISTS dicom_queue_lease ON dicom_queue (lease_owner)",
    "CREATE INDEX IF NOT EXISTS dicom_queue_notify ON dicom_queue (notify_due_at)",
)


class SqliteQueue(WorkQueue):
    """The queue in one SQLite file (WAL, ``synchronous=FULL``); one connection per instance, serialised."""

    kind = "SQLite"

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._write() as conn:
                conn.execute(_TABLE)
                self._migrate(conn)
                for ddl in _INDEXES:
                    conn.execute(ddl)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"SQLite queue {path.name} is unavailable: {exc}") from exc

    def __repr__(self) -> str:
        return f"SqliteQueue({str(self.path)!r})"

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Add the columns a queue file written by an earlier Vigil lacks (new fields start empty: an item queued
        before notifications existed has none to send). Nothing is dropped or rewritten."""
        have = {row[1] for row in conn.execute("PRAGMA table_info(dicom_queue)")}
        wanted = [(f.name, _column_sql(f.name, str(f.type))) for f in fields(QueueItem)] + [
            ("stage", "stage TEXT"),
            ("due_at", "due_at REAL"),
            ("notify_due_at", "notify_due_at REAL"),
        ]
        for name, ddl in wanted:
            if name not in have:
                log.info("SQLite queue: adding column %s (written by an earlier version)", name)
                conn.execute(f"ALTER TABLE dicom_queue ADD COLUMN {ddl.replace(' PRIMARY KEY', '')}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"SQLite queue {self.path.name} is unavailable: {exc}") from exc

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"SQLite queue {self.path.name} is unavailable: {exc}") from exc

    @staticmethod
    def _item(row: sqlite3.Row) -> QueueItem:
        return QueueItem.from_fields({k: row[k] for k in _COLUMNS})

    def _update(self, sop_instance_uid: str, decide: Decide) -> QueueItem | None:
        with self._write() as conn:
            row = conn.execute("SELECT * FROM dicom_queue WHERE sop_instance_uid = ?", (sop_instance_uid,)).fetchone()
            new = decide(self._item(row) if row else None)
            if new is None:
                return None
            values = new.to_fields()
            stage, due = new.stage()
            values.update(stage=stage, due_at=due, notify_due_at=new.notify_due())
            names = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            conn.execute(f"INSERT OR REPLACE INTO dicom_queue ({names}) VALUES ({marks})", tuple(values.values()))
            return new

    def _due(self, stage: Stage, now: float, limit: int) -> list[str]:
        if stage == NOTIFY:
            rows = self._read(
                "SELECT sop_instance_uid FROM dicom_queue WHERE notify_due_at IS NOT NULL AND "
                "notify_due_at <= ? ORDER BY notify_due_at LIMIT ?",
                (now, limit),
            )
            return [r[0] for r in rows]
        rows = self._read(
            "SELECT sop_instance_uid FROM dicom_queue WHERE stage = ? AND due_at <= ? ORDER BY due_at LIMIT ?",
            (stage, now, limit),
        )
        return [r[0] for r in rows]

    def get(self, sop_instance_uid: str) -> QueueItem | None:
        rows = self._read("SELECT * FROM dicom_queue WHERE sop_instance_uid = ?", (sop_instance_uid,))
        return self._item(rows[0]) if rows else None

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
        where: list[str] = ["1 = 1"]
        params: list[object] = []
        if notification is not None:
            where.append("notify_state = ?")
            params.append(notification)
        if callers:
            where.append(f"({' OR '.join('(source = ? AND calling_aet = ?)' for _ in callers)})")
            params.extend(value for pair in callers for value in pair)
        if since is not None:
            where.append("updated_at >= ?")
            params.append(since)
        if status:
            where.append(f"state IN ({', '.join('?' for _ in status)})")
            params.extend(status)
        if finding is not None:
            where.append("instr(flagged_findings, ?) > 0")
            params.append(f",{finding},")
        if flagged_only:
            where.append("flagged = 1")
        rows = self._read(
            f"SELECT * FROM dicom_queue WHERE {' AND '.join(where)} ORDER BY updated_at DESC, sop_instance_uid LIMIT ?",
            [*params, limit],
        )
        return [self._item(r) for r in rows]

    def counts(self) -> dict[str, int]:
        found = {r[0]: r[1] for r in self._read("SELECT state, COUNT(*) FROM dicom_queue GROUP BY state")}
        return {s: int(found.get(s, 0)) for s in STATES}

    def _owned(self, owner_prefix: str) -> list[str]:
        rows = self._read(
            "SELECT sop_instance_uid, lease_owner, notify_lease_owner FROM dicom_queue WHERE "
            "lease_owner IS NOT NULL OR notify_lease_owner IS NOT NULL"
        )
        return [
            r[0] for r in rows if str(r[1] or "").startswith(owner_prefix) or str(r[2] or "").startswith(owner_prefix)
        ]

    def _terminal_before(self, before: float, states: tuple[str, ...]) -> list[str]:
        rows = self._read(
            f"SELECT sop_instance_uid FROM dicom_queue WHERE updated_at < ? AND state IN "
            f"({', '.join('?' for _ in states)})",
            [before, *states],
        )
        return [r[0] for r in rows]

    def _delete(self, sop_instance_uid: str, expect_state: str) -> QueueItem | None:
        with self._write() as conn:
            row = conn.execute(
                "SELECT * FROM dicom_queue WHERE sop_instance_uid = ? AND state = ?", (sop_instance_uid, expect_state)
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM dicom_queue WHERE sop_instance_uid = ?", (sop_instance_uid,))
            return self._item(row)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
