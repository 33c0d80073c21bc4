"""The ASGI scope of an authorised POST, for the tests that drive the app below TestClient (which always sends
a whole body) to control how the body arrives."""

from __future__ import annotations

from typing import Any


def post_scope(path: str, content_type: str, key: str) -> dict[str, Any]:
    """An HTTP/1.1 POST of ``content_type`` to ``path`` with ``Authorization: Bearer <key>``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", content_type.encode()),
            (b"authorization", f"Bearer {key}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
