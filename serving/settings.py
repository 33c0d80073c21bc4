"""Settings of the serving API, from the environment (prefix ``VIGIL_``) through pydantic-settings.

Nothing is read at import time: :func:`get_settings` builds (and caches) the object when the app is made,
and tests pass their own :class:`ServingSettings` to :func:`serving.app.create_app`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, TypeVar

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
        default="registry", description="'registry': MLflow aliases below; 'local': ONNX files in model_dir")
    triage_model: str = Field(default="vigil-triage@production", description="Registry reference of the triage model")
    imaging_model: str = Field(default="vigil-cxr@production", description="Registry reference of the CXR model")
    model_dir: Path | None = Field(
        default=None, description="Local ONNX folder: vigil-triage.onnx, vigil-cxr.onnx, each with <name>.release.json")
    allow_unreleased: bool = Field(
        default=False,
        description="Serve a model without a passing release-gate record. Logged at start-up and flagged in every "
                    "response and audit record; for evaluation, never for patients.")
    audit_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the key and audit store; default sqlite:///<work_dir>/serving.db")
    threads: int | None = Field(default=None, ge=1, le=256,
                                description="onnxruntime threads per session; default: CPUs this process may use")
    max_json_bytes: int = Field(default=1_000_000, ge=1_024, description="Largest JSON request body")
    max_dicom_bytes: int = Field(default=64 * 1024 * 1024, ge=1_024, description="Largest DICOM request body")
    max_batch: int = Field(default=1000, ge=1, le=100_000, description="Most records in one batch request")
    dicom_node: bool = Field(default=False, description="Run the DICOM node (Storage SCP + second-read workers, "
                             "VIGIL_DICOM_* settings) inside this service; one worker process only")
    reload_poll_s: float = Field(default=0.0, ge=0.0,
                                 description="Check the registry for a newly released version this often (0: off)")
    docs: bool = Field(default=False, description="Serve the interactive API pages /docs and /redoc (they load "
                       "Swagger UI and ReDoc from a public CDN); /openapi.json is always served")
    trusted_hosts: str = Field(
        default="127.0.0.1,localhost,[::1],testserver",
        description="Comma-separated Host header values answered (without the port); any other host gets 400. "
                    "'*.example.org' admits its subdomains, '*' any host. 'testserver' is the test client's host.")

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
                raise ValueError(f"each entry is a host name or address without scheme, port or path; got "
                                 f"{host[:80]!r}")
        return ",".join(hosts)

    def trusted_host_list(self) -> list[str]:
        """The Host header values the service answers (see ``trusted_hosts``)."""
        return self.trusted_hosts.split(",")

    def store_url(self) -> str:
        """The key/audit store URL (SQLite in the work folder unless ``VIGIL_AUDIT_URL`` is set)."""
        return self.audit_url or f"sqlite:///{(self.work_dir / 'serving.db').resolve()}"


def load_validated(cls: type[_S], prefix: str, **overrides: object) -> _S:
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

