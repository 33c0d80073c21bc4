"""The serving store's tables and the triggers that make its audit table append-only.

SQLAlchemy Core table definitions (:data:`metadata`) for SQLite and PostgreSQL, and the trigger DDL that
:meth:`serving.store.database.Store.create_schema` runs after creating them: UPDATE and DELETE (and, on PostgreSQL,
TRUNCATE) of ``vigil_audit`` are refused by the database.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, MetaData, Table, Text

__all__ = ["PG_TRIGGERS", "PG_TRIGGER_FUNCTION", "SQLITE_TRIGGERS", "api_keys_table", "audit_table", "metadata"]

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

_REFUSED = "vigil_audit is append-only"
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS vigil_audit_no_{op.lower()} BEFORE {op} ON vigil_audit "
    f"BEGIN SELECT RAISE(ABORT, '{_REFUSED}; {op} refused'); END"
    for op in ("UPDATE", "DELETE")
]
PG_TRIGGER_FUNCTION = f"""
CREATE OR REPLACE FUNCTION vigil_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION USING MESSAGE = '{_REFUSED}; ' || TG_OP || ' refused', ERRCODE = 'insufficient_privilege';
END
$fn$
"""
PG_TRIGGERS = """
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
