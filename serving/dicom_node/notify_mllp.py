"""HL7 v2 over MLLP (Minimal Lower Layer Protocol, release 2): send a message, plain or over TLS, and read its
original-mode acknowledgement (``AA`` or ``CA`` is success; anything else a
:class:`~serving.dicom_node.delivery.DeliveryError` naming the code, never the receiver's text).
"""

from __future__ import annotations

import re
import socket
import ssl

from serving.dicom_node.delivery import DeliveryError

__all__ = ["END_BLOCK", "START_BLOCK", "send_mllp"]

#: MLLP block framing (HL7 v2 Minimal Lower Layer Protocol, release 2).
START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\x0d"
_MAX_ACK_BYTES = 64 * 1024


def _ack_status(ack: bytes, control_id: str) -> tuple[str, str]:
    """(MSA-1, MSA-3 text) of an ACK that acknowledges ``control_id``."""
    text = ack.decode("utf-8", errors="replace")
    segments = [s for s in re.split(r"[\r\n]+", text) if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 4:
        raise DeliveryError("the HL7 receiver's answer is not an HL7 message")
    separator = segments[0][3]
    msa = next((s.split(separator) for s in segments if s.startswith("MSA" + separator)), None)
    if msa is None or len(msa) < 3:
        raise DeliveryError("the HL7 receiver's answer has no MSA segment")
    if msa[2] != control_id:
        raise DeliveryError("the HL7 receiver acknowledged another message (MSA-2 does not match)")
    return msa[1], msa[3] if len(msa) > 3 else ""


def send_mllp(
    message: str, host: str, port: int, *, control_id: str, timeout_s: float, tls: ssl.SSLContext | None = None
) -> None:
    """Send ``message`` over MLLP to ``host:port`` (over TLS with ``tls``) and wait for its ACK.

    Raises
    ------
    DeliveryError
        Connection refused or timed out, TLS failure, no or malformed ACK, or an ACK other than AA/CA (naming its
        code, never its text: it may echo the message).
    """
    target = f"MLLP {host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
            try:
                sock.sendall(START_BLOCK + message.encode("utf-8") + END_BLOCK)
                answer = b""
                while END_BLOCK not in answer:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
                    if len(answer) > _MAX_ACK_BYTES:
                        raise DeliveryError(f"{target} answered more than {_MAX_ACK_BYTES} bytes")
            finally:
                if sock is not raw:
                    sock.close()
    except DeliveryError:
        raise
    except ssl.SSLError as exc:
        raise DeliveryError(f"{target}: TLS failed ({type(exc).__name__})") from exc
    except OSError as exc:
        raise DeliveryError(f"{target} failed ({type(exc).__name__})") from exc
    start, end = answer.find(START_BLOCK), answer.find(END_BLOCK)
    if start < 0 or end < start:
        raise DeliveryError(f"{target} closed the connection without an acknowledgement")
    code, _ = _ack_status(answer[start + 1 : end], control_id)
    if code not in ("AA", "CA"):
        raise DeliveryError(f"{target} answered {code[:2] or 'an empty code'} (not accepted)")
