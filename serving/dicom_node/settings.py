"""Settings of the DICOM node, from the environment (prefix ``VIGIL_DICOM_``) through pydantic-settings.

Nothing is read at import time. The safe defaults: listen on loopback only, refuse every calling AE title until
an allow-list is set (with an empty list the SCP does not listen at all, and says so at start-up), and queue in
SQLite in the work folder. TLS and the network allow-list (:mod:`.tls`) and the addresses (AE titles, the PACS,
the MLLP listener, URLs: :mod:`.addresses`) are checked here, at the edge: a certificate, key or CA file that cannot
be read or parsed, a malformed network or address, is an error naming its setting.
``VIGIL_WORK_DIR`` is shared with :class:`serving.settings.ServingSettings`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.dicom_node.addresses import (
    ANY_CALLING_AET,
    Peer,
    check_ae_title,
    check_hd_namespace,
    check_http_url,
    check_mllp_address,
    parse_peer,
)
from serving.dicom_node.tls import (
    ClientTLS,
    IPNetwork,
    check_readable,
    client_context,
    parse_networks,
    server_context,
)

__all__ = ["DicomNodeSettings", "load_dicom_settings"]


class DicomNodeSettings(BaseSettings):
    """Every knob of the DICOM node; each is also an environment variable ``VIGIL_DICOM_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_DICOM_", extra="ignore", protected_namespaces=())

    work_dir: Path = Field(
        default=Path("vigil-work"),
        validation_alias=AliasChoices("work_dir", "VIGIL_DICOM_WORK_DIR", "VIGIL_WORK_DIR"),
        description="Work folder (shared with `vigil serve`): queue DB and received instances",
    )
    ae_title: str = Field(default="VIGIL", description="This node's AE title; associations must call it")
    host: str = Field(
        default="127.0.0.1", description="Address the SCP listens on; loopback by default, 0.0.0.0 for the network"
    )
    port: int = Field(default=11112, ge=0, le=65535, description="SCP port (0: any free port, for tests)")
    allowed_calling_aets: str = Field(
        default="",
        description="Comma-separated calling AE titles admitted at association; empty: the SCP does not "
        "listen (safe default); '*': any AE title (logged)",
    )
    destination: str | None = Field(
        default=None, description="Where SRs go by C-STORE, as AET@host:port; unset: results stay queryable only"
    )
    queue_url: str | None = Field(
        default=None, description="sqlite:///path.db (default <work_dir>/dicom_queue.db) or redis://127.0.0.1:6379/0"
    )
    queue_prefix: str = Field(
        default="vigil:dicom:", min_length=1, max_length=64, description="Key prefix of the Redis queue"
    )
    storage_dir: Path | None = Field(default=None, description="Received instances; default <work_dir>/dicom-in")
    workers: int = Field(default=1, ge=0, le=64, description="Analysis/delivery threads (0: receive only)")
    max_attempts: int = Field(
        default=5, ge=1, le=100, description="Delivery attempts before delivery_failed; also analyses cut short"
    )
    backoff_base_s: float = Field(default=2.0, gt=0, le=3600, description="First retry delay (doubles each time)")
    backoff_max_s: float = Field(default=300.0, gt=0, le=86400, description="Longest retry delay")
    lease_s: float = Field(
        default=300.0, gt=0, le=86400, description="A claimed item whose worker died is claimed again after this long"
    )
    poll_s: float = Field(default=1.0, gt=0, le=60, description="Idle workers look at the queue this often")
    network_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="DIMSE and network timeouts: the longest silence inside a PDU or "
        "while waiting for a reply or a free receive slot",
    )
    pre_association_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="A connection must have sent its whole association request (A-ASSOCIATE-RQ) within this long, "
        "however slowly it trickles it, or it is closed (also the ACSE/ARTIM timeout). A modality sends "
        "it within milliseconds; 5 s leaves room for a congested link, and bounds how long an idle "
        "socket holds a connection",
    )
    max_associations: int = Field(
        default=10,
        ge=1,
        le=256,
        description="Concurrent associations, counted only from an allowed calling AE to this AE title (a "
        "stranger's request or an idle socket never takes one); more are rejected-transient",
    )
    max_connections: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Open TCP connections on the DICOM port, in any state (idle ones included); more are closed at "
        "accept. At least max_associations; the rest is room for connections not yet associated",
    )
    max_connections_per_address: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Open TCP connections from one IP address; more are closed at accept (one host cannot fill "
        "max_connections). A PACS that sends over several associations at once needs that many",
    )
    max_pdu_bytes: int = Field(
        default=256 * 1024,
        ge=4096,
        le=16 * 1024 * 1024,
        description="Largest PDU received (advertised to senders as the maximum PDU length; any PDU, association "
        "request included, declaring more is refused before it is read). 256 KiB: 16 times the 16 KiB "
        "PDUs most SCUs send, far above any association request, and small enough that every open "
        "connection holding one in memory at once stays a few MB",
    )
    max_instance_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        le=2 * 1024 * 1024 * 1024,
        description="Largest instance accepted. By C-STORE: its dataset fragments are counted as they arrive and "
        "the association is aborted as soon as they pass this (the sender keeps the instance; STOW-RS has "
        "its own VIGIL_MAX_INSTANCE_BYTES). 64 MiB: a chest radiograph is 5-30 MB uncompressed (a 3000 x "
        "3000 16-bit CR is 18 MB), so this leaves room without letting one upload cost much",
    )
    max_concurrent_stores: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Instances received by C-STORE at once (each is spooled to disk, up to max_instance_bytes); a "
        "further one waits, the sender held back by TCP, for up to network_timeout_s, then is aborted",
    )
    allowed_networks: str = Field(
        default="",
        description="Comma-separated IP addresses and CIDR networks (IPv4 and IPv6, e.g. 10.20.0.0/16,fd00::/64) "
        "a DICOM connection may come from; any other is closed at accept, before a byte is read. Empty: "
        "any address (logged at WARNING at start-up). Applies with and without TLS, beside the AE "
        "titles, which anyone can claim",
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) of this node. With VIGIL_DICOM_TLS_KEY: the Storage SCP speaks TLS "
        "(1.2 or later) only, a plain association is refused; also the client certificate the SR "
        "sender presents to the PACS (VIGIL_DICOM_PACS_TLS)",
    )
    tls_key: Path | None = Field(
        default=None, description="The unencrypted PEM private key of VIGIL_DICOM_TLS_CERT (mode 0600)"
    )
    tls_require_client_cert: bool = Field(
        default=True,
        description="With TLS on, a peer must present a certificate issued by VIGIL_DICOM_TLS_CA (mutual TLS); "
        "false: any TLS client (a certificate presented is still verified)",
    )
    tls_ca: Path | None = Field(
        default=None,
        description="PEM bundle of the CA(s) trusted to issue the peers' certificates: modalities' and PACS "
        "client certificates at the SCP, the PACS's server certificate for the SR sender. Only these "
        "are trusted (never the system's public CAs)",
    )
    pacs_tls: bool = Field(
        default=False,
        description="The SR sender associates with VIGIL_DICOM_DESTINATION over TLS (1.2 or later), verifying "
        "the PACS's certificate against VIGIL_DICOM_TLS_CA and its host name or address against the "
        "destination's host, and presenting VIGIL_DICOM_TLS_CERT/KEY as its client certificate",
    )
    stow_url: str | None = Field(
        default=None,
        description="A DICOMweb base URL (e.g. http://pacs:8042/dicom-web) the SR (and heat map) are also, or "
        "instead, sent to by STOW-RS (POST <url>/studies/<source study>), with the same retries and "
        "delivery_failed list as VIGIL_DICOM_DESTINATION; https verified against VIGIL_DICOM_TLS_CA "
        "when set, else the system's CAs",
    )
    stow_authorization: SecretStr | None = Field(
        default=None, description="Authorization header value sent with STOW-RS, e.g. 'Bearer <token>' (secret)"
    )
    notify_hl7: str | None = Field(
        default=None,
        description="host:port of the RIS's HL7 v2 MLLP listener: a flagged instance is notified there by an "
        "ORU^R01 (v2.5.1), retried with back-off like a delivery, then listed as failed "
        "(`vigil dicom-queue failed`); unset: no HL7 notification",
    )
    notify_hl7_tls: bool = Field(
        default=False,
        description="MLLP over TLS (1.2 or later): the listener's certificate verified against VIGIL_DICOM_TLS_CA "
        "and its host name; VIGIL_DICOM_TLS_CERT/KEY presented as the client certificate when set",
    )
    notify_hl7_sending_facility: str = Field(default="", description="MSH-4, this site's facility (HD namespace id)")
    notify_hl7_receiving_application: str = Field(default="RIS", description="MSH-5 (HD namespace id)")
    notify_hl7_receiving_facility: str = Field(default="", description="MSH-6 (HD namespace id)")
    notify_fhir_url: str | None = Field(
        default=None,
        description="A FHIR R4 base URL: a flagged instance is notified there by a Task (POST <url>/Task, conditional "
        "create, so a retry makes no second Task); https verified against VIGIL_DICOM_TLS_CA when set, "
        "else the system's CAs; unset: no FHIR notification",
    )
    notify_fhir_authorization: SecretStr | None = Field(
        default=None, description="Authorization header value sent with the FHIR Task, e.g. 'Bearer <token>' (secret)"
    )
    notify_priority: Literal["stat", "asap", "routine"] = Field(
        default="asap",
        description="Priority asked of the worklist for a flagged study (HL7 TQ1-9 S/A/R, FHIR Task.priority)",
    )
    send_heatmap_sc: bool = Field(default=False, description="Also send a Secondary Capture of the heat map")
    keep_instances: bool = Field(
        default=False, description="Keep received instances after analysis (default: delete them)"
    )
    stop_timeout_s: float = Field(
        default=30.0, ge=0, le=3600, description="On stop, how long in-flight associations and work may finish"
    )

    @model_validator(mode="after")
    def _connections_cover_associations(self) -> DicomNodeSettings:
        if self.max_connections < self.max_associations:
            raise ValueError(
                f"max_connections must be at least max_associations ({self.max_associations}); got "
                f"{self.max_connections}"
            )
        return self

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

    @field_validator("stow_url")
    @classmethod
    def _stow_url(cls, value: str | None) -> str | None:
        return check_http_url("stow_url", value, "VIGIL_DICOM_STOW_AUTHORIZATION", "http://pacs:8042/dicom-web")

    @field_validator("notify_hl7")
    @classmethod
    def _notify_hl7(cls, value: str | None) -> str | None:
        return check_mllp_address(value)

    @field_validator("notify_hl7_sending_facility", "notify_hl7_receiving_application", "notify_hl7_receiving_facility")
    @classmethod
    def _hd(cls, value: str) -> str:
        return check_hd_namespace(value)

    @field_validator("notify_fhir_url")
    @classmethod
    def _notify_fhir_url(cls, value: str | None) -> str | None:
        return check_http_url(
            "notify_fhir_url", value, "VIGIL_DICOM_NOTIFY_FHIR_AUTHORIZATION", "https://ris.local/fhir"
        )

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        return ",".join(str(n) for n in parse_networks(value))

    @field_validator("tls_cert", "tls_key", "tls_ca", mode="before")
    @classmethod
    def _blank_path(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tls_cert")
    @classmethod
    def _tls_cert(cls, value: Path | None) -> Path | None:
        return None if value is None else check_readable(value)

    @field_validator("tls_key")
    @classmethod
    def _tls_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if "tls_cert" not in info.data:  # the certificate itself is invalid: that error is reported
            return value
        cert = info.data["tls_cert"]
        if value is None:
            if cert is not None:
                raise ValueError("must be set when VIGIL_DICOM_TLS_CERT is: the certificate's private key (PEM)")
            return None
        if cert is None:
            raise ValueError("is set but VIGIL_DICOM_TLS_CERT is not: set both to turn TLS on, or neither")
        check_readable(value)
        server_context(cert, value, None, require_client_cert=False)  # the key matches the certificate
        return value

    @field_validator("tls_ca")
    @classmethod
    def _tls_ca(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None:
            client_context(check_readable(value))  # a PEM bundle holding at least one certificate
        elif info.data.get("tls_cert") is not None and info.data.get("tls_require_client_cert", True):
            raise ValueError(
                "must be set when TLS is on (VIGIL_DICOM_TLS_CERT) and client certificates are required "
                "(VIGIL_DICOM_TLS_REQUIRE_CLIENT_CERT, the default): the CA bundle that issued the "
                "modalities' and PACS's certificates"
            )
        return value

    @field_validator("pacs_tls")
    @classmethod
    def _pacs_tls(cls, value: bool, info: ValidationInfo) -> bool:
        if value and "tls_ca" in info.data and info.data["tls_ca"] is None:
            raise ValueError("needs VIGIL_DICOM_TLS_CA: the CA bundle that issued the PACS's certificate")
        return value

    @field_validator("notify_hl7_tls")
    @classmethod
    def _notify_hl7_tls(cls, value: bool, info: ValidationInfo) -> bool:
        if value and "tls_ca" in info.data and info.data["tls_ca"] is None:
            raise ValueError("needs VIGIL_DICOM_TLS_CA: the CA bundle that issued the MLLP listener's certificate")
        return value

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
        """The delivery destination (with how to reach it over TLS when ``pacs_tls``), or None when results are not
        sent anywhere."""
        if not self.destination:
            return None
        peer = parse_peer(self.destination)
        if self.pacs_tls and self.tls_ca is not None:
            peer = replace(peer, tls=ClientTLS(self.tls_ca, self.tls_cert, self.tls_key))
        return peer

    @property
    def delivers(self) -> bool:
        """Whether results are sent anywhere (by C-STORE, by STOW-RS or both)."""
        return bool(self.destination or self.stow_url)

    @property
    def notifies(self) -> bool:
        """Whether flagged instances are notified to a worklist (HL7 v2 over MLLP, FHIR Task, or both)."""
        return bool(self.notify_hl7 or self.notify_fhir_url)

    def notify_channels(self) -> tuple[str, ...]:
        """The configured notification channels, ``"hl7"`` and/or ``"fhir"``."""
        return tuple(name for name, on in (("hl7", self.notify_hl7), ("fhir", self.notify_fhir_url)) if on)

    def notify_hl7_peer(self) -> tuple[str, int, ClientTLS | None]:
        """(host, port, TLS or None) of the MLLP listener; only when ``notify_hl7`` is set."""
        assert self.notify_hl7 is not None
        host, _, port = self.notify_hl7.rpartition(":")
        tls = ClientTLS(self.tls_ca, self.tls_cert, self.tls_key) if self.notify_hl7_tls and self.tls_ca else None
        return host.strip("[]"), int(port), tls

    @property
    def tls_enabled(self) -> bool:
        """Whether the Storage SCP speaks TLS (a certificate and its key are set)."""
        return self.tls_cert is not None and self.tls_key is not None

    def networks(self) -> tuple[IPNetwork, ...]:
        """The network allow-list (empty: any address)."""
        return parse_networks(self.allowed_networks)

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
