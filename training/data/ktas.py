"""Adapter for the Korean ED triage dataset of Moon et al. 2019 (KTAS), ``triage/ktas_moon2019/data.csv``.

1,267 adult visits at two Korean EDs. Codebook facts used here are in that folder's PROVENANCE.md: ``;``
separated, cp1254 (Turkish Excel), ``#BOŞ!`` is Excel's ``#NULL!``, ``??`` is lost Korean text (probably
"unmeasurable" in the vitals), SpO2 recorded only at the regional ED (Group 2).

The label is ``KTAS_expert`` (expert consensus). ``KTAS_RN`` is the triage nurse's level and is kept only as
``nurse_acuity``, a baseline. ``Diagnosis in ED``, ``Disposition``, ``Error_group``, ``Length of stay_min``,
``KTAS duration_min`` and ``mistriage`` are known only after triage: apart from the outcomes derived from
``Disposition``, none of them reaches the frame.

Licence: CC BY 4.0. Cite Moon S-H, Shim JL, Park K-S, Park C-S. PLOS ONE 14(9): e0216972 (2019).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from models.errors import DataSourceError
from training.data.dataset import TriageDataset, build_dataset, missing_file_error, sha256_file

logger = logging.getLogger(__name__)

KTAS_PATH: Final = Path("triage") / "ktas_moon2019" / "data.csv"
MISSING_TOKENS: Final[tuple[str, ...]] = ("#BOŞ!", "??", "")

#: Columns known only after triage: never record fields, never features.
POST_TRIAGE_COLUMNS: Final[tuple[str, ...]] = (
    "KTAS_RN",
    "Diagnosis in ED",
    "Disposition",
    "Error_group",
    "Length of stay_min",
    "KTAS duration_min",
    "mistriage",
)
#: The columns this adapter reads (the file also has post-triage ones, checked so a changed file is caught).
EXPECTED_COLUMNS: Final[tuple[str, ...]] = (
    "Group",
    "Sex",
    "Age",
    "Arrival mode",
    "Chief_complain",
    "Mental",
    "Pain",
    "NRS_pain",
    "SBP",
    "DBP",
    "HR",
    "RR",
    "BT",
    "Saturation",
    "KTAS_RN",
    "Disposition",
    "KTAS_expert",
)

SEX_CODES: Final[dict[str, str]] = {"1": "female", "2": "male"}
#: 1 walk-in and 3 private vehicle are both self-presenting; 2 public and 4 private ambulance; 5-7 other.
ARRIVAL_CODES: Final[dict[str, str]] = {
    "1": "walk_in",
    "2": "ambulance",
    "3": "walk_in",
    "4": "ambulance",
    "5": "other",
    "6": "other",
    "7": "other",
}
MENTAL_CODES: Final[dict[str, str]] = {"1": "A", "2": "V", "3": "P", "4": "U"}
VITAL_COLUMNS: Final[dict[str, str]] = {
    "SBP": "sbp",
    "DBP": "dbp",
    "HR": "heart_rate",
    "RR": "resp_rate",
    "BT": "temperature_c",
    "Saturation": "spo2",
}
ADMITTED_DISPOSITIONS: Final[frozenset[int]] = frozenset({2, 3, 7})  # ward, ICU, surgery
CRITICAL_DISPOSITIONS: Final[frozenset[int]] = frozenset({3, 6})  # ICU, death


def _number(text: pd.Series) -> pd.Series:
    return pd.to_numeric(text, errors="coerce").astype(float)


def _mapped(text: pd.Series, mapping: dict[str, str], name: str, counts: dict[str, int]) -> pd.Series:
    out = text.map(mapping)
    unknown = text.notna() & out.isna()
    if unknown.any():
        counts[f"{name}_unknown_code"] = int(unknown.sum())
    return out.astype("object").where(out.notna(), None)


def read_ktas_csv(path: Path) -> pd.DataFrame:
    """Read the staged CSV as text, whitespace stripped, ``#BOŞ!``/``??``/empty as missing."""
    try:
        raw = pd.read_csv(path, sep=";", encoding="cp1254", dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataSourceError(f"cannot read the KTAS file {path}: {type(exc).__name__}") from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    absent = [c for c in EXPECTED_COLUMNS if c not in raw.columns]
    if absent:
        raise DataSourceError(f"{path} lacks KTAS column(s) {absent}")
    stripped = raw.apply(lambda s: s.str.strip())
    return stripped.mask(stripped.isin(MISSING_TOKENS))


def harmonise_ktas(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Map the KTAS text columns onto record, label and meta columns (unvalidated) with adapter counts."""
    counts: dict[str, int] = {}
    out = pd.DataFrame(index=raw.index)
    out["age_years"] = _number(raw["Age"])
    out["sex"] = _mapped(raw["Sex"], SEX_CODES, "sex", counts)
    out["arrival_mode"] = _mapped(raw["Arrival mode"], ARRIVAL_CODES, "arrival_mode", counts)
    out["consciousness"] = _mapped(raw["Mental"], MENTAL_CODES, "consciousness", counts)
    for column, field_name in VITAL_COLUMNS.items():
        out[field_name] = raw[column]  # text: validate_frame parses it and counts anything unparseable
    # Pain == 0: the patient reports no pain, so the score is 0; Pain == 1 without NRS stays missing.
    pain = raw["Pain"]
    nrs = _number(raw["NRS_pain"])
    out["pain_score"] = nrs.where(~((pain == "0") & nrs.isna()), 0.0)
    counts["pain_score_zero_from_no_pain"] = int(((pain == "0") & nrs.isna()).sum())
    out["gcs"] = np.nan
    out["on_supplemental_oxygen"] = None
    out["spo2_scale_2"] = None
    out["arrival_time"] = None
    # Korean text was lost in the Turkish-Excel export: it survives as runs of '?' ('??', '??? ??', ...).
    complaint = raw["Chief_complain"]
    lost = complaint.fillna("").str.fullmatch(r"[?\s]+")
    counts["chief_complaint_lost_text"] = int(lost.sum())
    out["chief_complaint"] = complaint.astype("object").where(complaint.notna() & ~lost, None)
    out["chief_complaint_code"] = None
    out["ethnicity"] = None
    out["site"] = raw["Group"].map(lambda g: f"ktas_group{g}" if isinstance(g, str) else None).astype("object")

    out["acuity"] = _number(raw["KTAS_expert"]).astype("Int64")
    out["nurse_acuity"] = _number(raw["KTAS_RN"]).astype("Int64")
    disposition = _number(raw["Disposition"])
    known = disposition.notna()
    out["admitted"] = disposition.isin(ADMITTED_DISPOSITIONS).astype("Int64").where(known)
    out["critical"] = disposition.isin(CRITICAL_DISPOSITIONS).astype("Int64").where(known)

    out["visit_id"] = [f"ktas-{i}" for i in range(len(raw))]
    out["year"] = pd.NA
    out["payer"] = None
    out["weight"] = 1.0
    no_age = out["age_years"].isna()
    counts["dropped_no_age"] = int(no_age.sum())
    return out.loc[~no_age].reset_index(drop=True), counts


def load_ktas(data_dir: Path) -> TriageDataset:
    """Load the KTAS dataset (Moon et al. 2019) as canonical triage records.

    Parameters
    ----------
    data_dir : pathlib.Path
        The shared data folder (holding ``triage/ktas_moon2019/data.csv``).

    Returns
    -------
    TriageDataset
        Named ``"ktas"``; validated in ``coerce`` mode. ``acuity`` is ``KTAS_expert``, ``nurse_acuity`` is
        ``KTAS_RN`` (a baseline, never a feature), ``admitted`` is Disposition 2/3/7 (ward, ICU, surgery),
        ``critical`` is Disposition 3/6 (ICU, death). ``visit_id`` is ``ktas-<row>`` (0-based data row);
        ``site`` is ``ktas_group1`` (local ED) or ``ktas_group2`` (regional ED); ``year`` is missing (visits
        span Oct 2016 to Sep 2017); ``ethnicity`` and ``payer`` are not recorded.

    Raises
    ------
    DataSourceError
        If the file is absent, unreadable or lacks an expected column.
    """
    started = time.perf_counter()
    path = Path(data_dir) / KTAS_PATH
    if not path.is_file():
        raise missing_file_error(path, "KTAS data file")
    raw = read_ktas_csv(path)
    frame, counts = harmonise_ktas(raw)
    notes = [
        "KTAS (Moon et al. 2019, PLOS ONE e0216972), CC BY 4.0: attribute the paper.",
        "acuity is KTAS_expert; nurse_acuity is KTAS_RN, a baseline and never a feature.",
        "Diagnosis in ED, Disposition, Error_group, Length of stay_min, KTAS duration_min and mistriage are "
        "post-triage and are not carried (admitted/critical derive from Disposition).",
        "'#BOŞ!', '??' and empty cells are missing, as are complaints made only of '?' (lost Korean text).",
        "SpO2 was recorded only at the regional ED (ktas_group2).",
        "Pain == 0 (no pain) gives pain_score 0; arrival by private vehicle (3) counts as walk_in.",
        "Only sex and age are recorded as demographics: no ethnicity, no payer.",
    ]
    dataset = build_dataset(
        frame,
        name="ktas",
        dataset="ktas",
        mode="coerce",
        source_files={str(path): sha256_file(path)},
        counts=counts,
        notes=notes,
    )
    logger.info(
        "loaded ktas: %d visits in %.2f s (coerced %s)",
        len(dataset.frame),
        time.perf_counter() - started,
        dataset.coerced,
    )
    return dataset
