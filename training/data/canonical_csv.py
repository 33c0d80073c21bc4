"""The canonical triage CSV: a site's own export, read strictly and written by :func:`write_canonical_csv`.

The format is documented in ``docs/canonical_csv.md``. In short: UTF-8, comma-separated, one header row whose
names are :data:`models.triage.record.RECORD_FIELDS` (``age_years`` and ``sex`` required, the others
optional) plus the optional label columns :data:`CSV_LABEL_COLUMNS`; columns starting with ``x_`` are
ignored; any other column is an error. Empty cells are missing values. Every value is validated strictly:
an error names the 1-based data row (row 1 is the line after the header) and the column. A file that is not
such a CSV at all (compressed, a workbook, another encoding, broken quoting, larger than
:data:`training.data.csv_file.MAX_FILE_BYTES`) is refused by :mod:`training.data.csv_file` with one error naming
the problem and the line, in time and memory bounded by the file's size.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any, Final, NoReturn

import pandas as pd

from models.errors import DataSourceError, InputValidationError, RecordValidationErrors
from models.triage.record import NUMERIC_FIELDS, RECORD_FIELDS
from training.data import csv_file
from training.data.csv_file import is_blank
from training.data.dataset import TriageDataset, build_dataset

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS: Final[tuple[str, ...]] = ("age_years", "sex")
CSV_LABEL_COLUMNS: Final[tuple[str, ...]] = ("acuity", "admitted", "critical", "nurse_acuity", "visit_id")
#: Columns written by :func:`write_canonical_csv`, in order.
CSV_COLUMNS: Final[tuple[str, ...]] = (*RECORD_FIELDS, *CSV_LABEL_COLUMNS)
IGNORED_PREFIX: Final = "x_"
VISIT_ID_MAX_LENGTH: Final = 64
MAX_ERRORS: Final = 50
#: A UTC offset at the end of an ISO 8601 date-time, as pandas' ISO 8601 parser reads one: after a time of day.
_OFFSET: Final = re.compile(r"[T ]\s*\d{2}[\d:.,]*\s*(?:Z|(?P<sign>[+-])(?P<hours>\d{2})(?::?(?P<minutes>\d{2}))?)$")

_LEVEL: Final = frozenset(range(1, 6))
_BINARY: Final = frozenset((0, 1))
#: Label columns: the values allowed and how a message names them. A label is read by the rule of the record's
#: whole-number fields (:func:`models.triage.record.validate_record`): any number equal to an allowed integer, so
#: ``3.0`` (how pandas writes an integer column with gaps) is 3, and ``3.5`` is refused.
_LABEL_RULES: Final[dict[str, tuple[frozenset[int], str]]] = {
    "acuity": (_LEVEL, "an integer from 1 to 5"),
    "nurse_acuity": (_LEVEL, "an integer from 1 to 5"),
    "admitted": (_BINARY, "0 or 1"),
    "critical": (_BINARY, "0 or 1"),
}


def _whole_number(text: str) -> int | None:
    """``text`` as an integer when it is a finite number with no fractional part (``"3"``, ``"3.0"``), else None."""
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number != int(number):
        return None
    return int(number)


def _listed(items: list[Any], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _check_header(path: Path, header: list[str]) -> tuple[list[str], list[str]]:
    """Return (used columns, ignored columns); raise on unknown, duplicate or missing required columns.

    The work is linear in the number of columns and at most :data:`MAX_ERRORS` errors are raised, however
    malformed the header.
    """
    if is_blank(header):
        raise DataSourceError(f"canonical CSV {path} starts with a blank line; its first line must be the header row")
    names = [name.strip() for name in header]
    if not any(names):
        raise DataSourceError(f"canonical CSV {path} has a header row without any column name")
    if names[0].lower().startswith("sep="):
        raise DataSourceError(
            f"canonical CSV {path} starts with an Excel 'sep=' line; delete it so that the header row comes first"
        )
    if len(names) == 1 and any(sep in names[0] for sep in (";", "\t", "|")):
        raise DataSourceError(
            f"canonical CSV {path} does not look comma-separated (its header is one column); "
            "save it with ',' as the delimiter"
        )
    allowed = set(CSV_COLUMNS)
    if not any(n in allowed or n.startswith(IGNORED_PREFIX) for n in names):
        # Most likely a file without a header, whose first data row was read as one: never echo it.
        raise RecordValidationErrors(
            [
                InputValidationError(
                    "columns",
                    f"none of the {len(names)} names in the first line is a column of the canonical CSV (is the header "
                    f"row missing?); the first line must name the columns, e.g. 'age_years,sex,heart_rate' (the names "
                    "are not shown: they may be a row of patient data)",
                )
            ]
        )
    errors: list[InputValidationError] = []
    unnamed = [position for position, name in enumerate(names, start=1) if not name]
    if unnamed:
        errors.append(
            InputValidationError(
                "columns",
                f"header column(s) {_listed(unnamed)} have no name; name each column (prefix '{IGNORED_PREFIX}' to "
                "have it ignored) or delete it",
            )
        )
    counts = Counter(n for n in names if n)
    errors.extend(
        InputValidationError(name[:64], f"column '{name[:64]}' appears more than once ({count} times)")
        for name, count in islice(((n, c) for n, c in counts.items() if c > 1), MAX_ERRORS)
    )
    errors.extend(
        InputValidationError(name, f"required column '{name}' is missing")
        for name in REQUIRED_COLUMNS
        if name not in counts
    )
    unknown = [n[:64] for n in counts if n not in allowed and not n.startswith(IGNORED_PREFIX)]
    if unknown:
        listed = repr(unknown) if len(unknown) <= 10 else f"{unknown[:10]!r} and {len(unknown) - 10} more"
        errors.extend(
            InputValidationError(
                name,
                f"unknown column '{name}' (unknown columns: {listed}); allowed are the triage record fields, "
                f"{list(CSV_LABEL_COLUMNS)}, and any column prefixed '{IGNORED_PREFIX}' (ignored)",
            )
            for name in unknown[:MAX_ERRORS]
        )
    if errors:
        raise RecordValidationErrors(errors[:MAX_ERRORS])
    used = [n for n in names if n in allowed]
    ignored = [n for n in names if n.startswith(IGNORED_PREFIX)]
    return used, ignored


def _check_shape(body: list[list[str]], width: int) -> None:
    """Raise one error per row (at most :data:`MAX_ERRORS`) that is blank or has the wrong number of cells."""
    errors: list[InputValidationError] = []
    for row, cells in enumerate(body, start=1):
        if len(cells) == width:
            continue
        if is_blank(cells):
            problem = "row is blank; delete blank lines between the rows"
        else:
            problem = f"row has {len(cells)} field{'s' * (len(cells) != 1)}; the header has {width}"
        errors.append(InputValidationError("csv", problem, row))
        if len(errors) == MAX_ERRORS:
            break
    if errors:
        raise RecordValidationErrors(errors)


def _utc_offset(text: str) -> str | None:
    """The UTC offset a date-time text carries, normalised to ``+hh:mm`` (``None`` without one)."""
    match = _OFFSET.search(text)
    if match is None:
        return None
    sign, hours, minutes = match.group("sign"), match.group("hours"), match.group("minutes")
    if sign is None:
        return "+00:00"  # 'Z'
    return f"{sign}{hours}:{minutes or '00'}"


def _check_offsets(frame: pd.DataFrame, errors: list[InputValidationError]) -> pd.DataFrame:
    """Refuse ``arrival_time`` values whose UTC offset (or its absence) differs from the first given one.

    One column of date-times has one time zone: mixing local times with offset-qualified ones, or two
    offsets, would otherwise shift some of them silently. Refused cells are blanked in the returned copy so
    the other checks still run; the errors are collected in ``errors``.
    """
    if "arrival_time" not in frame:
        return frame
    cells = frame["arrival_time"].tolist()
    first: tuple[int, str | None] | None = None
    bad: list[int] = []
    for row, cell in enumerate(cells, start=1):
        text = cell.strip()
        if not text:
            continue
        offset = _utc_offset(text)
        if first is None:
            first = (row, offset)
        elif offset != first[1]:
            form = (
                "has no UTC offset"
                if offset is None
                else ("has a UTC offset" if first[1] is None else "has a different UTC offset")
            )
            errors.append(
                InputValidationError(
                    "arrival_time",
                    f"'arrival_time' {form}, unlike row {first[0]}; give every arrival_time in one form, "
                    "preferably the site's local time without an offset",
                    row,
                )
            )
            bad.append(row - 1)
    if not bad:
        return frame
    out = frame.copy()
    out.iloc[bad, out.columns.get_loc("arrival_time")] = ""
    return out


def _labels(frame: pd.DataFrame, errors: list[InputValidationError]) -> pd.DataFrame:
    """Parse label columns in place of their text; collect one error per bad cell."""
    out = frame.copy()
    for name, (allowed, wanted) in _LABEL_RULES.items():
        if name not in out:
            continue
        values: list[Any] = []
        for row, cell in enumerate(out[name].tolist(), start=1):
            text = cell.strip()
            value = _whole_number(text)
            if not text:
                values.append(pd.NA)
            elif value in allowed:
                values.append(value)
            else:
                values.append(pd.NA)
                errors.append(InputValidationError(name, f"'{name}' must be {wanted} or empty; got {text[:16]!r}", row))
        out[name] = pd.array(values, dtype="Int64")
    if "visit_id" in out:
        ids = out["visit_id"].str.strip().tolist()
        first_row: dict[str, int] = {}
        for row, visit_id in enumerate(list(ids), start=1):
            # Identifiers are never echoed in messages: they may be patient-identifying.
            problem = None
            if not visit_id:
                problem = "'visit_id' must not be empty when the column is given"
            elif len(visit_id) > VISIT_ID_MAX_LENGTH:
                problem = f"'visit_id' must be at most {VISIT_ID_MAX_LENGTH} characters"
            elif visit_id in first_row:
                problem = f"'visit_id' repeats the value of row {first_row[visit_id]}"
            if problem:
                errors.append(InputValidationError("visit_id", problem, row))
                ids[row - 1] = f"invalid-row-{row}"  # placeholder so the other checks still run; never returned
            else:
                first_row[visit_id] = row
        out["visit_id"] = ids
    else:
        out["visit_id"] = [f"csv-{i}" for i in range(1, len(out) + 1)]
    return out


def _raise_sorted(errors: list[InputValidationError]) -> NoReturn:
    """Raise every error at once, ordered by row and then by column order."""

    def key(error: InputValidationError) -> tuple[int, int]:
        column = CSV_COLUMNS.index(error.field) if error.field in CSV_COLUMNS else len(CSV_COLUMNS)
        return (error.row or 0, column)

    raise RecordValidationErrors(sorted(errors, key=key)[:MAX_ERRORS])


def load_canonical_csv(path: Path) -> TriageDataset:
    """Load a site's canonical triage CSV with strict validation.

    Parameters
    ----------
    path : pathlib.Path
        A UTF-8, comma-separated file in the format of ``docs/canonical_csv.md``.

    Returns
    -------
    TriageDataset
        Named ``"csv:<file name>"``, ``dataset`` ``"csv"``. Absent label columns are missing; without a
        ``visit_id`` column the visits are numbered ``csv-1``, ``csv-2``, ... by data row. ``year`` is
        missing, ``payer`` None and ``weight`` 1.0 (the format does not carry them).

    Raises
    ------
    DataSourceError
        The file is absent, not a regular file, unreadable, larger than
        :data:`training.data.csv_file.MAX_FILE_BYTES`, empty, compressed or a workbook, not UTF-8 (UTF-16,
        Latin-1, NUL bytes), not comma-separated, not valid CSV (an unbalanced quote, a line longer than
        :data:`training.data.csv_file.MAX_LINE_CHARS`), or has a header but no data rows.
        The message names the path and, where there is one, the line.
    RecordValidationErrors
        Unknown, duplicate, unnamed or missing required columns; blank rows or rows with the wrong number of
        fields; any value out of range or outside its vocabulary; ``arrival_time`` values with differing UTC
        offsets. Each error names the column and, for cells, the 1-based data row (at most
        :data:`MAX_ERRORS` are raised). Identifiers and header names that may be a row of data are never
        echoed.
    """
    path = Path(path)
    rows, sha256 = csv_file.read_rows(path)
    if not rows:
        raise DataSourceError(f"canonical CSV {path} is empty; expected a header row and data rows")
    header, body = rows[0], rows[1:]
    used, ignored = _check_header(path, header)
    if not body:
        raise DataSourceError(f"canonical CSV {path} has a header but no data rows")
    _check_shape(body, len(header))
    names = [h.strip() for h in header]
    positions = [names.index(name) for name in used]
    text = pd.DataFrame([[cells[i] for i in positions] for cells in body], columns=used, dtype="object")
    del rows, body
    errors: list[InputValidationError] = []
    frame = _check_offsets(_labels(text, errors), errors)
    notes = [f"site export read strictly from {path.name}"]
    if ignored:
        notes.append(f"ignored columns: {ignored}")
    try:
        dataset = build_dataset(
            frame,
            name=f"csv:{path.name}",
            dataset="csv",
            mode="strict",
            source_files={str(path): sha256},
            notes=notes,
        )
    except RecordValidationErrors as exc:
        _raise_sorted(errors + exc.errors)
    if errors:
        _raise_sorted(errors)
    logger.info("loaded canonical CSV %s: %d visits", path.name, len(dataset.frame))
    return dataset


def _cell(value: Any, numeric: bool) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return ""
    if numeric:
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def _column_cells(series: pd.Series, numeric: bool) -> Iterable[str]:
    return (_cell(v, numeric) for v in series.astype("object").tolist())


def write_canonical_csv(dataset: TriageDataset, path: Path) -> Path:
    """Write a dataset as a canonical CSV (record fields, labels and ``visit_id``), UTF-8 with ``\\n`` lines.

    Meta columns (``dataset``, ``year``, ``age_band``, ``payer``, ``weight``) are not part of the format and
    are not written. Numbers are written exactly (whole numbers without a decimal point), booleans as
    ``true``/``false``, date-times as ISO 8601, missing values as empty cells, so that loading the file back
    gives the same records and the same digest.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    frame = dataset.frame
    absent = [c for c in CSV_COLUMNS if c not in frame.columns]
    if absent:
        raise InputValidationError("columns", f"dataset frame lacks column(s) {absent}")
    numeric = {f.name for f in NUMERIC_FIELDS}
    columns = [list(_column_cells(frame[name], name in numeric)) for name in CSV_COLUMNS]
    try:
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            writer.writerows(zip(*columns, strict=True))
    except OSError as exc:
        raise DataSourceError(f"cannot write canonical CSV {path}: {exc.strerror or exc}") from exc
    return path
