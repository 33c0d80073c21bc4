"""TLS (PS3.15 Annex B secure transport, BCP 195 profile) and the network allow-list of the DICOM node (issue 14).

AE titles travel in clear and anyone can claim one, so they say which application a peer means to be, not who it
is. Two checks here say who it is:

- the **network allow-list** (``VIGIL_DICOM_ALLOWED_NETWORKS``): the addresses and CIDR networks (IPv4 and IPv6)
  a connection may come from; any other is closed at accept, before a byte is read;
- **TLS** (``VIGIL_DICOM_TLS_CERT`` / ``_KEY`` / ``_CA``): the listening port speaks TLS 1.2 or later only and, by
  default, a peer must present a certificate issued by the configured CA (mutual TLS). Only that CA is trusted:
  the system's public CAs are never loaded for client certificates. The SR sender (``VIGIL_DICOM_PACS_TLS``)
  verifies the PACS's certificate against the same CA bundle, and its host name or IP address against the
  destination's host, and presents the node's own certificate as its client certificate.

Every function raising :class:`~models.errors.ConfigError` names the setting at fault. Encrypted
(passphrase-protected) private keys are refused rather than prompted for on a terminal nobody watches.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeAlias

from models.errors import ConfigError

__all__ = [
    "ClientTLS",
    "IPNetwork",
    "address_allowed",
    "check_readable",
    "client_context",
    "parse_networks",
    "server_context",
]

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

#: BCP 195 (RFC 9325) and PS3.15 B.9: TLS 1.2 at least; OpenSSL's defaults for ciphers (forward secrecy, AEAD first).
MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_2
CERT_SETTING: Final = "VIGIL_DICOM_TLS_CERT"
KEY_SETTING: Final = "VIGIL_DICOM_TLS_KEY"
CA_SETTING: Final = "VIGIL_DICOM_TLS_CA"


def _no_passphrase() -> bytes:
    """The password callback: never prompt (an encrypted key then fails to load, with a clear error)."""
    return b""


def _ssl_reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or type(exc).__name__)


def check_readable(path: Path) -> Path:
    """``path`` when it is a file this process can read, else :class:`ValueError` naming it and why."""
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ValueError(f"cannot be read: {path} ({type(exc).__name__})") from exc
    if not path.is_file():
        raise ValueError(f"is not a file: {path}")
    return path


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{CERT_SETTING} and {KEY_SETTING} cannot be loaded as a PEM certificate (chain) and its "
            f"unencrypted private key ({_ssl_reason(exc)}): {cert}, {key}"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"{CERT_SETTING} or {KEY_SETTING} cannot be read ({type(exc).__name__}): {cert}, {key}"
        ) from exc


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise ConfigError(f"{CA_SETTING} cannot be loaded as a PEM CA bundle ({_ssl_reason(exc)}): {ca}") from exc
    except OSError as exc:
        raise ConfigError(f"{CA_SETTING} cannot be read ({type(exc).__name__}): {ca}") from exc


def server_context(cert: Path, key: Path, ca: Path | None, *, require_client_cert: bool) -> ssl.SSLContext:
    """The Storage SCP's TLS context: TLS 1.2+, this node's certificate, peers verified against ``ca`` only.

    Parameters
    ----------
    cert, key : Path
        PEM certificate (chain) and its unencrypted private key.
    ca : Path or None
        PEM bundle of the CA(s) that issue the peers' certificates; needed when ``require_client_cert``.
    require_client_cert : bool
        Mutual TLS: a peer without a certificate from ``ca`` fails the handshake. When False, a certificate
        presented is still verified against ``ca`` (if set).

    Raises
    ------
    ConfigError
        A file cannot be read or parsed, or the key does not match the certificate; the message names the setting.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # not create_default_context: no system CAs for client certs
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    _load_chain(context, cert, key)
    if ca is not None:
        _load_ca(context, ca)
    if require_client_cert:
        if ca is None:
            raise ConfigError(
                f"{CA_SETTING} must be set when client certificates are required "
                "(VIGIL_DICOM_TLS_REQUIRE_CLIENT_CERT): it is what they are verified against"
            )
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_OPTIONAL if ca is not None else ssl.CERT_NONE
    return context


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """The SR sender's TLS context: TLS 1.2+, the peer's certificate and host name verified against ``ca``,
    this node's ``cert``/``key`` presented as the client certificate when set."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    _load_ca(context, ca)
    if cert is not None and key is not None:
        _load_chain(context, cert, key)
    return context


@dataclass(frozen=True)
class ClientTLS:
    """How the SR sender reaches a destination over TLS (the files are read at each association, so that a
    renewed certificate is used without a restart)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        return client_context(self.ca, self.cert, self.key)


# ---------------------------------------------------------------------------------------------- allow-list
def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """The comma-separated addresses and CIDR networks of ``value`` (a bare address is its /32 or /128).

    Raises
    ------
    ValueError
        Naming the malformed entry (a network with host bits set is refused: ``10.0.0.5/24`` is probably a typo
        for ``10.0.0.0/24`` or ``10.0.0.5/32``).
    """
    networks: list[IPNetwork] = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as exc:
            if "host bits set" in str(exc):
                wide = ipaddress.ip_network(entry, strict=False)
                raise ValueError(
                    f"entry {entry!r} has host bits set: write {wide} for the network or "
                    f"{entry.split('/')[0]} for the one address"
                ) from exc
            raise ValueError(
                f"entry {entry[:60]!r} is not an IP address or CIDR network (e.g. 10.20.0.0/16, "
                "192.168.1.7 or fd00::/64)"
            ) from exc
    return tuple(networks)


def address_allowed(address: str, networks: Iterable[IPNetwork]) -> bool:
    """Whether a peer's ``address`` (as the socket reports it) is in one of ``networks``.

    An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``, from a dual-stack socket) counts as its IPv4 address; an
    address that cannot be parsed is not allowed.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)
