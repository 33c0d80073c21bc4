"""One instance as the intake receives it: in memory (STOW-RS) or spooled to a file (C-STORE), and its header UIDs.

:class:`ReceivedInstance` gives the intake one interface to both: size, sha256, storing it durably under the storage
folder (:mod:`serving.dicom_node.durable`: a write for bytes, a rename for a spooled file) and discarding what is
left. :func:`header_uids` reads the UIDs the queue and the SR are keyed on from the instance's header, with the one
reader of untrusted DICOM.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pydicom

from models.errors import ImagingInputError
from models.imaging.dicom_read import read_dicom
from serving.dicom_node.durable import move_durably, write_durably
from serving.dicom_node.records import check_uid

__all__ = ["BytesInstance", "FileInstance", "ReceivedInstance", "header_uids"]

log = logging.getLogger(__name__)


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


def header_uids(data: bytes | Path) -> dict[str, str | None]:
    """SOP class/instance, study, series and transfer syntax of a Part 10 file (header only; None when unreadable).

    Read with :func:`models.imaging.dicom_read.read_dicom`, the one reader of untrusted DICOM: a deflated dataset is
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


class ReceivedInstance:
    """One received instance, in memory (STOW-RS) or spooled to a file (C-STORE)."""

    source: bytes | Path

    def size(self) -> int:
        raise NotImplementedError

    def sha256(self) -> str:
        raise NotImplementedError

    def store(self, folder: Path) -> Path:
        """Durably under ``folder`` (see :func:`serving.dicom_node.durable.write_durably`); returns where."""
        raise NotImplementedError

    def discard(self) -> None:
        """Free what is left (a spooled file not stored)."""


class BytesInstance(ReceivedInstance):
    """An instance handed over as Part 10 bytes (STOW-RS); stored by writing them."""

    source: bytes

    def __init__(self, data: bytes) -> None:
        self.source = data

    def size(self) -> int:
        return len(self.source)

    def sha256(self) -> str:
        return hashlib.sha256(self.source).hexdigest()

    def store(self, folder: Path) -> Path:
        return write_durably(folder, self.source)


class FileInstance(ReceivedInstance):
    """An instance spooled to a Part 10 file in the storage folder (C-STORE); stored by renaming it, else deleted."""

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
