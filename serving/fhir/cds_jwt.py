"""CDS Hooks client authentication: the JWT an EHR sends with every call (CDS Hooks 2.0, "Trusting CDS Clients").

The EHR signs a JWT (JWS compact form, RFC 7515) with its private key and sends it as ``Authorization: Bearer
<JWT>``. Its header names the algorithm (``alg``: ES384 or RS384 here) and the key (``kid``) in the EHR's JWK Set;
its claims are ``iss`` (the EHR), ``aud`` (the URL of the CDS service called), ``exp``, ``iat`` and ``jti`` (a
nonce). :class:`CdsTokenVerifier` accepts a token only when its issuer is on the site's allow-list
(:mod:`serving.fhir.cds_jwks`), its key is in that issuer's JWK Set, its signature verifies, ``aud`` is this service's
endpoint URL, it is within its lifetime (with a clock-skew leeway; lifetimes over ``max_lifetime_s`` are refused,
which also bounds what the replay record holds) and its ``jti`` has not been seen from that issuer before its
``exp``. Every refusal is a :class:`CdsTokenError` with a short reason and a message that never repeats the token.

The replay record is in this process (:class:`MemoryReplayGuard`) unless ``VIGIL_CDS_JWT_REPLAY_URL`` names a
Redis that every worker shares (:class:`RedisReplayGuard`). Nothing here touches FastAPI.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from models.errors import ConfigError, VigilError
from serving.fhir.cds_jwks import ALGORITHMS, JwksUnavailableError, TrustedIssuer, b64url_decode, load_issuers
from serving.settings import ServingSettings

__all__ = [
    "CdsClient",
    "CdsTokenError",
    "CdsTokenVerifier",
    "MemoryReplayGuard",
    "RedisReplayGuard",
    "ReplayGuard",
    "build_verifier",
    "looks_like_jwt",
]

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 8192
_MAX_JTI_CHARS = 256
_MAX_AUDIENCES = 20


class CdsTokenError(VigilError):
    """A CDS Hooks JWT was refused.

    Attributes
    ----------
    reason : str
        A short, fixed code (``malformed``, ``alg``, ``kid``, ``issuer``, ``signature``, ``audience``, ``expired``,
        ``not_yet_valid``, ``lifetime``, ``jti``, ``replay``, ``unavailable``): safe to log and count.
    status : int
        401, or 503 when the service cannot check the token now (JWK Set or replay record unreachable).
    """

    def __init__(self, reason: str, detail: str, *, status: int = 401) -> None:
        super().__init__(detail)
        self.reason, self.status = reason, status


@dataclass(frozen=True)
class CdsClient:
    """Who a verified token says is calling: the allow-list entry's ``name`` and ``scopes``, and the token's ids."""

    name: str
    iss: str
    scopes: tuple[str, ...]
    jti: str
    tenant: str | None


def looks_like_jwt(credential: str) -> bool:
    """Whether a bearer credential is a JWS compact serialisation rather than a Vigil API key (which has no dot)."""
    return credential.count(".") == 2


class ReplayGuard(Protocol):
    """Remembers each (issuer, jti) until its token expires."""

    def first_use(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        """Record the pair; False when it was already recorded and has not expired."""
        ...


class MemoryReplayGuard:
    """The replay record of one process: a dict with a heap of expiry times, pruned on every call.

    At most ``max_entries`` unexpired tokens are held (each lives at most ``exp`` + leeway, itself bounded by the
    verifier's ``max_lifetime_s``); when full, new tokens are refused with 503 rather than forgetting a live one.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def first_use(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        key = (issuer, hashlib.sha256(jti.encode()).hexdigest())
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                when, old = heapq.heappop(self._heap)
                if self._expiry.get(old) == when:
                    del self._expiry[old]
            if key in self._expiry:
                return False
            if len(self._expiry) >= self.max_entries:
                raise CdsTokenError(
                    "unavailable",
                    "too many CDS Hooks tokens are live at once to record another; retry later",
                    status=503,
                )
            self._expiry[key] = expires_at
            heapq.heappush(self._heap, (expires_at, key))
            return True


class RedisReplayGuard:
    """The replay record in Redis, shared by every worker and host: ``SET key NX EXAT exp`` per token."""

    def __init__(self, url: str, *, prefix: str = "vigil:cds-jti:", timeout_s: float = 2.0) -> None:
        import redis

        self.prefix = prefix
        self._errors = redis.RedisError
        self._client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)

    def first_use(self, issuer: str, jti: str, expires_at: float, now: float) -> bool:
        key = f"{self.prefix}{issuer}:{hashlib.sha256(jti.encode()).hexdigest()}"
        try:
            return bool(self._client.set(key, b"1", nx=True, exat=max(math.ceil(expires_at), math.ceil(now) + 1)))
        except self._errors as exc:
            log.error("CDS Hooks replay record (Redis) unavailable: %s", type(exc).__name__)
            raise CdsTokenError(
                "unavailable", "the replay record of CDS Hooks tokens is unavailable; retry later", status=503
            ) from exc


def _json_object(segment: str, what: str) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise ValueError("duplicate member")
        return out

    try:
        value = json.loads(b64url_decode(segment), object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CdsTokenError(
            "malformed", f"the bearer token's {what} is not base64url JSON without duplicate members"
        ) from exc
    if not isinstance(value, dict):
        raise CdsTokenError("malformed", f"the bearer token's {what} must be a JSON object")
    return value


def _number(claims: dict[str, Any], name: str, *, required: bool = True) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CdsTokenError("malformed", f"the token's '{name}' claim must be a number of seconds since the epoch")
    return float(value)


class CdsTokenVerifier:
    """Verifies CDS Hooks JWTs against an allow-list of issuers.

    Parameters
    ----------
    issuers : dict
        ``iss`` -> :class:`serving.fhir.cds_jwks.TrustedIssuer` (:func:`serving.fhir.cds_jwks.load_issuers`).
    public_url : str
        This service's base URL as the EHR calls it; a call to ``/cds-services/x`` needs ``aud`` =
        ``public_url + "/cds-services/x"``.
    leeway_s : float
        Clock skew allowed on ``exp``, ``iat`` and ``nbf``.
    max_lifetime_s : float
        Tokens whose ``exp`` is further than this (plus leeway) from now are refused.
    replay : ReplayGuard
        Where used ``jti`` values are remembered.
    """

    def __init__(
        self,
        issuers: dict[str, TrustedIssuer],
        *,
        public_url: str,
        leeway_s: float,
        max_lifetime_s: float,
        replay: ReplayGuard,
    ) -> None:
        self.issuers, self.public_url = issuers, public_url.rstrip("/")
        self.leeway_s, self.max_lifetime_s, self.replay = leeway_s, max_lifetime_s, replay

    def audience(self, path: str) -> str:
        """The ``aud`` a call to ``path`` (``/cds-services/vigil-triage``) must carry."""
        return self.public_url + path

    def verify(self, token: str, *, path: str, now: float | None = None) -> CdsClient:
        """The client a token identifies, for a call to ``path``; :class:`CdsTokenError` when it is refused."""
        now = time.time() if now is None else now
        if len(token) > MAX_TOKEN_CHARS:
            raise CdsTokenError("malformed", f"the bearer token is longer than {MAX_TOKEN_CHARS} characters")
        segments = token.split(".")
        if len(segments) != 3 or not all(segments):
            raise CdsTokenError("malformed", "the bearer token must be a signed JWT (header.payload.signature)")
        header, claims = _json_object(segments[0], "header"), _json_object(segments[1], "payload")
        try:
            signature = b64url_decode(segments[2])
        except ValueError as exc:
            raise CdsTokenError("malformed", "the bearer token's signature is not base64url") from exc
        issuer = self._check_header(header, claims)
        kid = header["kid"]
        try:
            key = issuer.keys.get(kid)
        except JwksUnavailableError as exc:
            raise CdsTokenError("unavailable", str(exc), status=503) from exc
        if key is None:
            raise CdsTokenError("kid", "the token's 'kid' names no key in its issuer's JWK Set")
        if key.alg != header["alg"]:
            raise CdsTokenError("alg", f"the token's 'kid' names a {key.alg} key but its 'alg' is {header['alg']}")
        if not key.verify(signature, f"{segments[0]}.{segments[1]}".encode("ascii")):
            raise CdsTokenError("signature", "the token's signature does not verify with its issuer's key")
        return self._check_claims(issuer, claims, path, now)

    def _check_header(self, header: dict[str, Any], claims: dict[str, Any]) -> TrustedIssuer:
        if header.get("alg") not in ALGORITHMS:
            raise CdsTokenError(
                "alg",
                f"the token's 'alg' must be one of {', '.join(ALGORITHMS)} (CDS Hooks forbids "
                "'none' and symmetric algorithms)",
            )
        if "crit" in header:
            raise CdsTokenError(
                "malformed", "the token's header has 'crit' extensions, which this service does not understand"
            )
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise CdsTokenError("malformed", "the token's 'typ' must be 'JWT'")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise CdsTokenError("kid", "the token's header has no 'kid' (CDS Hooks requires one)")
        iss = claims.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise CdsTokenError("issuer", "the token's issuer ('iss') is not on this service's allow-list")
        jku = header.get("jku")
        if jku is not None and issuer.jwks_url is not None and jku != issuer.jwks_url:
            raise CdsTokenError("kid", "the token's 'jku' is not its issuer's configured JWK Set URL")
        return issuer

    def _check_claims(self, issuer: TrustedIssuer, claims: dict[str, Any], path: str, now: float) -> CdsClient:
        expected = self.audience(path)
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if len(audiences) > _MAX_AUDIENCES or expected not in audiences:
            raise CdsTokenError("audience", f"the token's audience ('aud') must be this CDS service's URL, {expected}")
        exp, iat = _number(claims, "exp"), _number(claims, "iat")
        nbf = _number(claims, "nbf", required=False)
        assert exp is not None and iat is not None
        if exp <= now - self.leeway_s:
            raise CdsTokenError("expired", "the token has expired ('exp' is past)")
        if iat > now + self.leeway_s or (nbf is not None and nbf > now + self.leeway_s):
            raise CdsTokenError("not_yet_valid", "the token is not valid yet ('iat' or 'nbf' is in the future)")
        if exp - now > self.max_lifetime_s + self.leeway_s:
            raise CdsTokenError(
                "lifetime",
                f"the token's 'exp' is more than {self.max_lifetime_s:g} s away; send a "
                "short-lived token with each call",
            )
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 1 <= len(jti) <= _MAX_JTI_CHARS:
            raise CdsTokenError("jti", f"the token's 'jti' must be a string of 1 to {_MAX_JTI_CHARS} characters")
        tenant = claims.get("tenant")
        if not self.replay.first_use(issuer.name, jti, exp + self.leeway_s, now):
            raise CdsTokenError("replay", "the token's 'jti' was already used: send a new token with each call")
        return CdsClient(issuer.name, issuer.iss, issuer.scopes, jti, tenant[:256] if isinstance(tenant, str) else None)


def _public_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            f"setting VIGIL_CDS_PUBLIC_URL: must be the service's base URL as the EHR calls it "
            f"(https://host[:port][/prefix]), without query or fragment; got {value[:120]!r}"
        )
    return value.rstrip("/")


def build_verifier(settings: ServingSettings) -> CdsTokenVerifier | None:
    """The verifier ``settings`` ask for: None under ``VIGIL_CDS_AUTH=api_key``.

    Raises
    ------
    ConfigError
        A JWT mode without the allow-list or the public URL, an allow-list given while JWTs are off (so that a
        site never believes it turned them on when it did not), or an invalid allow-list or JWK Set file.
    """
    if settings.cds_auth == "api_key":
        if settings.cds_jwt_issuers is not None:
            raise ConfigError(
                "setting VIGIL_CDS_JWT_ISSUERS: given, but VIGIL_CDS_AUTH=api_key ignores it; set "
                "VIGIL_CDS_AUTH=jwt (or jwt_or_api_key) to verify CDS Hooks JWTs"
            )
        return None
    missing = [
        name
        for name, value in (
            ("VIGIL_CDS_JWT_ISSUERS", settings.cds_jwt_issuers),
            ("VIGIL_CDS_PUBLIC_URL", settings.cds_public_url),
        )
        if value is None
    ]
    if missing:
        raise ConfigError(f"setting {missing[0]}: required when VIGIL_CDS_AUTH={settings.cds_auth}")
    assert settings.cds_jwt_issuers is not None and settings.cds_public_url is not None
    public_url = _public_url(settings.cds_public_url)
    issuers = load_issuers(
        Path(settings.cds_jwt_issuers), fetch_timeout_s=settings.cds_jwks_timeout_s, cache_s=settings.cds_jwks_cache_s
    )
    replay: ReplayGuard = (
        RedisReplayGuard(settings.cds_jwt_replay_url) if settings.cds_jwt_replay_url else MemoryReplayGuard()
    )
    log.info(
        "CDS Hooks JWT authentication on (VIGIL_CDS_AUTH=%s): %d trusted issuers, audience %s/cds-services/...",
        settings.cds_auth,
        len(issuers),
        public_url,
    )
    return CdsTokenVerifier(
        issuers,
        public_url=public_url,
        leeway_s=settings.cds_jwt_leeway_s,
        max_lifetime_s=settings.cds_jwt_max_lifetime_s,
        replay=replay,
    )
