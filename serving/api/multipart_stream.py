"""A streaming reader of ``multipart/related`` bodies (RFC 2046 section 5.1, RFC 2387) for STOW-RS.

The body is parsed as it arrives, piece by piece, never held whole: each part's bytes go to one spool per request
(in memory up to ``memory_bytes``, then a private temporary file), so a request costs about ``memory_bytes`` of
memory whatever its size. Every limit is checked the moment it is crossed, before the rest of the body is read:
the number of parts (the part past ``max_parts`` is refused as it begins), the size of each part (413 naming the
part), the size of a part's headers and of the preamble. Delimiters are recognised only where RFC 2046 puts them:
CRLF, ``--``, the boundary, at the start of a line (the body's first line may open with the boundary itself).
Each call to :meth:`MultipartReader.feed` costs time in proportion to the bytes given plus the parts they begin,
and parts are capped, so a caller on the event loop that feeds pieces of at most :data:`FEED_BYTES` keeps the loop
responsive.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from models.errors import InputValidationError
from serving.api.errors import ApiError

__all__ = ["FEED_BYTES", "MAX_BOUNDARY_CHARS", "MIN_BOUNDARY_CHARS", "MultipartReader", "Part", "stow_boundary"]

#: Feed at most this many bytes at once from the event loop (a larger received chunk is fed in slices).
FEED_BYTES: Final = 64 * 1024
#: RFC 2046 allows 1 to 70 characters; a boundary of fewer than 8 is refused: real clients send 16 or more
#: random characters, and a short boundary is both likely to occur inside binary pixel data and the cheapest way
#: to pack millions of empty parts into a body.
MIN_BOUNDARY_CHARS: Final = 8
MAX_BOUNDARY_CHARS: Final = 70
_BCHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]*[0-9A-Za-z'()+_,\-./:=?]")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|[^;"]*)\s*(?:;|$)')
_MAX_HEADER_BYTES: Final = 8 * 1024
_MAX_PREAMBLE_BYTES: Final = 64 * 1024
_MAX_PADDING: Final = 256
_COPY_BYTES: Final = 1024 * 1024  # linear white space allowed after a boundary, before its CRLF
DICOM: Final = "application/dicom"


def _content_type(value: str) -> tuple[str, dict[str, str]]:
    """Media type (lower case) and parameters (names lower case, quotes removed) of a Content-Type value.

    A parameter given twice, or text that is not a parameter, is a 422 naming ``Content-Type``: a proxy and this
    service must not read different boundaries from one header.
    """
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            raise InputValidationError("Content-Type", "the Content-Type parameters are malformed")
        name, raw = match.group(1).lower(), match.group(2).strip()
        if name in params:
            raise InputValidationError("Content-Type", f"the Content-Type parameter '{name}' is given more than once")
        params[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        pos = match.end()
    return kind.strip().lower(), params


def stow_boundary(content_type: str) -> bytes:
    """The boundary of a ``multipart/related; type="application/dicom"`` Content-Type, checked.

    Raises ApiError 415 for another media type, InputValidationError naming ``Content-Type`` for a missing,
    repeated or malformed boundary (RFC 2046 characters, 8 to 70 of them).
    """
    kind, params = _content_type(content_type)
    if kind != "multipart/related" or params.get("type", "").lower() != DICOM:
        raise ApiError(415, 'STOW-RS takes multipart/related; type="application/dicom" (each part one DICOM instance)')
    boundary = params.get("boundary")
    if boundary is None:
        raise InputValidationError("Content-Type", "multipart/related needs a boundary parameter")
    if not MIN_BOUNDARY_CHARS <= len(boundary) <= MAX_BOUNDARY_CHARS or not _BCHARS.fullmatch(boundary):
        raise InputValidationError(
            "Content-Type",
            f"the multipart boundary must be {MIN_BOUNDARY_CHARS} to "
            f"{MAX_BOUNDARY_CHARS} characters of RFC 2046's set (letters, "
            f"digits, '()+_,-./:=? and inner spaces); got {len(boundary)} "
            "characters",
        )
    return boundary.encode("ascii")


@dataclass(frozen=True)
class Part:
    """One part's body: ``size`` bytes at ``offset`` of its request's spool; ``index`` counts from 1."""

    index: int
    offset: int
    size: int


class _State:
    PREAMBLE: Final = 0
    AFTER_DELIMITER: Final = 1
    HEADERS: Final = 2
    BODY: Final = 3
    EPILOGUE: Final = 4


def _malformed(message: str) -> InputValidationError:
    return InputValidationError("body", message)


class MultipartReader:
    """Parse one ``multipart/related`` body fed in pieces; the parts' bodies go to one spool.

    Parameters
    ----------
    boundary : bytes
        From :func:`stow_boundary`.
    max_parts : int
        The part after this many is refused (422 naming ``body``) as soon as its delimiter is read.
    max_part_bytes : int
        A part's body larger than this is refused (413 naming the part) as soon as it is.
    memory_bytes : int
        The spool stays in memory up to this many bytes, then moves to a temporary file (0600, unlinked).
    spool_dir : Path or None
        Where that file is made (default: the system's temporary folder).

    Use :meth:`feed` for each piece of the body, :meth:`finish` at its end, :meth:`read` for a part's bytes and
    :meth:`close` (or ``with``) to release the spool.
    """

    def __init__(
        self,
        boundary: bytes,
        *,
        max_parts: int,
        max_part_bytes: int,
        memory_bytes: int = 1024 * 1024,
        spool_dir: Path | None = None,
    ) -> None:
        self._delimiter = b"\r\n--" + boundary
        # The first delimiter may open the body with no CRLF before it: a CRLF is assumed there.
        self._buffer = bytearray(b"\r\n")
        self._state = _State.PREAMBLE
        self._skipped = 0
        self._max_parts = max_parts
        self._max_part_bytes = max_part_bytes
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # closed by close()
            max_size=memory_bytes, mode="w+b", dir=None if spool_dir is None else str(spool_dir)
        )
        self._written = 0
        self._open: Part | None = None
        self.parts: list[Part] = []

    def __enter__(self) -> MultipartReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def complete(self) -> bool:
        """Whether the closing delimiter has been read."""
        return self._state == _State.EPILOGUE

    def feed(self, data: bytes) -> None:
        """Parse the next piece of the body. Raises as soon as a limit is crossed or the body is malformed."""
        if self._state == _State.EPILOGUE:
            return  # RFC 2046: the epilogue is ignored (the body-size limit bounds it)
        buf = self._buffer
        buf += data
        pos = 0
        delimiter = self._delimiter
        while True:
            state = self._state
            if state == _State.BODY:
                found = buf.find(delimiter, pos)
                end = found if found >= 0 else max(pos, len(buf) - len(delimiter) + 1)
                self._write(buf, pos, end)
                pos = end
                if found < 0:
                    break
                pos += len(delimiter)
                self._open = None
                self._state = _State.AFTER_DELIMITER
            elif state == _State.AFTER_DELIMITER:
                if len(buf) - pos < 2:
                    break
                if buf[pos : pos + 2] == b"--":
                    self._state = _State.EPILOGUE
                    pos = len(buf)
                    break
                eol = buf.find(b"\r\n", pos, pos + _MAX_PADDING + 2)
                if eol < 0:
                    if len(buf) - pos > _MAX_PADDING + 1:
                        raise _malformed("a multipart boundary line must end with CRLF")
                    break
                if buf[pos:eol].strip(b" \t"):
                    raise _malformed("a multipart boundary line must end with CRLF")
                pos = eol + 2
                self._begin_part()
            elif state == _State.HEADERS:
                if buf.startswith(b"\r\n", pos):
                    head, pos = b"", pos + 2
                else:
                    end = buf.find(b"\r\n\r\n", pos, pos + _MAX_HEADER_BYTES)
                    if end < 0:
                        if len(buf) - pos >= _MAX_HEADER_BYTES:
                            raise _malformed(
                                f"the headers of part {len(self.parts)} exceed {_MAX_HEADER_BYTES} "
                                "bytes or have no blank line after them"
                            )
                        break
                    head, pos = bytes(buf[pos:end]), end + 4
                self._check_headers(head)
                self._state = _State.BODY
            else:  # preamble: skipped, up to a bound
                found = buf.find(delimiter, pos)
                if found < 0:
                    keep = max(pos, len(buf) - len(delimiter) + 1)
                    self._skipped += keep - pos
                    pos = keep
                    if self._skipped > _MAX_PREAMBLE_BYTES:
                        raise _malformed(f"no multipart boundary in the first {_MAX_PREAMBLE_BYTES} bytes of the body")
                    break
                pos = found + len(delimiter)
                self._state = _State.AFTER_DELIMITER
        del buf[:pos]

    def finish(self) -> list[Part]:
        """The parts, once the whole body has been fed; 422 naming ``body`` if it did not close properly."""
        if not self.parts:
            raise _malformed("the multipart body has no parts")
        if self._state != _State.EPILOGUE:
            raise _malformed("the multipart body has no closing boundary")
        self._buffer.clear()
        return list(self.parts)

    def read(self, part: Part, limit: int | None = None) -> bytes:
        """The body of ``part``, or its first ``limit`` bytes (read from the spool; one caller at a time)."""
        self._spool.seek(part.offset)
        return self._spool.read(part.size if limit is None else min(limit, part.size))

    def copy_to(self, part: Part, folder: Path) -> Path:
        """The body of ``part`` copied, a MiB at a time, to a new private file (0600) in ``folder``."""
        target = folder / f".{uuid.uuid4().hex}.part"
        self._spool.seek(part.offset)
        left = part.size
        try:
            with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                while left > 0:
                    chunk = self._spool.read(min(left, _COPY_BYTES))
                    if not chunk:
                        raise OSError("the spool ended before the part did")
                    out.write(chunk)
                    left -= len(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target

    def close(self) -> None:
        """Release the spool (its temporary file, if any, is deleted)."""
        self._spool.close()

    def _begin_part(self) -> None:
        if len(self.parts) >= self._max_parts:
            raise _malformed(f"at most {self._max_parts} instances per request; the body has more")
        self._open = Part(len(self.parts) + 1, self._written, 0)
        self.parts.append(self._open)
        self._state = _State.HEADERS

    def _check_headers(self, head: bytes) -> None:
        index = len(self.parts)
        for line in head.split(b"\r\n") if head else ():
            name, sep, value = line.partition(b":")
            if not sep or not name.strip() or name != name.strip():
                raise _malformed(f"part {index} has a malformed header line")
            if name.lower() == b"content-type":
                media = value.split(b";", 1)[0].strip().lower()
                if media != DICOM.encode():
                    raise ApiError(415, f"part {index} is not application/dicom: each part must be one DICOM instance")

    def _write(self, buf: bytearray, start: int, end: int) -> None:
        if end <= start:
            return
        part = self._open
        assert part is not None
        size = part.size + end - start
        if size > self._max_part_bytes:
            raise ApiError(
                413,
                f"instance {part.index} (multipart part {part.index}) is larger than the "
                f"{self._max_part_bytes}-byte limit per instance",
            )
        self._spool.write(buf[start:end])
        self._written += end - start
        self._open = Part(part.index, part.offset, size)
        self.parts[-1] = self._open
