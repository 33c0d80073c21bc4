"""Vigil's safety floor: the least urgent acuity level a recommendation may carry, and why.

A recommendation is never less urgent than the floor (:meth:`models.triage.onnx.TriageOnnxModel.decide`
takes ``min(model level, floor)``). The floor is the most urgent of five rules, each from a published source
(full discussion and references in ``docs/clinical_safety.md``, section "Safety floor"):

``acvpu``               Consciousness at triage, any age. **U or P -> level 1**: every ED triage system puts an
                        unresponsive patient first (Manchester Triage System: "unresponsive" is an immediate,
                        red, discriminator). **V or C (new confusion) -> level 2**: Manchester's "altered
                        conscious level" (not fully alert) is very urgent (orange); NEWS2 scores each 3.
``red_flag_complaint``  A red flag found in the chief complaint by :func:`models.triage.complaints.read_complaint`
                        (cardiac arrest, stroke, anaphylaxis, sepsis ...): the flag's own floor level (1 or 2),
                        sources in :data:`models.triage.complaints.RED_FLAGS`.
``paediatric``          Under 16 only, **level 2** when a vital sign meets a NICE high-risk criterion for the
                        child's age (:data:`PAEDIATRIC_BANDS`; NICE NG51 *Sepsis: recognition, diagnosis and
                        early management*, 2016, tables 1-3, "high risk of severe illness or death"): they are
                        physiological thresholds by age band, so a well infant with a heart rate of 130/min
                        is not floored.
``adult_physiology``    16 and over (and age not recorded), **level 2** when a single vital sign meets a NICE NG51
                        adult high-risk criterion: respiratory rate >= 25/min, SpO2 < 92% on air, systolic BP
                        <= 90 mmHg, heart rate > 130/min. NEWS2 scores each 3 and its band would floor them at
                        level 3 only; a 25-year-old "ankle injury" with SpO2 70% was served level 3.
``news2``               16 and over (and age not recorded): the NEWS2 band's floor of :data:`models.triage.news2.FLOOR`
                        (high -> 1, medium -> 2, low-medium -> 3). The adult NEWS2 is **not** applied under 16
                        (RCP 2017: not validated in children; it would floor a well 6-month-old at level 2).

When several rules give the same level the source is the first in the order above; ``reasons`` lists every
rule that gives the applied level. No rule -> level 5 (no floor) and source ``none``.

The paediatric thresholds (breaths/min, beats/min, mmHg, %, degC; "at least" unless said otherwise):

==============  ========  ==============  ==========  ==========  ==========
age             RR        HR              SBP         SpO2 (air)  temperature
==============  ========  ==============  ==========  ==========  ==========
under 1 year    >= 60     >= 160 or < 60  -           < 90        < 36; >= 38 under 3 months
1-2 years       >= 50     >= 150 or < 60  -           < 90        < 36
3-4 years       >= 40     >= 140 or < 60  -           < 90        < 36
5 years         >= 29     >= 130 or < 60  -           < 90        < 36
6-7 years       >= 27     >= 120 or < 60  -           < 90        < 36
8-11 years      >= 25     >= 115 or < 60  -           < 90        < 36
12-15 years     >= 25     > 130           <= 90       < 92 [*]_   < 36
==============  ========  ==============  ==========  ==========  ==========

Any age under 16 on supplemental oxygen also gets level 2 (NG51: "increased oxygen requirement over baseline").

.. [*] NG51 table 3 says "new need for oxygen to maintain saturation above 92%"; Vigil reads SpO2 below 92% on
   air as that need.

NICE NG51 defines no level 1 criterion for children: the paediatric rule gives level 2 at most, and level 1
comes from ACVPU or a red-flag complaint. Ages are in years as recorded; a record coded "0 years" (as NHAMCS
codes every infant) counts as under 3 months for the fever criterion, which over-triages rather than misses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from models.triage.columns import Columns, as_columns, float_column, is_missing, n_rows, object_column
from models.triage.complaints import RED_FLAGS, read_complaint
from models.triage.news2 import BANDS
from models.triage.news2_arrays import news2_columns

#: Floor sources, in the order that breaks ties (the first source giving the applied level is named).
FLOOR_SOURCES: Final[tuple[str, ...]] = (
    "acvpu",
    "red_flag_complaint",
    "paediatric",
    "adult_physiology",
    "news2",
    "none",
)
NO_FLOOR: Final[int] = 5
#: ACVPU levels that set a floor (A sets none).
ACVPU_FLOOR: Final[dict[str, int]] = {"U": 1, "P": 1, "V": 2, "C": 2}
#: Below this age the adult NEWS2 is not applied and the paediatric rule is (RCP 2017).
PAEDIATRIC_MAX_AGE: Final[float] = 16.0
PAEDIATRIC_FLOOR: Final[int] = 2
#: NICE NG51 adult high-risk physiological criteria (16 and over): any one gives level 2.
ADULT_FLOOR: Final[int] = 2
ADULT_RR_AT_LEAST: Final[float] = 25.0
ADULT_SPO2_BELOW: Final[float] = 92.0  # on air
ADULT_SBP_AT_MOST: Final[float] = 90.0
ADULT_HR_ABOVE: Final[float] = 130.0
CHILD_TEMPERATURE_BELOW: Final[float] = 36.0
INFANT_FEVER_AT_LEAST: Final[float] = 38.0
INFANT_FEVER_MAX_AGE: Final[float] = 0.25  # under 3 months


@dataclass(frozen=True)
class PaediatricBand:
    """NICE NG51 high-risk physiological criteria of one age band (``min_age <= age < max_age``)."""

    label: str
    min_age: float
    max_age: float
    rr_at_least: float
    hr_at_least: float
    hr_strictly_above: bool  # True: "more than hr_at_least" (12-15 years); False: "hr_at_least or more"
    hr_below: float | None
    sbp_at_most: float | None
    spo2_below: float


PAEDIATRIC_BANDS: Final[tuple[PaediatricBand, ...]] = (
    PaediatricBand("under 1 year", 0.0, 1.0, 60, 160, False, 60, None, 90),
    PaediatricBand("1-2 years", 1.0, 3.0, 50, 150, False, 60, None, 90),
    PaediatricBand("3-4 years", 3.0, 5.0, 40, 140, False, 60, None, 90),
    PaediatricBand("5 years", 5.0, 6.0, 29, 130, False, 60, None, 90),
    PaediatricBand("6-7 years", 6.0, 8.0, 27, 120, False, 60, None, 90),
    PaediatricBand("8-11 years", 8.0, 12.0, 25, 115, False, 60, None, 90),
    PaediatricBand("12-15 years", 12.0, 16.0, 25, 130, True, None, 90, 92),
)


@dataclass(frozen=True)
class SafetyFloor:
    """The safety floor of a batch of records; arrays share the batch order.

    Attributes
    ----------
    level : numpy.ndarray of int64
        The least urgent level allowed (5: no floor).
    source : numpy.ndarray of object
        One of :data:`FLOOR_SOURCES` per record.
    reasons : list of tuple of str
        Per record, why (every rule giving the applied level); empty when there is no floor.
    red_flags : list of tuple of str
        Per record, the red-flag ids of the complaint (whether or not they set the applied level).
    news2_score : numpy.ndarray of int64
        NEWS2 aggregate (a lower bound where parameters are missing), whatever the age.
    news2_floor : numpy.ndarray of int64
        The NEWS2 band's floor where NEWS2 applies (16 and over, or age not recorded), else 5.
    news2 : dict of str to numpy.ndarray
        The whole NEWS2 score of :func:`models.triage.news2_arrays.news2_columns`, whatever the age, breakdown
        included (one record: :func:`models.triage.news2.result_at`).
    """

    level: np.ndarray
    source: np.ndarray
    reasons: list[tuple[str, ...]]
    red_flags: list[tuple[str, ...]]
    news2_score: np.ndarray
    news2_floor: np.ndarray
    news2: dict[str, np.ndarray]


def _acvpu_rule(columns: Columns, n: int) -> tuple[np.ndarray, list[list[str]]]:
    levels = np.full(n, NO_FLOOR, dtype=np.int64)
    reasons: list[list[str]] = [[] for _ in range(n)]
    for i, value in enumerate(object_column(columns, "consciousness", n)):
        if is_missing(value):
            continue
        code = str(value).strip().upper()
        if code in ACVPU_FLOOR:
            levels[i] = ACVPU_FLOOR[code]
            reasons[i].append(f"consciousness {code}")
    return levels, reasons


def _complaint_rule(columns: Columns, n: int) -> tuple[np.ndarray, list[list[str]], list[tuple[str, ...]]]:
    levels = np.full(n, NO_FLOOR, dtype=np.int64)
    reasons: list[list[str]] = [[] for _ in range(n)]
    flags: list[tuple[str, ...]] = [() for _ in range(n)]
    for i, text in enumerate(object_column(columns, "chief_complaint", n)):
        if not isinstance(text, str) or not text.strip():
            continue
        found = read_complaint(text).red_flags
        if found:
            flags[i] = found
            levels[i] = min(RED_FLAGS[f].floor_level for f in found)
            reasons[i] = [f"complaint: {RED_FLAGS[f].label}" for f in found if RED_FLAGS[f].floor_level == levels[i]]
    return levels, reasons, flags


def _fmt(value: float) -> str:
    return f"{value:g}"


def _vitals(columns: Columns, n: int) -> tuple[np.ndarray, ...]:
    """(RR, HR, SBP, SpO2, temperature, on oxygen) as float arrays (NaN where missing; oxygen as bool)."""
    return (
        *(float_column(columns, name, n) for name in ("resp_rate", "heart_rate", "sbp", "spo2", "temperature_c")),
        float_column(columns, "on_supplemental_oxygen", n) == 1.0,
    )


def _paediatric_rule(columns: Columns, n: int, child: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
    age = float_column(columns, "age_years", n)
    rr, hr, sbp, spo2, temp, oxygen = _vitals(columns, n)
    reasons: list[list[str]] = [[] for _ in range(n)]

    def note(mask: np.ndarray, text: str, values: np.ndarray | None = None) -> None:
        for i in np.flatnonzero(mask & child):
            reasons[i].append(text.format(_fmt(values[i])) if values is not None else text)

    with np.errstate(invalid="ignore"):  # NaN compares False: a missing value meets no criterion
        for band in PAEDIATRIC_BANDS:
            rows = (age >= band.min_age) & (age < band.max_age)
            tag = f"(NICE NG51 high risk, {band.label})"
            note(rows & (rr >= band.rr_at_least), f"respiratory rate {{}}/min >= {_fmt(band.rr_at_least)} {tag}", rr)
            fast = (hr > band.hr_at_least) if band.hr_strictly_above else (hr >= band.hr_at_least)
            sign = ">" if band.hr_strictly_above else ">="
            note(rows & fast, f"heart rate {{}}/min {sign} {_fmt(band.hr_at_least)} {tag}", hr)
            if band.hr_below is not None:
                note(rows & (hr < band.hr_below), f"heart rate {{}}/min < {_fmt(band.hr_below)} {tag}", hr)
            if band.sbp_at_most is not None:
                note(rows & (sbp <= band.sbp_at_most), f"systolic BP {{}} mmHg <= {_fmt(band.sbp_at_most)} {tag}", sbp)
            note(rows & (spo2 < band.spo2_below) & ~oxygen, f"SpO2 {{}}% on air < {_fmt(band.spo2_below)}% {tag}", spo2)
        note(
            temp < CHILD_TEMPERATURE_BELOW,
            f"temperature {{}} degC < {_fmt(CHILD_TEMPERATURE_BELOW)} (NICE NG51 high risk, under 16)",
            temp,
        )
        note(
            (age < INFANT_FEVER_MAX_AGE) & (temp >= INFANT_FEVER_AT_LEAST),
            f"temperature {{}} degC >= {_fmt(INFANT_FEVER_AT_LEAST)} under 3 months (NICE NG51 high risk)",
            temp,
        )
        note(oxygen, "on supplemental oxygen (NICE NG51 high risk, under 16)")
    levels = np.array([PAEDIATRIC_FLOOR if r else NO_FLOOR for r in reasons], dtype=np.int64).reshape(n)
    return levels, reasons


def _adult_rule(columns: Columns, n: int, adult: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
    """NICE NG51 adult high-risk criteria (section 1.4: "high risk of severe illness or death").

    Respiratory rate 25/min or more, SpO2 below 92% on air (NG51: a new need for oxygen to keep it above 92%),
    systolic BP 90 mmHg or less, heart rate above 130/min: each a single vital sign that NEWS2 scores 3 and would
    floor only at level 3, and each one of the danger thresholds the model must respond to.
    """
    rr, hr, sbp, spo2, _, oxygen = _vitals(columns, n)
    reasons: list[list[str]] = [[] for _ in range(n)]
    tag = "(NICE NG51 high risk, adult)"
    with np.errstate(invalid="ignore"):  # NaN compares False: a missing value meets no criterion
        criteria = (
            (rr >= ADULT_RR_AT_LEAST, f"respiratory rate {{}}/min >= {_fmt(ADULT_RR_AT_LEAST)} {tag}", rr),
            ((spo2 < ADULT_SPO2_BELOW) & ~oxygen, f"SpO2 {{}}% on air < {_fmt(ADULT_SPO2_BELOW)}% {tag}", spo2),
            (sbp <= ADULT_SBP_AT_MOST, f"systolic BP {{}} mmHg <= {_fmt(ADULT_SBP_AT_MOST)} {tag}", sbp),
            (hr > ADULT_HR_ABOVE, f"heart rate {{}}/min > {_fmt(ADULT_HR_ABOVE)} {tag}", hr),
        )
        for mask, text, values in criteria:
            for i in np.flatnonzero(mask & adult):
                reasons[i].append(text.format(_fmt(values[i])))
    levels = np.array([ADULT_FLOOR if r else NO_FLOOR for r in reasons], dtype=np.int64).reshape(n)
    return levels, reasons


def safety_floor(frame: Columns) -> SafetyFloor:
    """The safety floor of validated records (:mod:`models.triage.columns` columns or a DataFrame).

    Parameters
    ----------
    frame : Columns or pandas.DataFrame
        Canonical triage records (:func:`models.triage.record.validate_record`); absent fields are missing.

    Returns
    -------
    SafetyFloor
        Level, source and reasons per record, with the complaint's red flags and the NEWS2 score.
    """
    columns = as_columns(frame)
    n = n_rows(columns)
    age = float_column(columns, "age_years", n)
    child = np.nan_to_num(age, nan=math.inf) < PAEDIATRIC_MAX_AGE
    news = news2_columns(columns)
    news2_floor = np.where(child, NO_FLOOR, news["minimum_acuity"]).astype(np.int64)
    news_reasons = [
        [f"NEWS2 {int(news['score'][i])} ({BANDS[int(news['band_code'][i])]} risk)"]
        if news2_floor[i] < NO_FLOOR
        else []
        for i in range(n)
    ]
    acvpu, acvpu_reasons = _acvpu_rule(columns, n)
    complaint, complaint_reasons, flags = _complaint_rule(columns, n)
    paediatric, paediatric_reasons = _paediatric_rule(columns, n, child)
    adult, adult_reasons = _adult_rule(columns, n, ~child)
    rules = np.stack([acvpu, complaint, paediatric, adult, news2_floor]).reshape(5, n)
    reasons_by_rule = (acvpu_reasons, complaint_reasons, paediatric_reasons, adult_reasons, news_reasons)
    level = rules.min(axis=0) if n else np.zeros(0, dtype=np.int64)
    first = np.argmin(rules, axis=0) if n else np.zeros(0, dtype=np.int64)
    source = np.array(
        [FLOOR_SOURCES[k] if lv < NO_FLOOR else "none" for k, lv in zip(first, level, strict=True)], dtype=object
    )
    reasons = [
        tuple(
            r for k in range(len(reasons_by_rule)) if rules[k, i] == level[i] < NO_FLOOR for r in reasons_by_rule[k][i]
        )
        for i in range(n)
    ]
    return SafetyFloor(
        level=level.astype(np.int64),
        source=source,
        reasons=reasons,
        red_flags=flags,
        news2_score=news["score"],
        news2_floor=news2_floor,
        news2=news,
    )
