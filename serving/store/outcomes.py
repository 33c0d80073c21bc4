"""The serving store's outcomes: what happened after a prediction, fed back by a site and kept beside the audit trail.

:class:`OutcomeStore` is the outcome half of :class:`serving.store.database.Store`. An outcome
(:class:`models.outcomes.Outcome`) names its prediction by audit id (the audit row's seq), by request id, or by the
SOP Instance UID of the image a second read read (through ``vigil_audit_instances``); the store
checks, in the same transaction that writes it, that the prediction exists, was answered (status 200), is of the
outcome's task, was made before the outcome was observed, and has no outcome yet. The table is append-only (database
triggers refuse UPDATE and DELETE, as for the audit table), and nothing here writes to the audit table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, insert, select, text
from sqlalchemy.engine import Connection

from models.errors import InputValidationError, OutcomeConflictError
from models.outcomes import Outcome, parse_utc
from serving.store.engine import StoreEngine
from serving.store.records import canonical_json, utc_now
from serving.store.schema import audit_instances_table, audit_table, outcomes_table

__all__ = ["OutcomeStore", "StoredOutcome"]

# A pg_advisory_xact_lock key for outcome writers, so that the duplicate check and the insert are one step.
_PG_OUTCOME_LOCK = 0x5649_4749_4C4F_5554  # "VIGILOUT"
_CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class StoredOutcome:
    """An outcome as stored: its own id, the prediction it belongs to and when it was observed and received."""

    outcome_id: int
    audit_id: int
    request_id: str
    task: str
    observed_utc: str
    received_utc: str
    client: str
    values: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome_id": self.outcome_id,
            "audit_id": self.audit_id,
            "request_id": self.request_id,
            "task": self.task,
            "observed_utc": self.observed_utc,
            "received_utc": self.received_utc,
            "client": self.client,
            **{self.task: self.values},
        }


def _task_of(output: dict[str, Any]) -> str | None:
    """The task an audited answer belongs to, by its shape: a triage result has an acuity, a second read findings."""
    if "acuity" in output:
        return "triage"
    if "findings" in output:
        return "imaging"
    return None


class OutcomeStore(StoreEngine):
    """Outcomes in the store's database (constructed as :class:`serving.store.engine.StoreEngine`)."""

    def record_outcomes(self, outcomes: Sequence[Outcome], client: str) -> list[StoredOutcome | InputValidationError]:
        """Store each outcome that links to a prediction without one; one transaction for the lot.

        Returns
        -------
        list
            Per outcome, in order: the :class:`StoredOutcome`, or the error that kept it out (an
            :class:`InputValidationError` naming ``audit_id`` or ``request_id`` or ``observed_utc``; an
            :class:`OutcomeConflictError` when its prediction already has an outcome, stored earlier or earlier in
            this batch). The others are stored whatever happens to one.

        Raises
        ------
        StoreUnavailableError
            Nothing could be stored.
        """
        if not outcomes:
            return []
        received = utc_now()
        done: list[StoredOutcome | InputValidationError] = []
        with self._transaction(write=True) as conn:
            if self.kind == "PostgreSQL":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_OUTCOME_LOCK})
            by_seq, by_request, by_instance = self._predictions(conn, outcomes)
            single = [rows[0].seq for rows in (*by_request.values(), *by_instance.values()) if len(rows) == 1]
            taken = self._with_outcomes(conn, [*by_seq, *single])
            for outcome in outcomes:
                try:
                    row = _prediction_of(outcome, by_seq, by_request, by_instance)
                    if row.seq in taken:
                        raise OutcomeConflictError(
                            outcome.link,
                            f"the prediction with audit_id {row.seq} already has an outcome (outcome_id "
                            f"{taken[row.seq]}); outcomes are append-only and the first is kept",
                        )
                    stored = self._insert(conn, outcome, row, client, received)
                    taken[row.seq] = stored.outcome_id
                    done.append(stored)
                except InputValidationError as exc:
                    done.append(exc)
        return done

    def read_outcomes(self, *, since_id: int = 0, limit: int = 100) -> list[StoredOutcome]:
        """Up to ``limit`` (1-10000) stored outcomes with ``outcome_id > since_id``, oldest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InputValidationError(
                "limit", f"The 'limit' field must be an integer in [1, 10000]; got {limit!r:.20}"
            )
        if isinstance(since_id, bool) or not isinstance(since_id, int) or since_id < 0:
            raise InputValidationError(
                "since_id", f"The 'since_id' field must be an integer >= 0; got {since_id!r:.20}"
            )
        with self._transaction() as conn:
            rows = conn.execute(
                select(outcomes_table)
                .where(outcomes_table.c.outcome_id > since_id)
                .order_by(outcomes_table.c.outcome_id)
                .limit(limit)
            ).all()
        return [
            StoredOutcome(
                outcome_id=row.outcome_id,
                audit_id=row.audit_seq,
                request_id=row.request_id,
                task=row.task,
                observed_utc=row.observed_utc,
                received_utc=row.received_utc,
                client=row.client,
                values=json.loads(row.outcome_json),
            )
            for row in rows
        ]

    # ------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _predictions(
        conn: Connection, outcomes: Sequence[Outcome]
    ) -> tuple[dict[int, Any], dict[str, list[Any]], dict[str, list[Any]]]:
        """The audit rows the outcomes name: by seq; every row of each named request id; every answered second read
        of each named SOP Instance UID."""
        columns = (
            audit_table.c.seq,
            audit_table.c.request_id,
            audit_table.c.time_utc,
            audit_table.c.status,
            audit_table.c.output_json,
        )
        by_seq: dict[int, Any] = {
            row.seq: row for row in _rows_in(conn, select(*columns), audit_table.c.seq, (o.audit_id for o in outcomes))
        }
        by_request: dict[str, list[Any]] = {}
        requests = select(*columns).order_by(audit_table.c.seq)
        for row in _rows_in(conn, requests, audit_table.c.request_id, (o.request_id for o in outcomes)):
            by_request.setdefault(row.request_id, []).append(row)
        by_instance: dict[str, list[Any]] = {}
        reads = (
            select(*columns, audit_instances_table.c.sop_instance_uid)
            .join(audit_instances_table, audit_instances_table.c.seq == audit_table.c.seq)
            .order_by(audit_table.c.seq)
        )
        for read in _rows_in(
            conn, reads, audit_instances_table.c.sop_instance_uid, (o.sop_instance_uid for o in outcomes)
        ):
            by_instance.setdefault(read.sop_instance_uid, []).append(read)
        return by_seq, by_request, by_instance

    @staticmethod
    def _with_outcomes(conn: Connection, seqs: list[int]) -> dict[int, int]:
        """audit seq -> outcome_id for those of ``seqs`` that already have an outcome."""
        query = select(outcomes_table.c.audit_seq, outcomes_table.c.outcome_id)
        return {row.audit_seq: row.outcome_id for row in _rows_in(conn, query, outcomes_table.c.audit_seq, seqs)}

    @staticmethod
    def _insert(conn: Connection, outcome: Outcome, row: Any, client: str, received: str) -> StoredOutcome:
        output = json.loads(row.output_json)
        task = _task_of(output)
        field = outcome.link
        if row.status != 200 or task is None:
            raise InputValidationError(
                field, f"the request with audit_id {row.seq} was not answered with a prediction (status {row.status})"
            )
        if task != outcome.task:
            raise InputValidationError(
                field, f"audit_id {row.seq} is a {task} prediction; this outcome is a {outcome.task} outcome"
            )
        if parse_utc("observed_utc", outcome.observed_utc) < parse_utc("time_utc", row.time_utc):
            raise InputValidationError(
                "observed_utc",
                f"the outcome was observed ({outcome.observed_utc}) before its prediction was made ({row.time_utc})",
            )
        values_json = canonical_json(outcome.values)
        result = conn.execute(
            insert(outcomes_table).values(
                audit_seq=row.seq,
                request_id=row.request_id,
                task=outcome.task,
                observed_utc=outcome.observed_utc,
                received_utc=received,
                client=client,
                outcome_json=values_json,
            )
        )
        key = result.inserted_primary_key
        assert key is not None and key[0] is not None  # an autoincrement primary key, filled by the insert
        return StoredOutcome(
            outcome_id=int(key[0]),
            audit_id=row.seq,
            request_id=row.request_id,
            task=outcome.task,
            observed_utc=outcome.observed_utc,
            received_utc=received,
            client=client,
            values=outcome.values,
        )


def _rows_in(conn: Connection, query: Select[Any], column: Any, values: Iterable[Any]) -> Iterator[Any]:
    """The rows of ``query`` whose ``column`` is one of ``values`` (None left out), :data:`_CHUNK` values per
    statement; each key's rows come from one statement, so they keep the query's order."""
    wanted = sorted({v for v in values if v is not None})
    for start in range(0, len(wanted), _CHUNK):
        yield from conn.execute(query.where(column.in_(wanted[start : start + _CHUNK])))


def _prediction_of(
    outcome: Outcome, by_seq: dict[int, Any], by_request: dict[str, list[Any]], by_instance: dict[str, list[Any]]
) -> Any:
    if outcome.audit_id is not None:
        row = by_seq.get(outcome.audit_id)
        if row is None:
            raise InputValidationError("audit_id", f"no prediction has audit_id {outcome.audit_id}")
        return row
    if outcome.request_id is not None:
        rows = by_request.get(outcome.request_id, [])
        if not rows:
            raise InputValidationError("request_id", f"no prediction has request_id {outcome.request_id!r:.80}")
        if len(rows) > 1:
            raise InputValidationError(
                "request_id",
                f"request_id {outcome.request_id!r:.80} made {len(rows)} predictions (a batch): link each outcome by "
                "the audit_id of its result",
            )
        return rows[0]
    uid = outcome.sop_instance_uid
    assert uid is not None  # validate_outcome requires one of the three links
    rows = by_instance.get(uid, [])
    if not rows:
        raise InputValidationError("sop_instance_uid", f"no second read of the instance {uid} is in the audit trail")
    if len(rows) > 1:
        raise InputValidationError(
            "sop_instance_uid",
            f"the instance {uid} was read {len(rows)} times (audit_ids {', '.join(str(r.seq) for r in rows[:10])}): "
            "link the outcome by the audit_id of the read it judges",
        )
    return rows[0]
