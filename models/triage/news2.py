"""NEWS2, the National Early Warning Score 2 (Royal College of Physicians, 2017), and Vigil's safety floor.

NEWS2 scores seven physiological parameters from 0 to 3 and adds them up. The cut points below are the
RCP 2017 chart written as inclusive upper bounds ("value <= bound"), so a non-integer measurement (a
temperature of 35.05 degC, a mean heart rate of 90.5/min) falls into exactly one band:

================================  ===================================================================
parameter (canonical field)       points
================================  ===================================================================
``resp_rate`` (breaths/min)       <=8: 3, <=11: 1, <=20: 0, <=24: 2, above: 3
``spo2`` scale 1 (%)              <=91: 3, <=93: 2, <=95: 1, above: 0
``spo2`` scale 2 (%)              <=83: 3, <=85: 2, <=87: 1, <=92: 0; above 92 on air: 0;
                                  above 92 on oxygen: <=94: 1, <=96: 2, above: 3
``on_supplemental_oxygen``        True: 2, otherwise 0
``sbp`` (mmHg)                    <=90: 3, <=100: 2, <=110: 1, <=219: 0, above: 3
``heart_rate`` (beats/min)        <=40: 3, <=50: 1, <=90: 0, <=110: 1, <=130: 2, above: 3
``consciousness`` (ACVPU)         'A': 0; 'C' (new confusion), 'V', 'P', 'U': 3
``temperature_c`` (degC)          <=35.0: 3, <=36.0: 1, <=38.0: 0, <=39.0: 1, above: 2
================================  ===================================================================

SpO2 scale 2 is used only where ``spo2_scale_2`` is True (a clinician has confirmed hypercapnic
respiratory failure); missing or False means scale 1. ``spo2_scale_2`` selects a scale, it is not a
NEWS2 parameter, so its absence never makes a score partial.

Clinical risk (RCP 2017, chart 4): aggregate 0-4 is **low** (ward-based response; 0 needs only routine
12-hourly monitoring); a single parameter scoring 3 with an aggregate of at most 4 is **low-medium**
(urgent ward-based response); 5-6 is **medium** (key threshold for urgent response); 7 or more is
**high** (urgent or emergency response).

Missing values
    A missing parameter (``None`` or ``NaN``) scores 0, is listed in ``missing`` and makes the result
    ``partial``: a partial score is a *lower bound* on the true NEWS2, never an estimate. A missing
    ``on_supplemental_oxygen`` is scored as air (and is still listed as missing). Nothing is imputed.

Safety floor (Vigil's mapping, not the RCP's)
    The RCP defines NEWS2 responses for ward escalation; it defines no ED triage level. Vigil maps each
    NEWS2 band to the *least urgent* acuity level (1 = most urgent ... 5 = least, see
    :mod:`models.labels`) that a recommendation may carry: high -> 1, medium -> 2, low-medium -> 3,
    low -> 5 (no floor). A model recommendation less urgent than the floor is raised to it
    (:func:`apply_floor`), so Vigil never recommends less urgency than NEWS2 demands. This mapping is a
    Vigil design decision and is reported in every model card. It is one rule of the combined safety floor
    (:mod:`models.triage.safety_floor`: ACVPU, red-flag complaints, paediatric physiology), applied from 16 years:
    under 16 the adult NEWS2 is scored and reported but not applied as a floor.

The scores are computed as given: this module does not re-check plausibility ranges (that is
:func:`models.triage.record.validate_record`'s job at the edge) nor fill ACVPU from GCS (done there too).
NEWS2 is not validated for patients under 16 or in pregnancy (RCP 2017); callers decide applicability.
The chart is scored in one place, :func:`score_arrays` (numpy, vectorised): :func:`news2` calls it for one
record and :func:`models.triage.news2_arrays.news2_arrays` for many, so the two cannot disagree.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from models.errors import InputValidationError
from models.labels import ACUITY_LEVELS
from models.triage.columns import is_missing
from models.triage.record import CONSCIOUSNESS_LEVELS, NUMERIC_BY_NAME

#: The seven NEWS2 parameters, by canonical field name, in the order of the RCP chart.
PARAMETERS: Final[tuple[str, ...]] = (
    "resp_rate",
    "spo2",
    "on_supplemental_oxygen",
    "sbp",
    "heart_rate",
    "consciousness",
    "temperature_c",
)

#: Clinical risk bands in ``band_code`` order (0 low, 1 low-medium, 2 medium, 3 high).
BANDS: Final[tuple[str, ...]] = ("low", "low-medium", "medium", "high")

#: RCP 2017 clinical response by band, for a non-zero aggregate (see :data:`RESPONSE_SCORE_ZERO`).
RESPONSES: Final[dict[str, str]] = {
    "low": "ward-based response: assessment by a registered nurse",
    "low-medium": "urgent ward-based response",
    "medium": "key threshold for urgent response",
    "high": "urgent or emergency response",
}

#: RCP 2017 response for an aggregate score of 0 (band "low").
RESPONSE_SCORE_ZERO: Final[str] = "ward-based response: minimum 12-hourly monitoring"

#: Vigil's safety floor: the least urgent acuity level (1 most urgent ... 5 least) allowed per band.
FLOOR: Final[dict[str, int]] = {"high": 1, "medium": 2, "low-medium": 3, "low": 5}

#: Aggregate thresholds of the medium and high bands (RCP 2017).
MEDIUM_MIN_SCORE: Final[int] = 5
HIGH_MIN_SCORE: Final[int] = 7

_INF = math.inf
#: A points table of the chart: (inclusive upper bound, points) pairs; the first bound a value does not exceed applies.
PointsTable = tuple[tuple[float, int], ...]
RESP_RATE_TABLE: Final[PointsTable] = ((8, 3), (11, 1), (20, 0), (24, 2), (_INF, 3))
SPO2_SCALE_1_TABLE: Final[PointsTable] = ((91, 3), (93, 2), (95, 1), (_INF, 0))
SPO2_SCALE_2_AIR_TABLE: Final[PointsTable] = ((83, 3), (85, 2), (87, 1), (_INF, 0))
SPO2_SCALE_2_OXYGEN_TABLE: Final[PointsTable] = ((83, 3), (85, 2), (87, 1), (92, 0), (94, 1), (96, 2), (_INF, 3))
SBP_TABLE: Final[PointsTable] = ((90, 3), (100, 2), (110, 1), (219, 0), (_INF, 3))
HEART_RATE_TABLE: Final[PointsTable] = ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2), (_INF, 3))
TEMPERATURE_TABLE: Final[PointsTable] = ((35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1), (_INF, 2))
#: Points for supplemental oxygen, per ACVPU level, and of a single parameter that makes a red flag.
OXYGEN_POINTS: Final[int] = 2
ACVPU_POINTS: Final[dict[str, int]] = {"A": 0, "C": 3, "V": 3, "P": 3, "U": 3}
RED_FLAG_POINTS: Final[int] = 3
#: :data:`FLOOR` by band code (the index into :data:`BANDS`).
_FLOOR_BY_CODE: Final = np.array([FLOOR[band] for band in BANDS], dtype=np.int64)
#: The parameters measured as numbers (the others are the oxygen flag and ACVPU).
_VITALS: Final[tuple[str, ...]] = ("resp_rate", "spo2", "sbp", "heart_rate", "temperature_c")


@dataclass(frozen=True)
class News2Result:
    """A NEWS2 score with its breakdown, clinical risk band and Vigil's acuity floor.

    Attributes
    ----------
    score : int
        Aggregate NEWS2 (0-20); a lower bound when ``partial``.
    components : dict of str to int
        Points per parameter, keyed by the canonical field names of :data:`PARAMETERS`.
    band : str
        One of :data:`BANDS`.
    response : str
        The RCP 2017 clinical response for this score.
    red_flag : bool
        Whether any single parameter scored 3.
    missing : tuple of str
        Parameters that were missing (scored 0), in :data:`PARAMETERS` order.
    partial : bool
        Whether any parameter was missing.
    minimum_acuity : int
        Vigil's safety floor for ``band`` (see :data:`FLOOR`).
    """

    score: int
    components: dict[str, int]
    band: str
    response: str
    red_flag: bool
    missing: tuple[str, ...]
    partial: bool
    minimum_acuity: int


@functools.cache
def _table_arrays(table: PointsTable) -> tuple[np.ndarray, np.ndarray]:
    return np.array([bound for bound, _ in table]), np.array([p for _, p in table], dtype=np.int64)


def points_array(table: PointsTable, values: np.ndarray) -> np.ndarray:
    """The chart's points for each value (``NaN``, missing, scores 0)."""
    bounds, points = _table_arrays(table)
    index = np.searchsorted(bounds, np.nan_to_num(values, nan=0.0), side="left")  # first bound >= value
    return np.where(np.isnan(values), 0, points[np.minimum(index, len(table) - 1)])


def score_arrays(
    resp_rate: np.ndarray,
    spo2: np.ndarray,
    on_oxygen: np.ndarray,
    sbp: np.ndarray,
    heart_rate: np.ndarray,
    acvpu_points: np.ndarray,
    acvpu_missing: np.ndarray,
    temperature_c: np.ndarray,
    spo2_scale_2: np.ndarray,
) -> dict[str, np.ndarray]:
    """The one NEWS2 scoring, of 1-D arrays of one length (``NaN`` missing; ``on_oxygen`` 1.0, 0.0 or ``NaN``;
    ``spo2_scale_2`` bool; ``acvpu_points`` already scored, ``acvpu_missing`` where it was not given). Used by
    :func:`news2` (one record) and :func:`models.triage.news2_arrays.news2_arrays` (many).

    Returns
    -------
    dict of str to numpy.ndarray
        ``score`` (int64), ``red_flag`` (bool), ``n_missing`` (int64), ``band_code`` (int64, an index into
        :data:`BANDS`), ``minimum_acuity`` (int64, :data:`FLOOR` of the band), and per parameter, in
        :data:`PARAMETERS` order, ``points`` (int64 [7, N]) and ``missing`` (bool [7, N]).
    """
    on_o2 = on_oxygen == 1.0
    spo2_points = np.where(
        spo2_scale_2,
        np.where(on_o2, points_array(SPO2_SCALE_2_OXYGEN_TABLE, spo2), points_array(SPO2_SCALE_2_AIR_TABLE, spo2)),
        points_array(SPO2_SCALE_1_TABLE, spo2),
    )
    components = {
        "resp_rate": points_array(RESP_RATE_TABLE, resp_rate),
        "spo2": spo2_points,
        "on_supplemental_oxygen": np.where(on_o2, OXYGEN_POINTS, 0),
        "sbp": points_array(SBP_TABLE, sbp),
        "heart_rate": points_array(HEART_RATE_TABLE, heart_rate),
        "consciousness": np.asarray(acvpu_points, dtype=np.int64),
        "temperature_c": points_array(TEMPERATURE_TABLE, temperature_c),
    }
    points = np.stack([components[name] for name in PARAMETERS]).astype(np.int64)
    given = {"on_supplemental_oxygen": on_oxygen, "resp_rate": resp_rate, "spo2": spo2, "sbp": sbp}
    given |= {"heart_rate": heart_rate, "temperature_c": temperature_c}
    missing = np.stack(
        [
            np.asarray(acvpu_missing, dtype=bool) if name == "consciousness" else np.isnan(given[name])
            for name in PARAMETERS
        ]
    )
    score = np.sum(points, axis=0, dtype=np.int64)
    red_flag = np.any(points == RED_FLAG_POINTS, axis=0)
    band_code = np.select([score >= HIGH_MIN_SCORE, score >= MEDIUM_MIN_SCORE, red_flag], [3, 2, 1], default=0)
    band_code = band_code.astype(np.int64)
    return {
        "score": score,
        "red_flag": red_flag,
        "n_missing": missing.sum(axis=0, dtype=np.int64),
        "band_code": band_code,
        "minimum_acuity": _FLOOR_BY_CODE[band_code],
        "points": points,
        "missing": missing,
    }


def _number(field: str, value: Any) -> float | None:
    if is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        unit = NUMERIC_BY_NAME[field].unit
        raise InputValidationError(field, f"'{field}' must be a number in {unit}; got a {type(value).__name__}")
    return float(value)


def _flag(field: str, value: Any) -> bool | None:
    if is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Real) and value in (0, 1):
        return bool(value)
    raise InputValidationError(field, f"'{field}' must be true or false; got {str(value)[:16]!r}")


def acvpu_level(value: Any) -> str | None:
    """An ACVPU level as its canonical letter (None when missing), or an error naming ``consciousness``."""
    if is_missing(value):
        return None
    text = str(value).strip().upper()
    if text not in ACVPU_POINTS:
        raise InputValidationError(
            "consciousness",
            f"'consciousness' must be one of {list(CONSCIOUSNESS_LEVELS)} (ACVPU); got {str(value)[:32]!r}",
        )
    return text


def minimum_acuity(band: str) -> int:
    """Return Vigil's safety floor for a NEWS2 band.

    Parameters
    ----------
    band : str
        One of :data:`BANDS`.

    Returns
    -------
    int
        The least urgent acuity level (1 most urgent ... 5 least) a recommendation may have; 5 means no
        floor.

    Raises
    ------
    InputValidationError
        If ``band`` is not one of :data:`BANDS`.
    """
    if band not in FLOOR:
        raise InputValidationError("band", f"'band' must be one of {list(BANDS)}; got {str(band)[:32]!r}")
    return FLOOR[band]


def _check_level(field: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value not in ACUITY_LEVELS:
        raise InputValidationError(field, f"'{field}' must be an acuity level in {list(ACUITY_LEVELS)}; got {value!r}")
    return int(value)


def apply_floor(model_level: int, floor: int) -> tuple[int, bool]:
    """Make a recommendation at least as urgent as the NEWS2 floor.

    Parameters
    ----------
    model_level : int
        The model's recommended acuity level (1-5).
    floor : int
        The least urgent level allowed, from :func:`minimum_acuity`.

    Returns
    -------
    level : int
        ``min(model_level, floor)``.
    raised : bool
        Whether the floor made the recommendation more urgent (``model_level > floor``).

    Raises
    ------
    InputValidationError
        If either argument is not an integer acuity level in 1-5.
    """
    model = _check_level("model_level", model_level)
    limit = _check_level("floor", floor)
    return min(model, limit), model > limit


def news2(record: Mapping[str, Any]) -> News2Result:
    """Score one triage record with NEWS2.

    Parameters
    ----------
    record : Mapping
        Canonical field names (see :mod:`models.triage.record`) to values; absent keys and ``None``/``NaN``
        are missing, keys other than the NEWS2 inputs are ignored.

    Returns
    -------
    News2Result
        Score, per-parameter points, band, RCP response, red flag, missing parameters and floor.

    Raises
    ------
    InputValidationError
        If ``consciousness`` is not an ACVPU level, a numeric field is not a number, or a boolean field is
        not true/false; the error names the field.
    """
    scale_2 = _flag("spo2_scale_2", record.get("spo2_scale_2")) is True
    oxygen = _flag("on_supplemental_oxygen", record.get("on_supplemental_oxygen"))
    level = acvpu_level(record.get("consciousness"))
    vitals = {name: _number(name, record.get(name)) for name in _VITALS}

    def one(value: float | None) -> np.ndarray:
        return np.array([math.nan if value is None else value])

    news = score_arrays(
        one(vitals["resp_rate"]),
        one(vitals["spo2"]),
        one(None if oxygen is None else float(oxygen)),
        one(vitals["sbp"]),
        one(vitals["heart_rate"]),
        np.array([0 if level is None else ACVPU_POINTS[level]]),
        np.array([level is None]),
        one(vitals["temperature_c"]),
        np.array([scale_2]),
    )
    return result_at(news, 0)


def result_at(news: Mapping[str, np.ndarray], i: int) -> News2Result:
    """Record ``i`` of a :func:`score_arrays` (or :func:`models.triage.news2_arrays.news2_arrays`) result, with its
    breakdown: what a response reports for one patient, read from the batch score the safety floor used."""
    components = {name: int(news["points"][k, i]) for k, name in enumerate(PARAMETERS)}
    missing = tuple(name for k, name in enumerate(PARAMETERS) if news["missing"][k, i])
    score, band = int(news["score"][i]), BANDS[int(news["band_code"][i])]
    return News2Result(
        score=score,
        components=components,
        band=band,
        response=RESPONSE_SCORE_ZERO if score == 0 else RESPONSES[band],
        red_flag=bool(news["red_flag"][i]),
        missing=missing,
        partial=bool(missing),
        minimum_acuity=FLOOR[band],
    )
