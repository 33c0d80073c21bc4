"""The addresses the DICOM node's settings name, parsed and checked: AE titles (its own, the allow-list's), the
PACS as a :class:`Peer` (``AET@host:port``), the MLLP listener (``host:port``), http(s) base URLs and HL7 HD
namespace ids. Each check returns the normalised value or raises :class:`ValueError` naming what is wrong, so
that :class:`serving.dicom_node.settings.DicomNodeSettings` reports it against its setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from serving.dicom_node.tls import ClientTLS

__all__ = [
    "ANY_CALLING_AET",
    "Peer",
    "check_ae_title",
    "check_hd_namespace",
    "check_http_url",
    "check_mllp_address",
    "parse_peer",
]

#: The allow-list entry that admits any calling AE title (logged at WARNING when used).
ANY_CALLING_AET = "*"
_AE_RE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # PS3.5 AE: 16 characters of default repertoire, no backslash
_PEER_RE = re.compile(r"(?P<aet>[^@]{1,16})@(?P<host>[A-Za-z0-9.\-_:\[\]]+):(?P<port>\d{1,5})")
_HOST_PORT_RE = re.compile(r"(?P<host>[A-Za-z0-9.\-_]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})")
_HD_RE = re.compile(r"[\x20-\x5b\x5d\x5f-\x7b\x7d\x7f]{0,20}")  # an HL7 HD namespace id: no | ^ ~ \ &


def check_ae_title(name: str, value: str) -> str:
    """``value`` stripped, when it is a valid AE title (1-16 printable characters, no backslash, not blank)."""
    stripped = value.strip()
    if not stripped or not _AE_RE.fullmatch(stripped):
        raise ValueError(f"{name} must be 1-16 printable characters without a backslash; got {value[:20]!r}")
    return stripped


def check_http_url(name: str, value: str | None, secret_setting: str, example: str) -> str | None:
    """``value`` stripped of blanks and a trailing slash when it is an http(s) base URL with a host, no query and no
    credentials (never echoed: a URL can carry a password; the credential belongs in ``secret_setting``); None
    when unset or blank."""
    if value is None or not value.strip():
        return None
    parsed = urlsplit(value.strip())
    if parsed.username or parsed.password:
        raise ValueError(f"{name} must not carry credentials; set {secret_setting}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query or parsed.fragment:
        raise ValueError(
            f"{name} must be an http(s) URL with a host and no query, e.g. {example} (got scheme {parsed.scheme!r})"
        )
    return value.strip().rstrip("/")


@dataclass(frozen=True)
class Peer:
    """A remote DICOM application entity: AE title, host and port (and, to reach it over TLS, ``tls``)."""

    ae_title: str
    host: str
    port: int
    tls: ClientTLS | None = None

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


def check_mllp_address(value: str | None) -> str | None:
    """``value`` stripped when it is ``host:port`` of an MLLP listener (IPv6 hosts in brackets); None when unset or
    blank."""
    if value is None or not value.strip():
        return None
    match = _HOST_PORT_RE.fullmatch(value.strip())
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"must be host:port of an MLLP listener (e.g. ris.local:2575); got {value[:60]!r}")
    return value.strip()


def check_hd_namespace(value: str) -> str:
    """``value`` stripped when it is an HL7 HD namespace id: at most 20 printable characters, none of HL7's
    delimiters."""
    if not _HD_RE.fullmatch(value.strip()):
        raise ValueError(f"must be at most 20 printable characters without | ^ ~ \\ &; got {value[:30]!r}")
    return value.strip()
