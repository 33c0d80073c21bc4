"""Taking in one DICOM instance (from C-STORE or STOW-RS): durable write, then the queue, then the answer.

The order is the guarantee. The bytes go to a temporary file in the storage folder, are fsynced, renamed into
place and the folder fsynced; only then is the queue item committed; only after that does the caller answer
success. A success therefore means the instance survives the process stopping. Files are named by a random id,
never by anything the sender chose. A C-STORE's dataset arrives already spooled to a file in the storage folder
(:mod:`.guard`), which is renamed into place rather than copied; STOW-RS hands over bytes.

What is analysed: CR Image Storage, DX Image Storage (for presentation and for processing) and Secondary Capture
Image Storage (the NIH chest radiographs as Google distributes them are SC with Modality DX). Any other storage
SOP class is accepted (a PACS that forwards a whole study must not see errors or retry for ever) and recorded as
``not_analysed`` with the reason; its bytes are not kept: Vigil is not an archive.

Status codes follow PS3.4 Annex B (Storage) and PS3.18 (STOW-RS failure reasons): 0x0000 success, 0xA700 out of
resources (disk or queue failed, or larger than allowed), 0xA900 data set does not match (the C-STORE command names
another SOP Class or Instance UID than the dataset, or a STOW-RS instance belongs to another study than the URL's),
0xC000 cannot understand (no usable SOP Instance UID). A refused instance is neither written nor queued.

Files are created 0600 in folders 0700: received instances, SRs and heat maps all carry patient data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
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

from models.errors import ImagingInputError, StoreUnavailableError
from models.imaging.pixels import read_dicom
from serving.dicom_node.queue import WorkQueue
from serving.dicom_node.records import NewInstance, QueueItem, check_uid

__all__ = [
    "ANALYSED_SOP_CLASSES",
    "Intake",
    "IntakeResult",
    "Status",
    "move_durably",
    "owned_path",
    "private_dir",
    "remove_quietly",
    "write_durably",
]

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
_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700


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


def private_dir(folder: Path) -> Path:
    """``folder``, created if missing, readable by this user only (0700, also when it already existed)."""
    folder.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(folder, _DIR_MODE)
    return folder


def write_durably(folder: Path, data: bytes, suffix: str = ".dcm") -> Path:
    """Write ``data`` under ``folder/<2 hex>/<random>.dcm``: temp file, fsync, rename, fsync of the folder.

    The file is created 0600 and both folders are 0700, whatever the umask: the bytes carry patient data.
    """
    name = uuid.uuid4().hex
    private_dir(folder)
    target_dir = private_dir(folder / name[:2])
    target = target_dir / f"{name}{suffix}"
    tmp = target_dir / f".{name}.tmp"
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fd = os.open(target_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def move_durably(folder: Path, spooled: Path, suffix: str = ".dcm") -> Path:
    """Move a file already written on the same file system under ``folder/<2 hex>/<random>.dcm`` as
    :func:`write_durably` writes one: fsync of the file, rename, fsync of the folder (0600 in 0700 folders)."""
    name = uuid.uuid4().hex
    private_dir(folder)
    target_dir = private_dir(folder / name[:2])
    target = target_dir / f"{name}{suffix}"
    fd = os.open(spooled, os.O_RDONLY)
    try:
        os.fchmod(fd, _FILE_MODE)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(spooled, target)
    fd = os.open(target_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return target


def remove_quietly(path: str | Path | None, root: Path) -> None:
    """Delete a file the queue no longer needs, if it lies inside ``root``; a failure is logged, never raised."""
    target = owned_path(root, path)
    if target is None:
        if path:
            log.warning("not deleting a queued file outside the storage folder")
        return
    try:
        target.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not delete %s: %s", target.name, type(exc).__name__)


def owned_path(root: Path, path: str | Path | None) -> Path | None:
    """``path`` when it lies inside ``root`` (paths come from the queue, which another process may share)."""
    if not path:
        return None
    resolved = Path(path).resolve()
    return resolved if resolved.is_relative_to(Path(root).resolve()) else None


def _raw_uid(ds: pydicom.Dataset, keyword: str) -> str | None:
    """A UID element's value, without converting it again (a conversion outside read_dicom would warn with it)."""
    try:
        element = ds.get_item(keyword)
    except (KeyError, ValueError, TypeError):  # pragma: no cover - malformed tag
        return None
    if element is None:
        return None
    value = element.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return check_uid(value)


def _header_uids(data: bytes | Path) -> dict[str, str | None]:
    """SOP class/instance, study, series and transfer syntax of a Part 10 file (header only; None when unreadable).

    Read with :func:`models.imaging.pixels.read_dicom`, the one reader of untrusted DICOM: a deflated dataset is
    inflated with a bound (pydicom alone would inflate a deflate bomb whole), pydicom's warnings stay out of the
    association threads (its lock serialises the reads), and every parser failure is an ``ImagingInputError``.
    """
    keys = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    out: dict[str, str | None] = dict.fromkeys((*keys, "TransferSyntaxUID"))
    try:
        ds = read_dicom(data, stop_before_pixels=True, specific_tags=keys)
    except ImagingInputError as exc:
        log.info("unreadable instance header: %s (%s)", exc.field, type(exc).__name__)
        return out
    for key in keys:
        out[key] = _raw_uid(ds, key)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out["TransferSyntaxUID"] = _raw_uid(meta, "TransferSyntaxUID")
        out["SOPClassUID"] = out["SOPClassUID"] or _raw_uid(meta, "MediaStorageSOPClassUID")
        out["SOPInstanceUID"] = out["SOPInstanceUID"] or _raw_uid(meta, "MediaStorageSOPInstanceUID")
    return out


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
            _BytesInstance(data),
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
            _FileInstance(Path(path)),
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            calling_aet=calling_aet,
            source=source,
            study_instance_uid=study_instance_uid,
        )

    def _take_in(
        self,
        instance: _Instance,
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
        instance: _Instance,
        sop_class_uid: str | None,
        sop_instance_uid: str | None,
        calling_aet: str,
        source: str,
        study_instance_uid: str | None,
    ) -> IntakeResult:
        header = _header_uids(instance.source)
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


class _Instance:
    """One received instance, in memory (STOW-RS) or spooled to a file (C-STORE)."""

    source: bytes | Path

    def size(self) -> int:
        raise NotImplementedError

    def sha256(self) -> str:
        raise NotImplementedError

    def store(self, folder: Path) -> Path:
        """Durably under ``folder`` (see :func:`write_durably`); returns where."""
        raise NotImplementedError

    def discard(self) -> None:
        """Free what is left (a spooled file not stored)."""


class _BytesInstance(_Instance):
    source: bytes

    def __init__(self, data: bytes) -> None:
        self.source = data

    def size(self) -> int:
        return len(self.source)

    def sha256(self) -> str:
        return hashlib.sha256(self.source).hexdigest()

    def store(self, folder: Path) -> Path:
        return write_durably(folder, self.source)


class _FileInstance(_Instance):
    source: Path

    def __init__(self, path: Path) -> None:
        self.source = path

    def size(self) -> int:
        return self.source.stat().st_size

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.source, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
        return digest.hexdigest()

    def store(self, folder: Path) -> Path:
        return move_durably(folder, self.source)

    def discard(self) -> None:
        self.source.unlink(missing_ok=True)
