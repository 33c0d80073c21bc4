"""What a peer can make the Storage SCP hold, bounded before and during an association (issue 14, findings 1, 3, 6).

pynetdicom, left to itself, reads a PDU by its declared length before any check (a 4 GiB A-ASSOCIATE-RQ is buffered
whole), counts an idle TCP connection as an association (so idle sockets lock allowed modalities out), waits on an
accepted socket without any timeout once a PDU has begun, and assembles every received instance in memory. The
classes here replace its acceptor-side pieces for this node's server only (no process-wide setting is changed):

- :class:`BoundedDUL` reads each PDU by its 6-byte header first and closes the connection when the declared length
  is over ``max_pdu_bytes`` (the node also advertises that maximum, so a conformant sender never exceeds it); the
  association request must arrive within ``pre_association_timeout_s`` of the connection, however slowly it is
  trickled; the P-DATA fragments of one instance are counted as they arrive and the association is aborted as soon
  as they pass ``max_instance_bytes``; at most ``max_concurrent_stores`` instances are received at once (a further
  one waits, with TCP back-pressure on its sender, for up to ``network_timeout_s``).
- :class:`SpoolingDIMSE` writes each received dataset to a 0600 file in the storage folder's ``.spool`` as it
  arrives (with its Part 10 header), never to memory; the C-STORE handler hands that file to the intake, which
  renames it into place.
- :class:`GuardedACSE` takes an association slot (``max_associations``) only for a request whose calling and called
  AE titles are allowed; a stranger's request or an idle socket never holds one.
- :class:`GuardedServer` closes a connection at accept, before a byte is read and before it is counted, when its
  address is not in ``allowed_networks`` (:mod:`.tls`); then refuses it when ``max_connections`` are open, or
  ``max_connections_per_address`` from the same address.
- With TLS on, the handshake is done in the connection's own thread (pynetdicom does it in the accepting thread,
  where one socket that never completes it stops every further accept), and it shares the
  ``pre_association_timeout_s`` deadline with the association request: the whole of handshake and request must
  arrive within it of the connection. A failed handshake (a plain DICOM peer, no client certificate, one from
  another CA) closes the connection.

Every refusal is logged at WARNING (at most once per ten seconds per kind, with the count since), naming the peer
address and the limit, never the bytes received.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import ssl
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Final, cast

from pynetdicom import evt
from pynetdicom._handlers import standard_dimse_recv_handler
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from serving.dicom_node.tls import IPNetwork, address_allowed

__all__ = [
    "ConnectionGuard",
    "GuardedServer",
    "NodeLimits",
    "SpooledDataset",
    "release_store_slot",
    "start_guarded_server",
]

log = logging.getLogger(__name__)

#: A command set is a few hundred bytes; its fragments are refused beyond this (they are buffered in memory).
MAX_COMMAND_BYTES: Final = 64 * 1024
_PDU_HEADER: Final = struct.Struct(">BBL")
A_ASSOCIATE_RQ: Final = 0x01
_P_DATA_TF: Final = 0x04
_MODE_ACCEPTOR: Final = "acceptor"
_SPOOL_DIR: Final = ".spool"
_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700
_READ_CHUNK: Final = 1024 * 1024
_WARN_EVERY_S: Final = 10.0
# A-ABORT (source, reason): the service provider for a PDU over the limit (invalid PDU parameter value), the
# service user for a refusal of ours (PS3.8 9.3.8: its reason is 0).
_ABORT_PDU_LENGTH: Final = (0x02, 0x06)
_ABORT_USER: Final = (0x00, 0x00)
#: OpenSSL's reasons for a handshake whose first bytes are not TLS at all (an A-ASSOCIATE-RQ begins 0x01 0x00).
_NOT_TLS: Final = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "RECORD_LAYER_FAILURE"})


@dataclass(frozen=True)
class NodeLimits:
    """The bounds the guarded server enforces (from :class:`serving.dicom_node.settings.DicomNodeSettings`)."""

    max_pdu_bytes: int
    max_instance_bytes: int
    pre_association_timeout_s: float
    network_timeout_s: float
    max_associations: int
    max_connections: int
    max_connections_per_address: int
    max_concurrent_stores: int
    spool_dir: Path
    allowed_networks: tuple[IPNetwork, ...] = ()  # empty: any address

    @classmethod
    def from_settings(cls, cfg: Any) -> NodeLimits:
        return cls(
            max_pdu_bytes=cfg.max_pdu_bytes,
            max_instance_bytes=cfg.max_instance_bytes,
            pre_association_timeout_s=cfg.pre_association_timeout_s,
            network_timeout_s=cfg.network_timeout_s,
            max_associations=cfg.max_associations,
            max_connections=cfg.max_connections,
            max_connections_per_address=cfg.max_connections_per_address,
            max_concurrent_stores=cfg.max_concurrent_stores,
            spool_dir=cfg.resolved_storage_dir() / _SPOOL_DIR,
            allowed_networks=cfg.networks(),
        )


class _Throttled:
    """WARNING logs at most once per :data:`_WARN_EVERY_S` per kind: a flood of refusals must not flood the log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -_WARN_EVERY_S) < _WARN_EVERY_S:
                self._suppressed[kind] += 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += f" ({suppressed} more of these since the last such message)"
        log.warning(message, *args)


class ConnectionGuard:
    """The node-wide counters: open connections (in all and per address), association slots, receiving C-STOREs."""

    def __init__(self, limits: NodeLimits) -> None:
        self.limits = limits
        self.throttled = _Throttled()
        self._lock = threading.Lock()
        self._per_address: Counter[str] = Counter()
        self._open = 0
        self._associations: set[int] = set()
        self._stores = threading.BoundedSemaphore(limits.max_concurrent_stores)
        self._store_holders: set[int] = set()
        self._waiting = 0
        private = limits.spool_dir
        private.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(private, _DIR_MODE)

    # ------------------------------------------------------------------------------------ connections
    def admit_address(self, address: str) -> bool:
        """Whether ``address`` is in the network allow-list (always, when the list is empty)."""
        networks = self.limits.allowed_networks
        if not networks or address_allowed(address, networks):
            return True
        self.throttled.warning(
            "address",
            "DICOM connection from %s refused at accept: address not in VIGIL_DICOM_ALLOWED_NETWORKS",
            address,
        )
        return False

    def admit_connection(self, address: str) -> bool:
        """Count a new TCP connection from ``address``; False (not counted) when a connection cap is reached."""
        with self._lock:
            if self._open >= self.limits.max_connections:
                reason = f"{self.limits.max_connections} connections already open (VIGIL_DICOM_MAX_CONNECTIONS)"
            elif self._per_address[address] >= self.limits.max_connections_per_address:
                reason = (
                    f"{self.limits.max_connections_per_address} connections already open from this address "
                    "(VIGIL_DICOM_MAX_CONNECTIONS_PER_ADDRESS)"
                )
            else:
                self._open += 1
                self._per_address[address] += 1
                return True
        self.throttled.warning("connection", "DICOM connection from %s refused at accept: %s", address, reason)
        return False

    def release_connection(self, address: str) -> None:
        with self._lock:
            self._open -= 1
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]

    @property
    def open_connections(self) -> int:
        with self._lock:
            return self._open

    # ------------------------------------------------------------------------------------ association slots
    def claim_association(self, assoc: Association) -> bool:
        """Take an association slot for an allowed request; False when all ``max_associations`` are taken."""
        with self._lock:
            if len(self._associations) >= self.limits.max_associations:
                return False
            self._associations.add(id(assoc))
            return True

    def release_association(self, assoc: Association) -> None:
        with self._lock:
            self._associations.discard(id(assoc))

    # ------------------------------------------------------------------------------------ receiving C-STOREs
    def acquire_store(self, assoc: Association, wait_s: float, keep_alive: Any) -> bool:
        """Take one of the ``max_concurrent_stores`` receive slots for ``assoc`` (idempotent), waiting up to
        ``wait_s``; ``keep_alive`` is called about once a second while waiting (the DUL's idle timer)."""
        with self._lock:
            if id(assoc) in self._store_holders:
                return True
        if self._stores.acquire(blocking=False):
            with self._lock:
                self._store_holders.add(id(assoc))
            return True
        deadline = time.monotonic() + wait_s
        with self._lock:
            self._waiting += 1
        try:
            while True:
                if self._stores.acquire(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                    with self._lock:
                        self._store_holders.add(id(assoc))
                    return True
                if time.monotonic() >= deadline:
                    return False
                keep_alive()
        finally:
            with self._lock:
                self._waiting -= 1

    @property
    def stores_waiting(self) -> int:
        """Instances held back (their senders' TCP stalled) until a receive slot is free."""
        with self._lock:
            return self._waiting

    def release_store(self, assoc: Association) -> None:
        with self._lock:
            if id(assoc) not in self._store_holders:
                return
            self._store_holders.discard(id(assoc))
        self._stores.release()


def release_store_slot(assoc: Association) -> None:
    """Free ``assoc``'s receive slot once its C-STORE has been handled (no-op for an unguarded association)."""
    guard = getattr(assoc, "guard", None)
    if isinstance(guard, ConnectionGuard):
        guard.release_store(assoc)


class SpooledDataset(io.BytesIO):
    """A received dataset written to a private file as its fragments arrive, instead of to memory.

    pynetdicom requires a ``BytesIO`` for a message's dataset; this one keeps nothing in its own buffer. The file
    is created on the first fragment, starting with the Part 10 preamble and file meta that ``header`` returns,
    so that when the message is complete :attr:`path` is a DICOM file the intake can take as it is.
    """

    def __init__(self, folder: Path, header: Any) -> None:
        super().__init__()
        self._folder = folder
        self._header = header
        self._handle: BinaryIO | None = None
        self.path: Path | None = None
        self.dataset_bytes = 0

    def write(self, data: Any) -> int:
        if self._handle is None:
            self.path = self._folder / f"{uuid.uuid4().hex}.dcm"
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            self._handle = os.fdopen(fd, "wb")
            self._handle.write(self._header())
        written = self._handle.write(data)
        self.dataset_bytes += written
        return written

    def finish(self) -> Path | None:
        """Close the file (flushed, not yet fsynced) and return its path, or None when nothing was received."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        return self.path

    def getvalue(self) -> bytes:
        """The dataset bytes (read back from disk; the node itself never calls this)."""
        path = self.finish()
        if path is None or not path.exists():
            return b""
        data = path.read_bytes()
        return data[len(self._header()) :]

    def discard(self) -> None:
        """Close and delete the file (a C-STORE not taken in, or an association that ended mid-instance)."""
        self.finish()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def __bool__(self) -> bool:
        return True


class SpoolingDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, except that each message's dataset goes to a :class:`SpooledDataset`."""

    def __init__(self, assoc: Association, spool_dir: Path) -> None:
        super().__init__(assoc)
        self._spool_dir = spool_dir
        self.spools: list[SpooledDataset] = []

    def receive_primitive(self, primitive: Any) -> None:
        if self.message is None:
            message = DIMSEMessage()
            spool = SpooledDataset(self._spool_dir, lambda: self._part10_header(message))
            message.data_set = spool
            self.spools.append(spool)
            self.message = message
        current = self.message
        super().receive_primitive(primitive)
        if self.message is None:  # the message is complete
            spool = cast(SpooledDataset, current.data_set) if isinstance(current.data_set, SpooledDataset) else None
            if spool is not None:
                spool.finish()
            # A C-STORE's handler takes its file and frees the receive slot; any other dataset is not wanted.
            if not isinstance(current, C_STORE_RQ):
                release_store_slot(self.assoc)
                for item in [s for s in self.spools if s is spool]:
                    item.discard()
                    self.spools.remove(item)
            # pynetdicom resets the finished message's data_set; ours lives on in the primitive until handled.
        self.spools = [s for s in self.spools if s.path is None or s.path.exists()]

    def _part10_header(self, message: DIMSEMessage) -> bytes:
        """Preamble and file meta for the dataset of a C-STORE (empty for any other message)."""
        if not isinstance(message, C_STORE_RQ):
            return b""
        cs = message.command_set
        context = self.assoc._accepted_cx.get(cast(int, message.context_id))
        if context is None:
            return b""
        meta = create_file_meta(
            sop_class_uid=cs.AffectedSOPClassUID,
            sop_instance_uid=cs.AffectedSOPInstanceUID,
            transfer_syntax=context.transfer_syntax[0],
        )
        return b"\x00" * 128 + b"DICM" + encode_file_meta(meta)

    def discard_all(self) -> None:
        for spool in self.spools:
            spool.discard()
        self.spools = []


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


class GuardedACSE(ACSE):
    """Takes an association slot only for a request from an allowed calling AE to this node's AE title."""

    def _negotiate_as_acceptor(self) -> None:
        rq = cast(A_ASSOCIATE, self.requestor.primitive)  # the request being negotiated (as pynetdicom's ACSE)
        ae = self.assoc.ae
        guard = cast(GuardedAssociation, self.assoc).guard
        allowed_calling = not ae.require_calling_aet or rq.calling_ae_title in [
            s.strip() for s in ae.require_calling_aet
        ]
        allowed_called = not ae.require_called_aet or rq.called_ae_title == self.acceptor.ae_title.strip()
        if allowed_calling and allowed_called and not guard.claim_association(self.assoc):
            self.requestor.ae_title = rq.calling_ae_title
            guard.throttled.warning(
                "associations",
                "association from %s refused (rejected-transient, local limit "
                "exceeded): %d associations already open (VIGIL_DICOM_MAX_ASSOCIATIONS)",
                cast(GuardedAssociation, self.assoc).address,
                guard.limits.max_associations,
            )
            self.send_reject(0x02, 0x03, 0x02)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        super()._negotiate_as_acceptor()


class GuardedAssociation(Association):
    """An acceptor association with the bounded DUL, the spooling DIMSE provider and the slot-taking ACSE."""

    def __init__(self, ae: Any, guard: ConnectionGuard, address: str, connected_at: float | None = None) -> None:
        super().__init__(ae, _MODE_ACCEPTOR)
        self.guard = guard
        self.address = address
        self.acse = GuardedACSE(self)
        self.dul = BoundedDUL(self, guard, address, connected_at)
        self.dimse = SpoolingDIMSE(self, guard.limits.spool_dir)
        self.acse_timeout = self.acse_timeout  # its setter also sets the (new) DUL's ARTIM timer

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            cast(SpoolingDIMSE, self.dimse).discard_all()
            self.guard.release_store(self)
            self.guard.release_association(self)
            self.guard.release_connection(self.address)


class _GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler, making a :class:`GuardedAssociation` (the rest as pynetdicom 3.0 does it)."""

    server: GuardedServer

    def handle(self) -> None:
        address = str(self.client_address[0])
        connected_at = time.monotonic()
        try:
            context = self.server.tls_context
            if context is not None:
                wrapped = self._handshake(context, address, connected_at)
                if wrapped is None:
                    self.server.guard.release_connection(address)
                    return
                self.request = wrapped
            assoc = self._create_association(connected_at)
        except BaseException:
            self.server.guard.release_connection(address)
            raise
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()

    def _handshake(self, context: ssl.SSLContext, address: str, connected_at: float) -> ssl.SSLSocket | None:
        """The TLS server handshake, done by ``connected_at + pre_association_timeout_s`` (CPython bounds the whole
        handshake by the socket's timeout, however slowly it is trickled), or None with the socket closed."""
        limit = self.server.guard.limits.pre_association_timeout_s
        raw = cast(socket.socket, self.request)
        try:
            raw.settimeout(max(0.001, connected_at + limit - time.monotonic()))
            wrapped = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except OSError:
            raw.close()
            return None
        kind = "tls"
        try:
            wrapped.do_handshake()
        except TimeoutError:
            kind, why = (
                "tls_timeout",
                (f"no TLS handshake within {limit:.1f} s of connecting (VIGIL_DICOM_PRE_ASSOCIATION_TIMEOUT_S)"),
            )
        except ssl.SSLError as exc:  # the reason is OpenSSL's name for it, e.g. CERTIFICATE_VERIFY_FAILED
            reason = str(exc.reason or type(exc).__name__)
            hint = "; the peer does not speak TLS (a plain association?)" if reason in _NOT_TLS else ""
            why = f"TLS handshake failed ({reason}{hint})"
        except OSError as exc:
            why = f"connection lost during the TLS handshake ({type(exc).__name__})"
        else:
            return wrapped
        self.server.guard.throttled.warning(kind, "DICOM connection from %s closed: %s", address, why)
        wrapped.close()
        return None

    def _create_association(self, connected_at: float | None = None) -> Association:
        from copy import deepcopy

        raw = cast(socket.socket, self.request)
        raw.settimeout(self.server.guard.limits.network_timeout_s)  # accepted sockets block for ever otherwise
        assoc = GuardedAssociation(self.ae, self.server.guard, str(self.client_address[0]), connected_at)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(AssociationSocket(assoc, client_socket=raw))
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for event, bound in self.server._handlers.items():
            if event.is_intervention and bound:
                assoc.bind(event, *bound)
            elif isinstance(event, evt.NotificationEvent):
                for handler in cast("list[tuple[Callable[..., Any], list[Any] | None]]", bound):  # as pynetdicom
                    assoc.bind(event, handler[0], handler[1])
        # pynetdicom's standard DIMSE log handler (bound by default on the association and on the server) reads a
        # received dataset back whole only to say whether it is present
        assoc.unbind(evt.EVT_DIMSE_RECV, standard_dimse_recv_handler)
        return assoc


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the allow-list and connection caps at accept, the TLS handshake in the
    connection's thread, and :class:`GuardedAssociation`."""

    def __init__(
        self,
        ae: Any,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[Any],
        ssl_context: Any = None,
        evt_handlers: list[Any] | None = None,
        *,
        guard: ConnectionGuard,
    ) -> None:
        self.guard = guard
        super().__init__(
            ae,
            address,
            ae_title,
            contexts,
            ssl_context,
            evt_handlers=evt_handlers,
            request_handler=_GuardedRequestHandler,
        )

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        """The server's TLS context (None: plain TCP)."""
        return self.ssl_context

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept, without the TLS handshake pynetdicom would do here, blocking every further accept until it ends:
        the allow-list is checked first (:meth:`verify_request`), and the handshake is done by the handler."""
        return cast(socket.socket, self.socket).accept()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        address = str(client_address[0])
        return self.guard.admit_address(address) and self.guard.admit_connection(address)


def start_guarded_server(
    ae: Any, address: tuple[str, int], guard: ConnectionGuard, *, evt_handlers: list[Any], ssl_context: Any = None
) -> GuardedServer:
    """Listen with a :class:`GuardedServer` in a daemon thread, as ``AE.start_server(block=False)`` would; over TLS
    only when ``ssl_context`` is given (see :func:`serving.dicom_node.tls.server_context`).

    ``ae.maximum_associations`` is raised above ``max_connections``: pynetdicom counts every accepted socket against
    it, idle ones included; the guard counts associations itself, after an allowed request.
    """
    ae.maximum_associations = 2 * guard.limits.max_connections + 1
    ae.maximum_pdu_size = guard.limits.max_pdu_bytes
    server = cast(
        GuardedServer,
        ae.make_server(
            address, evt_handlers=evt_handlers, ssl_context=ssl_context, server_class=GuardedServer, guard=guard
        ),
    )
    thread = threading.Thread(target=make_target(server.serve_forever), name=f"AcceptorServer@{ae.ae_title}")
    thread.daemon = True
    thread.start()
    ae._servers.append(server)
    return server
