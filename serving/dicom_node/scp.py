"""The Storage SCP: a pynetdicom AE that takes C-STORE and C-ECHO from an allow-list of calling AE titles.

Association: a calling AE title not on the allow-list is rejected (A-ASSOCIATE-RJ, rejected-permanent,
service-user, "calling AE title not recognised"); so is a called AE title other than this node's ("called AE title
not recognised"). Presentation contexts: Verification; every Storage SOP class (see :mod:`.intake` for which are
analysed and why the others are still accepted). The analysed classes are offered only the transfer syntaxes this
build can decode (native, deflated, and each compressed syntax whose pixel decoder is installed: JPEG baseline,
extended and lossless, JPEG-LS, JPEG 2000, HTJ2K, RLE), so an SCU that can transcode falls back to one we read;
other classes take any transfer syntax, as their bytes are not kept.

C-STORE answers only after the instance is on disk and in the queue (0x0000), else 0xA700 (out of resources),
0xA900 (the command's Affected SOP Class or Instance UID is not the dataset's: the queue would key on one and the SR
on the other; nothing is stored) or 0xC000 (no usable SOP Instance UID). The handler never raises: pynetdicom would
answer 0xC211 and log a trace.

What a peer can make the node hold is bounded by :mod:`.guard` (issue 14, findings 1, 3, 6): a finite maximum PDU
size, advertised and checked on each PDU header before its body is read; the association request within
``pre_association_timeout_s``; association slots taken only by allowed requests; connection caps in all and per
address; each instance spooled to disk as it arrives, aborted once over ``max_instance_bytes``, and at most
``max_concurrent_stores`` received at once.

Who may connect is not left to the AE titles, which anyone can claim (:mod:`.tls`): a connection from an address
outside ``allowed_networks`` is closed at accept; with ``tls_cert`` and ``tls_key`` set the port speaks TLS 1.2+
only, and by default a peer needs a certificate issued by ``tls_ca``.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import cast

from pydicom.pixels import get_decoder
from pydicom.uid import UID, AllTransferSyntaxes
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import: untyped
from pynetdicom.transport import ThreadedAssociationServer

from serving.dicom_node.addresses import ANY_CALLING_AET
from serving.dicom_node.connection_guard import ConnectionGuard, NodeLimits, release_store_slot
from serving.dicom_node.guard import start_guarded_server
from serving.dicom_node.intake import ANALYSED_SOP_CLASSES, Intake, Status
from serving.dicom_node.settings import DicomNodeSettings
from serving.dicom_node.spool import SpooledDataset
from serving.dicom_node.tls import server_context

__all__ = ["StorageSCP", "decodable_transfer_syntaxes"]

log = logging.getLogger(__name__)

ROUTE = "dicom:c-store"


def decodable_transfer_syntaxes() -> list[UID]:
    """Transfer syntaxes whose pixel data this process can decode, uncompressed ones first."""
    out = []
    for syntax in AllTransferSyntaxes:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            continue
        if decoder.is_available:
            out.append(syntax)
    return sorted(out, key=lambda s: (s.is_compressed, AllTransferSyntaxes.index(s)))


class StorageSCP:
    """The listening side of the node; :meth:`start` returns once it listens (in background threads).

    Parameters
    ----------
    settings : DicomNodeSettings
        AE title, host, port, allow-list, timeouts, association limit.
    intake : Intake
        Where received instances go.
    on_received : callable or None
        Called (no arguments) after each instance is queued: wakes the workers.
    """

    def __init__(
        self, settings: DicomNodeSettings, intake: Intake, on_received: Callable[[], None] | None = None
    ) -> None:
        self.settings = settings
        self.intake = intake
        self.on_received = on_received
        self._server: ThreadedAssociationServer | None = None
        self._ae: AE | None = None
        self.guard: ConnectionGuard | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int | None:
        """The port listened on (the real one when settings ask for port 0), or None when not listening."""
        return int(self._server.server_address[1]) if self._server is not None else None

    @property
    def listening(self) -> bool:
        return self._server is not None

    def _make_ae(self) -> AE:
        cfg = self.settings
        ae = AE(ae_title=cfg.ae_title)
        ae.require_called_aet = True
        allowed = cfg.calling_aets()
        if ANY_CALLING_AET not in allowed:
            ae.require_calling_aet = list(allowed)
        ae.acse_timeout = cfg.pre_association_timeout_s  # also how long an accepted socket may stay silent
        ae.dimse_timeout = ae.network_timeout = cfg.network_timeout_s
        ae.maximum_pdu_size = cfg.max_pdu_bytes  # advertised, and enforced as each PDU is read (.bounded_dul)
        ae.add_supported_context(Verification)
        decodable = decodable_transfer_syntaxes()
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None  # pynetdicom makes each of these from a Storage SOP class UID
            analysed = context.abstract_syntax in ANALYSED_SOP_CLASSES
            ae.add_supported_context(context.abstract_syntax, decodable if analysed else list(AllTransferSyntaxes))
        return ae

    def start(self) -> bool:
        """Listen. Returns False (and listens on nothing) when the allow-list is empty."""
        cfg = self.settings
        allowed = cfg.calling_aets()
        if not allowed:
            log.warning(
                "DICOM SCP not started: VIGIL_DICOM_ALLOWED_CALLING_AETS is empty, so no modality or PACS "
                "may send; list their AE titles (or '*' for any, not recommended)"
            )
            return False
        if ANY_CALLING_AET in allowed:
            log.warning("DICOM SCP admits any calling AE title ('*' in VIGIL_DICOM_ALLOWED_CALLING_AETS)")
        if not cfg.allowed_networks:
            log.warning(
                "DICOM SCP admits connections from any address (VIGIL_DICOM_ALLOWED_NETWORKS is empty): AE "
                "titles alone identify nobody; list the modalities' and PACS's networks"
            )
        with self._lock:
            if self._server is not None:
                return True
            tls = self._tls_context()
            self._ae = self._make_ae()
            handlers = [
                (evt.EVT_C_STORE, self._on_store),
                (evt.EVT_C_ECHO, self._on_echo),
                (evt.EVT_REJECTED, self._on_rejected),
            ]
            limits = NodeLimits.from_settings(cfg)
            self._clear_spool(limits)
            self.guard = ConnectionGuard(limits)
            self._server = start_guarded_server(
                self._ae, (cfg.host, cfg.port), self.guard, evt_handlers=handlers, ssl_context=tls
            )
        transport = (
            "plain TCP"
            if tls is None
            else "TLS 1.2+ only, "
            + (
                "client certificate from VIGIL_DICOM_TLS_CA required"
                if cfg.tls_require_client_cert
                else "client certificate optional"
            )
        )
        log.info(
            "DICOM SCP %s listening on %s:%d (%s; %d calling AE title(s), %s allowed)",
            cfg.ae_title,
            cfg.host,
            self.port,
            transport,
            len(allowed),
            f"{len(cfg.networks())} network(s)" if cfg.allowed_networks else "any address",
        )
        return True

    def _tls_context(self) -> ssl.SSLContext | None:
        """The listening port's TLS context, or None without TLS. Raises ConfigError naming the setting at fault
        (the files are checked when the settings are loaded; this catches one changed since)."""
        cfg = self.settings
        if cfg.tls_cert is None or cfg.tls_key is None:
            return None
        try:
            loose = bool(cfg.tls_key.stat().st_mode & 0o077)
        except OSError:
            loose = False  # server_context names the unreadable file
        if loose:
            log.warning("the DICOM TLS private key (VIGIL_DICOM_TLS_KEY) can be read by other users; chmod 600 it")
        return server_context(cfg.tls_cert, cfg.tls_key, cfg.tls_ca, require_client_cert=cfg.tls_require_client_cert)

    def stop(self, timeout_s: float = 0.0) -> None:
        """Stop accepting associations; let open ones finish for up to ``timeout_s``, then abort the rest.

        An aborted C-STORE was never answered with success, so its sender keeps and re-sends the instance.
        """
        with self._lock:
            server, ae = self._server, self._ae
            self._server = None
        if server is None or ae is None:
            return
        server.shutdown()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(a.is_acceptor for a in ae.active_associations):
            time.sleep(0.05)
        open_ones = [a for a in ae.active_associations if a.is_acceptor]
        for assoc in open_ones:
            assoc.abort()
        log.info(
            "DICOM SCP %s stopped%s",
            self.settings.ae_title,
            f" ({len(open_ones)} association(s) aborted)" if open_ones else "",
        )

    @staticmethod
    def _clear_spool(limits: NodeLimits) -> None:
        """Delete instances left half-received in the spool by a previous run that stopped mid-association."""
        if not limits.spool_dir.is_dir():
            return
        for leftover in limits.spool_dir.glob("*.dcm"):
            leftover.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------ handlers
    @staticmethod
    def _calling(event: Event) -> str:
        return str(event.assoc.requestor.ae_title).strip() or "unknown"

    def _on_echo(self, event: Event) -> int:
        return Status.SUCCESS

    def _on_rejected(self, event: Event) -> None:
        log.warning(
            "association from %s (%s) rejected: calling or called AE title not recognised, or too many associations",
            self._calling(event),
            event.assoc.requestor.address,
        )

    def _on_store(self, event: Event) -> int:
        calling = self._calling(event)
        request = cast(C_STORE, event.request)  # bound to EVT_C_STORE only
        spooled = request.DataSet
        try:
            named = {
                "sop_class_uid": str(request.AffectedSOPClassUID or ""),
                "sop_instance_uid": str(request.AffectedSOPInstanceUID or ""),
            }
            path = spooled.finish() if isinstance(spooled, SpooledDataset) else None
            if path is not None:
                result = self.intake.receive_file(path, **named, calling_aet=calling, source=ROUTE)
            else:  # no dataset received (or an unguarded association): the bytes pynetdicom holds
                result = self.intake.receive(
                    event.encoded_dataset(include_meta=True), **named, calling_aet=calling, source=ROUTE
                )
        except Exception:  # never let one instance break the association or the node
            log.exception("C-STORE from %s could not be handled", calling)
            return Status.OUT_OF_RESOURCES
        finally:
            if isinstance(spooled, SpooledDataset):
                spooled.discard()  # taken by the intake (renamed), or not wanted
            release_store_slot(event.assoc)
        if not result.ok:
            log.warning("C-STORE from %s answered 0x%04X: %s", calling, result.status, result.reason)
        elif self.on_received is not None:
            self.on_received()
        return result.status
