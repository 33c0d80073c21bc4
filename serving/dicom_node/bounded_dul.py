"""pynetdicom's DUL with every PDU bounded as it is read (issue 14, findings 1, 3, 6).

:class:`BoundedDUL` reads each PDU by its 6-byte header first and closes the connection when the declared length is
over ``max_pdu_bytes``, before the body is read; the association request must arrive within
``pre_association_timeout_s`` of the connection, however slowly it is trickled; once a PDU has begun, nothing may
stall for ``network_timeout_s``; the P-DATA fragments of one instance are counted as they arrive and the association
is aborted as soon as they pass ``max_instance_bytes``; and an instance is received only with one of the
``max_concurrent_stores`` receive slots of the :class:`serving.dicom_node.connection_guard.ConnectionGuard`.
A refusal sends an A-ABORT (best effort) and closes the connection.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from typing import Final, cast

from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket

from serving.dicom_node.connection_guard import ConnectionGuard

__all__ = ["BoundedDUL"]

log = logging.getLogger(__name__)

#: A command set is a few hundred bytes; its fragments are refused beyond this (they are buffered in memory).
MAX_COMMAND_BYTES: Final = 64 * 1024
_PDU_HEADER: Final = struct.Struct(">BBL")
A_ASSOCIATE_RQ: Final = 0x01
_P_DATA_TF: Final = 0x04
_READ_CHUNK: Final = 1024 * 1024
# A-ABORT (source, reason): the service provider for a PDU over the limit (invalid PDU parameter value), the
# service user for a refusal of ours (PS3.8 9.3.8: its reason is 0).
_ABORT_PDU_LENGTH: Final = (0x02, 0x06)
_ABORT_USER: Final = (0x00, 0x00)


class BoundedDUL(DULServiceProvider):
    """pynetdicom's DUL with every PDU bounded as it is read (see the module docstring)."""

    def __init__(
        self, assoc: Association, guard: ConnectionGuard, address: str, connected_at: float | None = None
    ) -> None:
        super().__init__(assoc)
        self.guard = guard
        self.address = address
        self.limits = guard.limits
        self.connected_at = time.monotonic() if connected_at is None else connected_at  # before any TLS handshake
        self.refused: str | None = None
        self._request_read = False
        self._command_bytes = 0
        self._dataset_bytes = 0

    # ------------------------------------------------------------------------------------ reading
    def _read_pdu_data(self) -> None:
        sock = cast(AssociationSocket, self.socket)
        raw = sock.socket
        if raw is None or self.refused is not None:
            self.event_queue.put("Evt17")
            return
        # Until a whole A-ASSOCIATE-RQ has arrived (the state machine may not even have left Sta1 yet).
        deadline = None if self._request_read else self.connected_at + self.limits.pre_association_timeout_s
        header = self._recv_exactly(raw, 6, deadline)
        if header is None:
            return
        pdu_type, _, length = _PDU_HEADER.unpack(header)
        if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
            log.info("DICOM connection from %s sent an unknown PDU type; aborted", self.address)
            self.event_queue.put("Evt19")
            return
        if length > self.limits.max_pdu_bytes:
            self._refuse(
                "pdu",
                _ABORT_PDU_LENGTH,
                "a PDU declaring %d bytes, over the %d-byte maximum PDU size (VIGIL_DICOM_MAX_PDU_BYTES)",
                length,
                self.limits.max_pdu_bytes,
            )
            return
        body = self._recv_exactly(raw, length, deadline)
        if body is None:
            return
        if pdu_type == _P_DATA_TF and not self._admit_p_data(memoryview(body)):
            return
        bytestream = bytearray(header)
        bytestream += body
        try:
            pdu, event = self._decode_pdu(bytestream)
        except Exception:  # pynetdicom's decoders raise many types for malformed PDUs; it answers Evt19 too
            log.info("DICOM connection from %s sent a PDU that could not be decoded; aborted", self.address)
            self.event_queue.put("Evt19")
            return
        self._request_read = self._request_read or pdu_type == A_ASSOCIATE_RQ
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _recv_exactly(self, raw: socket.socket, count: int, deadline: float | None) -> bytearray | None:
        """``count`` bytes, or None after putting the right event (peer closed, timed out, or past ``deadline``)."""
        buffer = bytearray(count)
        view = memoryview(buffer)
        got = 0
        try:
            while got < count:
                timeout = self.limits.network_timeout_s
                if deadline is not None:  # past it, bytes already received are still taken (a busy node)
                    timeout = max(0.001, min(timeout, deadline - time.monotonic()))
                raw.settimeout(timeout)
                n = raw.recv_into(view[got:], min(count - got, _READ_CHUNK))
                if n == 0:
                    break
                got += n
        except TimeoutError:
            if deadline is not None and deadline <= time.monotonic():
                self._refuse(
                    "slow",
                    _ABORT_USER,
                    "no complete association request within %.1f s of connecting "
                    "(VIGIL_DICOM_PRE_ASSOCIATION_TIMEOUT_S)",
                    self.limits.pre_association_timeout_s,
                )
            else:
                self._refuse(
                    "slow",
                    _ABORT_USER,
                    "nothing received for %.0f s in the middle of a PDU (VIGIL_DICOM_NETWORK_TIMEOUT_S)",
                    self.limits.network_timeout_s,
                )
            return None
        except OSError:
            self.event_queue.put("Evt17")
            return None
        finally:
            view.release()
        if got < count:  # the peer closed the connection mid-PDU
            self.event_queue.put("Evt17")
            return None
        return buffer

    def _admit_p_data(self, body: memoryview) -> bool:
        """Count the fragments of a P-DATA-TF; False (and the association aborted) when one passes a limit."""
        offset = 0
        while offset + 6 <= len(body):
            item_length = int.from_bytes(body[offset : offset + 4], "big")
            if item_length < 2 or offset + 4 + item_length > len(body):
                return True  # malformed: pynetdicom's decoder refuses it (Evt19)
            control = body[offset + 5]
            size = item_length - 2
            offset += 4 + item_length
            if control & 0x01:  # command fragment
                self._command_bytes += size
                if self._command_bytes > MAX_COMMAND_BYTES:
                    self._refuse("command", _ABORT_USER, "a DIMSE command over %d bytes", MAX_COMMAND_BYTES)
                    return False
                if control & 0x02:
                    self._command_bytes = 0
                continue
            if self._dataset_bytes == 0 and not self.guard.acquire_store(
                self.assoc, self.limits.network_timeout_s, self._idle_timer.restart
            ):
                self._refuse(
                    "stores",
                    _ABORT_USER,
                    "%d instances already being received (VIGIL_DICOM_MAX_CONCURRENT_STORES) for %.0f s",
                    self.limits.max_concurrent_stores,
                    self.limits.network_timeout_s,
                )
                return False
            self._dataset_bytes += size
            if self._dataset_bytes > self.limits.max_instance_bytes:
                self._refuse(
                    "instance",
                    _ABORT_USER,
                    "an instance over the %d-byte limit (VIGIL_DICOM_MAX_INSTANCE_BYTES); aborted after %d bytes",
                    self.limits.max_instance_bytes,
                    self._dataset_bytes,
                )
                return False
            if control & 0x02:
                self._dataset_bytes = 0
        return True

    def _refuse(self, kind: str, abort: tuple[int, int], why: str, *args: object) -> None:
        """Abort: send an A-ABORT (best effort), close the connection, and let the state machine see it closed."""
        self.refused = kind
        self.guard.throttled.warning(kind, "DICOM connection from %s aborted: " + why, self.address, *args)
        sock = cast(AssociationSocket, self.socket)
        raw = sock.socket
        if raw is not None:
            pdu = A_ABORT_RQ()
            pdu.source, pdu.reason_diagnostic = abort
            try:
                raw.settimeout(1.0)
                raw.sendall(pdu.encode())
            except OSError:
                pass
        sock.close()  # puts Evt17: the association ends (before a request: it is never counted)
        if raw is not None:
            raw.close()  # pynetdicom skips close() when shutdown() fails (the peer already gone)
