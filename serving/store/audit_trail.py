"""The serving store's audit trail: appending records to the hash chain, reading them back, walking the chain.

:class:`AuditTrail` is the audit half of :class:`serving.store.database.Store`. Each row carries ``row_hash =
sha256(prev_hash + canonical JSON of the row)`` (:func:`serving.store.records.audit_row_hash`); writers are serialised
by the database (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``pg_advisory_xact_lock``), never by a lock in this process,
so several worker processes may append to one chain. After each committed write the new chain head goes to the
store's :attr:`AuditTrail.anchor` when it has one (:mod:`serving.store.audit_anchor`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, text

from models.errors import InputValidationError
from serving.store.engine import StoreEngine
from serving.store.records import GENESIS_HASH, AuditRecord, audit_row_hash, canonical_json, check_audit
from serving.store.schema import audit_instances_table, audit_table, prediction_groups_table

if TYPE_CHECKING:
    from serving.store.audit_anchor import AuditAnchor

__all__ = ["AuditTrail"]

logger = logging.getLogger(__name__)

_VERIFY_BATCH = 1000
# A pg_advisory_xact_lock key (any constant bigint; advisory locks are per database, not per schema).
_PG_CHAIN_LOCK = 0x5649_4749_4C41_5544  # "VIGILAUD"


class AuditTrail(StoreEngine):
    """The audit chain in the store's database (constructed as :class:`serving.store.engine.StoreEngine`).

    Attributes
    ----------
    anchor : AuditAnchor or None
        Where the chain head goes, keyed, after every committed audit write; None: no anchor.
    """

    anchor: AuditAnchor | None = None

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

    def write_audits(
        self, records: Sequence[AuditRecord], groups: Sequence[Mapping[str, str | None] | None] | None = None
    ) -> list[AuditRecord]:
        """Append several records in one transaction: all are written, with consecutive seqs, or none.

        For a batch request: one lock and one commit instead of one per record, and no half-audited batch.
        Every record is validated before the transaction starts. The SOP Instance UID of each answered second read
        goes into ``vigil_audit_instances`` in the same transaction (how an outcome finds it); ``groups`` (one per
        record, None where there is none) the coarse groups of each triage prediction's patient into
        ``vigil_prediction_groups`` (keys ``sex``, ``age_band``, ``ethnicity``, ``site``; for monitoring). Raises as
        :meth:`write_audit`.
        """
        outputs = [check_audit(record) for record in records]
        if groups is not None and len(groups) != len(records):
            raise InputValidationError("groups", f"groups must give one entry per record; got {len(groups)}")
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
            instances = [
                {"seq": row.seq, "sop_instance_uid": uid} for row in done if (uid := _instance_read(row)) is not None
            ]
            if instances:
                conn.execute(insert(audit_instances_table), instances)
            grouped = [
                {"seq": row.seq, **{k: _group_value(g.get(k)) for k in _GROUP_KEYS}}
                for row, g in zip(done, groups or [None] * len(done), strict=True)
                if g is not None
            ]
            if grouped:
                conn.execute(insert(prediction_groups_table), grouped)
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


_GROUP_KEYS = ("sex", "age_band", "ethnicity", "site")


def _group_value(value: object) -> str | None:
    """A group label as stored: text of at most 64 characters, or None."""
    return None if value is None else str(value)[:64]


def _instance_read(record: AuditRecord) -> str | None:
    """The SOP Instance UID of an answered second read (``output.source.sop_instance_uid``); None for anything else."""
    source = record.output.get("source") if record.status == 200 and "findings" in record.output else None
    uid = source.get("sop_instance_uid") if isinstance(source, dict) else None
    return uid if isinstance(uid, str) and uid else None


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
