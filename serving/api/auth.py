"""Pure helpers for API-key authentication: read the key from request headers, mask it for logs.

The FastAPI layer calls these and :meth:`serving.store.database.Store.authenticate`; nothing here touches the network,
the database or FastAPI. Keys look like ``vgl_<key_id>_<secret>`` (see :mod:`serving.store.records`); only ``key_id``
may ever be logged.
"""

from __future__ import annotations

import re

from serving.store.records import KEY_PREFIX, split_key

__all__ = ["mask_key", "parse_presented_key"]

_MAX_KEY_CHARS = 256
# A credential is one run of visible ASCII (RFC 7230 token68 is narrower; any key Vigil issues fits both).
_CREDENTIAL_RE = re.compile(rf"[\x21-\x7e]{{1,{_MAX_KEY_CHARS}}}")
_MALFORMED = object()


def _from_authorization(value: str) -> str | object | None:
    parts = value.split()
    if not parts:
        return None
    if len(parts) != 2 or parts[0].lower() != "bearer" or not _CREDENTIAL_RE.fullmatch(parts[1]):
        return _MALFORMED
    return parts[1]


def _from_x_api_key(value: str) -> str | object | None:
    stripped = value.strip()
    if not stripped:
        return None
    return stripped if _CREDENTIAL_RE.fullmatch(stripped) else _MALFORMED


def parse_presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key a request presents, from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

    The scheme ``Bearer`` is matched case-insensitively; surrounding whitespace is ignored. The key's own format
    is not checked here (:meth:`serving.store.database.Store.authenticate` does that).

    Parameters
    ----------
    authorization : str or None
        The ``Authorization`` header, if sent.
    x_api_key : str or None
        The ``X-API-Key`` header, if sent.

    Returns
    -------
    str or None
        The key; None when neither header carries one, when a header that is present is malformed (another
        scheme such as ``Basic``, extra words, control or non-ASCII characters, over 256 characters), or when
        both headers are present and disagree. An empty header counts as absent.
    """
    found = [
        parse(value)
        for parse, value in ((_from_authorization, authorization), (_from_x_api_key, x_api_key))
        if value is not None
    ]
    keys = {k for k in found if k is not None}
    if _MALFORMED in keys or len(keys) != 1:
        return None
    (key,) = keys
    return key if isinstance(key, str) else None


def mask_key(key: str) -> str:
    """A form of ``key`` that is safe to log: ``vgl_<key_id>_…``, never any of the secret.

    Anything that is not a well-formed Vigil key becomes ``"<not a Vigil key>"``, so a mistyped secret pasted
    into the wrong header cannot reach the logs either.
    """
    parts = split_key(key)
    if parts is None:
        return "<not a Vigil key>"
    return f"{KEY_PREFIX}{parts[0]}_…"
