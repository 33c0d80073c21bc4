"""Private, durable files in the DICOM node's folders: written or moved into place crash-safely, removed quietly.

:func:`write_durably` and :func:`move_durably` put a file under ``folder/<2 hex>/<random>.dcm`` so that once they
return it survives the process stopping (fsync of the file, rename, fsync of the folder); :func:`owned_path` and
:func:`remove_quietly` act only on paths inside the node's own folder (paths come from the queue, which another
process may share). Files are named by a random id, never by anything a sender chose, and are created 0600 in
folders 0700: received instances, SRs and heat maps all carry patient data.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Final

__all__ = ["move_durably", "owned_path", "private_dir", "remove_quietly", "write_durably"]

log = logging.getLogger(__name__)

_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700


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
