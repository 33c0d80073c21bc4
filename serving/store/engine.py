"""The serving store's database plumbing: the checked URL, the engine, transactions, the schema.

:class:`StoreEngine` is the base of :class:`serving.store.database.Store`: one SQLAlchemy Core engine over SQLite
(``sqlite:///path/serving.db``) or PostgreSQL (``postgresql+psycopg://user@host/db``), a transaction helper whose
writers are serialised by the database (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``lock_timeout``), and the creation of
the tables and append-only triggers of :mod:`serving.store.schema`. Every database failure becomes
:class:`models.errors.StoreUnavailableError`; messages mask any password of the URL, and SQL parameters are kept out
of exception text (``hide_parameters``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, create_engine, event, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from models.errors import ConfigError, StoreUnavailableError
from serving.store.schema import PG_TRIGGER_FUNCTION, PG_TRIGGERS, SQLITE_TRIGGERS, audit_table, metadata

__all__ = ["StoreEngine"]

logger = logging.getLogger(__name__)

# A pg_advisory_xact_lock key (any constant bigint; advisory locks are per database, not per schema), distinct
# from the audit chain's (serving.store.audit_trail).
_PG_SCHEMA_LOCK = 0x5649_4749_4C53_4348  # "VIGILSCH"
_PG_FUNCTION_EXISTS = (
    "SELECT 1 FROM pg_proc WHERE proname = 'vigil_audit_refuse_change' AND pronamespace = "
    "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
)


def _mask_url(url: URL) -> str:
    query = {k: ("***" if "password" in k.lower() else v) for k, v in url.query.items()}
    return url.set(query=query).render_as_string(hide_password=True)


def _secrets_of(url: URL) -> list[str]:
    found = [url.password] if url.password else []
    for key, value in url.query.items():
        if "password" in key.lower():
            found.extend([value] if isinstance(value, str) else list(value))
    return [str(s) for s in found if s]


def _parse_url(url: str) -> tuple[URL, str]:
    """Check ``url`` names a supported store; return it (PostgreSQL normalised to psycopg) and the store kind."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError) as exc:
        raise ConfigError(
            "audit_url is not a SQLAlchemy URL; use sqlite:///path/serving.db or postgresql+psycopg://user@host:5432/db"
        ) from exc
    scheme = parsed.drivername
    if scheme in ("sqlite", "sqlite+pysqlite"):
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise ConfigError(
                "audit_url names an in-memory SQLite database, which would lose the audit trail; "
                "use sqlite:///path/serving.db"
            )
        return parsed, "SQLite"
    if scheme in ("postgresql", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg"), "PostgreSQL"
    raise ConfigError(
        f"audit_url has the unsupported scheme {scheme[:40]!r}; use sqlite:///path/serving.db or "
        "postgresql+psycopg://user@host:5432/db"
    )


class StoreEngine:
    """One SQLite or PostgreSQL database, its transactions and its schema (the base of the store).

    Parameters
    ----------
    url : str
        ``sqlite:///path/serving.db`` or ``postgresql+psycopg://user@host:5432/db`` (``postgresql://`` is read
        as psycopg). The store does not connect until first used.
    connect_timeout_s : float
        How long to wait for a PostgreSQL server to accept a connection (whole seconds, rounded up).
    lock_timeout_s : float
        How long a write waits for another writer (SQLite busy timeout; PostgreSQL ``lock_timeout``) before
        the store is declared unavailable.

    Attributes
    ----------
    kind : str
        ``"SQLite"`` or ``"PostgreSQL"``.
    url_masked : str
        The URL with any password replaced by ``***``; safe to log.

    Raises
    ------
    ConfigError
        ``audit_url`` is not a supported URL (the message names ``audit_url`` and never its password).
    """

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0, lock_timeout_s: float = 5.0) -> None:
        for name, value in (("connect_timeout_s", connect_timeout_s), ("lock_timeout_s", lock_timeout_s)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds; got {value!r:.20}")
        parsed, self.kind = _parse_url(url)
        self.url_masked = _mask_url(parsed)
        self._secrets = _secrets_of(parsed)
        self._lock_timeout_ms = max(1, round(lock_timeout_s * 1000))
        try:
            if self.kind == "SQLite":
                self._engine = create_engine(
                    parsed, hide_parameters=True, connect_args={"timeout": float(lock_timeout_s)}
                )
                event.listen(self._engine, "connect", _sqlite_on_connect)
                event.listen(self._engine, "begin", _sqlite_on_begin)
            else:
                self._engine = create_engine(
                    parsed,
                    hide_parameters=True,
                    pool_pre_ping=True,
                    connect_args={"connect_timeout": max(1, math.ceil(connect_timeout_s)), "application_name": "vigil"},
                )
        except ImportError as exc:
            raise ConfigError(
                f"audit_url needs the {self.kind} driver, which is not installed (pip install 'psycopg[binary]')"
            ) from exc
        self._db_errors: tuple[type[BaseException], ...] = (
            SQLAlchemyError,
            OSError,
            self._engine.dialect.loaded_dbapi.Error,
        )

    # ------------------------------------------------------------------------------------ plumbing
    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        cause = getattr(exc, "orig", None) or exc
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        return StoreUnavailableError(f"{self.kind} store {self.url_masked} is unavailable: {reason}")

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[Connection]:
        """One transaction; a writer holds SQLite's write lock from its start (``BEGIN IMMEDIATE``)."""
        try:
            with self._engine.connect() as conn:
                if write and self.kind == "SQLite":
                    conn.execution_options(vigil_sqlite_begin="IMMEDIATE")
                with conn.begin():
                    if write and self.kind == "PostgreSQL":
                        conn.execute(text(f"SET LOCAL lock_timeout = {self._lock_timeout_ms}"))
                    yield conn
        except self._db_errors as exc:
            raise self._unavailable(exc) from exc

    # ------------------------------------------------------------------------------------ schema
    def create_schema(self) -> None:
        """Create the tables and the append-only triggers when missing; safe to call from every worker.

        Raises
        ------
        StoreUnavailableError
            The database cannot be reached or written.
        """
        with self._transaction(write=True) as conn:
            if self.kind == "PostgreSQL":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCHEMA_LOCK})
                metadata.create_all(conn)
                # Only when missing: replacing it needs ownership, which the INSERT/SELECT role of docs/audit.md
                # lacks; for that role the schema already exists and this method changes nothing.
                if conn.execute(text(_PG_FUNCTION_EXISTS)).first() is None:
                    conn.execute(text(PG_TRIGGER_FUNCTION))
                conn.execute(text(PG_TRIGGERS))
            else:
                metadata.create_all(conn)
                for ddl in SQLITE_TRIGGERS:
                    conn.execute(text(ddl))
        logger.info("%s store schema ready at %s", self.kind, self.url_masked)

    def ping(self) -> None:
        """Check the store can be reached and holds the audit table.

        Raises
        ------
        StoreUnavailableError
            It cannot (unreachable, locked, or :meth:`create_schema` never ran).
        """
        with self._transaction() as conn:
            conn.execute(select(audit_table.c.seq).limit(1)).all()

    def dispose(self) -> None:
        """Close every pooled connection (call on shutdown; the store reconnects if used again)."""
        self._engine.dispose()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (_sqlite_on_begin), so sqlite3's implicit transaction handling is off.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers never block the writer and one writer appends at a time. synchronous=NORMAL in WAL mode
        # writes each commit to the WAL file before COMMIT returns and syncs at checkpoints only: a killed
        # process (SIGKILL, crash, OOM) loses nothing committed, since the write is already in the OS page cache
        # and the next opener replays the WAL; only an OS crash or power cut can drop the newest commits, and
        # never corrupts the file. PRAGMA synchronous=FULL would survive those too at one fsync per prediction.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # BEGIN IMMEDIATE takes the write lock at once (waiting up to the busy timeout), so two writers never both
    # read the chain head and then collide on the insert; readers use a deferred BEGIN.
    mode = conn.get_execution_options().get("vigil_sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")
