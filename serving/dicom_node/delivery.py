"""Sending a second read's SR (and heat-map SC) to the destination AE by C-STORE, and/or to a DICOMweb archive by
STOW-RS (:func:`send_stow`).

One association per delivery: simple, and nothing stale to recover when the destination restarts. Success and
the Storage warnings (0xB000 coercion, 0xB006 elements discarded, 0xB007 data set does not match SOP class) count
as delivered; anything else (association rejected or aborted, timeouts, a failure status, no status at all)
raises :class:`DeliveryError`, which the worker retries with back-off until ``max_attempts``.

Over TLS when the destination says so (``VIGIL_DICOM_PACS_TLS``: :meth:`DicomNodeSettings.destination_peer` gives it a
:class:`~serving.dicom_node.tls.ClientTLS`): TLS 1.2+, the PACS's certificate verified against ``VIGIL_DICOM_TLS_CA``
and its host name or address against the destination's host, the node's certificate presented as the client's. A
PACS whose certificate does not verify is a failed delivery like any other (retried, then ``delivery_failed``).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from models.errors import ConfigError, VigilError
from serving.dicom_node.addresses import Peer

__all__ = ["DeliveryError", "send_instances", "send_stow"]

log = logging.getLogger(__name__)

_WARNINGS: Final = frozenset({0xB000, 0xB006, 0xB007})


class DeliveryError(VigilError):
    """An instance could not be delivered; ``reason`` says why in words fit for the worklist."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def send_instances(paths: Sequence[Path], destination: Peer, *, calling_aet: str, timeout_s: float) -> None:
    """C-STORE the Part 10 files ``paths`` to ``destination`` over one association, in order.

    Raises
    ------
    DeliveryError
        Naming the step that failed and the status; nothing partial is reported as delivered.
    """
    datasets: list[pydicom.Dataset] = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(io.BytesIO(Path(path).read_bytes())))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise DeliveryError(f"the result file to send cannot be read ({type(exc).__name__})") from exc
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    with _SEND_LOCK:  # one outgoing association at a time per process: see _SEND_LOCK
        _send(ae, datasets, destination)


#: pynetdicom 3.0.4, with several threads of one process each sending C-STOREs, sometimes lets an association's
#: reactor thread take a C-STORE response first; ``send_c_store`` then waits out the network timeout and the SR is
#: sent again on retry (3 in ~5,000 C-STOREs from 4 threads, none from 4 processes: docs/dicom_node_benchmark.md).
#: Deliveries are short next to the analysis, so serialising them costs little.
_SEND_LOCK = threading.Lock()


def _send(ae: AE, datasets: list[pydicom.Dataset], destination: Peer) -> None:
    tls_args = None
    if destination.tls is not None:
        try:
            tls_args = (destination.tls.context(), destination.host)
        except ConfigError as exc:  # a certificate file removed or replaced by a bad one since start-up
            raise DeliveryError(f"TLS to {destination} cannot be set up: {exc}") from exc
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        # A refused connection: pynetdicom 3.0.4 drops that socket without closing it, so CPython closes it at once
        # with a ResourceWarning (ignored by default; fixed upstream by pydicom/pynetdicom#999). A TCP probe first
        # would avoid it but holds one of the destination's association slots until its ACSE timeout.
        what = (
            "rejected"
            if assoc.is_rejected
            else "could not be established (connection refused, timed out or aborted"
            + (", or the TLS handshake failed: see the log" if tls_args else "")
            + ")"
        )
        raise DeliveryError(f"association with {destination} {what}")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(status.Status) if status is not None and "Status" in status else None
            if code is None:
                raise DeliveryError(f"no C-STORE response from {destination} (timeout or aborted association)")
            if code in _WARNINGS:
                log.warning("%s stored %s with warning status 0x%04X", destination, ds.SOPInstanceUID, code)
            elif code != 0x0000:
                raise DeliveryError(f"{destination} answered C-STORE with failure status 0x{code:04X}")
    except (ValueError, RuntimeError, AttributeError) as exc:  # no accepted context, or the association dropped
        raise DeliveryError(f"C-STORE to {destination} failed ({type(exc).__name__})") from exc
    finally:
        if assoc.is_established:
            assoc.release()


#: DICOM JSON tags of the Store Instances Response (PS3.18 10.5.3): failed and referenced SOP sequences, the reason.
_FAILED_SOP_SEQUENCE, _FAILURE_REASON = "00081198", "00081197"


def send_stow(
    paths: Sequence[Path], url: str, *, timeout_s: float, authorization: str | None = None, verify: str | bool = True
) -> None:
    """STOW-RS the Part 10 files ``paths`` to the DICOMweb service at ``url``, into their study
    (``POST <url>/studies/<StudyInstanceUID>``, ``multipart/related; type="application/dicom"``), in one request.

    200 is success. 202 (some instances stored with warnings or failed) counts only when no instance failed. Any
    other status, a refused or timed-out connection, or a TLS failure raises :class:`DeliveryError`, which the
    worker retries with back-off like a failed C-STORE. The files are sent as written, so a retry stores the same
    UIDs again (an archive keeps one copy).

    Raises
    ------
    DeliveryError
        Naming the status or the failure, never the response body (it may echo patient data).
    """
    import uuid

    import httpx

    parts, studies = [], set()
    for path in paths:
        try:
            data = Path(path).read_bytes()
            studies.add(str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID))
        except (OSError, pydicom.errors.InvalidDicomError, AttributeError) as exc:
            raise DeliveryError(f"the result file to send cannot be read ({type(exc).__name__})") from exc
        parts.append(data)
    if len(studies) != 1:
        raise DeliveryError("the results to send do not share one study")
    boundary = uuid.uuid4().hex
    body = (
        b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
            for part in parts
        )
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    if authorization:
        headers["Authorization"] = authorization
    target = f"{url}/studies/{studies.pop()}"
    try:
        response = httpx.post(target, content=body, headers=headers, timeout=timeout_s, verify=verify)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"STOW-RS to {url} failed ({type(exc).__name__})") from exc
    if response.status_code == 200:
        return
    if response.status_code == 202:
        failed = _failed_reasons(response)
        if failed == []:
            log.warning("%s stored the results with warnings (STOW-RS 202)", url)
            return
        reasons = ", ".join(failed) if failed else "unreadable response"
        raise DeliveryError(f"STOW-RS to {url} answered 202 with failed instances ({reasons})")
    raise DeliveryError(f"STOW-RS to {url} answered HTTP {response.status_code}")


def _failed_reasons(response: object) -> list[str] | None:
    """The failure reasons (hex) in a Store Instances Response's FailedSOPSequence: [] when none failed, None when
    the body is not a readable response (then nothing is known to be stored)."""
    try:
        body = response.json()  # type: ignore[attr-defined]
        failed = body.get(_FAILED_SOP_SEQUENCE, {}).get("Value", []) if isinstance(body, dict) else None
        if not isinstance(failed, list):
            return None
        return sorted(
            {
                f"reason 0x{int(item[_FAILURE_REASON]['Value'][0]):04X}"
                if isinstance(item, dict) and _FAILURE_REASON in item
                else "no reason given"
                for item in failed
            }
        )
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
