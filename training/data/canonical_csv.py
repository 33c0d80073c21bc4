"""The canonical triage CSV: a site's own export, read strictly and written by :func:`write_canonical_csv`.

The format is documented in ``docs/canonical_csv.md``. In short: UTF-8, comma-separated, one header row whose
names are :data:`models.triage_record.RECORD_FIELDS` (``age_years`` and ``sex`` required, the others
optional) plus the optional label columns :data:`CSV_LABEL_COLUMNS`; columns starting with ``x_`` are
ignored; any other column is an error. Empty cells are missing values. Every value is validated strictly:
an error names the 1-based data row (row 1 is the line after the header) and the column.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, NoReturn

import pandas as pd

from models.errors import DataSourceError, InputValidationError, RecordValidationErrors
from models.triage_record import NUMERIC_FIELDS, RECORD_FIELDS
from training.data.dataset import TriageDataset, build_dataset, sha256_file

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS: Final[tuple[str, ...]] = ("age_years", "sex")
CSV_LABEL_COLUMNS: Final[tuple[str, ...]] = ("acuity", "admitted", "critical", "nurse_acuity", "visit_id")
#: Columns written by :func:`write_canonical_csv`, in order.
CSV_COLUMNS: Final[tuple[str, ...]] = (*RECORD_FIELDS, *CSV_LABEL_COLUMNS)
IGNORED_PREFIX: Final = "x_"
VISIT_ID_MAX_LENGTH: Final = 64
MAX_ERRORS: Final = 50

_LEVEL = re.compile(r"[1-5]")
_BINARY = re.compile(r"[01]")
_LABEL_RULES: Final[dict[str, tuple[re.Pattern[str], str]]] = {
    "acuity": (_LEVEL, "an integer from 1 to 5"),
    "nurse_acuity": (_LEVEL, "an integer from 1 to 5"),
    "admitted": (_BINARY, "0 or 1"),
    "critical": (_BINARY, "0 or 1"),
}


def _read_rows(path: Path) -> list[list[str]]:
    """Read and decode the file; return CSV rows (header first) or raise :class:`DataSourceError`."""
    if not path.exists():
        raise DataSourceError(f"canonical CSV not found at {path}")
    if not path.is_file():
        raise DataSourceError(f"canonical CSV path {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataSourceError(f"cannot read canonical CSV {path}: {exc.strerror or exc}") from exc
    if not data.strip():
        raise DataSourceError(f"canonical CSV {path} is empty; expected a header row and data rows")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataSourceError(
            f"canonical CSV {path} is not UTF-8 text (invalid byte at offset {exc.start}); "
            "export it as 'CSV UTF-8'"
        ) from exc
    if "\x00" in text:
        raise DataSourceError(f"canonical CSV {path} contains NUL bytes: not a text CSV file")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise DataSourceError(f"canonical CSV {path} is not valid CSV near line {reader.line_num}: {exc}") from exc
    while rows and not rows[-1]:
        rows.pop()  # trailing blank lines
    return rows


def _check_header(path: Path, header: list[str]) -> tuple[list[str], list[str]]:
    """Return (used columns, ignored columns); raise on unknown, duplicate or missing required columns."""
    names = [name.strip() for name in header]
    if len(names) == 1 and any(sep in names[0] for sep in (";", "\t", "|")):
        raise DataSourceError(
            f"canonical CSV {path} does not look comma-separated (its header is one column); "
            "save it with ',' as the delimiter"
        )
    errors: list[InputValidationError] = []
    allowed = set(CSV_COLUMNS)
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        if not name:
            errors.append(InputValidationError("columns", f"header column {position} has no name"))
        elif name in seen:
            errors.append(InputValidationError(name[:64], f"column '{name[:64]}' appears more than once"))
        seen.add(name)
    unknown = [n for n in names if n and n not in allowed and not n.startswith(IGNORED_PREFIX)]
    if unknown:
        shown = [n[:64] for n in unknown]
        errors.extend(
            InputValidationError(
                name,
                f"unknown column '{name}' (unknown columns: {shown}); allowed are the triage record fields, "
                f"{list(CSV_LABEL_COLUMNS)}, and any column prefixed '{IGNORED_PREFIX}' (ignored)",
            )
            for name in shown
        )
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            errors.append(InputValidationError(name, f"required column '{name}' is missing"))
    if errors:
        raise RecordValidationErrors(errors)
    used = [n for n in names if n in allowed]
    ignored = [n for n in names if n.startswith(IGNORED_PREFIX)]
    return used, ignored


def _labels(frame: pd.DataFrame, errors: list[InputValidationError]) -> pd.DataFrame:
    """Parse label columns in place of their text; collect one error per bad cell."""
    out = frame.copy()
    for name, (pattern, wanted) in _LABEL_RULES.items():
        if name not in out:
            continue
        values: list[Any] = []
        for row, cell in enumerate(out[name].tolist(), start=1):
            text = cell.strip()
            if not text:
                values.append(pd.NA)
            elif pattern.fullmatch(text):
                values.append(int(text))
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
        The file is absent, empty, not UTF-8, not comma-separated CSV, or has a header but no data rows.
    RecordValidationErrors
        Unknown, duplicate or missing required columns; rows with the wrong number of fields; any value out
        of range or outside its vocabulary. Each error names the column and, for cells, the 1-based data row.
    """
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise DataSourceError(f"canonical CSV {path} is empty; expected a header row and data rows")
    header, body = rows[0], rows[1:]
    used, ignored = _check_header(path, header)
    if not body:
        raise DataSourceError(f"canonical CSV {path} has a header but no data rows")
    width = len(header)
    shape_errors = [
        InputValidationError("csv", f"row has {len(cells)} fields; the header has {width}", row)
        for row, cells in enumerate(body, start=1)
        if len(cells) != width
    ]
    if shape_errors:
        raise RecordValidationErrors(shape_errors[:MAX_ERRORS])
    names = [h.strip() for h in header]
    positions = [names.index(name) for name in used]
    text = pd.DataFrame([[cells[i] for i in positions] for cells in body], columns=used, dtype="object")
    errors: list[InputValidationError] = []
    frame = _labels(text, errors)
    notes = [f"site export read strictly from {path.name}"]
    if ignored:
        notes.append(f"ignored columns: {ignored}")
    try:
        dataset = build_dataset(
            frame,
            name=f"csv:{path.name}",
            dataset="csv",
            mode="strict",
            source_files={str(path): sha256_file(path)},
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
