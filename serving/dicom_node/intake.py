"""Taking in one DICOM instance (from C-STORE or STOW-RS): durable write, then the queue, then the answer.

The order is the guarantee. The bytes go to a temporary file in the storage folder, are fsynced, renamed into
place and the folder fsynced; only then is the queue item committed; only after that does the caller answer
success. A success therefore means the instance survives the process stopping. Files are named by a random id,
never by anything the sender chose (:mod:`.durable`). A C-STORE's dataset arrives already spooled to a file in the
storage folder (:mod:`.spool`), which is renamed into place rather than copied; STOW-RS hands over bytes (both are a
:class:`serving.dicom_node.received.ReceivedInstance` here).

What is analysed: CR Image Storage, DX Image Storage (for presentation and for processing) and Secondary Capture
Image Storage (the NIH chest radiographs as Google distributes them are SC with Modality DX). Any other storage
SOP class is accepted (a PACS that forwards a whole study must not see errors or retry for ever) and recorded as
``not_analysed`` with the reason; its bytes are not kept: Vigil is not an archive.

Status codes follow PS3.4 Annex B (Storage) and PS3.18 (STOW-RS failure reasons): 0x0000 success, 0xA700 out of
resources (disk or queue failed, or larger than allowed), 0xA900 data set does not match (the C-STORE command names
another SOP Class or Instance UID than the dataset, or a STOW-RS instance belongs to another study than the URL's),
0xC000 cannot understand (no usable SOP Instance UID). A refused instance is neither written nor queued.

Files are created 0600 in folders 0700 (:mod:`.durable`): received instances, SRs and heat maps all carry patient
data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pydicom
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
)

from models.errors import StoreUnavailableError
from serving.dicom_node.durable import owned_path, private_dir, remove_quietly
from serving.dicom_node.queue import WorkQueue
from serving.dicom_node.received import BytesInstance, FileInstance, ReceivedInstance, header_uids
from serving.dicom_node.records import NewInstance, QueueItem, check_uid

__all__ = ["ANALYSED_SOP_CLASSES", "Intake", "IntakeResult", "Status"]

log = logging.getLogger(__name__)

#: Storage SOP classes the node analyses; every other storage class is recorded as not analysed.
ANALYSED_SOP_CLASSES: Final = frozenset(
    {
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        DigitalXRayImageStorageForProcessing,
        SecondaryCaptureImageStorage,
    }
)


class Status:
    """DIMSE / STOW-RS status codes the intake answers with."""

    SUCCESS: Final = 0x0000
    OUT_OF_RESOURCES: Final = 0xA700
    DOES_NOT_MATCH: Final = 0xA900
    CANNOT_UNDERSTAND: Final = 0xC000


@dataclass(frozen=True)
class IntakeResult:
    """The answer for one instance: status code, the UIDs it was stored as, and the queue outcome."""

    status: int
    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    outcome: str  # "queued", "duplicate", "replaced", "redeliver", "not_analysed", or "failed"
    item: QueueItem | None = None
    reason: str | None = None  # why it failed (never header values)

    @property
    def ok(self) -> bool:
        return self.status == Status.SUCCESS


def _mismatch(
    header: dict[str, str | None], sop_class: str | None, sop_instance: str | None, study: str | None
) -> str | None:
    """Why the dataset's UIDs are not those the transport named (never the values themselves), or None."""
    if sop_instance is not None and header["SOPInstanceUID"] != sop_instance:
        return "the dataset's SOP Instance UID is not the Affected SOP Instance UID of the C-STORE"
    if sop_class is not None and header["SOPClassUID"] not in (None, sop_class):
        return "the dataset's SOP Class UID is not the Affected SOP Class UID of the C-STORE"
    if study is not None and header["StudyInstanceUID"] != study:
        return "the instance's Study Instance UID is not the study of the request URL"
    return None


class Intake:
    """Writes received instances durably and queues them; shared by the Storage SCP and the STOW-RS route.

    Parameters
    ----------
    queue : WorkQueue
        Where instances are queued.
    storage_dir : Path
        Where their bytes are written.
    max_instance_bytes : int
        Larger instances are refused with 0xA700 (out of resources).
    """

    def __init__(self, queue: WorkQueue, storage_dir: Path, *, max_instance_bytes: int) -> None:
        self.queue = queue
        self.storage_dir = Path(storage_dir)
        self.max_instance_bytes = max_instance_bytes
        private_dir(self.storage_dir)

    def receive(
        self,
        data: bytes,
        *,
        sop_class_uid: str | None,
        sop_instance_uid: str | None,
        calling_aet: str,
        source: str,
        study_instance_uid: str | None = None,
    ) -> IntakeResult:
        """Store and queue one instance given as DICOM Part 10 bytes (preamble, file meta, dataset).

        ``sop_class_uid`` and ``sop_instance_uid`` are those the transport named (the C-STORE's Affected SOP
        Class/Instance UID); None to read them from the file (STOW-RS). When given, the dataset's own must be the
        same. ``study_instance_uid``, when given (STOW-RS into one study), must be the dataset's. A mismatch is
        0xA900 and nothing is written or queued. Never raises for a bad instance.
        """
        return self._take_in(
            BytesInstance(data),
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            calling_aet=calling_aet,
            source=source,
            study_instance_uid=study_instance_uid,
        )

    def receive_file(
        self,
        path: Path,
        *,
        sop_class_uid: str | None,
        sop_instance_uid: str | None,
        calling_aet: str,
        source: str,
        study_instance_uid: str | None = None,
    ) -> IntakeResult:
        """As :meth:`receive`, for a Part 10 file the receiver spooled inside the storage folder (never in memory).

        The intake takes the file: an analysed instance is fsynced and renamed into place (no copy); otherwise, and
        on every failure, it is deleted. A file outside the storage folder is refused (0xA700) and left alone.
        """
        if owned_path(self.storage_dir, path) is None:
            log.error("refused to take in a spooled file outside the storage folder")
            return IntakeResult(
                Status.OUT_OF_RESOURCES,
                None,
                None,
                None,
                "failed",
                reason="the instance could not be stored (spool outside the storage folder)",
            )
        return self._take_in(
            FileInstance(Path(path)),
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            calling_aet=calling_aet,
            source=source,
            study_instance_uid=study_instance_uid,
        )

    def _take_in(
        self,
        instance: ReceivedInstance,
        *,
        sop_class_uid: str | None,
        sop_instance_uid: str | None,
        calling_aet: str,
        source: str,
        study_instance_uid: str | None,
    ) -> IntakeResult:
        try:
            return self._checked_take_in(
                instance, sop_class_uid, sop_instance_uid, calling_aet, source, study_instance_uid
            )
        finally:
            instance.discard()

    def _checked_take_in(
        self,
        instance: ReceivedInstance,
        sop_class_uid: str | None,
        sop_instance_uid: str | None,
        calling_aet: str,
        source: str,
        study_instance_uid: str | None,
    ) -> IntakeResult:
        header = header_uids(instance.source)
        named_class, named_instance = check_uid(sop_class_uid), check_uid(sop_instance_uid)
        sop_class = named_class or header["SOPClassUID"]
        sop_instance = named_instance or header["SOPInstanceUID"]
        study = header["StudyInstanceUID"]
        if sop_instance is None or sop_class is None:
            return IntakeResult(
                Status.CANNOT_UNDERSTAND,
                sop_class,
                sop_instance,
                study,
                "failed",
                reason="the instance has no usable SOP Class UID or SOP Instance UID",
            )
        mismatch = _mismatch(header, named_class, named_instance, study_instance_uid)
        if mismatch is not None:
            log.warning("refused an instance from %s: %s", calling_aet, mismatch)
            return IntakeResult(Status.DOES_NOT_MATCH, sop_class, sop_instance, study, "failed", reason=mismatch)
        size = instance.size()
        if size > self.max_instance_bytes:
            log.warning(
                "refused an instance of %d bytes from %s: over the %d-byte limit",
                size,
                calling_aet,
                self.max_instance_bytes,
            )
            return IntakeResult(
                Status.OUT_OF_RESOURCES,
                sop_class,
                sop_instance,
                study,
                "failed",
                reason=f"the instance is larger than {self.max_instance_bytes} bytes",
            )
        analysed = sop_class in ANALYSED_SOP_CLASSES
        refused = (
            None
            if analysed
            else (
                "SOPClassUID",
                "SOPClassUID must be CR, DX or Secondary Capture image storage to be analysed; this "
                f"instance is {pydicom.uid.UID(sop_class).name[:64]}",
            )
        )
        path: Path | None = None
        try:
            digest = instance.sha256()
            if analysed:
                path = instance.store(self.storage_dir)
            record = NewInstance(
                sop_instance_uid=sop_instance,
                sop_class_uid=sop_class,
                study_instance_uid=study,
                series_instance_uid=header["SeriesInstanceUID"],
                transfer_syntax=header["TransferSyntaxUID"],
                calling_aet=calling_aet,
                source=source,
                file_path=str(path) if path else None,
                sha256=digest,
                size_bytes=size,
                not_analysed=refused,
            )
            item, outcome, previous = self.queue.enqueue(record)
        except (OSError, StoreUnavailableError) as exc:
            remove_quietly(path, self.storage_dir)
            log.error("could not take in an instance from %s: %s", calling_aet, exc)
            return IntakeResult(
                Status.OUT_OF_RESOURCES,
                sop_class,
                sop_instance,
                study,
                "failed",
                reason="the instance could not be stored (storage or queue unavailable)",
            )
        if outcome == "duplicate":
            remove_quietly(path, self.storage_dir)
            log.info(
                "instance %s received again from %s: already queued (%s); not queued twice",
                sop_instance,
                calling_aet,
                item.state,
            )
        elif outcome == "redeliver":
            remove_quietly(path, self.storage_dir)
            log.info(
                "instance %s received again from %s after its SR was delivered: the same SR is delivered "
                "again (not analysed again)",
                sop_instance,
                calling_aet,
            )
        elif outcome == "replaced" and previous is not None:
            for old in (previous.file_path, previous.sr_path, previous.sc_path):
                remove_quietly(old, self.storage_dir)
            log.info("instance %s re-sent with different bytes after it was not analysed: queued again", sop_instance)
        return IntakeResult(
            Status.SUCCESS,
            sop_class,
            sop_instance,
            study,
            "not_analysed" if refused and outcome == "queued" else outcome,
            item,
        )
