"""The keys CDS Hooks clients sign with: JWK Sets (RFC 7517) from a file or a URL, and the issuer allow-list.

A site lists the EHRs it trusts in a JSON file (``VIGIL_CDS_JWT_ISSUERS``)::

    {"issuers": [
      {"iss": "https://ehr.example.org/", "name": "main-ehr", "scopes": ["triage"],
       "jwks_file": "main-ehr-jwks.json"},
      {"iss": "https://other.example.org", "name": "other-ehr", "scopes": ["triage"],
       "jwks_url": "https://other.example.org/.well-known/jwks.json"}
    ]}

``jwks_file`` (relative to the allow-list's folder) suits a site without egress; ``jwks_url`` is fetched over
HTTPS with a deadline and a size cap, cached, and fetched again early only when a token names a key the cached set
lacks (at most once a minute). Only ES384 (EC P-384) and RS384 (RSA, 2048 bits or more) keys are used, the two
algorithms CDS Hooks recommends; a JWK Set holding a private key is refused. Nothing here touches FastAPI.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.errors import ConfigError, VigilError
from serving.store.records import check_scopes

__all__ = [
    "ALGORITHMS",
    "FileJwks",
    "IssuerConfig",
    "JwksUnavailableError",
    "KeySource",
    "TrustedIssuer",
    "UrlJwks",
    "VerifyingKey",
    "load_issuers",
    "parse_jwks",
]

log = logging.getLogger(__name__)

ALGORITHMS: tuple[str, ...] = ("ES384", "RS384")
"""The JWS algorithms accepted: CDS Hooks 2.0 recommends both; ``none`` and HMAC are forbidden by it."""

_ES384_COORD_BYTES = 48
_MIN_RSA_BITS = 2048
_MAX_KEYS = 100
_MAX_JWKS_BYTES = 256 * 1024
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_NAME_RE = r"^[A-Za-z0-9._-]{1,48}$"
_REFRESH_FLOOR_S = 60.0


class JwksUnavailableError(VigilError):
    """An issuer's JWK Set URL could not be fetched and no earlier copy is held (the service answers 503)."""


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url (RFC 7515 section 2); ValueError on anything else."""
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class VerifyingKey:
    """One public key of an issuer's JWK Set, with the one algorithm it verifies."""

    kid: str
    alg: str
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey

    def verify(self, signature: bytes, signing_input: bytes) -> bool:
        """Whether ``signature`` (JWS form: R || S for ES384) signs ``signing_input`` under this key."""
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                if len(signature) != 2 * _ES384_COORD_BYTES:
                    return False
                r = int.from_bytes(signature[:_ES384_COORD_BYTES], "big")
                s = int.from_bytes(signature[_ES384_COORD_BYTES:], "big")
                self.key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA384()))
            else:
                self.key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA384())
        except InvalidSignature:
            return False
        return True


def _coordinate(jwk: dict[str, Any], name: str, where: str, size: int | None = None) -> int:
    value = jwk.get(name)
    try:
        raw = b64url_decode(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if not raw or (size is not None and len(raw) != size):
        raise ConfigError(f"{where}: member '{name}' must be base64url" + (f" of {size} bytes" if size else ""))
    return int.from_bytes(raw, "big")


def _parse_jwk(jwk: dict[str, Any], where: str) -> VerifyingKey | None:
    """The key, or None for one this service does not use (other curve, key type, use or algorithm)."""
    private = [m for m in _PRIVATE_MEMBERS if m in jwk]
    if private:
        raise ConfigError(f"{where} holds private key material ('{private[0]}'): publish only the public key")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not 1 <= len(kid) <= 256:
        raise ConfigError(f"{where}: 'kid' must be a string of 1 to 256 characters (CDS Hooks requires it)")
    kty, use, alg = jwk.get("kty"), jwk.get("use", "sig"), jwk.get("alg")
    if use != "sig":
        return None
    if kty == "EC" and jwk.get("crv") == "P-384" and alg in (None, "ES384"):
        x = _coordinate(jwk, "x", where, _ES384_COORD_BYTES)
        y = _coordinate(jwk, "y", where, _ES384_COORD_BYTES)
        try:
            return VerifyingKey(kid, "ES384", ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key())
        except ValueError as exc:
            raise ConfigError(f"{where}: 'x' and 'y' are not a point on P-384") from exc
    if kty == "RSA" and alg in (None, "RS384"):
        n, e = _coordinate(jwk, "n", where), _coordinate(jwk, "e", where)
        if n.bit_length() < _MIN_RSA_BITS:
            raise ConfigError(f"{where}: an RSA key must have at least {_MIN_RSA_BITS} bits; got {n.bit_length()}")
        try:
            return VerifyingKey(kid, "RS384", rsa.RSAPublicNumbers(e, n).public_key())
        except ValueError as exc:
            raise ConfigError(f"{where}: 'n' and 'e' are not an RSA public key") from exc
    return None


def parse_jwks(document: object, source: str) -> dict[str, VerifyingKey]:
    """The ES384 and RS384 keys of a JWK Set, by ``kid``.

    Parameters
    ----------
    document : object
        The parsed JSON of the set: ``{"keys": [...]}``.
    source : str
        Where it came from (a path or URL), for error messages.

    Returns
    -------
    dict
        ``kid`` -> :class:`VerifyingKey`; keys of other types, curves or uses are left out.

    Raises
    ------
    ConfigError
        Not a JWK Set, a duplicate ``kid``, private key material, a weak RSA key, or no usable key at all.
    """
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not 1 <= len(keys) <= _MAX_KEYS:
        raise ConfigError(f"JWK Set {source}: must be an object with 'keys', a list of 1 to {_MAX_KEYS} JWKs")
    found: dict[str, VerifyingKey] = {}
    for i, jwk in enumerate(keys):
        where = f"JWK Set {source}: keys[{i}]"
        if not isinstance(jwk, dict):
            raise ConfigError(f"{where} must be an object")
        key = _parse_jwk(jwk, where)
        if key is None:
            continue
        if key.kid in found:
            raise ConfigError(f"{where}: 'kid' is used twice; CDS Hooks requires it to be unique in the set")
        found[key.kid] = key
    if not found:
        raise ConfigError(f"JWK Set {source}: no ES384 (EC P-384) or RS384 (RSA) signing key")
    return found


class KeySource(Protocol):
    """Where an issuer's keys come from."""

    def get(self, kid: str) -> VerifyingKey | None:
        """The key named ``kid``, or None when the set has none."""
        ...


class FileJwks:
    """A JWK Set read from a file at start-up, read again when a token names an unknown key and the file changed
    (so a site rotates keys by replacing the file, without a restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime_ns, self._keys = self._read()

    def _read(self) -> tuple[int, dict[str, VerifyingKey]]:
        try:
            mtime_ns = self.path.stat().st_mtime_ns
            document = json.loads(self.path.read_bytes()[: _MAX_JWKS_BYTES + 1])
        except (OSError, ValueError, RecursionError) as exc:
            raise ConfigError(f"JWK Set {self.path}: cannot be read as JSON ({type(exc).__name__})") from exc
        return mtime_ns, parse_jwks(document, str(self.path))

    def get(self, kid: str) -> VerifyingKey | None:
        key = self._keys.get(kid)
        if key is not None:
            return key
        with self._lock:
            try:
                changed = self.path.stat().st_mtime_ns != self._mtime_ns
                if changed:
                    self._mtime_ns, self._keys = self._read()
                    log.info("JWK Set %s read again: %d keys", self.path, len(self._keys))
            except (OSError, ConfigError) as exc:
                log.warning("JWK Set %s changed but cannot be used (%s); keeping the keys read before", self.path, exc)
            return self._keys.get(kid)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an error: the configured URL is the only one trusted


def check_jwks_url(url: str) -> str:
    """``url`` when it is https (or http to a loopback address, for tests); ValueError otherwise."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not host or parts.scheme not in ("https", "http") or (parts.scheme == "http" and not loopback):
        raise ValueError(f"must be an https:// URL (http only to a loopback address); got {url[:120]!r}")
    return url


class UrlJwks:
    """A JWK Set fetched from an HTTPS URL and cached.

    Each fetch has a deadline of about ``timeout_s`` (each read is bounded by it, and reading stops once it has
    passed) and reads at most 256 KiB; redirects are refused. The set is fetched again after ``cache_s``, or
    early when a token names a ``kid`` the cached set lacks (at most once a minute, so unknown ``kid`` values
    cannot make the service hammer the issuer). A failed fetch keeps the last good set.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        cache_s: float,
        refresh_floor_s: float = _REFRESH_FLOOR_S,
        clock: Any = time.monotonic,
    ) -> None:
        self.url = check_jwks_url(url)
        self.timeout_s, self.cache_s, self.refresh_floor_s = timeout_s, cache_s, refresh_floor_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, VerifyingKey] | None = None
        self._fetched_at = self._tried_at = -float("inf")
        self._opener = urllib.request.build_opener(_NoRedirect)

    def _download(self) -> bytes:
        deadline = time.monotonic() + self.timeout_s
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
        with self._opener.open(request, timeout=self.timeout_s) as response:
            chunks, size = [], 0
            while chunk := response.read(16 * 1024):
                size += len(chunk)
                if size > _MAX_JWKS_BYTES:
                    raise ValueError(f"larger than {_MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not read within {self.timeout_s:g} s")
                chunks.append(chunk)
        return b"".join(chunks)

    def _fetch(self) -> None:
        self._tried_at = self._clock()
        try:
            keys = parse_jwks(json.loads(self._download()), self.url)
        except (OSError, ValueError, RecursionError, ConfigError, urllib.error.URLError) as exc:
            log.warning(
                "JWK Set %s could not be fetched: %s%s",
                self.url,
                type(exc).__name__,
                "; keeping the keys fetched before" if self._keys else "",
            )
            return
        self._keys, self._fetched_at = keys, self._tried_at

    def get(self, kid: str) -> VerifyingKey | None:
        with self._lock:
            now = self._clock()
            if now - self._fetched_at >= self.cache_s and now - self._tried_at >= min(
                self.refresh_floor_s, self.cache_s
            ):
                self._fetch()
            key = (self._keys or {}).get(kid)
            if key is None and self._keys is not None and self._clock() - self._tried_at >= self.refresh_floor_s:
                self._fetch()
                key = self._keys.get(kid)
            if self._keys is None:
                raise JwksUnavailableError("the JWK Set of the token's issuer cannot be fetched now; retry later")
            return key


class IssuerConfig(BaseModel):
    """One trusted CDS client (an entry of the allow-list file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iss: str = Field(min_length=1, max_length=512, description="The 'iss' claim, compared exactly")
    name: str = Field(pattern=_NAME_RE, description="A short name: the audit record's client is 'cds:<name>'")
    scopes: tuple[str, ...] = Field(description="Vigil scopes a token from this issuer grants (e.g. ['triage'])")
    jwks_file: Path | None = Field(default=None, description="The issuer's JWK Set, relative to the allow-list")
    jwks_url: str | None = Field(default=None, description="Or the issuer's JWK Set URL (https)")

    @field_validator("scopes", mode="before")
    @classmethod
    def _scopes(cls, value: object) -> tuple[str, ...]:
        return check_scopes(value if isinstance(value, (list, tuple, str)) else [])

    @field_validator("jwks_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_jwks_url(value)

    @model_validator(mode="after")
    def _one_source(self) -> IssuerConfig:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("give exactly one of 'jwks_file' and 'jwks_url'")
        return self


class _IssuerList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuers: list[IssuerConfig] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _unique(self) -> _IssuerList:
        for attr in ("iss", "name"):
            values = [getattr(i, attr) for i in self.issuers]
            if len(set(values)) != len(values):
                raise ValueError(f"each issuer's '{attr}' must be unique")
        return self


@dataclass(frozen=True)
class TrustedIssuer:
    """An allow-listed issuer with its keys."""

    iss: str
    name: str
    scopes: tuple[str, ...]
    keys: KeySource
    jwks_url: str | None


def load_issuers(path: Path, *, fetch_timeout_s: float, cache_s: float) -> dict[str, TrustedIssuer]:
    """The allow-list file at ``path``, by ``iss``; each ``jwks_file`` is read now (a bad one fails start-up).

    Raises
    ------
    ConfigError
        The file is missing or invalid (the message names the entry and field), or a JWK Set file is.
    """
    where = "setting VIGIL_CDS_JWT_ISSUERS"
    try:
        raw = json.loads(path.read_bytes())
        listing = _IssuerList.model_validate(raw)
    except (OSError, ValueError, RecursionError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "file"
            raise ConfigError(f"{where}: {path}: '{field}': {first['msg']}") from exc
        raise ConfigError(f"{where}: {path} cannot be read as JSON ({type(exc).__name__})") from exc
    issuers: dict[str, TrustedIssuer] = {}
    for entry in listing.issuers:
        source: KeySource
        if entry.jwks_file is not None:
            source = FileJwks(entry.jwks_file if entry.jwks_file.is_absolute() else path.parent / entry.jwks_file)
        else:
            assert entry.jwks_url is not None
            source = UrlJwks(entry.jwks_url, timeout_s=fetch_timeout_s, cache_s=cache_s)
        issuers[entry.iss] = TrustedIssuer(entry.iss, entry.name, entry.scopes, source, entry.jwks_url)
    return issuers
