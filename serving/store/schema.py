"""The serving store's tables and the triggers that make its audit table append-only.

SQLAlchemy Core table definitions (:data:`metadata`) for SQLite and PostgreSQL, and the trigger DDL that
:meth:`serving.store.database.Store.create_schema` runs after creating them: UPDATE and DELETE (and, on PostgreSQL,
TRUNCATE) of ``vigil_audit`` are refused by the database.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, Table, Text, UniqueConstraint

__all__ = [
    "PG_TRIGGERS",
    "PG_TRIGGER_FUNCTION",
    "SQLITE_TRIGGERS",
    "api_keys_table",
    "audit_instances_table",
    "audit_table",
    "metadata",
    "outcomes_table",
    "prediction_groups_table",
]

metadata = MetaData()
api_keys_table = Table(
    "vigil_api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("client", Text, nullable=False),
    Column("scopes", Text, nullable=False),  # space-separated, in SCOPES order
    Column("key_sha256", Text, nullable=False),  # sha256 hex of the whole presented key; never the key
    Column("created_utc", Text, nullable=False),
    Column("revoked_utc", Text, nullable=True),
)
audit_table = Table(
    "vigil_audit",
    metadata,
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
#: The DICOM instance each answered second read in the audit read (``output.source.sop_instance_uid``), written in the
#: audit row's transaction: how a radiologist's read, which knows the image and not Vigil's audit id, finds its
#: prediction (:mod:`serving.store.outcomes`). Derived from the audited output, so the hash chain covers it.
audit_instances_table = Table(
    "vigil_audit_instances",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("sop_instance_uid", Text, nullable=False),
    Index("ix_vigil_audit_instances_uid", "sop_instance_uid"),
)
#: The groups a triage prediction's patient belongs to, coarse and written in the audit row's transaction, for
#: monitoring by group after release (:mod:`workflows.monitoring`): sex, age band (:data:`models.triage.decision.
#: AGE_BANDS`), and ethnicity and site when the client sent them. Not the record: nothing that identifies a patient.
prediction_groups_table = Table(
    "vigil_prediction_groups",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("sex", Text, nullable=True),
    Column("age_band", Text, nullable=True),
    Column("ethnicity", Text, nullable=True),
    Column("site", Text, nullable=True),
)
#: Outcomes fed back after a prediction (:mod:`serving.store.outcomes`): append-only like the audit trail, beside it,
#: never altering it; one per audited prediction (``audit_seq`` is unique).
outcomes_table = Table(
    "vigil_outcomes",
    metadata,
    Column("outcome_id", Integer, primary_key=True, autoincrement=True),
    Column("audit_seq", Integer, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("task", Text, nullable=False),
    Column("observed_utc", Text, nullable=False),
    Column("received_utc", Text, nullable=False),
    Column("client", Text, nullable=False),
    Column("outcome_json", Text, nullable=False),
    UniqueConstraint("audit_seq", name="uq_vigil_outcomes_audit_seq"),
)

_APPEND_ONLY = ("vigil_audit", "vigil_audit_instances", "vigil_prediction_groups", "vigil_outcomes")
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only; {op} refused'); END"
    for table in _APPEND_ONLY
    for op in ("UPDATE", "DELETE")
]
# Named for the audit table, where it began; it refuses a change to any table whose triggers call it. (A database
# made before 2026-12-07 keeps its older function, whose message names vigil_audit whichever table it guards.)
PG_TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION vigil_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only; ' || TG_OP || ' refused',
        ERRCODE = 'insufficient_privilege';
END
$fn$
"""
_PG_TRIGGER = """
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = '{table}'::regclass
                   AND tgname = '{table}_no_{op_lower}') THEN
        CREATE TRIGGER {table}_no_{op_lower} BEFORE {op} ON {table}
            FOR EACH {level} EXECUTE FUNCTION vigil_audit_refuse_change();
    END IF;"""
PG_TRIGGERS = (
    "\nDO $do$\nBEGIN"
    + "".join(
        _PG_TRIGGER.format(table=table, op=op, op_lower=op.lower(), level="STATEMENT" if op == "TRUNCATE" else "ROW")
        for table in _APPEND_ONLY
        for op in ("UPDATE", "DELETE", "TRUNCATE")
    )
    + "\nEND\n$do$\n"
)
