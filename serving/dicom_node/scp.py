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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pydicom.pixels import get_decoder
from pydicom.uid import UID, AllTransferSyntaxes
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from serving.dicom_node.intake import ANALYSED_SOP_CLASSES, Intake, Status
from serving.dicom_node.settings import ANY_CALLING_AET, DicomNodeSettings

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

    def __init__(self, settings: DicomNodeSettings, intake: Intake,
                 on_received: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.intake = intake
        self.on_received = on_received
        self._server: ThreadedAssociationServer | None = None
        self._ae: AE | None = None
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
        ae.maximum_associations = cfg.max_associations
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.network_timeout_s
        ae.maximum_pdu_size = 0  # no limit on what we receive
        ae.add_supported_context(Verification)
        decodable = decodable_transfer_syntaxes()
        for context in AllStoragePresentationContexts:
            analysed = context.abstract_syntax in ANALYSED_SOP_CLASSES
            ae.add_supported_context(context.abstract_syntax, decodable if analysed else list(AllTransferSyntaxes))
        return ae

    def start(self) -> bool:
        """Listen. Returns False (and listens on nothing) when the allow-list is empty."""
        cfg = self.settings
        allowed = cfg.calling_aets()
        if not allowed:
            log.warning("DICOM SCP not started: VIGIL_DICOM_ALLOWED_CALLING_AETS is empty, so no modality or PACS "
                        "may send; list their AE titles (or '*' for any, not recommended)")
            return False
        if ANY_CALLING_AET in allowed:
            log.warning("DICOM SCP admits any calling AE title ('*' in VIGIL_DICOM_ALLOWED_CALLING_AETS)")
        with self._lock:
            if self._server is not None:
                return True
            self._ae = self._make_ae()
            handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo),
                        (evt.EVT_REJECTED, self._on_rejected)]
            self._server = self._ae.start_server((cfg.host, cfg.port), block=False, evt_handlers=handlers)
        log.info("DICOM SCP %s listening on %s:%d (%d calling AE title(s) allowed)", cfg.ae_title, cfg.host,
                 self.port, len(allowed))
        return True

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
        log.info("DICOM SCP %s stopped%s", self.settings.ae_title,
                 f" ({len(open_ones)} association(s) aborted)" if open_ones else "")

    # ------------------------------------------------------------------------------------ handlers
    @staticmethod
    def _calling(event: Event) -> str:
        return str(event.assoc.requestor.ae_title).strip() or "unknown"

    def _on_echo(self, event: Event) -> int:
        return Status.SUCCESS

    def _on_rejected(self, event: Event) -> None:
        log.warning("association from %s (%s) rejected: calling or called AE title not recognised, or too many "
                    "associations", self._calling(event), event.assoc.requestor.address)

    def _on_store(self, event: Event) -> int:
        calling = self._calling(event)
        try:
            request = event.request
            data = event.encoded_dataset(include_meta=True)
            result = self.intake.receive(data, sop_class_uid=str(request.AffectedSOPClassUID or ""),
                                         sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
                                         calling_aet=calling, source=ROUTE)
        except Exception:  # never let one instance break the association or the node
            log.exception("C-STORE from %s could not be handled", calling)
            return Status.OUT_OF_RESOURCES
        if not result.ok:
            log.warning("C-STORE from %s answered 0x%04X: %s", calling, result.status, result.reason)
        elif self.on_received is not None:
            self.on_received()
        return result.status
