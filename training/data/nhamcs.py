"""Adapter for the NHAMCS emergency-department public-use files (CDC/NCHS), Stata format.

Reads ``triage/nhamcs_ed/ED<year>-stata.zip`` (the case of the file name differs by year) under a data
folder and maps each visit onto the canonical triage record. Codebook facts used here are in that folder's
PROVENANCE.md:

- negative codes (-9 blank, -8 unknown, -7 not applicable) are missing;
- ``TEMPF`` is degrees Fahrenheit x 10 (985 = 98.5 F; 998 there is 99.8 F, a real value);
- ``PULSE``/``RESPR``/``BPSYS``/``BPDIAS`` 998 means measured by Doppler or palpation: no number, so missing;
- ``IMMEDR`` 1-5 is the triage level; 0 (not triaged), 7 (ED does not triage), -8 and -9 are missing;
- NHAMCS records no ACVPU, GCS, supplemental oxygen or full arrival date-time: those stay missing;
- there is no free-text complaint: ``chief_complaint`` is the NCHS labels of ``RFV1``-``RFV3``.

Data-use terms (NCHS): statistical analysis only, no attempt to identify any person or establishment, no
linkage with other individually identifiable data.
"""

from __future__ import annotations

import logging
import struct
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from models.errors import DataSourceError, InputValidationError
from training.data.dataset import TriageDataset, build_dataset, missing_file_error, sha256_file

logger = logging.getLogger(__name__)

NHAMCS_SUBDIR: Final = Path("triage") / "nhamcs_ed"
#: Years staged in the shared data folder (2021 is missing upstream; 2022 may or may not be staged).
KNOWN_YEARS: Final[tuple[int, ...]] = (2018, 2019, 2020, 2021, 2022)

#: Columns without which a year cannot be mapped.
REQUIRED_COLUMNS: Final[tuple[str, ...]] = ("AGE", "SEX", "IMMEDR", "ADMITHOS", "ADMIT", "DIEDED")
#: Columns mapped when present; an absent one leaves its field missing and adds a note.
OPTIONAL_COLUMNS: Final[tuple[str, ...]] = (
    "YEAR",
    "ARREMS",
    "TEMPF",
    "PULSE",
    "RESPR",
    "BPSYS",
    "BPDIAS",
    "POPCT",
    "PAINSCALE",
    "RFV1",
    "RFV2",
    "RFV3",
    "HOSPCODE",
    "RACERETH",
    "PAYTYPER",
    "PATWT",
)

SEX_CODES: Final[dict[int, str]] = {1: "female", 2: "male"}
ARREMS_CODES: Final[dict[int, str]] = {1: "ambulance", 2: "walk_in"}
RACERETH_CODES: Final[dict[int, str]] = {1: "nh_white", 2: "nh_black", 3: "hispanic", 4: "nh_other"}
PAYTYPER_CODES: Final[dict[int, str]] = {
    1: "private",
    2: "medicare",
    3: "medicaid",
    4: "workers_comp",
    5: "self_pay",
    6: "no_charge",
    7: "other",
}
#: Vital-sign columns where 998 means "Doppler or palpated" (no number), with the record field they feed.
DOPPLER_VITALS: Final[dict[str, str]] = {"PULSE": "heart_rate", "RESPR": "resp_rate", "BPSYS": "sbp", "BPDIAS": "dbp"}
DOPPLER_CODE: Final = 998
RFV_COLUMNS: Final[tuple[str, ...]] = ("RFV1", "RFV2", "RFV3")


def nhamcs_path(data_dir: Path, year: int) -> Path:
    """Return the staged zip of ``year``, whatever the case of its name.

    Raises
    ------
    DataSourceError
        If the folder or the file is absent.
    """
    folder = Path(data_dir) / NHAMCS_SUBDIR
    wanted = f"ed{year}-stata.zip"
    if folder.is_dir():
        for candidate in sorted(folder.iterdir()):
            if candidate.name.lower() == wanted and candidate.is_file():
                return candidate
    raise missing_file_error(folder / f"ED{year}-stata.zip", f"NHAMCS {year} file")


def _codes(raw: pd.DataFrame, column: str) -> pd.Series:
    """A coded column as float with negative (blank/unknown/not applicable) codes made missing."""
    if column not in raw:
        return pd.Series(np.nan, index=raw.index)
    values = pd.to_numeric(raw[column], errors="coerce").astype(float)
    return values.where(values >= 0)


def _mapped(raw: pd.DataFrame, column: str, mapping: dict[int, str]) -> pd.Series:
    codes = _codes(raw, column)
    text = codes.map(lambda c: mapping.get(int(c)) if c == c else None)
    return text.astype("object").where(text.notna(), None)


def fahrenheit_x10_to_celsius(tempf: pd.Series) -> pd.Series:
    """Convert NHAMCS ``TEMPF`` (degrees F x 10) to degrees C, 1 decimal; negative codes become missing."""
    values = pd.to_numeric(tempf, errors="coerce").astype(float)
    values = values.where(values >= 0)
    return ((values / 10.0 - 32.0) * 5.0 / 9.0).round(1)


def complaint_text(raw: pd.DataFrame, labels: dict[str, dict[int, str]]) -> tuple[pd.Series, int]:
    """Join the NCHS labels of ``RFV1``-``RFV3`` with ``"; "``; return the text and the unlabeled count.

    ``labels`` maps an RFV column to its value labels; a missing (negative) code adds nothing, a code
    without a label adds nothing and is counted.
    """
    columns: list[list[str | None]] = []
    unlabeled = 0
    for column in RFV_COLUMNS:
        codes = _codes(raw, column)
        mapping = labels.get(column, {})
        texts = codes.map(lambda c, m=mapping: m.get(int(c)) if c == c else None)
        unlabeled += int((codes.notna() & texts.isna()).sum())
        columns.append(texts.tolist())
    joined = ["; ".join(t for t in parts if isinstance(t, str) and t) or None for parts in zip(*columns, strict=True)]
    return pd.Series(joined, index=raw.index, dtype="object"), unlabeled


def harmonise_nhamcs(
    raw: pd.DataFrame, year: int, rfv_labels: dict[str, dict[int, str]] | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Map one year's raw NHAMCS columns (codes, ``convert_categoricals=False``) to record, label and meta columns.

    Parameters
    ----------
    raw : pandas.DataFrame
        NHAMCS columns by name; :data:`REQUIRED_COLUMNS` must be present.
    year : int
        Survey year, used in ``visit_id`` and ``site`` (hospital codes are masked per year).
    rfv_labels : dict, optional
        Value labels per RFV column (code to text); without them ``chief_complaint`` stays missing.

    Returns
    -------
    frame : pandas.DataFrame
        Unvalidated record fields plus ``acuity``, ``admitted``, ``critical``, ``visit_id``, ``year``,
        ``payer`` and ``weight``; rows without an age are dropped.
    counts : dict
        Adapter counts: ``dropped_no_age``, ``<field>_doppler_998``, ``rfv_unlabeled`` and
        ``admitted_unit_unknown`` (admitted, ``ADMIT`` blank or unknown: counted as not critical).
    """
    absent = [c for c in REQUIRED_COLUMNS if c not in raw]
    if absent:
        raise DataSourceError(f"NHAMCS {year} lacks required column(s) {absent}")
    counts: dict[str, int] = {}
    out = pd.DataFrame(index=raw.index)
    out["age_years"] = _codes(raw, "AGE")
    out["sex"] = _mapped(raw, "SEX", SEX_CODES)
    out["arrival_mode"] = _mapped(raw, "ARREMS", ARREMS_CODES)
    out["temperature_c"] = (
        fahrenheit_x10_to_celsius(raw["TEMPF"]) if "TEMPF" in raw else pd.Series(np.nan, index=raw.index)
    )
    for column, field_name in DOPPLER_VITALS.items():
        values = _codes(raw, column)
        doppler = values == DOPPLER_CODE
        if doppler.any():
            counts[f"{field_name}_doppler_998"] = int(doppler.sum())
        out[field_name] = values.where(~doppler)
    out["spo2"] = _codes(raw, "POPCT")
    out["pain_score"] = _codes(raw, "PAINSCALE")
    for field_name in ("gcs", "consciousness", "on_supplemental_oxygen", "spo2_scale_2", "arrival_time"):
        out[field_name] = None
    text, unlabeled = complaint_text(raw, rfv_labels or {})
    out["chief_complaint"] = text
    if unlabeled:
        counts["rfv_unlabeled"] = unlabeled
    rfv1 = _codes(raw, "RFV1")
    out["chief_complaint_code"] = rfv1.map(lambda c: f"rfv:{int(c)}" if c == c else None).astype("object")
    out["ethnicity"] = _mapped(raw, "RACERETH", RACERETH_CODES)
    hospital = _codes(raw, "HOSPCODE")
    out["site"] = hospital.map(lambda c: f"nhamcs{year}:{int(c)}" if c == c else None).astype("object")

    immedr = _codes(raw, "IMMEDR")
    out["acuity"] = immedr.where(immedr.between(1, 5)).astype("Int64")
    admithos = _codes(raw, "ADMITHOS")
    died = _codes(raw, "DIEDED")
    admit_unit = _codes(raw, "ADMIT")
    out["admitted"] = (admithos == 1).astype("Int64").where(admithos.notna())
    critical = ((admit_unit == 1) | (died == 1)).astype("Int64")
    out["critical"] = critical.where(died.notna() | (admit_unit == 1))
    out["nurse_acuity"] = pd.Series(pd.NA, index=raw.index, dtype="Int64")

    out["visit_id"] = [f"nhamcs{year}-{i}" for i in range(len(raw))]
    out["year"] = year
    out["payer"] = _mapped(raw, "PAYTYPER", PAYTYPER_CODES)
    weight = pd.to_numeric(raw["PATWT"], errors="coerce") if "PATWT" in raw else pd.Series(1.0, index=raw.index)
    out["weight"] = weight.astype(float)

    no_age = out["age_years"].isna()
    counts["dropped_no_age"] = int(no_age.sum())
    unknown_unit = int(((admithos == 1) & admit_unit.isna() & ~no_age).sum())
    if unknown_unit:
        counts["admitted_unit_unknown"] = unknown_unit
    return out.loc[~no_age].reset_index(drop=True), counts


def _label_set_names(reader: Any, columns: Sequence[str]) -> dict[str, str]:
    """Which value-label set each column uses (pandas keeps this in private attributes; fall back to RFVF)."""
    varlist = getattr(reader, "_varlist", None)
    lbllist = getattr(reader, "_lbllist", None)
    names: dict[str, str] = {}
    if varlist is not None and lbllist is not None and len(varlist) == len(lbllist):
        names = {v: lbl for v, lbl in zip(varlist, lbllist, strict=True) if v in columns and lbl}
    return {column: names.get(column, "RFVF") for column in columns}


def read_nhamcs_year(path: Path, year: int) -> tuple[pd.DataFrame, dict[str, dict[int, str]], list[str]]:
    """Read the columns this adapter uses from one year's Stata zip, with the RFV value labels.

    Returns the raw frame (codes), the RFV labels per column and notes on absent optional columns.
    """
    notes: list[str] = []
    try:
        with pd.read_stata(path, iterator=True) as reader:
            value_labels = reader.value_labels()
            available = set(reader.variable_labels())
            wanted = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in available]
            label_names = _label_set_names(reader, RFV_COLUMNS)
            raw = reader.read(convert_categoricals=False, columns=wanted)
    except (OSError, ValueError, EOFError, struct.error, zipfile.BadZipFile) as exc:
        raise DataSourceError(f"cannot read NHAMCS {year} from {path}: {type(exc).__name__}") from exc
    absent = [c for c in OPTIONAL_COLUMNS if c not in available]
    if absent:
        notes.append(f"NHAMCS {year}: columns {absent} absent; their fields are missing for that year")
    labels: dict[str, dict[int, str]] = {}
    for column in RFV_COLUMNS:
        mapping = value_labels.get(label_names[column])
        if mapping:
            labels[column] = {int(code): str(text).strip() for code, text in mapping.items() if int(code) >= 0}
        elif column in available:
            notes.append(f"NHAMCS {year}: no value labels for {column}; its text is left out of chief_complaint")
    return raw, labels, notes


def load_nhamcs(data_dir: Path, years: Sequence[int]) -> TriageDataset:
    """Load NHAMCS ED visits of ``years`` as canonical triage records.

    Parameters
    ----------
    data_dir : pathlib.Path
        The shared data folder (holding ``triage/nhamcs_ed``).
    years : sequence of int
        Survey years, e.g. ``(2018, 2019)``; each must have its staged zip.

    Returns
    -------
    TriageDataset
        Named ``"nhamcs:<years>"``; validated in ``coerce`` mode (implausible values become missing and are
        counted in ``coerced``); ``weight`` is ``PATWT``; ``visit_id`` is ``nhamcs<year>-<row>`` with the
        0-based row of the year's file; ``site`` is ``nhamcs<year>:<HOSPCODE>`` because hospital codes are
        masked per year and do not link across years.

    Raises
    ------
    InputValidationError
        If ``years`` is empty or repeats a year.
    DataSourceError
        If a year's file is absent or unreadable, or its ``YEAR`` column disagrees with its name.
    """
    years = [int(y) for y in years]
    if not years:
        raise InputValidationError("years", "at least one NHAMCS year is needed, e.g. [2018, 2019]")
    if len(set(years)) != len(years):
        raise InputValidationError("years", f"NHAMCS years must not repeat; got {years}")
    started = time.perf_counter()
    frames: list[pd.DataFrame] = []
    counts: dict[str, int] = {}
    notes: list[str] = [
        "NHAMCS (CDC/NCHS public-use file): statistical analysis only; no re-identification; no linkage.",
        "NHAMCS records no ACVPU, GCS, supplemental oxygen or arrival date: those fields are missing.",
        "chief_complaint joins the NCHS labels of RFV1-RFV3; chief_complaint_code is rfv:<RFV1>.",
        "998 in PULSE/RESPR/BPSYS/BPDIAS (Doppler or palpated) is missing; TEMPF is degF x 10.",
        "acuity is IMMEDR 1-5; 0 (not triaged), 7 (ED does not triage), -8 and -9 are missing.",
        "critical is ADMIT==1 (critical care unit) or DIEDED==1; ADMIT -8/-9 among admissions counts as not critical.",
    ]
    source_files: dict[str, str] = {}
    for year in years:
        path = nhamcs_path(data_dir, year)
        source_files[str(path)] = sha256_file(path)
        raw, labels, year_notes = read_nhamcs_year(path, year)
        notes.extend(year_notes)
        if "YEAR" in raw:
            found = sorted(set(pd.to_numeric(raw["YEAR"], errors="coerce").dropna().astype(int)))
            if found != [year]:
                raise DataSourceError(f"{path.name}: YEAR column holds {found}, expected [{year}]")
        frame, year_counts = harmonise_nhamcs(raw, year, labels)
        for key, value in year_counts.items():
            counts[key] = counts.get(key, 0) + value
        frames.append(frame)
    combined = pd.concat(frames, ignore_index=True)
    dataset = build_dataset(
        combined,
        name="nhamcs:" + ",".join(str(y) for y in years),
        dataset="nhamcs",
        mode="coerce",
        source_files=source_files,
        counts=counts,
        notes=notes,
    )
    logger.info(
        "loaded %s: %d visits in %.1f s (coerced %s)",
        dataset.name,
        len(dataset.frame),
        time.perf_counter() - started,
        dataset.coerced,
    )
    return dataset
