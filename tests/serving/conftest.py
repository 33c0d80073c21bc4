"""Serving fixtures: a SQLite key/audit store and a client per app, on the small real models of tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient


@dataclass
class Service:
    client: TestClient
    store: object
    keys: dict[str, str]  # scope name (or "all", "none") -> plaintext key

    def headers(self, who: str = "all", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}", **extra}


@contextmanager
def make_service(tmp_path: Path, model_folder: Path, **settings: object) -> Iterator[Service]:
    """An app on ``model_folder`` with a fresh SQLite store and one key per scope (plus one with all)."""
    from serving.api.app import create_app
    from serving.settings import ServingSettings
    from serving.store.database import Store

    cfg = ServingSettings(work_dir=tmp_path, model_source="local", model_dir=model_folder, threads=1, **settings)  # type: ignore[arg-type]
    store = Store(cfg.store_url())
    store.create_schema()
    keys = {}
    for who, scopes in (
        ("all", ["triage", "imaging", "outcomes", "admin"]),
        ("triage", ["triage"]),
        ("imaging", ["imaging"]),
        ("outcomes", ["outcomes"]),
        ("admin", ["admin"]),
    ):
        keys[who] = store.create_key(f"test-{who}", scopes)[1]
    app = create_app(cfg, store=store)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Service(client, store, keys)


@pytest.fixture
def service(tmp_path, model_folder) -> Iterator[Service]:
    with make_service(tmp_path, model_folder) as svc:
        yield svc


@pytest.fixture
def service_factory():
    """:func:`make_service`, for tests that need their own model folder or settings."""
    return make_service


@pytest.fixture(scope="module")
def pg_available() -> bool:
    """Whether the tests' PostgreSQL (:mod:`tests.postgres`) answers; asked once per module."""
    from tests.postgres import reachable

    return reachable()


@pytest.fixture
def pg_schema(pg_available: bool) -> Iterator[str]:
    """A fresh PostgreSQL schema ``vigil_test_<uuid>``, dropped afterwards; the test is skipped without a server."""
    import uuid

    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from tests.postgres import PG_URL

    if not pg_available:
        pytest.skip(f"PostgreSQL not reachable at {make_url(PG_URL).render_as_string()} (set VIGIL_TEST_PG_URL)")
    schema = f"vigil_test_{uuid.uuid4().hex}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        yield schema
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty store: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    from tests.postgres import schema_url

    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'serving.db'}"
    return schema_url(request.getfixturevalue("pg_schema"))


@pytest.fixture
def store(store_url: str) -> Iterator[object]:
    """A :class:`serving.store.database.Store` on :func:`store_url`, its schema created, disposed afterwards."""
    from serving.store.database import Store

    s = Store(store_url)
    s.create_schema()
    yield s
    s.dispose()
