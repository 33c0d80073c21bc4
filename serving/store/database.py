"""The serving store: API keys and the append-only, hash-chained audit trail of every prediction.

One SQLAlchemy Core engine over SQLite (the embedded default, ``sqlite:///path/serving.db``) or PostgreSQL
(``postgresql+psycopg://user@host/db``). Several worker processes may share one store: the audit chain is
serialised by the database (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``pg_advisory_xact_lock``), never by a lock in
this process. :class:`Store` joins the three parts, each in its own module: the engine, transactions and schema
(:mod:`serving.store.engine`), the API keys (:mod:`serving.store.keys`), the audit trail
(:mod:`serving.store.audit_trail`) and the outcomes (:mod:`serving.store.outcomes`).

Tamper evidence has two layers. Each audit row carries ``row_hash = sha256(prev_hash + canonical JSON of the
row)`` (see :func:`serving.store.records.audit_row_hash`), so changing, inserting or removing a row breaks the
chain from that row on (:meth:`Store.verify_audit_chain`). Database triggers (:mod:`serving.store.schema`) refuse
UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) of the audit table, so the serving process cannot rewrite history
even by mistake. Neither layer stops an administrator who drops the trigger and rewrites the whole chain, nor the
loss of the newest rows: for that the store appends a keyed anchor of the chain head to storage outside the database
after each write (``anchor``, :mod:`serving.store.audit_anchor`, checked by ``vigil audit verify`` through
:mod:`serving.store.audit_chain`), and the serving database role gets only INSERT and SELECT on the audit table
(docs/audit.md).

Every database failure becomes :class:`models.errors.StoreUnavailableError`: the API must then refuse to
predict (503) rather than answer unaudited. Messages mask any password of the URL; SQL parameters (key hashes,
audit contents) are kept out of exception text (``hide_parameters``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from serving.store.audit_trail import AuditTrail
from serving.store.keys import KeyStore
from serving.store.outcomes import OutcomeStore
from serving.store.predictions import PredictionReader

if TYPE_CHECKING:
    from serving.store.audit_anchor import AuditAnchor

__all__ = ["Store"]


class Store(KeyStore, AuditTrail, OutcomeStore, PredictionReader):
    """API keys, the audit trail and the outcomes fed back after predictions in one SQLite or PostgreSQL database.

    Thread-safe (one connection pool per instance). Make one per process, after any fork (in the app's
    lifespan), and :meth:`dispose` it on shutdown.

    Parameters
    ----------
    url, connect_timeout_s, lock_timeout_s
        As :class:`serving.store.engine.StoreEngine` (its attributes ``kind`` and ``url_masked`` too; a URL it
        does not support is a ``ConfigError`` naming ``audit_url``).
    anchor : AuditAnchor, optional
        Where the chain head goes, keyed, after every committed audit write (see
        :func:`serving.store.audit_anchor.open_anchor`); None: no anchor.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 5.0,
        lock_timeout_s: float = 5.0,
        anchor: AuditAnchor | None = None,
    ) -> None:
        super().__init__(url, connect_timeout_s=connect_timeout_s, lock_timeout_s=lock_timeout_s)
        self.anchor = anchor

    def __repr__(self) -> str:
        return f"Store({self.url_masked!r})"
