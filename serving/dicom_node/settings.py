"""Settings of the DICOM node, from the environment (prefix ``VIGIL_DICOM_``) through pydantic-settings.

Nothing is read at import time. The safe defaults: listen on loopback only, refuse every calling AE title until
an allow-list is set (with an empty list the SCP does not listen at all, and says so at start-up), and queue in
SQLite in the work folder. ``VIGIL_WORK_DIR`` is shared with :class:`serving.settings.ServingSettings`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ANY_CALLING_AET", "DicomNodeSettings", "Peer", "load_dicom_settings", "parse_peer"]

#: The allow-list entry that admits any calling AE title (logged at WARNING when used).
ANY_CALLING_AET = "*"
_AE_RE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # PS3.5 AE: 16 characters of default repertoire, no backslash
_PEER_RE = re.compile(r"(?P<aet>[^@]{1,16})@(?P<host>[A-Za-z0-9.\-_:\[\]]+):(?P<port>\d{1,5})")


def check_ae_title(name: str, value: str) -> str:
    """``value`` stripped, when it is a valid AE title (1-16 printable characters, no backslash, not blank)."""
    stripped = value.strip()
    if not stripped or not _AE_RE.fullmatch(stripped):
        raise ValueError(f"{name} must be 1-16 printable characters without a backslash; got {value[:20]!r}")
    return stripped


@dataclass(frozen=True)
class Peer:
    """A remote DICOM application entity: AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(value: str) -> Peer:
    """Parse ``"AET@host:port"`` (IPv6 hosts in brackets) into a :class:`Peer`."""
    match = _PEER_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"must be AET@host:port (e.g. PACS@10.0.0.2:104); got {value[:60]!r}")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in [1, 65535]; got {port}")
    return Peer(check_ae_title("AE title", match["aet"]), match["host"].strip("[]"), port)


class DicomNodeSettings(BaseSettings):
    """Every knob of the DICOM node; each is also an environment variable ``VIGIL_DICOM_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_DICOM_", extra="ignore", protected_namespaces=())

    work_dir: Path = Field(default=Path("vigil-work"),
                           validation_alias=AliasChoices("work_dir", "VIGIL_DICOM_WORK_DIR", "VIGIL_WORK_DIR"),
                           description="Work folder (shared with `vigil serve`): queue DB and received instances")
    ae_title: str = Field(default="VIGIL", description="This node's AE title; associations must call it")
    host: str = Field(default="127.0.0.1",
                      description="Address the SCP listens on; loopback by default, 0.0.0.0 for the network")
    port: int = Field(default=11112, ge=0, le=65535, description="SCP port (0: any free port, for tests)")
    allowed_calling_aets: str = Field(
        default="", description="Comma-separated calling AE titles admitted at association; empty: the SCP does not "
                                "listen (safe default); '*': any AE title (logged)")
    destination: str | None = Field(
        default=None, description="Where SRs go by C-STORE, as AET@host:port; unset: results stay queryable only")
    queue_url: str | None = Field(
        default=None, description="sqlite:///path.db (default <work_dir>/dicom_queue.db) or redis://127.0.0.1:6379/0")
    queue_prefix: str = Field(default="vigil:dicom:", min_length=1, max_length=64,
                              description="Key prefix of the Redis queue")
    storage_dir: Path | None = Field(default=None, description="Received instances; default <work_dir>/dicom-in")
    workers: int = Field(default=1, ge=0, le=64, description="Analysis/delivery threads (0: receive only)")
    max_attempts: int = Field(default=5, ge=1, le=100,
                              description="Delivery attempts before delivery_failed; also analyses cut short")
    backoff_base_s: float = Field(default=2.0, gt=0, le=3600, description="First retry delay (doubles each time)")
    backoff_max_s: float = Field(default=300.0, gt=0, le=86400, description="Longest retry delay")
    lease_s: float = Field(default=300.0, gt=0, le=86400,
                           description="A claimed item whose worker died is claimed again after this long")
    poll_s: float = Field(default=1.0, gt=0, le=60, description="Idle workers look at the queue this often")
    network_timeout_s: float = Field(default=30.0, gt=0, le=600, description="ACSE/DIMSE/network timeouts")
    max_associations: int = Field(default=10, ge=1, le=256, description="Concurrent inbound associations")
    max_instance_bytes: int = Field(default=256 * 1024 * 1024, ge=1024,
                                    description="Largest instance accepted (larger: out of resources, 0xA700)")
    send_heatmap_sc: bool = Field(default=False, description="Also send a Secondary Capture of the heat map")
    keep_instances: bool = Field(default=False,
                                 description="Keep received instances after analysis (default: delete them)")
    stop_timeout_s: float = Field(default=30.0, ge=0, le=3600,
                                  description="On stop, how long in-flight associations and work may finish")

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, value: str) -> str:
        return check_ae_title("ae_title", value)

    @field_validator("allowed_calling_aets")
    @classmethod
    def _allowed(cls, value: str) -> str:
        titles = [t.strip() for t in value.split(",") if t.strip()]
        for title in titles:
            if title != ANY_CALLING_AET:
                check_ae_title("allowed_calling_aets entry", title)
        return ",".join(titles)

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return str(parse_peer(value))

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:///", "redis://", "rediss://", "unix://")):
            raise ValueError("must be sqlite:///path.db or redis://host:port/db")
        return value

    # ------------------------------------------------------------------------------------ derived values
    def calling_aets(self) -> tuple[str, ...]:
        """The allow-list as a tuple (may hold :data:`ANY_CALLING_AET`)."""
        return tuple(t for t in self.allowed_calling_aets.split(",") if t)

    def destination_peer(self) -> Peer | None:
        """The delivery destination, or None when results are not sent anywhere."""
        return parse_peer(self.destination) if self.destination else None

    def resolved_queue_url(self) -> str:
        """The queue URL (SQLite in the work folder unless ``VIGIL_DICOM_QUEUE_URL`` is set)."""
        return self.queue_url or f"sqlite:///{(self.work_dir / 'dicom_queue.db').resolve()}"

    def resolved_storage_dir(self) -> Path:
        """Where received instances and the SRs made from them are written."""
        return (self.storage_dir or self.work_dir / "dicom-in").resolve()


def load_dicom_settings(**overrides: object) -> DicomNodeSettings:
    """Build settings from the environment plus ``overrides``; a bad value is a :class:`ConfigError` naming it."""
    from serving.settings import load_validated

    return load_validated(DicomNodeSettings, "VIGIL_DICOM_", **overrides)
