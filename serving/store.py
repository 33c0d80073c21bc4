"""The serving store: API keys and the append-only, hash-chained audit trail of every prediction.

One SQLAlchemy Core engine over SQLite (the embedded default, ``sqlite:///path/serving.db``) or PostgreSQL
(``postgresql+psycopg://user@host/db``). Several worker processes may share one store: the audit chain is
serialised by the database (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``pg_advisory_xact_lock``), never by a lock in
this process.

Tamper evidence has two layers. Each audit row carries ``row_hash = sha256(prev_hash + canonical JSON of the
row)`` (see :func:`audit_row_hash`), so changing, inserting or removing a row breaks the chain from that row on
(:meth:`Store.verify_audit_chain`). Database triggers refuse UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) of
the audit table, so the serving process cannot rewrite history even by mistake. Neither layer stops an
administrator who drops the trigger and rewrites the whole chain, nor the loss of the newest rows; keep a copy of
the latest ``row_hash`` elsewhere for that, and give the serving database role only INSERT and SELECT.

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
import re
import secrets
import string
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from models.errors import ConfigError, InputValidationError, StoreUnavailableError

__all__ = [
    "GENESIS_HASH",
    "KEY_PREFIX",
    "SCOPES",
    "ApiKeyInfo",
    "AuditRecord",
    "Store",
    "audit_row_hash",
    "split_key",
    "utc_now",
]

logger = logging.getLogger(__name__)

SCOPES: tuple[str, ...] = ("triage", "imaging", "admin")
"""Every scope a key may hold, in the order keys list them."""

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first audit row."""

KEY_PREFIX = "vgl_"
_KEY_ID_ALPHABET = string.ascii_letters + string.digits
_KEY_ID_LEN = 12
_SECRET_BYTES = 32
# key_id is alphanumeric (a subset of url-safe) so the "_" after it is unambiguous; the secret is
# secrets.token_urlsafe(32): 43 characters of [A-Za-z0-9_-].
_KEY_RE = re.compile(rf"{KEY_PREFIX}([A-Za-z0-9]{{{_KEY_ID_LEN}}})_([A-Za-z0-9_-]{{43}})")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_MAX_CLIENT = 64
# Longest accepted value of each free-text audit field (columns are TEXT; the limit is checked here).
_AUDIT_TEXT_LIMITS = {"request_id": 128, "client": _MAX_CLIENT, "route": 256, "model_name": 128, "model_version": 64}
_VERIFY_BATCH = 1000
# pg_advisory_xact_lock keys (any constant bigint; advisory locks are per database, not per schema).
_PG_CHAIN_LOCK = 0x5649_4749_4C41_5544  # "VIGILAUD"
_PG_SCHEMA_LOCK = 0x5649_4749_4C53_4348  # "VIGILSCH"

_metadata = MetaData()
_keys = Table(
    "vigil_api_keys", _metadata,
    Column("key_id", Text, primary_key=True),
    Column("client", Text, nullable=False),
    Column("scopes", Text, nullable=False),  # space-separated, in SCOPES order
    Column("key_sha256", Text, nullable=False),  # sha256 hex of the whole presented key; never the key
    Column("created_utc", Text, nullable=False),
    Column("revoked_utc", Text, nullable=True),
)
_audit = Table(
    "vigil_audit", _metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("request_id", Text, nullable=False),
    Column("time_utc", Text, nullable=False),
    Column("client", Text, nullable=False),
    Column("route", Text, nullable=False),
    Column("model_name", Text, nullable=False),
    Column("model_version", Text, nullable=False),
    Column("model_sha256", Text, nullable=False),
    Column("input_sha256", Text, nullable=False),
    Column("output_json", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("row_hash", Text, nullable=False),
    Index("ix_vigil_audit_request_id", "request_id"),
)

_REFUSED = "vigil_audit is append-only"
_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS vigil_audit_no_{op.lower()} BEFORE {op} ON vigil_audit "
    f"BEGIN SELECT RAISE(ABORT, '{_REFUSED}; {op} refused'); END"
    for op in ("UPDATE", "DELETE")
]
_PG_TRIGGER_FUNCTION = f"""
CREATE OR REPLACE FUNCTION vigil_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION USING MESSAGE = '{_REFUSED}; ' || TG_OP || ' refused', ERRCODE = 'insufficient_privilege';
END
$fn$
"""
_PG_TRIGGERS = """
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'vigil_audit'::regclass
                   AND tgname = 'vigil_audit_no_update') THEN
        CREATE TRIGGER vigil_audit_no_update BEFORE UPDATE ON vigil_audit
            FOR EACH ROW EXECUTE FUNCTION vigil_audit_refuse_change();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'vigil_audit'::regclass
                   AND tgname = 'vigil_audit_no_delete') THEN
        CREATE TRIGGER vigil_audit_no_delete BEFORE DELETE ON vigil_audit
            FOR EACH ROW EXECUTE FUNCTION vigil_audit_refuse_change();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'vigil_audit'::regclass
                   AND tgname = 'vigil_audit_no_truncate') THEN
        CREATE TRIGGER vigil_audit_no_truncate BEFORE TRUNCATE ON vigil_audit
            FOR EACH STATEMENT EXECUTE FUNCTION vigil_audit_refuse_change();
    END IF;
END
$do$
"""


@dataclass(frozen=True)
class ApiKeyInfo:
    """What the store knows about one API key; never the key itself.

    Attributes
    ----------
    key_id : str
        The 12-character public part of the key (``vgl_<key_id>_<secret>``); safe to log.
    client : str
        Who the key was issued to.
    scopes : tuple of str
        The scopes it grants, a subset of :data:`SCOPES` in that order.
    created_utc, revoked_utc : str, str or None
        ISO-8601 UTC times (``...Z``); ``revoked_utc`` is None while the key is live.
    """

    key_id: str
    client: str
    scopes: tuple[str, ...]
    created_utc: str
    revoked_utc: str | None


@dataclass(frozen=True)
class AuditRecord:
    """One prediction as the audit trail keeps it: who asked, which model answered, what it said.

    The input itself is not kept, only its sha256. ``seq``, ``prev_hash`` and ``row_hash`` are filled by
    :meth:`Store.write_audit`; leave them None when writing.

    Attributes
    ----------
    request_id : str
        The request id the API returned to the caller.
    time_utc : str
        ISO-8601 UTC time ending in ``Z`` (see :func:`utc_now`).
    client : str
        The key id, or the client name, that made the request.
    route : str
        The API route (``/v1/triage``).
    model_name, model_version, model_sha256 : str
        The model that answered; ``model_sha256`` is lowercase hex, or ``""`` when no model ran.
    input_sha256 : str
        Lowercase sha256 hex of the request body as received, or ``""`` when there was none.
    output : dict
        The response (JSON-serialisable, no NaN); stored as canonical JSON text.
    status : int
        The HTTP status returned.
    seq : int or None
        Position in the chain, from 1, without gaps.
    prev_hash, row_hash : str or None
        The previous row's ``row_hash`` (:data:`GENESIS_HASH` for the first) and this row's.
    """

    request_id: str
    time_utc: str
    client: str
    route: str
    model_name: str
    model_version: str
    model_sha256: str
    input_sha256: str
    output: dict[str, Any]
    status: int
    seq: int | None = None
    prev_hash: str | None = None
    row_hash: str | None = None


def utc_now() -> str:
    """The current time as ISO-8601 UTC with milliseconds and a ``Z`` (``2025-01-31T12:00:00.123Z``)."""
    now = datetime.now(UTC)
    return f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}Z"


def _canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def audit_row_hash(prev_hash: str, record: AuditRecord) -> str:
    """The chain hash of ``record``: ``sha256(prev_hash + canonical JSON)`` as lowercase hex.

    The canonical JSON is an object of every field of :class:`AuditRecord` except ``prev_hash`` and ``row_hash``
    (so including ``seq``), with sorted keys, ``","``/``":"`` separators, UTF-8 (no ASCII escaping) and no NaN.
    An external verifier needs nothing else.

    Parameters
    ----------
    prev_hash : str
        The previous row's ``row_hash``, or :data:`GENESIS_HASH`.
    record : AuditRecord
        The row, with ``seq`` set.

    Returns
    -------
    str
        64 lowercase hex characters.
    """
    body = {
        "seq": record.seq, "request_id": record.request_id, "time_utc": record.time_utc, "client": record.client,
        "route": record.route, "model_name": record.model_name, "model_version": record.model_version,
        "model_sha256": record.model_sha256, "input_sha256": record.input_sha256, "output": record.output,
        "status": record.status,
    }
    return hashlib.sha256((prev_hash + _canonical_json(body)).encode("utf-8")).hexdigest()


def split_key(presented: object) -> tuple[str, str] | None:
    """Split an API key ``vgl_<key_id>_<secret>`` into ``(key_id, secret)``; None when it is not one."""
    if not isinstance(presented, str):
        return None
    match = _KEY_RE.fullmatch(presented)
    return (match.group(1), match.group(2)) if match else None


def _check_text(field: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise InputValidationError(field, f"The '{field}' field must be a string; got {type(value).__name__}")
    if not value:
        raise InputValidationError(field, f"The '{field}' field must not be empty")
    if len(value) > limit:
        raise InputValidationError(field, f"The '{field}' field must be at most {limit} characters; got {len(value)}")
    if not value.isprintable():  # control, format and line/paragraph characters; a plain space is fine
        raise InputValidationError(field, f"The '{field}' field must not contain control characters")
    return value


def _check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(scopes, str):
        raise InputValidationError("scopes", f"The 'scopes' field must be a list of scope names from {SCOPES}, "
                                             "not a single string")
    given = list(scopes)
    unknown = [s for s in given if s not in SCOPES]
    if unknown:
        raise InputValidationError("scopes", f"The 'scopes' field must hold only {SCOPES}; got {unknown[0]!r:.40}")
    if not given:
        raise InputValidationError("scopes", f"The 'scopes' field must name at least one of {SCOPES}")
    return tuple(s for s in SCOPES if s in given)


def _check_audit(record: AuditRecord) -> str:
    """Validate ``record`` for writing; return its output as canonical JSON."""
    if not isinstance(record, AuditRecord):
        raise InputValidationError("record", f"write_audit needs an AuditRecord; got {type(record).__name__}")
    if record.seq is not None or record.prev_hash is not None or record.row_hash is not None:
        raise InputValidationError("seq", "seq, prev_hash and row_hash are assigned by the store; leave them None")
    for field, limit in _AUDIT_TEXT_LIMITS.items():
        _check_text(field, getattr(record, field), limit)
    time_utc = _check_text("time_utc", record.time_utc, 40)
    try:
        parsed = datetime.fromisoformat(time_utc)
    except ValueError:
        parsed = None
    if parsed is None or not time_utc.endswith("Z"):
        raise InputValidationError("time_utc", "The 'time_utc' field must be ISO-8601 UTC ending in 'Z'")
    for field in ("model_sha256", "input_sha256"):
        value = getattr(record, field)
        if not isinstance(value, str) or (value and not _HEX64_RE.fullmatch(value)):
            raise InputValidationError(field, f"The '{field}' field must be 64 lowercase hex characters or ''")
    if isinstance(record.status, bool) or not isinstance(record.status, int) or not 100 <= record.status <= 599:
        raise InputValidationError("status", f"The 'status' field must be an HTTP status in [100, 599]; "
                                             f"got {record.status!r:.20}")
    if not isinstance(record.output, dict):
        raise InputValidationError("output", f"The 'output' field must be a dict; got {type(record.output).__name__}")
    try:
        return _canonical_json(record.output)
    except (TypeError, ValueError) as exc:
        raise InputValidationError("output", f"The 'output' field must be JSON-serialisable without NaN: {exc}"
                                   ) from exc


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
        raise ConfigError("audit_url is not a SQLAlchemy URL; use sqlite:///path/serving.db or "
                          "postgresql+psycopg://user@host:5432/db") from exc
    scheme = parsed.drivername
    if scheme in ("sqlite", "sqlite+pysqlite"):
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise ConfigError("audit_url names an in-memory SQLite database, which would lose the audit trail; "
                              "use sqlite:///path/serving.db")
        return parsed, "SQLite"
    if scheme in ("postgresql", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg"), "PostgreSQL"
    raise ConfigError(f"audit_url has the unsupported scheme {scheme[:40]!r}; use sqlite:///path/serving.db or "
                      "postgresql+psycopg://user@host:5432/db")


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
                self._engine = create_engine(parsed, hide_parameters=True,
                                             connect_args={"timeout": float(lock_timeout_s)})
                event.listen(self._engine, "connect", _sqlite_on_connect)
                event.listen(self._engine, "begin", _sqlite_on_begin)
            else:
                self._engine = create_engine(
                    parsed, hide_parameters=True, pool_pre_ping=True,
                    connect_args={"connect_timeout": max(1, math.ceil(connect_timeout_s)), "application_name": "vigil"})
        except ImportError as exc:
            raise ConfigError(f"audit_url needs the {self.kind} driver, which is not installed "
                              "(pip install 'psycopg[binary]')") from exc
        self._db_errors: tuple[type[BaseException], ...] = (
            SQLAlchemyError, OSError, self._engine.dialect.loaded_dbapi.Error)

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
                _metadata.create_all(conn)
                conn.execute(text(_PG_TRIGGER_FUNCTION))
                conn.execute(text(_PG_TRIGGERS))
            else:
                _metadata.create_all(conn)
                for ddl in _SQLITE_TRIGGERS:
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
            conn.execute(select(_audit.c.seq).limit(1)).all()

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
            At least one of :data:`SCOPES`.

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
        client = _check_text("client", client, _MAX_CLIENT)
        granted = _check_scopes(scopes)
        key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(_KEY_ID_LEN))
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
        info = ApiKeyInfo(key_id=key_id, client=client, scopes=granted, created_utc=utc_now(), revoked_utc=None)
        with self._transaction(write=True) as conn:
            conn.execute(insert(_keys).values(
                key_id=key_id, client=client, scopes=" ".join(granted),
                key_sha256=hashlib.sha256(key.encode("ascii")).hexdigest(), created_utc=info.created_utc))
        logger.info("API key %s created with scopes %s", key_id, ",".join(granted))
        return info, key

    def list_keys(self) -> list[ApiKeyInfo]:
        """Every key issued, revoked ones included, oldest first."""
        with self._transaction() as conn:
            rows = conn.execute(select(_keys).order_by(_keys.c.created_utc, _keys.c.key_id)).all()
        return [_key_info(row) for row in rows]

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key for good; False when no live key has this id (unknown or already revoked)."""
        if not isinstance(key_id, str) or len(key_id) != _KEY_ID_LEN:
            return False
        with self._transaction(write=True) as conn:
            result = conn.execute(update(_keys).where(_keys.c.key_id == key_id, _keys.c.revoked_utc.is_(None))
                                  .values(revoked_utc=utc_now()))
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
            row = conn.execute(select(_keys).where(_keys.c.key_id == parts[0])).first()
        if row is None:
            return None
        digest = hashlib.sha256(presented.encode("ascii")).hexdigest()
        if not hmac.compare_digest(digest, row.key_sha256) or row.revoked_utc is not None:
            return None
        return _key_info(row)

    # ------------------------------------------------------------------------------------ audit
    def write_audit(self, record: AuditRecord) -> AuditRecord:
        """Append ``record`` to the audit chain, serialised with every other writer of this database.

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
        outputs = [_check_audit(record) for record in records]
        if not outputs:
            return []
        done: list[AuditRecord] = []
        with self._transaction(write=True) as conn:
            if self.kind == "PostgreSQL":
                # Held to commit; READ COMMITTED then sees the previous holder's row in the SELECT below.
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_CHAIN_LOCK})
            last = conn.execute(select(_audit.c.seq, _audit.c.row_hash).order_by(_audit.c.seq.desc()).limit(1)).first()
            seq, prev_hash = (0, GENESIS_HASH) if last is None else (last.seq, last.row_hash)
            rows = []
            for record, output_json in zip(records, outputs, strict=True):
                seq += 1
                filled = replace(record, seq=seq, prev_hash=prev_hash)
                filled = replace(filled, row_hash=audit_row_hash(prev_hash, filled))
                rows.append({
                    "seq": seq, "request_id": filled.request_id, "time_utc": filled.time_utc,
                    "client": filled.client, "route": filled.route, "model_name": filled.model_name,
                    "model_version": filled.model_version, "model_sha256": filled.model_sha256,
                    "input_sha256": filled.input_sha256, "output_json": output_json, "status": filled.status,
                    "prev_hash": prev_hash, "row_hash": filled.row_hash})
                done.append(filled)
                prev_hash = filled.row_hash
            conn.execute(insert(_audit), rows)
        return done

    def read_audit(self, *, limit: int = 100, since_seq: int = 0) -> list[AuditRecord]:
        """Up to ``limit`` (1-10000) audit records with ``seq > since_seq``, in chain order."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InputValidationError("limit", f"The 'limit' field must be an integer in [1, 10000]; "
                                                f"got {limit!r:.20}")
        if isinstance(since_seq, bool) or not isinstance(since_seq, int) or since_seq < 0:
            raise InputValidationError("since_seq", f"The 'since_seq' field must be an integer >= 0; "
                                                    f"got {since_seq!r:.20}")
        with self._transaction() as conn:
            rows = conn.execute(select(_audit).where(_audit.c.seq > since_seq)
                                .order_by(_audit.c.seq).limit(limit)).all()
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
        expected, prev_hash = 1, GENESIS_HASH
        while True:
            with self._transaction() as conn:
                rows = conn.execute(select(_audit).where(_audit.c.seq >= expected).order_by(_audit.c.seq)
                                    .limit(_VERIFY_BATCH)).all()
            for row in rows:
                try:
                    record = _audit_record(row)
                    intact = (record.seq == expected and record.prev_hash == prev_hash
                              and row.output_json == _canonical_json(record.output)
                              and audit_row_hash(prev_hash, record) == record.row_hash)
                except ValueError:  # output_json no longer JSON
                    intact = False
                if not intact:
                    logger.warning("audit chain of %s broken at seq %d", self.url_masked, expected)
                    return False, expected
                prev_hash, expected = row.row_hash, expected + 1
            if len(rows) < _VERIFY_BATCH:
                return True, None


def _key_info(row: Any) -> ApiKeyInfo:
    return ApiKeyInfo(key_id=row.key_id, client=row.client, scopes=tuple(row.scopes.split()),
                      created_utc=row.created_utc, revoked_utc=row.revoked_utc)


def _audit_record(row: Any) -> AuditRecord:
    return AuditRecord(
        request_id=row.request_id, time_utc=row.time_utc, client=row.client, route=row.route,
        model_name=row.model_name, model_version=row.model_version, model_sha256=row.model_sha256,
        input_sha256=row.input_sha256, output=json.loads(row.output_json), status=row.status, seq=row.seq,
        prev_hash=row.prev_hash, row_hash=row.row_hash)


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
