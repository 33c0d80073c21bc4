"""Reading a site's CSV export as a whole, before any value is looked at: bounded, decoded, parsed.

:func:`read_rows` reads at most :data:`MAX_FILE_BYTES`, refuses by name what is often mistaken for a CSV
export (compressed files, workbooks, UTF-16 "Unicode Text", Windows-1252), bounds each line by
:data:`MAX_LINE_CHARS`, and words the csv module's quoting errors for the person who prepared the export. Every
problem with the file as a whole is one :class:`models.errors.DataSourceError` naming the problem and the line.
The values themselves are checked by :mod:`training.data.canonical_csv`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from models.errors import DataSourceError

#: Bounds on what is read, so that no file can take unbounded memory or time: about a million visits fit.
MAX_FILE_BYTES: Final = 256 * 1024 * 1024
MAX_LINE_CHARS: Final = 1024 * 1024

_EXPORT_HINT: Final = "in Excel use Save As > 'CSV UTF-8 (Comma delimited)'"
#: Leading bytes of files that are often mistaken for a CSV export: what the file is, and what to do.
_NOT_CSV: Final[tuple[tuple[bytes, str, str], ...]] = (
    (b"\x1f\x8b", "gzip-compressed", "decompress it (gunzip) and pass the .csv inside"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook?)", _EXPORT_HINT),
    (b"PK\x05\x06", "an empty ZIP archive", _EXPORT_HINT),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 .xls workbook", _EXPORT_HINT),
    (b"PAR1", "a Parquet file", "write it as a canonical CSV (training.data.write_canonical_csv)"),
    (codecs.BOM_UTF16_LE, "UTF-16 or UTF-32 text (Excel's 'Unicode Text'?)", _EXPORT_HINT),
    (codecs.BOM_UTF16_BE, "UTF-16 or UTF-32 text", _EXPORT_HINT),
)


def read_bytes(path: Path) -> bytes:
    """The file's bytes (at most :data:`MAX_FILE_BYTES`), or :class:`DataSourceError` naming the problem."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise DataSourceError(f"canonical CSV not found at {path}") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise DataSourceError(f"cannot read canonical CSV {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise DataSourceError(f"canonical CSV path {path} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise DataSourceError(f"canonical CSV path {path} is not a file (a device, pipe or socket)")
    if info.st_size > MAX_FILE_BYTES:
        raise _too_large(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # bounded even if the file grows while it is read
    except OSError as exc:
        raise DataSourceError(f"cannot read canonical CSV {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise _too_large(path)
    return data


def _too_large(path: Path) -> DataSourceError:
    limit = f"{MAX_FILE_BYTES >> 20} MiB" if MAX_FILE_BYTES >= 1 << 20 else f"{MAX_FILE_BYTES} bytes"
    return DataSourceError(
        f"canonical CSV {path} is larger than {limit}; split the export into smaller files (by date, for example)"
    )


def _looks_utf16(data: bytes) -> bool:
    """Whether NUL bytes sit at every other position, as in UTF-16 text of mostly ASCII characters."""
    sample = data[:4096]
    halves = (sample[0::2], sample[1::2])
    shares = sorted(half.count(0) / max(len(half), 1) for half in halves)
    return shares[0] < 0.05 and shares[1] > 0.3


def _decode(path: Path, data: bytes) -> str:
    """Decode UTF-8 text (a byte-order mark allowed); refuse compressed, binary and other encodings by name."""
    if not data or data.isspace():
        raise DataSourceError(f"canonical CSV {path} is empty; expected a header row and data rows")
    for magic, what, remedy in _NOT_CSV:
        if data.startswith(magic):
            raise DataSourceError(f"canonical CSV {path} is {what}, not a UTF-8 CSV file; {remedy}")
    nul = data.find(b"\x00")
    if nul >= 0:
        if _looks_utf16(data):
            raise DataSourceError(
                f"canonical CSV {path} looks like UTF-16 text (NUL bytes between the characters), not UTF-8; "
                f"{_EXPORT_HINT}"
            )
        line = data.count(b"\n", 0, nul) + 1
        raise DataSourceError(
            f"canonical CSV {path} contains NUL bytes (the first at byte offset {nul}, line {line}): "
            "not a text CSV file"
        )
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise DataSourceError(
            f"canonical CSV {path} is not UTF-8 text (invalid byte at offset {offset}) on line {line}; "
            f"Excel's plain 'CSV' is Windows-1252: {_EXPORT_HINT}"
        ) from exc


def _lines(path: Path, text: str) -> Iterator[str]:
    """The physical lines of ``text`` (any of ``\\n``, ``\\r\\n``, ``\\r``), each at most :data:`MAX_LINE_CHARS`."""
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        if len(line) > MAX_LINE_CHARS:
            raise DataSourceError(
                f"canonical CSV {path} line {number} is longer than {MAX_LINE_CHARS} characters; no row of a "
                "canonical CSV is that long (is it a CSV file?)"
            )
        yield line


def _csv_problem(path: Path, exc: csv.Error, first_line: int, last_line: int) -> DataSourceError:
    """A quoting error of the csv module, worded for the person who prepared the export."""
    reason = str(exc)
    if reason.startswith("unexpected end of data"):
        reason = "a quoted cell is never closed (an unbalanced '\"')"
    elif reason.startswith("field larger than field limit"):
        reason = f"a cell is longer than {csv.field_size_limit()} characters"
        if last_line > first_line:
            reason += f" (it runs on to line {last_line}: an unbalanced '\"'?)"
    elif "expected after" in reason:
        reason += ' (a quote inside a quoted cell must be doubled: "")'
    where = f"line {first_line}" if last_line <= first_line else f"the row starting on line {first_line}"
    return DataSourceError(f"canonical CSV {path} is not valid CSV at {where}: {reason}")


def is_blank(cells: list[str]) -> bool:
    return not cells or (len(cells) == 1 and not cells[0].strip())


def read_rows(path: Path) -> tuple[list[list[str]], str]:
    """Read, decode and parse the file; return its CSV rows (header first) and the sha256 of its bytes.

    Memory and time are bounded by :data:`MAX_FILE_BYTES` and :data:`MAX_LINE_CHARS`; every problem with the
    file as a whole is a :class:`DataSourceError`.
    """
    data = read_bytes(path)
    digest = hashlib.sha256(data).hexdigest()
    text = _decode(path, data)
    del data
    reader = csv.reader(_lines(path, text), strict=True)
    rows: list[list[str]] = []
    while True:
        first_line = reader.line_num + 1
        try:
            rows.append(next(reader))
        except StopIteration:
            break
        except csv.Error as exc:
            raise _csv_problem(path, exc, first_line, reader.line_num) from exc
    while rows and is_blank(rows[-1]):
        rows.pop()  # trailing blank lines
    return rows, digest
