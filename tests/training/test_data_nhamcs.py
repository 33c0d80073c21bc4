"""NHAMCS adapter: codebook mapping on a small hand-made Stata file, and counts on the real 2018-2020 files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.errors import DataSourceError, InputValidationError
from models.triage.record import RECORD_FIELDS
from models.triage.record_frame import validate_frame
from training.data import DATASET_COLUMNS, data_available, default_data_dir, frame_digest, load_dataset, load_nhamcs
from training.data.nhamcs import fahrenheit_x10_to_celsius

DATA_DIR = default_data_dir()
needs_nhamcs = pytest.mark.skipif(
    not data_available(DATA_DIR), reason=f"NHAMCS files not found under {DATA_DIR} (set VIGIL_DATA_DIR)"
)

# Four visits covering the codebook's sentinels. Row 2 has no age and is dropped.
FAKE_ROWS = {
    "AGE": [45, 0, -9, 70],
    "SEX": [1, 2, 1, 2],
    "ARREMS": [1, 2, 1, -8],
    "TEMPF": [985, 998, 986, -9],
    "PULSE": [998, 140, 80, 90],
    "RESPR": [-9, 30, 16, 18],
    "BPSYS": [120, -9, 120, 90],
    "BPDIAS": [998, -9, 80, 95],
    "POPCT": [97, 0, 99, 95],
    "PAINSCALE": [-8, 0, 3, 10],
    "RFV1": [10050, -9, 10050, 99999],
    "RFV2": [10100, -9, -9, 10100],
    "RFV3": [-9, -9, -9, -9],
    "IMMEDR": [2, 0, 3, 7],
    "ADMITHOS": [1, 0, 0, 1],
    "ADMIT": [1, -7, -7, -9],
    "DIEDED": [0, 1, 0, 0],
    "HOSPCODE": [7, 7, 8, 8],
    "RACERETH": [2, 4, 1, 3],
    "PAYTYPER": [3, -9, 1, 2],
    "YEAR": [2021, 2021, 2021, 2021],
}
FAKE_LABELS = {10050: "Chills", 10100: "Fever"}


def _write_fake_year(folder: Path, year: int = 2021, name: str | None = None, rows: dict | None = None) -> Path:
    """Write a tiny NHAMCS-like Stata file, zipped under the lower-case name some years use."""
    target = folder / "triage" / "nhamcs_ed"
    target.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows or FAKE_ROWS).astype("int32")
    frame["PATWT"] = np.float32(1234.5)
    dta = folder / f"ed{year}.dta"
    frame.to_stata(dta, write_index=False, value_labels={c: FAKE_LABELS for c in ("RFV1", "RFV2", "RFV3")})
    path = target / (name or f"ed{year}-stata.zip")
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(dta, f"ed{year}-stata.dta")
    dta.unlink()
    return path


@pytest.fixture
def fake_dataset(tmp_path: Path):
    _write_fake_year(tmp_path)
    return load_nhamcs(tmp_path, [2021])


def test_fake_year_drops_visits_without_age_and_keeps_file_rows_in_ids(tmp_path: Path) -> None:
    path = _write_fake_year(tmp_path)
    dataset = load_nhamcs(tmp_path, [2021])
    frame = dataset.frame
    assert list(frame.columns) == list(DATASET_COLUMNS)
    assert frame["visit_id"].tolist() == ["nhamcs2021-0", "nhamcs2021-1", "nhamcs2021-3"]
    assert dataset.coerced["dropped_no_age"] == 1
    assert dataset.name == "nhamcs:2021"
    assert list(dataset.source_files) == [str(path)]
    assert frame["dataset"].eq("nhamcs").all()


def test_fake_year_vitals_and_sentinels(fake_dataset) -> None:
    frame = fake_dataset.frame.set_index("visit_id")
    first, infant, third = frame.loc["nhamcs2021-0"], frame.loc["nhamcs2021-1"], frame.loc["nhamcs2021-3"]
    assert first["temperature_c"] == pytest.approx(36.9)  # 985 = 98.5 F
    assert infant["temperature_c"] == pytest.approx(37.7)  # 998 is 99.8 F in TEMPF, not a sentinel
    assert np.isnan(third["temperature_c"])  # -9 blank
    assert np.isnan(first["heart_rate"]) and np.isnan(first["dbp"])  # 998 Doppler / palpated
    assert first["sbp"] == 120 and infant["heart_rate"] == 140
    assert np.isnan(first["resp_rate"]) and np.isnan(first["pain_score"])  # -9 blank, -8 unknown
    assert infant["pain_score"] == 0
    assert np.isnan(infant["spo2"])  # 0 % is implausible: coerced to missing and counted
    assert np.isnan(third["sbp"]) and np.isnan(third["dbp"])  # diastolic >= systolic: both dropped
    assert fake_dataset.coerced["spo2"] == 1
    assert fake_dataset.coerced["heart_rate_doppler_998"] == 1
    assert fake_dataset.coerced["dbp_doppler_998"] == 1
    for field in ("gcs", "consciousness", "on_supplemental_oxygen", "arrival_time"):
        assert frame[field].isna().all(), field


def test_fake_year_categories_complaints_and_labels(fake_dataset) -> None:
    frame = fake_dataset.frame.set_index("visit_id")
    first, infant, third = frame.loc["nhamcs2021-0"], frame.loc["nhamcs2021-1"], frame.loc["nhamcs2021-3"]
    assert (first["sex"], infant["sex"]) == ("female", "male")
    assert (first["arrival_mode"], infant["arrival_mode"], third["arrival_mode"]) == ("ambulance", "walk_in", None)
    assert (first["ethnicity"], infant["ethnicity"], third["ethnicity"]) == ("nh_black", "nh_other", "hispanic")
    assert (first["payer"], infant["payer"], third["payer"]) == ("medicaid", None, "medicare")
    assert first["chief_complaint"] == "Chills; Fever"
    assert first["chief_complaint_code"] == "rfv:10050"
    assert infant["chief_complaint"] is None and infant["chief_complaint_code"] is None
    assert third["chief_complaint"] == "Fever"  # RFV1 99999 has no label: left out and counted
    assert third["chief_complaint_code"] == "rfv:99999"
    assert fake_dataset.coerced["rfv_unlabeled"] == 1
    assert first["site"] == "nhamcs2021:7"
    assert first["acuity"] == 2 and pd.isna(infant["acuity"]) and pd.isna(third["acuity"])  # 0 and 7: missing
    assert (first["admitted"], first["critical"]) == (1, 1)  # critical care unit
    assert (infant["admitted"], infant["critical"]) == (0, 1)  # died in ED
    assert (third["admitted"], third["critical"]) == (1, 0)  # admitted, unit blank
    assert fake_dataset.coerced["admitted_unit_unknown"] == 1
    assert frame["nurse_acuity"].isna().all()
    assert frame["weight"].tolist() == [1234.5] * 3
    assert frame["year"].tolist() == [2021] * 3


@pytest.mark.parametrize(
    ("tempf", "celsius"), [(986, 37.0), (1040, 40.0), (320, 0.0), (985, 36.9), (1000, 37.8), (-9, np.nan)]
)
def test_fahrenheit_x10_conversion(tempf: int, celsius: float) -> None:
    got = fahrenheit_x10_to_celsius(pd.Series([tempf]))[0]
    assert got == pytest.approx(celsius, nan_ok=True)


def test_year_file_found_whatever_its_case(tmp_path: Path) -> None:
    _write_fake_year(tmp_path, name="ED2021-STATA.ZIP")
    assert len(load_nhamcs(tmp_path, [2021]).frame) == 3


def test_missing_year_names_path_and_env(tmp_path: Path) -> None:
    _write_fake_year(tmp_path)
    with pytest.raises(DataSourceError, match=r"ED2018-stata\.zip.*VIGIL_DATA_DIR"):
        load_nhamcs(tmp_path, [2021, 2018])


def test_corrupt_zip_is_a_data_source_error(tmp_path: Path) -> None:
    folder = tmp_path / "triage" / "nhamcs_ed"
    folder.mkdir(parents=True)
    (folder / "ED2019-stata.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataSourceError, match="cannot read NHAMCS 2019"):
        load_nhamcs(tmp_path, [2019])


def test_year_column_must_match_file_name(tmp_path: Path) -> None:
    _write_fake_year(tmp_path, year=2019, rows={**FAKE_ROWS, "YEAR": [2020] * 4})
    with pytest.raises(DataSourceError, match=r"YEAR column holds \[2020\], expected \[2019\]"):
        load_nhamcs(tmp_path, [2019])


@pytest.mark.parametrize("years", [[], [2021, 2021]])
def test_bad_year_lists(tmp_path: Path, years: list[int]) -> None:
    with pytest.raises(InputValidationError):
        load_nhamcs(tmp_path, years)


# --- real files -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nhamcs_2020():
    return load_nhamcs(DATA_DIR, [2020])


@pytest.mark.realdata
@needs_nhamcs
def test_2020_rows_and_labels_match_provenance(nhamcs_2020) -> None:
    frame = nhamcs_2020.frame
    assert len(frame) == 14_860
    assert nhamcs_2020.coerced["dropped_no_age"] == 0
    counts = frame["acuity"].value_counts().sort_index().to_dict()
    assert counts == {1: 100, 2: 1_496, 3: 4_964, 4: 2_661, 5: 403}
    assert frame["acuity"].isna().sum() == 316 + 333 + 3_675 + 912  # IMMEDR 0, 7, -8, -9
    assert frame["admitted"].sum() == 1_952  # ADMITHOS
    assert frame["critical"].sum() == 365  # ADMIT == 1 (334) or DIEDED (31); no visit is both
    assert frame["admitted"].notna().all() and frame["critical"].notna().all()
    assert frame["weight"].sum() == pytest.approx(131.3e6, rel=1e-3)  # national ED visits, 2020


@pytest.mark.realdata
@needs_nhamcs
def test_2020_first_visit_mapping(nhamcs_2020) -> None:
    # Raw row 0: AGE 30, SEX 2, ARREMS -8, TEMPF 983, PULSE 128, RESPR 16, BP 149/79, POPCT 100, PAINSCALE 10,
    # RFV 28000/10100/-9, IMMEDR 3, ADMITHOS 0, HOSPCODE 22, RACERETH 2, PAYTYPER 1.
    row = nhamcs_2020.frame.iloc[0]
    assert row["visit_id"] == "nhamcs2020-0"
    assert (row["age_years"], row["sex"], row["arrival_mode"]) == (30, "male", None)
    assert (row["temperature_c"], row["heart_rate"], row["resp_rate"]) == (36.8, 128, 16)
    assert (row["sbp"], row["dbp"], row["spo2"], row["pain_score"]) == (149, 79, 100, 10)
    assert row["chief_complaint"].startswith("Carbuncle, furuncle, boil, cellulitis")
    assert row["chief_complaint"].endswith("; Fever")
    assert row["chief_complaint_code"] == "rfv:28000"
    assert (row["site"], row["ethnicity"], row["payer"]) == ("nhamcs2020:22", "nh_black", "private")
    assert (row["acuity"], row["admitted"], row["critical"], row["age_band"]) == (3, 0, 0, "25-44")


@pytest.mark.realdata
@needs_nhamcs
def test_2020_no_sentinel_survives_and_records_pass_strict_validation(nhamcs_2020) -> None:
    frame = nhamcs_2020.frame
    validate_frame(frame[list(RECORD_FIELDS)], mode="strict")  # raises on any sentinel or implausible value
    assert np.isnan(frame.loc[8565, "heart_rate"])  # PULSE 998 (Doppler) in the file
    assert nhamcs_2020.coerced["heart_rate_doppler_998"] == 21
    assert frame["temperature_c"].median() == pytest.approx(36.8, abs=0.2)
    assert 0.05 < frame["heart_rate"].isna().mean() < 0.15
    assert frame["gcs"].isna().all() and frame["consciousness"].isna().all()
    assert set(frame["age_band"]) == {"<15", "15-24", "25-44", "45-64", "65-74", "75+"}
    assert nhamcs_2020.digest == frame_digest(frame)


@pytest.mark.realdata
@needs_nhamcs
def test_two_years_through_a_spec() -> None:
    dataset = load_dataset("nhamcs:2018,2019", DATA_DIR)
    frame = dataset.frame
    assert len(frame) == 20_291 + 19_481
    assert frame["visit_id"].is_unique
    by_year = frame.groupby("year")
    assert by_year["admitted"].sum().to_dict() == {2018: 2_410, 2019: 2_067}
    assert by_year["critical"].sum().to_dict() == {2018: 340, 2019: 331}
    assert by_year["acuity"].count().to_dict() == {2018: 14_203, 2019: 13_595}
    assert len(dataset.source_files) == 2
    assert all(len(sha) == 64 for sha in dataset.source_files.values())
