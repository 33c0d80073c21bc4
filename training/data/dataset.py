"""The one in-memory form every data adapter returns: :class:`TriageDataset`.

A dataset is a frame of canonical triage records (every column of
:data:`models.triage.record.RECORD_FIELDS`, validated through :func:`models.triage.record_frame.validate_frame`)
plus label and meta columns, the sha256 of the source files it was read from, and a digest of the exact rows,
so a trained model can name the data it saw.

Label columns (:data:`LABEL_COLUMNS`)
    ``acuity`` (Int64 1-5 or <NA>), ``admitted`` and ``critical`` (Int64 0/1; <NA> only where a site's CSV
    leaves them empty), ``nurse_acuity`` (Int64; the triage nurse's own level, a baseline and never a
    feature).
Meta columns (:data:`META_COLUMNS`)
    ``visit_id`` (str, unique), ``dataset`` (str), ``year`` (Int64 or <NA>), ``age_band`` (str),
    ``payer`` (str or None), ``weight`` (float survey weight; 1.0 where the source has none).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from models.errors import DataSourceError, InputValidationError
from models.triage.decision import AGE_BAND_EDGES
from models.triage.decision import AGE_BANDS as DECISION_AGE_BANDS
from models.triage.record import NUMERIC_FIELDS, RECORD_FIELDS
from models.triage.record_frame import Mode, validate_frame

LABEL_COLUMNS: Final[tuple[str, ...]] = ("acuity", "admitted", "critical", "nurse_acuity")
META_COLUMNS: Final[tuple[str, ...]] = ("visit_id", "dataset", "year", "age_band", "payer", "weight")
#: Every column of a :class:`TriageDataset` frame, in order.
DATASET_COLUMNS: Final[tuple[str, ...]] = (*RECORD_FIELDS, *LABEL_COLUMNS, *META_COLUMNS)
#: The columns the digest covers: the record, its labels and the visit identifier.
DIGEST_COLUMNS: Final[tuple[str, ...]] = (*RECORD_FIELDS, *LABEL_COLUMNS, "visit_id")

#: Age bands of NHAMCS ``AGER``, used for every dataset so that groups mean the same thing everywhere.
AGE_BANDS: Final[tuple[str, ...]] = DECISION_AGE_BANDS  # one definition (models.triage.decision)
_AGE_BAND_EDGES: Final[tuple[float, ...]] = AGE_BAND_EDGES

#: Expected payer vocabulary (NHAMCS ``PAYTYPER``).
PAYERS: Final[tuple[str, ...]] = ("private", "medicare", "medicaid", "workers_comp", "self_pay", "no_charge", "other")

_DIGEST_VERSION: Final = "vigil-triage-digest-v1"


@dataclass
class TriageDataset:
    """Canonical triage records with labels, provenance and a digest of the exact rows.

    Attributes
    ----------
    frame : pandas.DataFrame
        Columns :data:`DATASET_COLUMNS`, one row per ED visit.
    name : str
        What was loaded, e.g. ``"nhamcs:2018,2019"``.
    source_files : dict of str to str
        Path of each file read to the sha256 of its bytes (empty for generated data).
    digest : str
        sha256 (hex) over a canonical serialisation of :data:`DIGEST_COLUMNS`, row order included.
    coerced : dict of str to int
        Values set to missing per record field by coerce-mode validation, plus adapter-specific counts
        (for example ``dropped_no_age``).
    notes : list of str
        Plain-language remarks on how the data were mapped (sentinels, unavailable fields, licence).
    """

    frame: pd.DataFrame
    name: str
    source_files: dict[str, str] = field(default_factory=dict)
    digest: str = ""
    coerced: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)


def sha256_file(path: Path) -> str:
    """Return the sha256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DataSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def age_band(age_years: pd.Series) -> pd.Series:
    """Map ages in years to the NHAMCS ``AGER`` bands (:data:`AGE_BANDS`); missing age gives None."""
    ages = pd.to_numeric(age_years, errors="coerce").to_numpy(dtype=float)
    index = np.searchsorted(np.asarray(_AGE_BAND_EDGES), ages, side="right")
    labels = np.asarray(AGE_BANDS, dtype=object)[np.minimum(index, len(AGE_BANDS) - 1)]
    labels[np.isnan(ages)] = None
    return pd.Series(labels, index=age_years.index, dtype="object")


def _json_value(value: Any) -> Any:
    """One cell as a JSON-safe, type-stable value (None for every kind of missing)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return None if math.isnan(number) else number
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def frame_digest(frame: pd.DataFrame, columns: Iterable[str] = DIGEST_COLUMNS) -> str:
    """sha256 (hex) of a canonical serialisation of ``columns`` of ``frame``, row order included.

    Numeric record fields are serialised as floats (exact ``repr``), labels as integers, booleans as
    JSON booleans, date-times as ISO 8601, and every kind of missing as ``null``; so a frame and its
    round trip through the canonical CSV give the same digest.

    Parameters
    ----------
    frame : pandas.DataFrame
        A :class:`TriageDataset` frame (or a row subset of one).
    columns : iterable of str
        The columns to cover; they must all be present.
    """
    columns = tuple(columns)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputValidationError("columns", f"cannot digest a frame without columns {missing}")
    hasher = hashlib.sha256()
    header = {"version": _DIGEST_VERSION, "columns": list(columns), "rows": len(frame)}
    hasher.update(json.dumps(header, sort_keys=True).encode())
    numeric = {f.name for f in NUMERIC_FIELDS} | {"weight"}
    for name in columns:
        series = frame[name]
        if name in numeric:
            values = (pd.to_numeric(series, errors="coerce").astype(float) + 0.0).tolist()  # -0.0 -> 0.0
            cells: list[Any] = [None if math.isnan(v) else v for v in values]
        else:
            cells = [_json_value(v) for v in series.tolist()]
        hasher.update(b"\x1e")
        hasher.update(json.dumps(cells, ensure_ascii=False, allow_nan=False).encode())
    return hasher.hexdigest()


def _int_labels(values: pd.Series | None, index: pd.Index, allowed: tuple[int, ...], name: str) -> pd.Series:
    if values is None:
        return pd.Series(pd.NA, index=index, dtype="Int64")
    out = pd.Series(values, index=index).astype("Int64")
    bad = out.notna() & ~out.isin(allowed)
    if bad.any():  # adapters map codes themselves; this guards against a mapping bug
        raise InputValidationError(name, f"'{name}' must be one of {list(allowed)} or missing")
    return out


def build_dataset(
    frame: pd.DataFrame,
    *,
    name: str,
    dataset: str,
    mode: Mode,
    source_files: Mapping[str, str] | None = None,
    counts: Mapping[str, int] | None = None,
    notes: Iterable[str] = (),
) -> TriageDataset:
    """Validate record fields, normalise label and meta columns, and compute the digest.

    Adapters call this last. ``frame`` holds record fields (absent ones become missing) and any of
    :data:`LABEL_COLUMNS` and :data:`META_COLUMNS`; ``visit_id`` is required and must be unique.
    Validation runs in ``mode`` (``coerce`` for public research datasets, ``strict`` for a site's CSV).
    """
    if "visit_id" not in frame.columns:
        raise InputValidationError("visit_id", "every dataset needs a 'visit_id' column")
    records, coerced = validate_frame(frame.reset_index(drop=True), mode=mode)
    index = records.index
    out = pd.DataFrame(index=index)
    for column in RECORD_FIELDS:
        out[column] = records[column]
    out["acuity"] = _int_labels(records.get("acuity"), index, (1, 2, 3, 4, 5), "acuity")
    out["admitted"] = _int_labels(records.get("admitted"), index, (0, 1), "admitted")
    out["critical"] = _int_labels(records.get("critical"), index, (0, 1), "critical")
    out["nurse_acuity"] = _int_labels(records.get("nurse_acuity"), index, (1, 2, 3, 4, 5), "nurse_acuity")
    visit_id = records["visit_id"].astype("string").str.strip()
    if visit_id.isna().any() or (visit_id == "").any() or visit_id.duplicated().any():
        raise InputValidationError("visit_id", "'visit_id' must be present and unique for every visit")
    out["visit_id"] = visit_id.astype("object")
    out["dataset"] = dataset
    year = records["year"] if "year" in records else pd.Series(pd.NA, index=index)
    out["year"] = pd.Series(year, index=index).astype("Int64")
    out["age_band"] = age_band(out["age_years"])
    payer = records["payer"] if "payer" in records else pd.Series(None, index=index, dtype="object")
    out["payer"] = payer.astype("object").where(payer.notna(), None)
    weight = records["weight"] if "weight" in records else pd.Series(1.0, index=index)
    out["weight"] = pd.to_numeric(weight, errors="raise").astype(float)
    all_counts = dict(coerced)
    for key, value in (counts or {}).items():
        all_counts[key] = all_counts.get(key, 0) + int(value)
    return TriageDataset(
        frame=out,
        name=name,
        source_files=dict(source_files or {}),
        digest=frame_digest(out),
        coerced=all_counts,
        notes=list(notes),
    )


def missing_file_error(path: Path, what: str) -> DataSourceError:
    """The one wording for a data file that is not where it should be."""
    return DataSourceError(
        f"{what} not found at {path}; set VIGIL_DATA_DIR to the shared data folder "
        "(the one holding triage/nhamcs_ed and triage/ktas_moon2019) or pass data_dir"
    )


__all__ = [
    "AGE_BANDS",
    "DATASET_COLUMNS",
    "DIGEST_COLUMNS",
    "LABEL_COLUMNS",
    "META_COLUMNS",
    "PAYERS",
    "TriageDataset",
    "age_band",
    "build_dataset",
    "frame_digest",
    "missing_file_error",
    "sha256_file",
]
