"""The serving store read for monitoring: each answered prediction of a period, with its patient's coarse groups
and the outcome fed back for it, if any.

:class:`PredictionReader` is the monitoring half of :class:`serving.store.database.Store`: it joins the audit trail
(``vigil_audit``), the groups written beside it (``vigil_prediction_groups``) and the outcomes
(``vigil_outcomes``). It only reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from models.errors import InputValidationError
from models.outcomes import format_utc, parse_utc
from serving.store.engine import StoreEngine
from serving.store.schema import audit_table, outcomes_table, prediction_groups_table

__all__ = ["PredictionReader", "PredictionRow"]

_BATCH = 2000


@dataclass(frozen=True)
class PredictionRow:
    """One answered prediction: its audit row's seq, time, client and model, the answer, groups and outcome."""

    seq: int
    time_utc: str
    client: str
    model_name: str
    model_version: str
    output: dict[str, Any]
    groups: dict[str, str | None] | None
    outcome: dict[str, Any] | None
    outcome_task: str | None


class PredictionReader(StoreEngine):
    """Reads predictions for monitoring (constructed as :class:`serving.store.engine.StoreEngine`)."""

    def read_predictions(self, since_utc: str, until_utc: str) -> Iterator[PredictionRow]:
        """Every prediction answered (status 200) at ``since_utc`` <= time < ``until_utc``, in seq order, read in
        batches (no transaction held open between them). Times are ISO-8601 UTC (``...Z``).

        Raises
        ------
        InputValidationError
            A time is not ISO-8601 UTC (naming ``since`` or ``until``), or ``until`` is not after ``since``.
        StoreUnavailableError
            The store cannot be read.
        """
        since, until = parse_utc("since", since_utc), parse_utc("until", until_utc)
        if until <= since:
            raise InputValidationError("until", f"'until' ({until_utc}) must be after 'since' ({since_utc})")
        low, high = format_utc(since), format_utc(until)  # the audit's own format, which sorts as text
        groups, outcomes = prediction_groups_table, outcomes_table
        after = 0
        while True:
            query = (
                select(
                    audit_table.c.seq,
                    audit_table.c.time_utc,
                    audit_table.c.client,
                    audit_table.c.model_name,
                    audit_table.c.model_version,
                    audit_table.c.output_json,
                    groups.c.sex,
                    groups.c.age_band,
                    groups.c.ethnicity,
                    groups.c.site,
                    groups.c.seq.label("grouped"),
                    outcomes.c.task,
                    outcomes.c.outcome_json,
                )
                .outerjoin(groups, groups.c.seq == audit_table.c.seq)
                .outerjoin(outcomes, outcomes.c.audit_seq == audit_table.c.seq)
                .where(
                    audit_table.c.seq > after,
                    audit_table.c.status == 200,
                    audit_table.c.time_utc >= low,
                    audit_table.c.time_utc < high,
                )
                .order_by(audit_table.c.seq)
                .limit(_BATCH)
            )
            with self._transaction() as conn:
                rows = conn.execute(query).all()
            for row in rows:
                yield PredictionRow(
                    seq=row.seq,
                    time_utc=row.time_utc,
                    client=row.client,
                    model_name=row.model_name,
                    model_version=row.model_version,
                    output=json.loads(row.output_json),
                    groups=None
                    if row.grouped is None
                    else {"sex": row.sex, "age_band": row.age_band, "ethnicity": row.ethnicity, "site": row.site},
                    outcome=None if row.outcome_json is None else json.loads(row.outcome_json),
                    outcome_task=row.task,
                )
            if len(rows) < _BATCH:
                return
            after = rows[-1].seq
