"""Anchoring the audit chain head outside the database with a keyed MAC: the settings, the key, the anchor file.

The chain (:func:`serving.store.records.audit_row_hash`) is an unkeyed sha256: it shows a row changed or removed
*inside* the chain, but whoever can write the database can delete the newest rows, or change a row and recompute
every hash after it, and the chain still holds. An anchor closes that gap. After every committed audit write
(one per request or batch) the store appends one line to an append-only file outside the database::

    {"kid":"<key id>","mac":"<hex>","row_hash":"<hex>","seq":1234,"time_utc":"2025-03-01T10:00:00.123Z","v":1}

with ``mac = HMAC-SHA256(key, "vigil-audit-anchor/1|<seq>|<row_hash>|<time_utc>")`` and ``kid`` an HMAC of a fixed
label under the same key (it names the key without revealing it). Since ``row_hash`` of seq N depends on every row up
to N, one anchor vouches for the whole chain before it; :func:`serving.store.audit_chain.verify_audit` checks every
anchor against the database, so deleting the newest rows (the store ends before an anchored seq), rewriting a row and
recomputing the chain (an anchored ``row_hash`` differs), or forging an anchor without the key (its MAC fails) is
reported.

Why after every write rather than every N rows or on a timer: an anchor protects the rows up to its seq, so the
rows written since the newest anchor are the ones that can vanish unnoticed. Anchoring each commit leaves only the
instant between the commit and the append (a process killed there leaves its rows unanchored until the next write),
at the cost of one ``O_APPEND`` write of ~200 bytes per audited request, without an fsync (the same durability as
the SQLite store's ``synchronous=NORMAL``: a killed process loses nothing written; an OS crash may lose the newest
lines). Every N rows would leave up to N-1 rows deletable; a timer would need a thread in each worker process.

The file must be somewhere the service cannot rewrite (the service only appends): a WORM mount, a share exported
append-only from another host, or a local file made append-only with ``chattr +a``. Each anchor is also logged at
INFO on the ``vigil.audit.anchor`` logger, so a site that ships the service's log to a remote syslog keeps a second
copy there. Settings: ``VIGIL_AUDIT_ANCHOR_PATH``, ``VIGIL_AUDIT_ANCHOR_KEY`` or ``VIGIL_AUDIT_ANCHOR_KEY_FILE``
(:class:`AuditAnchorSettings`); docs/audit.md has the deployment steps and the PostgreSQL role.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.errors import ConfigError
from serving.store.records import canonical_json, utc_now

__all__ = [
    "ANCHOR_FILE_NAME",
    "AnchorFile",
    "AuditAnchor",
    "AuditAnchorSettings",
    "load_anchor_settings",
    "open_anchor",
]

logger = logging.getLogger(__name__)
anchor_log = logging.getLogger("vigil.audit.anchor")

ANCHOR_FILE_NAME = "vigil-audit-anchors.jsonl"
"""The file written inside ``VIGIL_AUDIT_ANCHOR_PATH`` when that names a folder."""

MIN_KEY_BYTES = 32
_MAC_LABEL = b"vigil-audit-anchor/1"
_KID_LABEL = b"vigil-audit-anchor-key-id/1"
_MAX_LINE = 1024  # an anchor line is ~230 bytes; anything longer is not one
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_ANCHOR_KEYS = {"kid", "mac", "row_hash", "seq", "time_utc", "v"}


class AuditAnchorSettings(BaseSettings):
    """Where and with which key the audit chain head is anchored; each is an environment variable."""

    # An empty variable means unset (``VIGIL_AUDIT_ANCHOR_PATH=`` must not anchor into the working folder).
    model_config = SettingsConfigDict(env_prefix="VIGIL_AUDIT_ANCHOR_", extra="ignore", env_ignore_empty=True)

    path: Path | None = Field(
        default=None,
        description="VIGIL_AUDIT_ANCHOR_PATH: the append-only anchor file (or a folder, which then holds "
        f"{ANCHOR_FILE_NAME}), on storage the service cannot rewrite (WORM mount, another host's share, "
        "chattr +a). Default unset: no anchor, and `vigil audit verify` says that deleting the newest rows "
        "or recomputing the chain would go unnoticed. Off by default because only the site knows such "
        "storage; a production site must set it.",
    )
    key: SecretStr | None = Field(
        default=None,
        description="VIGIL_AUDIT_ANCHOR_KEY: the HMAC key of the anchors, at least 32 characters (e.g. `openssl rand "
        "-hex 32`). Default unset; one of this or VIGIL_AUDIT_ANCHOR_KEY_FILE is needed with a path. "
        "Never logged.",
    )
    key_file: Path | None = Field(
        default=None,
        description="VIGIL_AUDIT_ANCHOR_KEY_FILE: a file holding the key instead (at least 32 bytes; a trailing "
        "newline is ignored), e.g. a secret mounted read-only. Default unset.",
    )

    @field_validator("key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode("utf-8")) < MIN_KEY_BYTES:
            raise ValueError(f"must be at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)")
        return value


def load_anchor_settings(**overrides: object) -> AuditAnchorSettings:
    """Anchor settings from the environment plus ``overrides``; a bad value is a :class:`ConfigError` naming it."""
    from serving.settings import load_validated

    return load_validated(AuditAnchorSettings, "VIGIL_AUDIT_ANCHOR_", **overrides)


def open_anchor(settings: AuditAnchorSettings | None = None) -> AuditAnchor | None:
    """The anchor the settings describe, or None when ``VIGIL_AUDIT_ANCHOR_PATH`` is unset.

    Raises
    ------
    ConfigError
        A key without a path, a path without exactly one key, a key file that cannot be read or is too short, or
        an anchor file whose folder does not exist. The message names the setting, never the key.
    """
    settings = settings or load_anchor_settings()
    keys_given = [
        name
        for name, value in (
            ("VIGIL_AUDIT_ANCHOR_KEY", settings.key),
            ("VIGIL_AUDIT_ANCHOR_KEY_FILE", settings.key_file),
        )
        if value is not None
    ]
    if settings.path is None:
        if keys_given:
            raise ConfigError(
                f"{keys_given[0]} is set but VIGIL_AUDIT_ANCHOR_PATH is not: set the path of the "
                "append-only anchor file too"
            )
        return None
    if len(keys_given) != 1:
        raise ConfigError(
            "VIGIL_AUDIT_ANCHOR_PATH needs exactly one of VIGIL_AUDIT_ANCHOR_KEY and "
            f"VIGIL_AUDIT_ANCHOR_KEY_FILE; got {len(keys_given)}"
        )
    key = (
        settings.key.get_secret_value().encode("utf-8")
        if settings.key is not None
        else _read_key_file(settings.key_file or Path())
    )  # exactly one is set (checked above)
    path = settings.path.absolute()
    path = path / ANCHOR_FILE_NAME if path.is_dir() else path
    if not path.parent.is_dir():
        raise ConfigError(f"VIGIL_AUDIT_ANCHOR_PATH: the folder {str(path.parent)[:200]!r} does not exist")
    return AuditAnchor(path, key)


def _read_key_file(path: Path) -> bytes:
    try:
        key = path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigError(
            f"VIGIL_AUDIT_ANCHOR_KEY_FILE {str(path)[:200]!r} cannot be read: {exc.strerror or type(exc).__name__}"
        ) from exc
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"VIGIL_AUDIT_ANCHOR_KEY_FILE must hold at least {MIN_KEY_BYTES} bytes; got {len(key)}")
    return key


class AuditAnchor:
    """An append-only file of keyed audit chain heads.

    Parameters
    ----------
    path : Path
        The anchor file; created (mode 0640) on the first append.
    key : bytes
        The HMAC-SHA256 key, at least 32 bytes.

    Attributes
    ----------
    kid : str
        16 hex characters naming the key (an HMAC of a fixed label; it does not reveal the key).
    """

    def __init__(self, path: Path, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"the audit anchor key must be at least {MIN_KEY_BYTES} bytes")
        self.path = Path(path)
        self._key = key
        self.kid = hmac.new(key, _KID_LABEL, hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:  # never the key
        return f"AuditAnchor({str(self.path)!r}, kid={self.kid!r})"

    def _mac(self, seq: int, row_hash: str, time_utc: str) -> str:
        message = _MAC_LABEL + f"|{seq}|{row_hash}|{time_utc}".encode("ascii")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def line(self, seq: int, row_hash: str, time_utc: str) -> str:
        """The anchor line of ``(seq, row_hash)`` at ``time_utc``, newline included."""
        body = {
            "v": 1,
            "seq": seq,
            "row_hash": row_hash,
            "time_utc": time_utc,
            "kid": self.kid,
            "mac": self._mac(seq, row_hash, time_utc),
        }
        return canonical_json(body) + "\n"

    def append(self, seq: int, row_hash: str) -> bool:
        """Append the anchor of ``(seq, row_hash)``; False (logged at ERROR) when it could not be written.

        Never raises for the file: the audit row is already committed, and refusing the prediction now would
        leave an audited answer the caller never got. The next successful anchor covers this row through the chain.
        """
        data = self.line(seq, row_hash, utc_now()).encode("ascii")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                # One write() of the whole line: with O_APPEND the lines of concurrent writers (threads and worker
                # processes on one host) never interleave.
                written = os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            logger.error(
                "audit anchor of seq %d could not be written to %s: %s; the row is committed and the next "
                "anchor covers it",
                seq,
                self.path,
                exc.strerror or type(exc).__name__,
            )
            return False
        if written != len(data):
            logger.error(
                "audit anchor of seq %d was cut short in %s (%d of %d bytes; disk full?)",
                seq,
                self.path,
                written,
                len(data),
            )
            return False
        anchor_log.info("%s", data.decode("ascii").rstrip("\n"))
        return True

    def read(self) -> AnchorFile:
        """Every anchor in the file, each MAC checked; a missing file reads as no anchors.

        Reading stops at the first line that is not a valid anchor of this key, and :attr:`AnchorFile.problem`
        says which line and why. Memory: about 150 bytes per anchor.
        """
        anchors: dict[int, bytes] = {}
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return AnchorFile(anchors=anchors, exists=False)
        with handle:
            number = 0
            while raw := handle.readline(_MAX_LINE):
                number += 1
                parsed = self._parse(raw)
                if isinstance(parsed, str):
                    return AnchorFile(anchors=anchors, problem=f"anchor line {number} of {self.path}: {parsed}")
                seq, digest = parsed
                if anchors.setdefault(seq, digest) != digest:
                    return AnchorFile(
                        anchors=anchors,
                        problem=f"anchor line {number} of {self.path}: it anchors seq "
                        f"{seq} to a different row_hash than an earlier line",
                    )
        return AnchorFile(anchors=anchors)

    def _parse(self, raw: bytes) -> tuple[int, bytes] | str:
        """``(seq, row_hash as bytes)`` of a valid anchor line, else why it is not one."""
        if not raw.endswith(b"\n"):
            return "not a complete line (cut short, or longer than an anchor)"
        try:
            entry: Any = json.loads(raw)
        except (ValueError, RecursionError):
            return "not JSON"
        if not isinstance(entry, dict) or set(entry) != _ANCHOR_KEYS or entry["v"] != 1:
            return "not a version-1 anchor"
        seq, row_hash, time_utc, mac = entry["seq"], entry["row_hash"], entry["time_utc"], entry["mac"]
        if (
            isinstance(seq, bool)
            or not isinstance(seq, int)
            or seq < 1
            or not all(isinstance(v, str) for v in (row_hash, time_utc, mac))
            or not _HEX64_RE.fullmatch(row_hash)
        ):
            return "a field has the wrong type"
        if entry["kid"] != self.kid:
            return "made with another key (its key id differs)"
        if not time_utc.isascii() or not hmac.compare_digest(mac, self._mac(seq, row_hash, time_utc)):
            return "its MAC does not match (forged or altered)"
        return seq, bytes.fromhex(row_hash)


@dataclass(frozen=True)
class AnchorFile:
    """What :meth:`AuditAnchor.read` found: ``anchors`` maps seq to row_hash (bytes)."""

    anchors: dict[int, bytes]
    exists: bool = True
    problem: str | None = None
