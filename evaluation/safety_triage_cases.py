"""Generated triage records for the safety-invariant suite (:mod:`evaluation.safety_triage`).

The suite is an oracle independent of the model's own code: it writes canonical records (the fields of
:mod:`models.triage.record`, as :mod:`models.triage.columns` columns) from clinical reference values of its own, not
from the training data or the encoder. Every record is valid under :func:`models.triage.record_frame.validate_frame`
(strict); the tests check that. Everything is drawn from a ``numpy.random.Generator`` passed in.

Reference values: adult normal ranges as NEWS2 scores 0 (RCP 2017); paediatric normal ranges by age band
as in the APLS reference tables (Advanced Paediatric Life Support, 6th ed.), taken well inside each band. The
red-flag complaints come from :mod:`models.triage.complaints` (:func:`red_flag_texts`), the one list the floor uses.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import numpy as np

from models.triage.columns import Columns
from models.triage.record import BOOLEAN_FIELDS, CATEGORICAL_BY_NAME, NUMERIC_BY_NAME, RECORD_FIELDS

#: Common ED chief complaints (none of them a time-critical red flag), for base records.
COMMON_COMPLAINTS: Final[tuple[str, ...]] = (
    "abdominal pain",
    "chest pain",
    "shortness of breath",
    "fall",
    "headache",
    "fever",
    "laceration",
    "back pain",
    "vomiting",
    "dizziness",
    "cough",
    "sore throat",
    "rash",
    "ankle injury",
    "ear pain",
    "wrist injury",
    "urinary symptoms",
    "diarrhoea",
    "palpitations",
    "syncope",
)

#: Low-acuity complaints for well children.
BENIGN_CHILD_COMPLAINTS: Final[tuple[str, ...]] = (
    "rash",
    "ear pain",
    "sore throat",
    "cough",
    "ankle injury",
    "minor laceration",
    "insect bite",
)

#: Time-critical complaints (each a red flag in any ED triage system).
CRITICAL_COMPLAINTS: Final[tuple[str, ...]] = (
    "cardiac arrest",
    "altered level of consciousness",
    "stroke symptoms",
    "seizure",
    "anaphylaxis",
    "overdose",
    "cervical spine injury",
    "respiratory arrest",
    "major trauma",
    "active seizure",
)

#: Words that say nothing about severity.
BENIGN_PHRASES: Final[tuple[str, ...]] = ("since this morning", "feeling tired", "left side", "at home")

#: Paediatric normal ranges, well inside each APLS band: (age low, age high, HR, RR, SBP) with (low, high).
CHILD_NORMALS: Final[tuple[tuple[float, float, tuple[int, int], tuple[int, int], tuple[int, int]], ...]] = (
    (0.1, 1.0, (120, 150), (32, 38), (80, 90)),
    (1.0, 2.0, (105, 135), (26, 32), (85, 95)),
    (2.0, 5.0, (95, 125), (22, 28), (88, 100)),
    (5.0, 12.0, (80, 110), (18, 24), (92, 110)),
    (12.0, 16.0, (65, 95), (14, 19), (100, 120)),
)


def empty_columns(n: int) -> Columns:
    """``n`` records with every field missing (numeric NaN, others None)."""
    numeric = {"age_years", "heart_rate", "resp_rate", "sbp", "dbp", "spo2", "temperature_c", "gcs", "pain_score"}
    return {name: (np.full(n, np.nan) if name in numeric else np.full(n, None, dtype=object)) for name in RECORD_FIELDS}


def repeat(base: Columns, index: np.ndarray) -> Columns:
    """A copy of the records at ``index`` (integer positions, repeats allowed)."""
    return {name: values[index].copy() for name, values in base.items()}


def concat(parts: Sequence[Columns]) -> Columns:
    """The records of ``parts`` one after the other."""
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _pick(rng: np.random.Generator, values: Sequence[Any], n: int, p: Sequence[float] | None = None) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = [values[i] for i in rng.choice(len(values), n, p=p)]
    return out


def _uniform_int(rng: np.random.Generator, bounds: np.ndarray) -> np.ndarray:
    return np.floor(rng.uniform(bounds[:, 0], bounds[:, 1] + 1)).clip(bounds[:, 0], bounds[:, 1])


def child_records(rng: np.random.Generator, n: int) -> Columns:
    """Well children under 16: age-normal vitals, alert, on air, a low-acuity complaint."""
    cols = empty_columns(n)
    band = rng.integers(0, len(CHILD_NORMALS), n)
    table = np.array([[lo, hi, *hr, *rr, *sbp] for lo, hi, hr, rr, sbp in CHILD_NORMALS], dtype=float)[band]
    cols["age_years"] = np.round(rng.uniform(table[:, 0], table[:, 1] - 0.05), 1)
    cols["heart_rate"] = _uniform_int(rng, table[:, 2:4])
    cols["resp_rate"] = _uniform_int(rng, table[:, 4:6])
    cols["sbp"] = _uniform_int(rng, table[:, 6:8])
    cols["dbp"] = np.round(cols["sbp"] * rng.uniform(0.55, 0.65, n))
    cols["spo2"] = rng.integers(97, 101, n).astype(float)
    cols["temperature_c"] = np.round(rng.uniform(36.4, 37.6, n), 1)
    cols["pain_score"] = rng.integers(0, 4, n).astype(float)
    cols["sex"] = _pick(rng, ("female", "male"), n)
    cols["arrival_mode"] = _pick(rng, ("walk_in", "walk_in", "other"), n)
    cols["consciousness"][:] = "A"
    cols["on_supplemental_oxygen"][:] = False
    cols["chief_complaint"] = _pick(rng, BENIGN_CHILD_COMPLAINTS, n)
    return cols


def base_records(rng: np.random.Generator, n: int, *, child_share: float = 0.2) -> Columns:
    """Plausible ED records: adults with vitals in or near the normal range and some children.

    Adults (16-95 years) have vital signs mostly in NEWS2's 0-point bands with some spread; about
    ``child_share`` are children with age-normal vitals. Sex, arrival mode, pain, ACVPU (alert or not
    recorded), supplemental oxygen (no or not recorded) and a common complaint vary.
    """
    cols = empty_columns(n)
    cols["age_years"] = np.round(rng.uniform(16, 95, n))
    cols["heart_rate"] = np.round(rng.normal(82, 12, n)).clip(52, 125)
    cols["resp_rate"] = np.round(rng.normal(17, 2.5, n)).clip(12, 24)
    cols["sbp"] = np.round(rng.normal(132, 16, n)).clip(100, 190)
    cols["dbp"] = np.round(cols["sbp"] * rng.uniform(0.55, 0.7, n))
    cols["spo2"] = rng.integers(94, 101, n).astype(float)
    cols["temperature_c"] = np.round(rng.normal(36.9, 0.4, n), 1).clip(36.0, 38.4)
    cols["pain_score"] = rng.integers(0, 11, n).astype(float)
    cols["sex"] = _pick(rng, ("female", "male", "unknown"), n, p=(0.49, 0.49, 0.02))
    cols["arrival_mode"] = _pick(rng, ("walk_in", "ambulance", "other"), n, p=(0.6, 0.35, 0.05))
    cols["consciousness"] = _pick(rng, ("A", None), n, p=(0.85, 0.15))
    cols["on_supplemental_oxygen"] = _pick(rng, (False, None), n, p=(0.7, 0.3))
    cols["chief_complaint"] = _pick(rng, COMMON_COMPLAINTS, n)
    children = np.flatnonzero(rng.random(n) < child_share)
    if len(children):
        kids = child_records(rng, len(children))
        kids["chief_complaint"] = _pick(rng, COMMON_COMPLAINTS, len(children))
        for name in cols:
            cols[name][children] = kids[name]
    return cols


def made_up_words(rng: np.random.Generator, n_words: int, known: frozenset[str] = frozenset()) -> str:
    """``n_words`` words of 6-10 random letters that are not in ``known``."""
    letters = np.array(list(string.ascii_lowercase))
    words: list[str] = []
    while len(words) < n_words:
        word = "".join(rng.choice(letters, int(rng.integers(6, 11))))
        if word not in known:
            words.append(word)
    return " ".join(words)


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else round(float(value), 3)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return str(value)


#: The fields an example shows (generated cases only: there is no patient data in them).
_SHOWN: Final = (
    "age_years",
    "sex",
    "arrival_mode",
    "heart_rate",
    "resp_rate",
    "sbp",
    "dbp",
    "spo2",
    "temperature_c",
    "gcs",
    "consciousness",
    "on_supplemental_oxygen",
    "chief_complaint",
)


def describe(cols: Columns, i: int) -> dict[str, Any]:
    """Record ``i`` as plain JSON values, missing fields left out."""
    out = {name: _plain(cols[name][i]) for name in _SHOWN if name in cols}
    return {k: v for k, v in out.items() if v is not None}


#: Each vital's danger direction: (field, words, values from the danger threshold outwards).
DANGER_PATHS: Final[tuple[tuple[str, str, tuple[float, ...]], ...]] = (
    ("spo2", "SpO2 falling from 92% to 70%", tuple(float(v) for v in range(92, 69, -1))),
    ("sbp", "systolic BP falling from 90 to 50 mmHg", tuple(float(v) for v in range(90, 49, -2))),
    ("resp_rate", "respiratory rate rising from 25 to 50/min", tuple(float(v) for v in range(25, 51))),
    ("heart_rate", "heart rate rising from 130 to 200/min", tuple(float(v) for v in range(130, 201, 5))),
    ("heart_rate", "heart rate falling from 40 to 25/min", tuple(float(v) for v in range(40, 24, -1))),
    ("temperature_c", "temperature falling from 35 to 30 degC", tuple(35.0 - 0.5 * k for k in range(11))),
    ("temperature_c", "temperature rising from 39.5 to 42 degC", tuple(39.5 + 0.25 * k for k in range(11))),
)

#: Adult normal values (NEWS2 0 points) and danger values of each vital, for danger_not_below_normal.
NORMAL_VALUES: Final = {"spo2": 98.0, "sbp": 125.0, "resp_rate": 16.0, "heart_rate": 75.0, "temperature_c": 37.0}
DANGER_VALUES: Final = {
    "spo2": (88.0, 80.0, 72.0),
    "sbp": (85.0, 70.0, 55.0),
    "resp_rate": (28.0, 36.0, 48.0),
    "heart_rate": (140.0, 170.0, 195.0, 38.0, 30.0, 26.0),
    "temperature_c": (34.5, 32.0, 30.5, 39.8, 41.0, 42.0),
}
#: Diastolic BP while systolic BP is varied (below every systolic value used, so the record stays valid).
DBP_WHILE_SBP_VARIES: Final = 35.0

#: Values tried for inputs a model must ignore (other fields get values from their declared range).
IGNORED_INPUT_VALUES: Final[dict[str, tuple[Any, ...]]] = {
    "gcs": (math.nan, 3.0, 8.0, 12.0, 15.0),
    "consciousness": (None, "A", "C", "V", "P", "U"),
    "ethnicity": (None, "nh_white", "nh_black", "hispanic", "nh_other"),
    "site": (None, "site-a", "site-b"),
    "chief_complaint_code": (None, "R07.9", "1005.0"),
    "arrival_time": (None, datetime(2025, 1, 1, 3, 0), datetime(2025, 7, 1, 15, 30)),
    "dbp": (math.nan, 30.0, 50.0, 70.0),
}


def valid_values(name: str) -> tuple[Any, ...]:
    """Values (missing included) a record may hold in ``name``."""
    if name in IGNORED_INPUT_VALUES:
        return IGNORED_INPUT_VALUES[name]
    if name in NUMERIC_BY_NAME:
        spec = NUMERIC_BY_NAME[name]
        mid = (spec.low + spec.high) / 2
        return (math.nan, float(spec.low), float(round(mid) if spec.integer else mid), float(spec.high))
    if name in CATEGORICAL_BY_NAME:
        return (None, *CATEGORICAL_BY_NAME[name].values)
    if name in BOOLEAN_FIELDS:
        return (None, False, True)
    return (None, "zzz", "abc")


def red_flag_texts() -> tuple[list[tuple[str, str, int]], str | None]:
    """(flag id, complaint text, floor level) for every synonym of every red flag of :mod:`models.triage.complaints`
    (``SYNONYM_GROUPS``; a flag without synonyms contributes its canonical text), and an error message when
    that module (or its list) is not available. A phrase listed under several flags must give the most
    urgent of their levels."""
    try:
        from models.triage import complaints
    except ImportError as exc:
        return [], f"models.triage.complaints is not available ({exc}): red-flag complaints were not checked"
    flags = getattr(complaints, "RED_FLAGS", None)
    if not flags:
        return [], "models.triage.complaints has no RED_FLAGS: red-flag complaints were not checked"
    groups: Any = getattr(complaints, "SYNONYM_GROUPS", None)
    if groups is None:
        terms = __import__("models.triage.complaint_terms", fromlist=["SYNONYM_GROUPS"])
        groups = getattr(terms, "SYNONYM_GROUPS", ())
    upper = {str(p).lower() for p in getattr(complaints, "CASE_SENSITIVE", ())}
    found: dict[str, tuple[str, int]] = {}
    for key, flag in flags.items():
        phrases = [
            p.upper() if p.lower() in upper else p for _, group_flag, ps in groups if group_flag == key for p in ps
        ] or [flag.canonical_text]
        for text in (str(p).strip() for p in phrases if p):
            level = int(flag.floor_level)
            if text not in found or level < found[text][1]:
                found[text] = (str(flag.id), level)
    return [(fid, text, level) for text, (fid, level) in found.items()], None
