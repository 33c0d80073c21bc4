"""Received datasets written to private files as they arrive, never assembled in memory (issue 14, finding 6).

:class:`SpoolingDIMSE` replaces pynetdicom's DIMSE provider on the node's associations: each message's dataset is a
:class:`SpooledDataset`, a 0600 file in the storage folder's ``.spool`` that starts with the Part 10 preamble and file
meta, so that a complete C-STORE's file is a DICOM file the intake (:mod:`serving.dicom_node.intake`) renames into
place. A dataset of any other message is deleted, and its receive slot freed, as soon as it is complete.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Final, cast

from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from serving.dicom_node.connection_guard import release_store_slot

__all__ = ["SpooledDataset", "SpoolingDIMSE"]

_FILE_MODE: Final = 0o600


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
