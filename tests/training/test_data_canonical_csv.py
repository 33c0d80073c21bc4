"""Canonical CSV: strict loading (every error names row and column), clear file errors, and round trips."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from models.errors import DataSourceError, InputValidationError, RecordValidationErrors
from training.data import (
    DIGEST_COLUMNS,
    default_data_dir,
    generate_synthetic,
    load_canonical_csv,
    load_dataset,
    write_canonical_csv,
)
from training.data.ktas import KTAS_PATH

HEADER = "age_years,sex,heart_rate,spo2,consciousness,arrival_time,on_supplemental_oxygen,acuity,admitted,critical"


def _csv(tmp_path: Path, text: str | bytes, name: str = "site.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def _errors(path: Path) -> list[InputValidationError]:
    with pytest.raises(RecordValidationErrors) as info:
        load_canonical_csv(path)
    return info.value.errors


def test_valid_file_loads_with_labels_and_generated_ids(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        HEADER + "\n54,Female,88,97,A,2024-03-01T10:15:00,false,3,0,0\n81,male,,,,,yes,1,1,1\n7,,120,99,V,,,,,\n",
    )
    dataset = load_canonical_csv(path)
    frame = dataset.frame
    assert dataset.name == "csv:site.csv" and frame["dataset"].eq("csv").all()
    assert frame["visit_id"].tolist() == ["csv-1", "csv-2", "csv-3"]
    assert frame["sex"].tolist() == ["female", "male", "unknown"]  # empty sex is 'unknown'
    assert frame["acuity"].tolist()[:2] == [3, 1] and pd.isna(frame["acuity"].iloc[2])
    assert frame["admitted"].dtype == "Int64" and pd.isna(frame["admitted"].iloc[2])
    assert frame["nurse_acuity"].isna().all()
    assert frame["arrival_time"].iloc[0] == pd.Timestamp("2024-03-01 10:15")
    assert frame["on_supplemental_oxygen"].tolist()[:2] == [False, True]
    assert frame["weight"].tolist() == [1.0] * 3 and frame["year"].isna().all()
    assert dataset.coerced == {}
    assert list(dataset.source_files) == [str(path)]


def test_only_required_columns_and_ignored_x_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path, "x_mrn_hash,age_years,sex,x_note\nabc,40,male,anything goes\n")
    dataset = load_canonical_csv(path)
    assert "x_mrn_hash" not in dataset.frame.columns
    assert dataset.frame["heart_rate"].isna().all()
    assert any("x_mrn_hash" in note for note in dataset.notes)


def test_utf8_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = _csv(tmp_path, b'\xef\xbb\xbfage_years,sex,chief_complaint\r\n30,female,"chest pain, left"\r\n')
    assert load_canonical_csv(path).frame["chief_complaint"].tolist() == ["chest pain, left"]


def test_bad_value_names_row_and_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER + "\n54,female,88,97,A,,,3,0,0\n60,male,fast,97,A,,,3,0,0\n")
    [error] = _errors(path)
    assert (error.field, error.row) == ("heart_rate", 2)
    assert "row 2" in str(error) and "heart_rate" in str(error)


def test_out_of_range_and_vocabulary_errors_are_all_reported(tmp_path: Path) -> None:
    path = _csv(tmp_path, HEADER + "\n130,female,88,101,A,,,3,0,0\n60,male,80,97,drowsy,,,3,0,0\n")
    found = {(e.field, e.row) for e in _errors(path)}
    assert found == {("age_years", 1), ("spo2", 1), ("consciousness", 2)}


@pytest.mark.parametrize(
    ("column", "value", "pattern"),
    [
        ("acuity", "7", "1 to 5"),
        ("acuity", "2.5", "1 to 5"),
        ("admitted", "2", "0 or 1"),
        ("critical", "yes", "0 or 1"),
        ("acuity", "nan", "1 to 5"),
        ("admitted", "1.5", "0 or 1"),
    ],
)
def test_bad_label_names_row_and_column(tmp_path: Path, column: str, value: str, pattern: str) -> None:
    cells = {"acuity": "3", "admitted": "0", "critical": "0", column: value}
    path = _csv(
        tmp_path,
        "age_years,sex,acuity,admitted,critical\n"
        "50,male,3,0,0\n"
        f"50,male,{cells['acuity']},{cells['admitted']},{cells['critical']}\n",
    )
    [error] = _errors(path)
    assert (error.field, error.row) == (column, 2)
    assert pattern in error.message


def test_labels_written_as_whole_floats_read_as_integers_like_record_fields(tmp_path: Path) -> None:
    # pandas writes an integer column with gaps as float ("3.0"); a record's whole-number field accepts "14.0",
    # and a label follows the same rule.
    path = _csv(
        tmp_path, "age_years,sex,acuity,nurse_acuity,admitted,critical\n14.0,male,3.0,2.0,1.0,0.0\n50,female,,5,0,1\n"
    )
    frame = load_canonical_csv(path).frame
    assert frame["age_years"].tolist() == [14.0, 50.0]
    assert frame["acuity"].iloc[0] == 3 and pd.isna(frame["acuity"].iloc[1])
    assert frame["nurse_acuity"].tolist() == [2, 5] and frame["admitted"].tolist() == [1, 0]
    assert frame["critical"].tolist() == [0, 1] and str(frame["acuity"].dtype) == "Int64"


def test_label_and_record_errors_come_together_in_row_order(tmp_path: Path) -> None:
    path = _csv(tmp_path, "age_years,sex,acuity,nurse_acuity\n50,male,9,3\n-4,male,3,0\n")
    assert [(e.row, e.field) for e in _errors(path)] == [(1, "acuity"), (2, "age_years"), (2, "nurse_acuity")]


def test_diastolic_above_systolic_is_an_error(tmp_path: Path) -> None:
    path = _csv(tmp_path, "age_years,sex,sbp,dbp\n50,male,90,95\n")
    [error] = _errors(path)
    assert (error.field, error.row) == ("dbp", 1)


def test_unknown_columns_are_listed(tmp_path: Path) -> None:
    path = _csv(tmp_path, "age_years,sex,heartrate,diagnosis\n50,male,80,flu\n")
    errors = _errors(path)
    assert [e.field for e in errors] == ["heartrate", "diagnosis"]
    assert "['heartrate', 'diagnosis']" in errors[0].message


def test_missing_required_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "age_years,heart_rate\n50,80\n")
    [error] = _errors(path)
    assert error.field == "sex" and "required column 'sex' is missing" in str(error)


def test_missing_required_value(tmp_path: Path) -> None:
    path = _csv(tmp_path, "age_years,sex\n50,male\n,female\n")
    [error] = _errors(path)
    assert (error.field, error.row) == ("age_years", 2)


def test_duplicate_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "age_years,sex,sex\n50,male,male\n")
    [error] = _errors(path)
    assert error.field == "sex" and "more than once" in error.message


def test_ragged_row(tmp_path: Path) -> None:
    path = _csv(tmp_path, "age_years,sex\n50,male\n60,female,80\n")
    [error] = _errors(path)
    assert error.row == 2 and "3 fields; the header has 2" in error.message


def test_duplicate_visit_id_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = _csv(tmp_path, "visit_id,age_years,sex\nMRN123,50,male\nMRN456,51,male\nMRN123,52,female\n")
    [error] = _errors(path)
    assert (error.field, error.row) == ("visit_id", 3)
    assert "row 1" in error.message and "MRN123" not in str(error)


@pytest.mark.parametrize("content", [b"", b"   \n\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(DataSourceError, match="is empty"):
        load_canonical_csv(_csv(tmp_path, content))


def test_header_without_rows(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="no data rows"):
        load_canonical_csv(_csv(tmp_path, "age_years,sex\n"))


def test_non_utf8_bytes(tmp_path: Path) -> None:
    path = _csv(tmp_path, "age_years,sex,chief_complaint\n50,male,fi\xe8vre\n".encode("latin-1"))
    with pytest.raises(DataSourceError, match=r"not UTF-8 text \(invalid byte at offset 40\)"):
        load_canonical_csv(path)


def test_binary_file_is_not_csv(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="not"):
        load_canonical_csv(_csv(tmp_path, b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xa1\xe8"))


def test_semicolon_separated_file(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="comma-separated"):
        load_canonical_csv(_csv(tmp_path, "age_years;sex\n50;male\n"))


def test_file_not_found_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="not found"):
        load_canonical_csv(tmp_path / "absent.csv")
    with pytest.raises(DataSourceError, match="not a file"):
        load_canonical_csv(tmp_path)


def test_synthetic_round_trip_keeps_digest_and_records(tmp_path: Path) -> None:
    original = generate_synthetic(500, seed=11)
    path = write_canonical_csv(original, tmp_path / "export.csv")
    back = load_canonical_csv(path)
    assert back.digest == original.digest
    pd.testing.assert_frame_equal(back.frame[list(DIGEST_COLUMNS)], original.frame[list(DIGEST_COLUMNS)])
    assert back.frame["age_band"].tolist() == original.frame["age_band"].tolist()


def test_round_trip_detects_a_changed_value(tmp_path: Path) -> None:
    original = generate_synthetic(50, seed=2)
    path = write_canonical_csv(original, tmp_path / "export.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("age_years")] = str(int(float(cells[header.index("age_years")])) + 1)
    path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n", encoding="utf-8")
    assert load_canonical_csv(path).digest != original.digest


def test_written_file_is_plain(tmp_path: Path) -> None:
    path = write_canonical_csv(generate_synthetic(3, seed=0), tmp_path / "export.csv")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("age_years,heart_rate,")
    assert ".0," not in text  # whole numbers are written without a decimal point
    assert "nan" not in text.lower() and "<NA>" not in text


@pytest.mark.realdata
@pytest.mark.skipif(not (default_data_dir() / KTAS_PATH).is_file(), reason="KTAS file not found (set VIGIL_DATA_DIR)")
def test_ktas_round_trip(tmp_path: Path) -> None:
    original = load_dataset("ktas")
    back = load_dataset(f"csv:{write_canonical_csv(original, tmp_path / 'ktas.csv')}")
    assert back.digest == original.digest
    assert back.frame["nurse_acuity"].tolist() == original.frame["nurse_acuity"].tolist()
