"""What a peer can make the Storage SCP hold, bounded before and during an association (issue 14, findings 1, 3, 6).

pynetdicom, left to itself, reads a PDU by its declared length before any check (a 4 GiB A-ASSOCIATE-RQ is buffered
whole), counts an idle TCP connection as an association (so idle sockets lock allowed modalities out), waits on an
accepted socket without any timeout once a PDU has begun, and assembles every received instance in memory. The
classes here and in the modules they use replace its acceptor-side pieces for this node's server only (no
process-wide setting is changed):

- :class:`serving.dicom_node.bounded_dul.BoundedDUL` reads each PDU by its 6-byte header first and closes the
  connection when the declared length is over ``max_pdu_bytes`` (the node also advertises that maximum, so a
  conformant sender never exceeds it); the association request must arrive within ``pre_association_timeout_s`` of
  the connection, however slowly it is trickled; the P-DATA fragments of one instance are counted as they arrive and
  the association is aborted as soon as they pass ``max_instance_bytes``; at most ``max_concurrent_stores``
  instances are received at once (a further one waits, with TCP back-pressure on its sender, for up to
  ``network_timeout_s``).
- :class:`serving.dicom_node.spool.SpoolingDIMSE` writes each received dataset to a 0600 file in the storage
  folder's ``.spool`` as it arrives (with its Part 10 header), never to memory; the C-STORE handler hands that file
  to the intake, which renames it into place.
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

The bounds and the node-wide counters they are checked against are in :mod:`serving.dicom_node.connection_guard`.
Every refusal is logged at WARNING (at most once per ten seconds per kind, with the count since), naming the peer
address and the limit, never the bytes received.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, cast

from pynetdicom import evt
from pynetdicom._handlers import standard_dimse_recv_handler
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from serving.dicom_node.bounded_dul import BoundedDUL
from serving.dicom_node.connection_guard import ConnectionGuard
from serving.dicom_node.spool import SpoolingDIMSE

__all__ = ["GuardedAssociation", "GuardedServer", "start_guarded_server"]

_MODE_ACCEPTOR: Final = "acceptor"
#: OpenSSL's reasons for a handshake whose first bytes are not TLS at all (an A-ASSOCIATE-RQ begins 0x01 0x00).
_NOT_TLS: Final = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "RECORD_LAYER_FAILURE"})


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
