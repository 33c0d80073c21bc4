"""The serving store: API keys and the append-only, hash-chained audit trail of every prediction.

One SQLAlchemy Core engine over SQLite (the embedded default, ``sqlite:///path/serving.db``) or PostgreSQL
(``postgresql+psycopg://user@host/db``). Several worker processes may share one store: the audit chain is
serialised by the database (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``pg_advisory_xact_lock``), never by a lock in
this process.

Tamper evidence has two layers. Each audit row carries ``row_hash = sha256(prev_hash + canonical JSON of the
row)`` (see :func:`serving.store.records.audit_row_hash`), so changing, inserting or removing a row breaks the
chain from that row on (:meth:`Store.verify_audit_chain`). Database triggers (:mod:`serving.store.schema`) refuse
UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) of the audit table, so the serving process cannot rewrite history
even by mistake. Neither layer stops an administrator who drops the trigger and rewrites the whole chain, nor the
loss of the newest rows: for that the store appends a keyed anchor of the chain head to storage outside the database
after each write (``anchor``, :mod:`serving.store.audit_chain`, checked by ``vigil audit verify``), and the serving
database role gets only INSERT and SELECT on the audit table (docs/audit.md).

Every database failure becomes :class:`models.errors.StoreUnavailableError`: the API must then refuse to
predict (503) rather than answer unaudited. Messages mask any password of the URL; SQL parameters (key hashes,
audit contents) are kept out of exception text (``hide_parameters``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, create_engine, event, insert, select, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from models.errors import ConfigError, InputValidationError, StoreUnavailableError
from serving.store.records import (
    GENESIS_HASH,
    KEY_ID_ALPHABET,
    KEY_ID_LEN,
    KEY_PREFIX,
    MAX_CLIENT,
    SECRET_BYTES,
    ApiKeyInfo,
    AuditRecord,
    audit_row_hash,
    canonical_json,
    check_audit,
    check_scopes,
    check_text,
    split_key,
    utc_now,
)
from serving.store.schema import (
    PG_TRIGGER_FUNCTION,
    PG_TRIGGERS,
    SQLITE_TRIGGERS,
    api_keys_table,
    audit_table,
    metadata,
)

if TYPE_CHECKING:
    from serving.store.audit_chain import AuditAnchor

__all__ = ["Store"]

logger = logging.getLogger(__name__)

_VERIFY_BATCH = 1000
# pg_advisory_xact_lock keys (any constant bigint; advisory locks are per database, not per schema).
_PG_CHAIN_LOCK = 0x5649_4749_4C41_5544  # "VIGILAUD"
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


class Store:
    """API keys and the audit trail in one SQLite or PostgreSQL database.

    Thread-safe (one connection pool per instance). Make one per process, after any fork (in the app's
    lifespan), and :meth:`dispose` it on shutdown.

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
    anchor : AuditAnchor, optional
        Where the chain head goes, keyed, after every committed audit write (see
        :func:`serving.store.audit_chain.open_anchor`); None: no anchor.

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

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 5.0,
        lock_timeout_s: float = 5.0,
        anchor: AuditAnchor | None = None,
    ) -> None:
        for name, value in (("connect_timeout_s", connect_timeout_s), ("lock_timeout_s", lock_timeout_s)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds; got {value!r:.20}")
        parsed, self.kind = _parse_url(url)
        self.anchor = anchor
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

    def __repr__(self) -> str:
        return f"Store({self.url_masked!r})"

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

    # ------------------------------------------------------------------------------------ keys
    def create_key(self, client: str, scopes: Iterable[str]) -> tuple[ApiKeyInfo, str]:
        """Issue a new API key for ``client``; the plaintext key is returned here once and never stored.

        Parameters
        ----------
        client : str
            Who the key is for: 1-64 printable characters.
        scopes : iterable of str
            At least one of :data:`serving.store.records.SCOPES`.

        Returns
        -------
        (ApiKeyInfo, str)
            The key's record and the key itself (``vgl_<key_id>_<secret>``).

        Raises
        ------
        InputValidationError
            ``client`` or ``scopes`` is invalid (the error's ``field`` says which).
        StoreUnavailableError
            The key could not be stored.
        """
        client = check_text("client", client, MAX_CLIENT)
        granted = check_scopes(scopes)
        key_id = "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LEN))
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
        info = ApiKeyInfo(key_id=key_id, client=client, scopes=granted, created_utc=utc_now(), revoked_utc=None)
        with self._transaction(write=True) as conn:
            conn.execute(
                insert(api_keys_table).values(
                    key_id=key_id,
                    client=client,
                    scopes=" ".join(granted),
                    key_sha256=hashlib.sha256(key.encode("ascii")).hexdigest(),
                    created_utc=info.created_utc,
                )
            )
        logger.info("API key %s created with scopes %s", key_id, ",".join(granted))
        return info, key

    def list_keys(self) -> list[ApiKeyInfo]:
        """Every key issued, revoked ones included, oldest first."""
        with self._transaction() as conn:
            rows = conn.execute(
                select(api_keys_table).order_by(api_keys_table.c.created_utc, api_keys_table.c.key_id)
            ).all()
        return [_key_info(row) for row in rows]

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key for good; False when no live key has this id (unknown or already revoked)."""
        if not isinstance(key_id, str) or len(key_id) != KEY_ID_LEN:
            return False
        with self._transaction(write=True) as conn:
            result = conn.execute(
                update(api_keys_table)
                .where(api_keys_table.c.key_id == key_id, api_keys_table.c.revoked_utc.is_(None))
                .values(revoked_utc=utc_now())
            )
        revoked = result.rowcount == 1
        if revoked:
            logger.info("API key %s revoked", key_id)
        return revoked

    def authenticate(self, presented: str) -> ApiKeyInfo | None:
        """The live key matching ``presented``; None when it is malformed, unknown, wrong or revoked.

        Raises
        ------
        StoreUnavailableError
            The key table cannot be read (the caller must refuse the request, not treat it as anonymous).
        """
        parts = split_key(presented)
        if parts is None:
            return None
        with self._transaction() as conn:
            row = conn.execute(select(api_keys_table).where(api_keys_table.c.key_id == parts[0])).first()
        if row is None:
            return None
        digest = hashlib.sha256(presented.encode("ascii")).hexdigest()
        if not hmac.compare_digest(digest, row.key_sha256) or row.revoked_utc is not None:
            return None
        return _key_info(row)

    # ------------------------------------------------------------------------------------ audit
    def write_audit(self, record: AuditRecord) -> AuditRecord:
        """Append ``record`` to the audit chain, serialised with every other writer of this database.

        After the commit, the new chain head is appended to :attr:`anchor` when the store has one (a failed
        anchor is logged, not raised: the row is committed, and the next anchor covers it through the chain).

        Returns
        -------
        AuditRecord
            ``record`` with ``seq``, ``prev_hash`` and ``row_hash`` filled in.

        Raises
        ------
        InputValidationError
            A field of ``record`` is invalid (the error's ``field`` names it).
        StoreUnavailableError
            The record could not be written; the prediction must not be returned.
        """
        return self.write_audits([record])[0]

    def write_audits(self, records: Sequence[AuditRecord]) -> list[AuditRecord]:
        """Append several records in one transaction: all are written, with consecutive seqs, or none.

        For a batch request: one lock and one commit instead of one per record, and no half-audited batch.
        Every record is validated before the transaction starts. Raises as :meth:`write_audit`.
        """
        outputs = [check_audit(record) for record in records]
        if not outputs:
            return []
        done: list[AuditRecord] = []
        with self._transaction(write=True) as conn:
            if self.kind == "PostgreSQL":
                # Held to commit; READ COMMITTED then sees the previous holder's row in the SELECT below.
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_CHAIN_LOCK})
            last = conn.execute(
                select(audit_table.c.seq, audit_table.c.row_hash).order_by(audit_table.c.seq.desc()).limit(1)
            ).first()
            seq, prev_hash = (0, GENESIS_HASH) if last is None else (last.seq, last.row_hash)
            rows = []
            for record, output_json in zip(records, outputs, strict=True):
                seq += 1
                filled = replace(record, seq=seq, prev_hash=prev_hash)
                filled = replace(filled, row_hash=audit_row_hash(prev_hash, filled))
                rows.append(
                    {
                        "seq": seq,
                        "request_id": filled.request_id,
                        "time_utc": filled.time_utc,
                        "client": filled.client,
                        "route": filled.route,
                        "model_name": filled.model_name,
                        "model_version": filled.model_version,
                        "model_sha256": filled.model_sha256,
                        "input_sha256": filled.input_sha256,
                        "output_json": output_json,
                        "status": filled.status,
                        "prev_hash": prev_hash,
                        "row_hash": filled.row_hash,
                    }
                )
                done.append(filled)
                prev_hash = filled.row_hash
            conn.execute(insert(audit_table), rows)
        if self.anchor is not None:  # after the commit: never anchor a row that a failed commit did not keep
            newest = done[-1]
            assert newest.seq is not None and newest.row_hash is not None  # both filled in the loop above
            self.anchor.append(newest.seq, newest.row_hash)
        return done

    def read_audit(self, *, limit: int = 100, since_seq: int = 0) -> list[AuditRecord]:
        """Up to ``limit`` (1-10000) audit records with ``seq > since_seq``, in chain order."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InputValidationError(
                "limit", f"The 'limit' field must be an integer in [1, 10000]; got {limit!r:.20}"
            )
        if isinstance(since_seq, bool) or not isinstance(since_seq, int) or since_seq < 0:
            raise InputValidationError(
                "since_seq", f"The 'since_seq' field must be an integer >= 0; got {since_seq!r:.20}"
            )
        with self._transaction() as conn:
            rows = conn.execute(
                select(audit_table).where(audit_table.c.seq > since_seq).order_by(audit_table.c.seq).limit(limit)
            ).all()
        return [_audit_record(row) for row in rows]

    def verify_audit_chain(self) -> tuple[bool, int | None]:
        """Recompute the whole chain.

        Returns
        -------
        (bool, int or None)
            ``(True, None)`` when every row links to the one before and hashes to its ``row_hash`` (an empty
            trail included); otherwise ``(False, seq)`` with the first ``seq`` at which the chain does not hold:
            a changed row, or the first of a gap left by a removed one.
        """
        for seq, _row_hash, problem in self.audit_chain_links():
            if problem is not None:
                logger.warning("audit chain of %s broken at seq %d", self.url_masked, seq)
                return False, seq
        return True, None

    def audit_chain_links(self) -> Iterator[tuple[int, str, str | None]]:
        """Walk the chain in seq order, recomputing each row's hash; read in batches, no transaction held open.

        Yields
        ------
        (int, str, str or None)
            ``(seq, row_hash, problem)`` per row; ``problem`` is None while the chain holds, else why it does not
            at this seq (never the row's content), and the walk ends there. For a gap, ``seq`` is the first
            missing one.
        """
        expected, prev_hash = 1, GENESIS_HASH
        while True:
            with self._transaction() as conn:
                rows = conn.execute(
                    select(audit_table)
                    .where(audit_table.c.seq >= expected)
                    .order_by(audit_table.c.seq)
                    .limit(_VERIFY_BATCH)
                ).all()
            for row in rows:
                problem = _chain_problem(row, expected, prev_hash)
                yield expected, row.row_hash, problem
                if problem is not None:
                    return
                prev_hash, expected = row.row_hash, expected + 1
            if len(rows) < _VERIFY_BATCH:
                return


def _chain_problem(row: Any, expected: int, prev_hash: str) -> str | None:
    """Why ``row`` is not the intact link ``expected`` after ``prev_hash``; None when it is."""
    if row.seq != expected:
        return f"seq {expected} is missing (the next row is seq {row.seq})"
    if row.prev_hash != prev_hash:
        return "its prev_hash is not the row_hash of the row before"
    try:
        record = _audit_record(row)
        canonical = row.output_json == canonical_json(record.output)
    except ValueError:  # output_json no longer JSON, or JSON with NaN
        return "its output_json is not valid JSON"
    if not canonical:
        return "its output_json is not canonical JSON"
    if audit_row_hash(prev_hash, record) != record.row_hash:
        return "its row_hash does not match its content"
    return None


def _key_info(row: Any) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row.key_id,
        client=row.client,
        scopes=tuple(row.scopes.split()),
        created_utc=row.created_utc,
        revoked_utc=row.revoked_utc,
    )


def _audit_record(row: Any) -> AuditRecord:
    return AuditRecord(
        request_id=row.request_id,
        time_utc=row.time_utc,
        client=row.client,
        route=row.route,
        model_name=row.model_name,
        model_version=row.model_version,
        model_sha256=row.model_sha256,
        input_sha256=row.input_sha256,
        output=json.loads(row.output_json),
        status=row.status,
        seq=row.seq,
        prev_hash=row.prev_hash,
        row_hash=row.row_hash,
    )


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
