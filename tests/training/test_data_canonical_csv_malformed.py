"""Canonical CSV: a corpus of malformed files, each refused with one typed error naming the row and column (or
the file-level problem), never a traceback, never a patient value, in bounded time and memory; and a property
test that any text or any rows either load or raise the adapter's typed errors.

The corpus is generated here (seeded), no data files are committed.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import random
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from models.errors import DataSourceError, RecordValidationErrors
from models.triage.record import (
    BOOLEAN_FIELDS,
    CATEGORICAL_BY_NAME,
    NUMERIC_BY_NAME,
    RECORD_FIELDS,
    validate_record,
)
from training.data import csv_file, load_canonical_csv
from training.data.canonical_csv import CSV_COLUMNS, MAX_ERRORS
from training.data.csv_file import MAX_LINE_CHARS

HEADER = "age_years,sex,heart_rate,admitted,critical"
GOOD = "54,female,88,0,0"
TEN_MB = 10 * 1024 * 1024


def _garbage(seed: int, alphabet: range) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.choice(alphabet) for _ in range(4096))


def _xlsx_like() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return buffer.getvalue()


def _lines(*lines: str, end: str = "\n") -> bytes:
    return "".join(line + end for line in lines).encode("utf-8")


# ------------------------------------------------------------------------------------- file-level problems
#: id -> (file content, pattern of the DataSourceError message). Each is a problem with the file as a whole.
FILE_PROBLEMS: dict[str, tuple[Callable[[], bytes], str]] = {
    "empty": (lambda: b"", r"is empty; expected a header row and data rows"),
    "only-blank-lines": (lambda: b" \r\n\n\t\n", r"is empty"),
    "header-only": (lambda: _lines(HEADER), r"has a header but no data rows"),
    "header-only-crlf-no-final-newline": (lambda: HEADER.encode() + b"\r\n", r"has a header but no data rows"),
    "binary-garbage-high-bytes": (
        lambda: _garbage(7, range(0x80, 0x100)),
        r"is not UTF-8 text \(invalid byte at offset \d+\) on line 1",
    ),
    "binary-garbage-with-nul": (
        lambda: b"\x00\x01" + _garbage(11, range(256)),
        r"contains NUL bytes \(the first at byte offset 0, line 1\): not a text CSV",
    ),
    "nul-byte-in-a-cell": (
        lambda: b"age_years,sex\n50,ma\x00le\n",
        r"contains NUL bytes \(the first at byte offset 19, line 2\)",
    ),
    "utf16-with-bom": (lambda: f"{HEADER}\n{GOOD}\n".encode("utf-16"), r"is UTF-16 or UTF-32 text"),
    "utf16-be-with-bom": (lambda: b"\xfe\xff" + f"{HEADER}\n{GOOD}\n".encode("utf-16-be"), r"is UTF-16 or UTF-32 text"),
    "utf16-without-bom": (
        lambda: f"{HEADER}\n{GOOD}\n".encode("utf-16-le"),
        r"looks like UTF-16 text \(NUL bytes between the characters\)",
    ),
    "latin1": (
        lambda: "age_years,sex,chief_complaint\n50,male,fi\xe8vre\n".encode("latin-1"),
        r"is not UTF-8 text \(invalid byte at offset 40\) on line 2; .*Windows-1252.*CSV UTF-8",
    ),
    "latin1-after-a-bom": (
        lambda: b"\xef\xbb\xbfage_years,sex\n50,m\xe2le\n",
        r"invalid byte at offset 21\) on line 2",
    ),
    "gzip-renamed-csv": (
        lambda: gzip.compress(_lines(HEADER, GOOD), mtime=0),
        r"is gzip-compressed, not a UTF-8 CSV file; decompress it",
    ),
    "xlsx-renamed-csv": (_xlsx_like, r"is a ZIP archive \(an Excel \.xlsx workbook\?\)"),
    "xls-renamed-csv": (lambda: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), r"Excel 97-2003 \.xls workbook"),
    "unbalanced-quote-mid-file": (
        lambda: _lines(HEADER, '50,"male,80,0,0', GOOD, GOOD),
        r"not valid CSV at the row starting on line 2: a quoted cell is never closed",
    ),
    "unbalanced-quote-last-line": (
        lambda: _lines(HEADER, GOOD, '60,"female,80,0,0'),
        r"not valid CSV at line 3: a quoted cell is never closed",
    ),
    "text-after-closing-quote": (
        lambda: _lines(HEADER, GOOD, '50,"male"x,80,0,0'),
        r"not valid CSV at line 3: ',' expected after '\"' \(a quote inside a quoted cell "
        r"must be doubled",
    ),
    "10mb-single-field-on-one-line": (
        lambda: _lines(HEADER, '50,male,80,0,"' + "a" * TEN_MB + '"'),
        rf"line 2 is longer than {MAX_LINE_CHARS} characters",
    ),
    "10mb-single-field-over-many-lines": (
        lambda: _lines(HEADER, '50,male,80,0,"' + ("b" * 99 + "\n") * (TEN_MB // 100) + '"'),
        r"not valid CSV at the row starting on line 2: a cell is longer than \d+ characters \(it runs on to line "
        r"\d+: an unbalanced '\"'\?\)",
    ),
    "very-long-line-of-commas": (lambda: _lines(HEADER, GOOD + "," * TEN_MB), r"line 2 is longer than \d+ characters"),
    "semicolon-separated": (lambda: _lines("age_years;sex", "50;male"), r"does not look comma-separated"),
    "blank-first-line": (lambda: _lines("", HEADER, GOOD), r"starts with a blank line; its first line must be"),
    "excel-sep-directive": (lambda: _lines("sep=,", HEADER, GOOD), r"starts with an Excel 'sep=' line"),
    "header-of-only-commas": (lambda: _lines(",,,", "1,2,3,4"), r"has a header row without any column name"),
}


@pytest.mark.parametrize("case", sorted(FILE_PROBLEMS))
def test_file_problem_is_one_data_source_error(tmp_path: Path, case: str) -> None:
    content, pattern = FILE_PROBLEMS[case]
    path = tmp_path / "site.csv"
    path.write_bytes(content())
    with pytest.raises(DataSourceError, match=pattern) as info:
        load_canonical_csv(path)
    assert str(path) in str(info.value)  # the message names the file
    assert len(str(info.value)) < 400  # one line, never the file's content


def test_missing_file_directory_and_fifo(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"canonical CSV not found at .*absent\.csv"):
        load_canonical_csv(tmp_path / "absent.csv")
    (tmp_path / "a-file").touch()
    with pytest.raises(DataSourceError, match="not found"):
        load_canonical_csv(tmp_path / "a-file" / "below-a-file.csv")
    with pytest.raises(DataSourceError, match="is a directory, not a file"):
        load_canonical_csv(tmp_path)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataSourceError, match=r"is not a file \(a device, pipe or socket\)"):
        load_canonical_csv(fifo)  # never opened: reading a pipe could block for ever


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_by_permission(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(_lines(HEADER, GOOD))
    path.chmod(0)
    try:
        with pytest.raises(DataSourceError, match=r"cannot read canonical CSV .*: Permission denied"):
            load_canonical_csv(path)
    finally:
        path.chmod(0o600)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same refusal whoever runs the tests: the open itself is made to fail as it does without permission."""
    path = tmp_path / "site.csv"
    path.write_bytes(_lines(HEADER, GOOD))
    real_open = Path.open

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(DataSourceError, match=r"cannot read canonical CSV .*: Permission denied") as info:
        load_canonical_csv(path)
    assert isinstance(info.value.__cause__, PermissionError)


def test_file_larger_than_the_limit_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(_lines(HEADER, *[GOOD] * 100))
    monkeypatch.setattr(csv_file, "MAX_FILE_BYTES", 1000)
    with pytest.raises(DataSourceError, match="is larger than 1000 bytes; split the export"):
        load_canonical_csv(path)
    monkeypatch.setattr(csv_file, "MAX_FILE_BYTES", 1 << 20)
    assert len(load_canonical_csv(path)) == 100


def test_errors_are_chained_to_their_cause(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes("age_years,sex\n50,fi\xe8vre\n".encode("latin-1"))
    with pytest.raises(DataSourceError) as info:
        load_canonical_csv(path)
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    path.write_bytes(_lines(HEADER, '50,"male,80,0,0'))
    with pytest.raises(DataSourceError) as info:
        load_canonical_csv(path)
    assert isinstance(info.value.__cause__, csv.Error)


# ----------------------------------------------------------------------------- header, row and cell problems
#: id -> (file content, the (field, row) of every error in order, a pattern the first error's message matches).
RECORD_PROBLEMS: dict[str, tuple[Callable[[], bytes], list[tuple[str, int | None]], str]] = {
    "row-with-too-many-fields": (
        lambda: _lines(HEADER, GOOD, GOOD + ",7"),
        [("csv", 2)],
        r"row 2: row has 6 fields; the header has 5",
    ),
    "row-with-too-few-fields": (
        lambda: _lines(HEADER, "54"),
        [("csv", 1)],
        r"row 1: row has 1 field; the header has 5",
    ),
    "blank-row-between-rows": (lambda: _lines(HEADER, GOOD, "", GOOD), [("csv", 2)], r"row 2: row is blank"),
    "duplicated-column": (
        lambda: _lines("age_years,sex,sex", "50,male,male"),
        [("sex", None)],
        r"column 'sex' appears more than once \(2 times\)",
    ),
    "duplicated-column-differing-in-spaces": (
        lambda: _lines("age_years, sex,sex ", "50,male,male"),
        [("sex", None)],
        r"appears more than once",
    ),
    "unnamed-column": (
        lambda: _lines("age_years,sex,", "50,male,"),
        [("columns", None)],
        r"header column\(s\) 3 have no name",
    ),
    "unknown-columns": (
        lambda: _lines("age_years,sex,heartrate,Temp", "50,male,80,37"),
        [("heartrate", None), ("Temp", None)],
        r"unknown column 'heartrate' \(unknown columns: "
        r"\['heartrate', 'Temp'\]\)",
    ),
    "missing-required-columns": (
        lambda: _lines("heart_rate,spo2", "80,97"),
        [("age_years", None), ("sex", None)],
        r"required column 'age_years' is missing",
    ),
    "non-numeric-number": (
        lambda: _lines(HEADER, GOOD, "60,male,fast,0,0"),
        [("heart_rate", 2)],
        r"row 2: 'heart_rate' must be a number in beats/min",
    ),
    "number-with-unit": (
        lambda: _lines("age_years,sex,spo2", "60,male,98%"),
        [("spo2", 1)],
        r"'spo2' must be a number",
    ),
    "decimal-comma": (
        lambda: _lines("age_years,sex,temperature_c", '60,male,"36,6"'),
        [("temperature_c", 1)],
        r"'temperature_c' must be a number",
    ),
    "nan": (lambda: _lines("age_years,sex,heart_rate", "60,male,nan"), [("heart_rate", 1)], r"must be a number"),
    "NA-is-not-missing": (
        lambda: _lines("age_years,sex,heart_rate", "60,male,NA"),
        [("heart_rate", 1)],
        r"must be a number",
    ),
    "inf": (
        lambda: _lines("age_years,sex,heart_rate", "60,male,inf"),
        [("heart_rate", 1)],
        r"'heart_rate' must be in \[20, 300\]",
    ),
    "minus-infinity": (
        lambda: _lines("age_years,sex,resp_rate", "60,male,-Infinity"),
        [("resp_rate", 1)],
        r"'resp_rate' must be in \[0, 80\]",
    ),
    "1e400-overflows": (
        lambda: _lines("age_years,sex,heart_rate", "60,male,1e400"),
        [("heart_rate", 1)],
        r"'heart_rate' must be a number",
    ),
    "huge-integer": (
        lambda: _lines("age_years,sex,sbp", "60,male,99999999999999999999999999"),
        [("sbp", 1)],
        r"'sbp' must be in \[30, 300\]",
    ),
    "out-of-range-values": (
        lambda: _lines("age_years,sex,spo2,gcs", "130,male,101,16", "40,female,97,12.5"),
        [("age_years", 1), ("spo2", 1), ("gcs", 1), ("gcs", 2)],
        r"'age_years' must be in \[0, 120\]",
    ),
    "missing-required-value": (
        lambda: _lines("age_years,sex", "50,male", ",female"),
        [("age_years", 2)],
        r"'age_years' is required",
    ),
    "diastolic-above-systolic": (
        lambda: _lines("age_years,sex,sbp,dbp", "50,male,90,95"),
        [("dbp", 1)],
        r"'dbp' must be below 'sbp'",
    ),
    "unknown-vocabulary": (
        lambda: _lines("age_years,sex,consciousness", "50,M,drowsy"),
        [("sex", 1), ("consciousness", 1)],
        r"'sex' must be one of",
    ),
    "bad-label": (
        lambda: _lines(HEADER, "50,male,80,2,yes"),
        [("admitted", 1), ("critical", 1)],
        r"'admitted' must be",
    ),
    "arrival-time-offsets-mixed": (
        lambda: _lines(
            "age_years,sex,arrival_time",
            "50,male,2024-03-01T10:15:00+01:00",
            "51,male,2024-03-01T11:00",
            "52,male,2024-07-01 10:15:00+02:00",
            "53,male,2024-07-01T10:15:00Z",
        ),
        [("arrival_time", 2), ("arrival_time", 3), ("arrival_time", 4)],
        r"row 2: 'arrival_time' has no UTC offset, unlike row 1",
    ),
    "text-too-long": (
        lambda: _lines("age_years,sex,site", "50,male," + "s" * 65),
        [("site", 1)],
        r"'site' must be at most 64 characters",
    ),
}


@pytest.mark.parametrize("case", sorted(RECORD_PROBLEMS))
def test_record_problem_names_row_and_column(tmp_path: Path, case: str) -> None:
    content, expected, pattern = RECORD_PROBLEMS[case]
    path = tmp_path / "site.csv"
    path.write_bytes(content())
    with pytest.raises(RecordValidationErrors) as info:
        load_canonical_csv(path)
    errors = info.value.errors
    assert [(e.field, e.row) for e in errors] == expected
    assert re.search(pattern, str(errors[0])), str(errors[0])
    for error in errors:
        assert error.field in str(error) or error.field in ("csv", "columns")
        assert error.row is None or str(error).startswith(f"row {error.row}: ")


def test_headerless_file_never_echoes_its_first_row(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(_lines("54,Jane Doe,MRN0012345,80", "60,John Smith,MRN0067890,90"))
    with pytest.raises(RecordValidationErrors) as info:
        load_canonical_csv(path)
    [error] = info.value.errors
    assert error.field == "columns" and "is the header row missing?" in error.message
    for value in ("Jane", "Doe", "MRN0012345", "54"):
        assert value not in str(info.value)


def test_identifiers_and_free_text_are_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(
        _lines(
            "visit_id,age_years,sex,chief_complaint,arrival_time",
            "MRN0012345,50,male,Jane Doe fell,2024-03-01T10:00+01:00",
            "MRN0012345,51,male," + "Jane Doe " * 60 + ",2024-03-01T10:00",
        )
    )
    with pytest.raises(RecordValidationErrors) as info:
        load_canonical_csv(path)
    assert {(e.field, e.row) for e in info.value.errors} == {
        ("visit_id", 2),
        ("chief_complaint", 2),
        ("arrival_time", 2),
    }
    assert "MRN" not in str(info.value) and "Jane" not in str(info.value) and "10:00" not in str(info.value)


def test_errors_are_capped_and_fast_for_a_hostile_header_and_many_bad_rows(tmp_path: Path) -> None:
    """Formerly quadratic: each of n unknown columns repeated the list of all n (20,000 columns took 80 s, 6 GB)."""
    path = tmp_path / "site.csv"
    unknown = ",".join(f"c{i}" for i in range(50_000))
    path.write_bytes(_lines(f"age_years,sex,{unknown}," + ",".join(["dup"] * 50_000) + ",,,", "1"))
    with pytest.raises(RecordValidationErrors) as info:
        load_canonical_csv(path)
    assert len(info.value.errors) == MAX_ERRORS
    assert max(len(str(e)) for e in info.value.errors) < 600
    assert "and 49991 more" in str(info.value)  # 50,000 c-columns and 'dup': ten shown
    path.write_bytes(_lines("age_years,sex", *["-1,male"] * 5000))
    with pytest.raises(RecordValidationErrors) as info:
        load_canonical_csv(path)
    assert [e.row for e in info.value.errors] == list(range(1, MAX_ERRORS + 1))


# -------------------------------------------------------------------------------------------- accepted forms
def _site_rows() -> list[str]:
    return [HEADER + ",chief_complaint", GOOD + ',"chest pain, left"', "81,male,,1,1,fall"]


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda rows: "".join(r + "\n" for r in rows).encode(), id="lf"),
        pytest.param(lambda rows: "".join(r + "\r\n" for r in rows).encode(), id="crlf"),
        pytest.param(lambda rows: "\r\n".join(rows).encode(), id="crlf-no-final-newline"),
        pytest.param(lambda rows: "".join(r + "\r" for r in rows).encode(), id="cr-old-mac"),
        # Excel's "CSV UTF-8 (Comma delimited)": a byte-order mark and CRLF line endings.
        pytest.param(lambda rows: b"\xef\xbb\xbf" + "".join(r + "\r\n" for r in rows).encode(), id="excel-bom-crlf"),
        pytest.param(lambda rows: "".join(r + "\n" for r in rows).encode() + b"\n  \n\r\n", id="trailing-blank-lines"),
    ],
)
def test_line_endings_bom_and_trailing_blank_lines_give_the_same_records(tmp_path: Path, encode) -> None:
    reference = tmp_path / "reference.csv"
    reference.write_bytes(_lines(*_site_rows()))
    path = tmp_path / "site.csv"
    path.write_bytes(encode(_site_rows()))
    loaded = load_canonical_csv(path)
    assert loaded.digest == load_canonical_csv(reference).digest
    assert loaded.frame["chief_complaint"].tolist() == ["chest pain, left", "fall"]


def test_quoted_line_break_inside_a_cell_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(b'\xef\xbb\xbfage_years,sex,chief_complaint\r\n50,male,"fell\r\nhit head"\r\n')
    assert load_canonical_csv(path).frame["chief_complaint"].tolist() == ["fell\r\nhit head"]


def test_a_single_utc_offset_throughout_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_bytes(
        _lines(
            "age_years,sex,arrival_time",
            "50,male,2024-03-01T10:15:00+01:00",
            "51,male,2024-03-01T11:00+0100",
            "52,male,",
        )
    )
    times = load_canonical_csv(path).frame["arrival_time"]
    assert str(times.iloc[1]) == "2024-03-01 11:00:00+01:00" and times.isna().tolist() == [False, False, True]


# ------------------------------------------------------------------------------------------ property tests
_TYPED = (DataSourceError, RecordValidationErrors)


def _load_or_typed_error(path: Path) -> int | None:
    """Load ``path``; return the number of visits, or None for a typed refusal. Anything else fails the test."""
    try:
        return len(load_canonical_csv(path))
    except _TYPED as exc:
        assert str(exc)
        return None


_PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@_PROPERTY_SETTINGS
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400).map(lambda t: t.encode("utf-8"))))
def test_any_bytes_load_or_raise_a_typed_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "any.csv"
    path.write_bytes(content)
    _load_or_typed_error(path)


def _cell_strategy() -> st.SearchStrategy[str]:
    """Any cell: numbers of every kind, vocabulary in odd spellings, sentinels and arbitrary text."""
    numbers = st.one_of(st.integers(-1000, 1000), st.floats(allow_nan=True, allow_infinity=True)).map(str)
    vocabulary = st.sampled_from(
        [
            "",
            " ",
            "female",
            "MALE",
            "unknown",
            "A",
            "c",
            "walk_in",
            "ambulance",
            "true",
            "no",
            "1",
            "0",
            "3",
            "5",
            "2024-03-01T10:15:00",
            "2024-03-01 10:15+01:00",
            "2024-03-01T10:15Z",
            "NA",
            "nan",
            "1e400",
            "98%",
            "-0",
        ]
    )
    return st.one_of(vocabulary, numbers, st.text(max_size=20))


_FREE_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters=',"\n'), max_size=20)


def _valid_cell(name: str) -> st.SearchStrategy[str]:
    """A cell that the column accepts (an empty cell included where the column may be empty)."""
    if name in NUMERIC_BY_NAME:
        spec = NUMERIC_BY_NAME[name]
        whole = st.integers(int(spec.low), int(spec.high)).map(str)
        cell = whole if spec.integer else st.one_of(whole, st.floats(spec.low, spec.high).map(repr))
        return cell if spec.required else st.one_of(cell, st.just(""))
    if name in CATEGORICAL_BY_NAME:
        values = CATEGORICAL_BY_NAME[name].values
        return st.sampled_from([*values, "", *(v.upper() for v in values)])
    if name in BOOLEAN_FIELDS:
        return st.sampled_from(["true", "False", "yes", "n", "1", "0", ""])
    if name in ("acuity", "nurse_acuity"):
        return st.sampled_from(["1", "2", "3", "4", "5", ""])
    if name in ("admitted", "critical"):
        return st.sampled_from(["0", "1", ""])
    if name == "arrival_time":
        return st.one_of(st.just(""), st.datetimes(datetime(2000, 1, 1), datetime(2030, 1, 1)).map(datetime.isoformat))
    return _FREE_TEXT  # text fields and ignored x_ columns (the visit_id is set per row)


@st.composite
def _tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    """A header and rows: most often a loadable table, with at most one cell or row made arbitrary."""
    if draw(st.integers(0, 3)) == 0:  # an arbitrary header
        names = st.one_of(st.sampled_from([*CSV_COLUMNS, "x_note", "bogus", " sex ", ""]), st.text(max_size=8))
        header = draw(st.lists(names, min_size=1, max_size=8))
    else:
        optional = [c for c in (*CSV_COLUMNS, "x_note") if c not in ("age_years", "sex")]
        header = draw(st.permutations(["age_years", "sex", *draw(st.sets(st.sampled_from(optional), max_size=8))]))
    cells = [_valid_cell(name.strip()) for name in header]
    rows = [[draw(cell) for cell in cells] for _ in range(draw(st.integers(0, 6)))]
    for i, row in enumerate(rows):
        for j, name in enumerate(header):
            if name.strip() == "visit_id":
                row[j] = f"v{i}"
    spoil = draw(st.sampled_from(["none", "none", "cell", "row"]))
    if rows and spoil == "cell":
        i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(header) - 1))
        rows[i][j] = draw(_cell_strategy())
    elif rows and spoil == "row":
        rows[draw(st.integers(0, len(rows) - 1))] = draw(st.lists(_cell_strategy(), max_size=len(header) + 1))
    return header, rows


@_PROPERTY_SETTINGS
@given(_tables(), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_any_rows_written_as_csv_load_as_valid_records_or_raise_a_typed_error(
    tmp_path: Path, table: tuple[list[str], list[list[str]]], newline: str, bom: bool
) -> None:
    header, rows = table
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=newline).writerows([header, *rows])
    path = tmp_path / "rows.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf-8"))
    loaded = _load_or_typed_error(path)
    if loaded is None:
        return
    while rows and (not rows[-1] or (len(rows[-1]) == 1 and not rows[-1][0].strip())):
        rows = rows[:-1]  # trailing blank lines are ignored
    assert loaded == len(rows)
    frame = load_canonical_csv(path).frame
    names = [n.strip() for n in header]
    for i, row in enumerate(rows):
        # Oracle: each row validated on its own as a record gives the same values as the CSV.
        raw = {n: cell for n, cell in zip(names, row, strict=True) if n in RECORD_FIELDS}
        record = validate_record({**raw, "sex": raw["sex"].strip() or "unknown"}, row=i + 1)  # blank cell: unknown
        for name in NUMERIC_BY_NAME:
            got = frame[name].iloc[i]
            assert (record[name] is None and pd.isna(got)) or got == record[name], (name, got, record[name])
        for name in CATEGORICAL_BY_NAME:
            assert frame[name].iloc[i] == record[name] or (record[name] is None and frame[name].iloc[i] is None)


# --------------------------------------------------------------------------------------- the command line
#: A handful of the corpus through `vigil evaluate`: (content, what the error line says).
CLI_CASES: dict[str, tuple[Callable[[], bytes], str]] = {
    "latin1": (FILE_PROBLEMS["latin1"][0], "is not UTF-8 text (invalid byte at offset 40) on line 2"),
    "gzip-renamed-csv": (FILE_PROBLEMS["gzip-renamed-csv"][0], "is gzip-compressed"),
    "unbalanced-quote": (FILE_PROBLEMS["unbalanced-quote-mid-file"][0], "a quoted cell is never closed"),
    "ragged-row": (RECORD_PROBLEMS["row-with-too-many-fields"][0], "row 2: row has 6 fields; the header has 5"),
    "out-of-range": (RECORD_PROBLEMS["out-of-range-values"][0], "row 1: 'age_years' must be in [0, 120]"),
    "headerless": (lambda: _lines("54,Jane Doe,80,0,0"), "is the header row missing?"),
}


@pytest.fixture(scope="module")
def triage_onnx(registered) -> Path:
    """The session's small trained triage model: `vigil evaluate` loads the model before the data."""
    return registered.triage_onnx


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_evaluate_malformed_csv_exits_2_with_one_clear_error(tmp_path: Path, triage_onnx: Path, case: str) -> None:
    from vigil.cli import app

    content, expected = CLI_CASES[case]
    path = tmp_path / "site.csv"
    path.write_bytes(content())
    out = tmp_path / "eval"
    res = CliRunner().invoke(
        app, ["evaluate", "--model", str(triage_onnx), "--data", f"csv:{path}", "--out", str(out), "--bootstrap", "10"]
    )
    assert res.exit_code == 2, res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exception
    assert [line for line in res.stderr.splitlines() if line.startswith("error: ")] == [res.stderr.split("\n")[0]]
    assert expected in res.stderr
    assert "Traceback" not in res.output and "Jane" not in res.output
    assert not out.exists()  # nothing written for refused data


def test_cli_missing_csv_exits_2(tmp_path: Path, triage_onnx: Path) -> None:
    from vigil.cli import app

    res = CliRunner().invoke(app, ["evaluate", "--model", str(triage_onnx), "--data", f"csv:{tmp_path / 'no.csv'}"])
    assert res.exit_code == 2 and "canonical CSV not found at" in res.stderr


@pytest.mark.slow  # a vigil process of its own
def test_vigil_process_prints_no_traceback(tmp_path: Path, triage_onnx: Path) -> None:
    """The installed console script, as a site would run it: stderr holds the error lines and nothing else."""
    path = tmp_path / "site.csv"
    path.write_bytes(_lines(HEADER, GOOD, "60,male,fast,0,0", "61,female,80,1"))
    vigil = Path(sys.executable).with_name("vigil")
    command = [str(vigil)] if vigil.is_file() else [sys.executable, "-c", "from vigil.cli import main; main()"]
    done = subprocess.run(
        [*command, "evaluate", "--model", str(triage_onnx), "--data", f"csv:{path}", "--out", str(tmp_path / "eval")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "VIGIL_WORK_DIR": str(tmp_path / "work")},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith(("error:", "  - "))]
    assert errors == ["error: 1 validation error(s):", "  - row 3: row has 4 fields; the header has 5"], done.stderr


def test_a_home_folder_of_an_unknown_user_is_a_spec_error() -> None:
    from models.errors import InputValidationError
    from training.data import load_dataset

    with pytest.raises(InputValidationError, match=r"home folder \('~user'\) that does not exist"):
        load_dataset("csv:~vigil-no-such-user-here/export.csv")
