"""The serving store's API keys: issue, list, revoke and authenticate, with only a hash of each key kept.

:class:`KeyStore` is the key half of :class:`serving.store.database.Store`. A key is ``vgl_<key_id>_<secret>``
(:func:`serving.store.records.split_key`); the plaintext is returned once, when it is created, and the table holds its
sha256, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, select, update

from serving.store.engine import StoreEngine
from serving.store.records import (
    KEY_ID_ALPHABET,
    KEY_ID_LEN,
    KEY_PREFIX,
    MAX_CLIENT,
    SECRET_BYTES,
    ApiKeyInfo,
    check_scopes,
    check_text,
    split_key,
    utc_now,
)
from serving.store.schema import api_keys_table

__all__ = ["KeyStore"]

logger = logging.getLogger(__name__)


class KeyStore(StoreEngine):
    """API keys in the store's database (constructed as :class:`serving.store.engine.StoreEngine`)."""

    def create_key(self, client: str, scopes: Iterable[str]) -> tuple[ApiKeyInfo, str]:
        """Issue a new API key for ``client``; the plaintext key is returned here once and never stored.

        Parameters
        ----------
        client : str
            Who the key is for: 1-64 printable characters.
        scopes : iterable of str
            At least one of :data:`serving.store.records.SCOPES`.

        Returns
        -------
        (ApiKeyInfo, str)
            The key's record and the key itself (``vgl_<key_id>_<secret>``).

        Raises
        ------
        InputValidationError
            ``client`` or ``scopes`` is invalid (the error's ``field`` says which).
        StoreUnavailableError
            The key could not be stored.
        """
        client = check_text("client", client, MAX_CLIENT)
        granted = check_scopes(scopes)
        key_id = "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LEN))
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
        info = ApiKeyInfo(key_id=key_id, client=client, scopes=granted, created_utc=utc_now(), revoked_utc=None)
        with self._transaction(write=True) as conn:
            conn.execute(
                insert(api_keys_table).values(
                    key_id=key_id,
                    client=client,
                    scopes=" ".join(granted),
                    key_sha256=hashlib.sha256(key.encode("ascii")).hexdigest(),
                    created_utc=info.created_utc,
                )
            )
        logger.info("API key %s created with scopes %s", key_id, ",".join(granted))
        return info, key

    def list_keys(self) -> list[ApiKeyInfo]:
        """Every key issued, revoked ones included, oldest first."""
        with self._transaction() as conn:
            rows = conn.execute(
                select(api_keys_table).order_by(api_keys_table.c.created_utc, api_keys_table.c.key_id)
            ).all()
        return [_key_info(row) for row in rows]

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key for good; False when no live key has this id (unknown or already revoked)."""
        if not isinstance(key_id, str) or len(key_id) != KEY_ID_LEN:
            return False
        with self._transaction(write=True) as conn:
            result = conn.execute(
                update(api_keys_table)
                .where(api_keys_table.c.key_id == key_id, api_keys_table.c.revoked_utc.is_(None))
                .values(revoked_utc=utc_now())
            )
        revoked = result.rowcount == 1
        if revoked:
            logger.info("API key %s revoked", key_id)
        return revoked

    def authenticate(self, presented: str) -> ApiKeyInfo | None:
        """The live key matching ``presented``; None when it is malformed, unknown, wrong or revoked.

        Raises
        ------
        StoreUnavailableError
            The key table cannot be read (the caller must refuse the request, not treat it as anonymous).
        """
        parts = split_key(presented)
        if parts is None:
            return None
        with self._transaction() as conn:
            row = conn.execute(select(api_keys_table).where(api_keys_table.c.key_id == parts[0])).first()
        if row is None:
            return None
        digest = hashlib.sha256(presented.encode("ascii")).hexdigest()
        if not hmac.compare_digest(digest, row.key_sha256) or row.revoked_utc is not None:
            return None
        return _key_info(row)


def _key_info(row: Any) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row.key_id,
        client=row.client,
        scopes=tuple(row.scopes.split()),
        created_utc=row.created_utc,
        revoked_utc=row.revoked_utc,
    )
