"""Settings of the serving API, from the environment (prefix ``VIGIL_``) through pydantic-settings.

Nothing is read at import time: :func:`get_settings` builds (and caches) the object when the app is made,
and tests pass their own :class:`ServingSettings` to :func:`serving.api.app.create_app`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.errors import ConfigError

ModelSourceKind = Literal["registry", "local"]
_S = TypeVar("_S", bound=BaseSettings)


class ServingSettings(BaseSettings):
    """Every knob of ``vigil serve``; each is also an environment variable ``VIGIL_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_", extra="ignore", protected_namespaces=())

    work_dir: Path = Field(default=Path("vigil-work"), description="Runs, the SQLite MLflow store, the serving DB")
    model_source: ModelSourceKind = Field(
        default="registry", description="'registry': MLflow aliases below; 'local': ONNX files in model_dir"
    )
    triage_model: str = Field(default="vigil-triage@production", description="Registry reference of the triage model")
    imaging_model: str = Field(default="vigil-cxr@production", description="Registry reference of the CXR model")
    model_dir: Path | None = Field(
        default=None, description="Local ONNX folder: vigil-triage.onnx, vigil-cxr.onnx, each with <name>.release.json"
    )
    allow_unreleased: bool = Field(
        default=False,
        description="Serve a model without a passing release-gate record. Logged at start-up and flagged in every "
        "response and audit record; for evaluation, never for patients.",
    )
    audit_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the key and audit store; default sqlite:///<work_dir>/serving.db"
    )
    threads: int | None = Field(
        default=None, ge=1, le=256, description="onnxruntime threads per session; default: CPUs this process may use"
    )
    max_json_bytes: int = Field(default=1_000_000, ge=1_024, description="Largest JSON request body")
    max_dicom_bytes: int = Field(default=64 * 1024 * 1024, ge=1_024, description="Largest DICOM request body")
    max_batch: int = Field(default=1000, ge=1, le=100_000, description="Most records in one batch request")
    dicom_node: bool = Field(
        default=False,
        description="Run the DICOM node (Storage SCP + second-read workers, "
        "VIGIL_DICOM_* settings) inside this service; one worker process only",
    )
    dicom_node_heartbeat: Path | None = Field(
        default=None,
        description="A file the DICOM node touches every second while its port is open. When set (vigil serve sets "
        "it when it runs the node as its child), /readyz reports 'dicom_node' and is unavailable once the "
        "file is missing or older than 5 s.",
    )
    reload_poll_s: float = Field(
        default=0.0, ge=0.0, description="Check the registry for a newly released version this often (0: off)"
    )
    docs: bool = Field(
        default=False,
        description="Serve the interactive API pages /docs and /redoc (they load "
        "Swagger UI and ReDoc from a public CDN); /openapi.json is always served",
    )
    trusted_hosts: str = Field(
        default="127.0.0.1,localhost,[::1],testserver",
        description="Comma-separated Host header values answered (without the port); any other host gets 400. "
        "'*.example.org' admits its subdomains, '*' any host. 'testserver' is the test client's host.",
    )
    # Slow clients (issue 14 finding 4). uvicorn has no deadline on a request's headers or body of its own.
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds a connection may take to send a request's headers, counted from the connection (or the "
        "previous response); then it is closed. A client on a hospital network sends them in "
        "milliseconds; a partial-header or silent socket would otherwise hold a connection for ever.",
    )
    http_body_idle_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="Longest wait for the next piece of a request body; then 408 and the connection is closed "
        "(nginx's client_body_timeout is the same idea)",
    )
    http_body_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="Seconds from a request's headers to the end of its body; then 408 and the connection is "
        "closed. 120 s carries a 64 MiB DICOM body at 4.5 Mbit/s; raise it for slower links.",
    )
    http_limit_concurrency: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Most connections (idle ones included) and requests at once per worker process; beyond it "
        "uvicorn answers 503. Bounds memory under a connection flood; the reverse proxy's per-address "
        "limit (docs/reverse_proxy.md) keeps one client from taking them all.",
    )
    max_instance_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1_024,
        description="Largest DICOM instance in a STOW-RS request (64 MiB: a chest radiograph is 5-30 MB). Checked "
        "as the body arrives: the part over it is answered 413, naming it, without reading further.",
    )
    max_concurrent_stow: int = Field(
        default=4,
        ge=1,
        le=1_000,
        description="STOW-RS uploads at once per worker process; another is answered 503 with Retry-After before "
        "its body is read. Each holds at most 1 MiB of memory while it is received (the rest is "
        "spooled to <work_dir>/stow-spool) and one instance while it is taken in.",
    )
    max_concurrent_second_reads: int = Field(
        default=4,
        ge=1,
        le=1_000,
        description="Second reads (POST /v1/imaging/second-read) taken in at once per worker process; another is "
        "answered 503 with Retry-After before its body is read. Each holds its body (up to "
        "VIGIL_MAX_DICOM_BYTES) in memory until the model has read it; model work itself runs two at a "
        "time.",
    )
    worklist_aets: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Which DICOM senders each client sees on the worklist, as JSON {"client": ["AE_TITLE", ...]}. '
        "A key without the admin scope sees the instances its client sent by STOW-RS and those "
        "C-STOREd by these calling AE titles; default none (admin keys see everything).",
    )
    cds_auth: Literal["api_key", "jwt", "jwt_or_api_key"] = Field(
        default="api_key",
        description="How CDS Hooks calls (POST /cds-services/{id}) authenticate. 'api_key' (default, unchanged "
        "behaviour): an API key with the triage scope. 'jwt': only the signed JWT that CDS Hooks "
        "specifies, from an issuer in VIGIL_CDS_JWT_ISSUERS (API keys refused there). "
        "'jwt_or_api_key': either, while EHRs migrate. Other routes always take API keys.",
    )
    cds_jwt_issuers: Path | None = Field(
        default=None,
        description="JSON allow-list of trusted CDS clients (EHRs): iss, name, scopes and a JWK Set file or https "
        "URL each (serving/fhir/cds_jwks.py). Required by the JWT modes; no default, as no EHR is trusted "
        "until a site names it.",
    )
    cds_public_url: str | None = Field(
        default=None,
        description="This service's base URL as the EHR calls it (https://vigil.example.org); a token's 'aud' must "
        "be <this>/cds-services/<id>. Required by the JWT modes; never taken from the Host header.",
    )
    cds_jwt_leeway_s: int = Field(
        default=60,
        ge=0,
        le=300,
        description="Clock skew allowed on a CDS Hooks JWT's exp, iat and nbf (60 s: "
        "NTP-synchronised clocks rarely differ by more)",
    )
    cds_jwt_max_lifetime_s: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="Refuse CDS Hooks JWTs whose exp is further away than this (300 s, SMART Backend Services' "
        "limit): a token is made per call, and jti values are remembered only until exp",
    )
    cds_jwt_replay_url: str | None = Field(
        default=None,
        description="Redis URL where used jti values are recorded, shared by every worker and host. Default: in "
        "this process only, so with --workers N > 1 each other worker could accept a replay once",
    )
    cds_jwks_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=30,
        description="Deadline of one fetch of an issuer's jwks_url (5 s: the EHR is "
        "waiting on the call that needed it)",
    )
    cds_jwks_cache_s: int = Field(
        default=3600,
        ge=60,
        le=86_400,
        description="How long a fetched JWK Set is used before it is fetched again (an unknown kid fetches early, "
        "at most once a minute)",
    )

    @field_validator("triage_model", "imaging_model")
    @classmethod
    def _ref(cls, value: str) -> str:
        text = value.removeprefix("models:/")
        if "@" not in text and "/" not in text:
            raise ValueError(f"must be NAME@ALIAS or NAME/VERSION; got {value[:80]!r}")
        return value

    @field_validator("trusted_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        hosts = [h.strip().lower() for h in value.split(",") if h.strip()]
        if not hosts:
            raise ValueError("must name at least one host ('*' for any)")
        for host in hosts:
            wildcard = host.startswith("*.") or host == "*"
            if "*" in (host[2:] if wildcard else host):
                raise ValueError(f"a wildcard must be the whole entry or lead it as '*.example.org'; got {host[:80]!r}")
            ipv6 = host.startswith("[") and host.endswith("]")
            if (":" in host and not ipv6) or any(c in host for c in "/@ "):
                raise ValueError(
                    f"each entry is a host name or address without scheme, port or path; got {host[:80]!r}"
                )
        return ",".join(hosts)

    @field_validator("worklist_aets")
    @classmethod
    def _aets(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        out = {}
        for client, titles in value.items():
            stripped = [t.strip() for t in titles]
            for title in stripped:
                if not 1 <= len(title) <= 16 or "\\" in title or not title.isprintable() or not title.isascii():
                    raise ValueError(
                        f"each AE title is 1 to 16 printable ASCII characters without '\\'; got "
                        f"{title[:20]!r} for client {client[:64]!r}"
                    )
            out[client] = stripped
        return out

    def trusted_host_list(self) -> list[str]:
        """The Host header values the service answers (see ``trusted_hosts``)."""
        return self.trusted_hosts.split(",")

    def store_url(self) -> str:
        """The key/audit store URL (SQLite in the work folder unless ``VIGIL_AUDIT_URL`` is set)."""
        return self.audit_url or f"sqlite:///{(self.work_dir / 'serving.db').resolve()}"


def load_validated(cls: type[_S], prefix: str, **overrides: Any) -> _S:
    """Build ``cls`` from the environment plus ``overrides``; a bad value is a :class:`ConfigError` naming the
    variable (``<prefix><NAME>``)."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"setting {prefix}{name.upper()}: {first['msg']}") from exc


def load_settings(**overrides: object) -> ServingSettings:
    """Build settings from the environment plus ``overrides``; a bad value is a :class:`ConfigError` naming it."""
    return load_validated(ServingSettings, "VIGIL_", **overrides)


@lru_cache(maxsize=1)
def get_settings() -> ServingSettings:
    """The process's settings, built once from the environment."""
    return load_settings()
