"""The PostgreSQL the tests use: 127.0.0.1:5432 by default, ``VIGIL_TEST_PG_URL`` points elsewhere.

Tests that need it are skipped, with the reason, when no server answers; the fixtures ``pg_available`` and
``pg_schema`` (a throw-away schema ``vigil_test_<uuid>``) are in ``tests/serving/conftest.py``.
"""

from __future__ import annotations

import os
import socket

from sqlalchemy.engine import make_url

__all__ = ["PG_URL", "reachable", "schema_url"]

PG_URL = os.environ.get("VIGIL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def reachable() -> bool:
    """Whether something accepts connections at :data:`PG_URL`'s host and port (half a second at most)."""
    url = make_url(PG_URL)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=0.5):
            return True
    except OSError:
        return False


def schema_url(schema: str, user: str | None = None) -> str:
    """:data:`PG_URL` with ``schema`` first on the search path (and, if given, another user, without password)."""
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    if user is not None:
        url = url.set(username=user, password=None)
    return url.render_as_string(hide_password=False)
