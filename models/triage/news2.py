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
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from models.errors import InputValidationError
from models.labels import ACUITY_LEVELS
from models.triage.columns import as_columns, float_column, is_missing, n_rows, object_column
from models.triage.record import CONSCIOUSNESS_LEVELS, NUMERIC_BY_NAME

if TYPE_CHECKING:  # pandas is only needed by news2_frame
    import pandas as pd

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
# Each table lists (inclusive upper bound, points); the first bound a value does not exceed applies.
_Table = tuple[tuple[float, int], ...]
_RESP_RATE: Final[_Table] = ((8, 3), (11, 1), (20, 0), (24, 2), (_INF, 3))
_SPO2_SCALE_1: Final[_Table] = ((91, 3), (93, 2), (95, 1), (_INF, 0))
_SPO2_SCALE_2_AIR: Final[_Table] = ((83, 3), (85, 2), (87, 1), (_INF, 0))
_SPO2_SCALE_2_OXYGEN: Final[_Table] = ((83, 3), (85, 2), (87, 1), (92, 0), (94, 1), (96, 2), (_INF, 3))
_SBP: Final[_Table] = ((90, 3), (100, 2), (110, 1), (219, 0), (_INF, 3))
_HEART_RATE: Final[_Table] = ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2), (_INF, 3))
_TEMPERATURE: Final[_Table] = ((35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1), (_INF, 2))
_OXYGEN_POINTS: Final[int] = 2
_ACVPU_POINTS: Final[dict[str, int]] = {"A": 0, "C": 3, "V": 3, "P": 3, "U": 3}
_RED: Final[int] = 3


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


def _points(table: _Table, value: float) -> int:
    for bound, points in table:
        if value <= bound:
            return points
    raise AssertionError("unreachable: every table ends with an infinite bound")


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


def _acvpu(value: Any) -> str | None:
    if is_missing(value):
        return None
    text = str(value).strip().upper()
    if text not in _ACVPU_POINTS:
        raise InputValidationError(
            "consciousness",
            f"'consciousness' must be one of {list(CONSCIOUSNESS_LEVELS)} (ACVPU); got {str(value)[:32]!r}",
        )
    return text


def _band(score: int, red_flag: bool) -> str:
    if score >= HIGH_MIN_SCORE:
        return "high"
    if score >= MEDIUM_MIN_SCORE:
        return "medium"
    return "low-medium" if red_flag else "low"


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
    tables: dict[str, _Table] = {
        "resp_rate": _RESP_RATE,
        "spo2": (_SPO2_SCALE_2_OXYGEN if oxygen else _SPO2_SCALE_2_AIR) if scale_2 else _SPO2_SCALE_1,
        "sbp": _SBP,
        "heart_rate": _HEART_RATE,
        "temperature_c": _TEMPERATURE,
    }
    components: dict[str, int] = {}
    missing: list[str] = []
    for name in PARAMETERS:
        if name == "on_supplemental_oxygen":
            components[name] = _OXYGEN_POINTS if oxygen else 0
            present = oxygen is not None
        elif name == "consciousness":
            level = _acvpu(record.get(name))
            components[name] = 0 if level is None else _ACVPU_POINTS[level]
            present = level is not None
        else:
            value = _number(name, record.get(name))
            components[name] = 0 if value is None else _points(tables[name], value)
            present = value is not None
        if not present:
            missing.append(name)
    score = sum(components.values())
    red_flag = any(points == _RED for points in components.values())
    band = _band(score, red_flag)
    return News2Result(
        score=score,
        components=components,
        band=band,
        response=RESPONSE_SCORE_ZERO if score == 0 else RESPONSES[band],
        red_flag=red_flag,
        missing=tuple(missing),
        partial=bool(missing),
        minimum_acuity=FLOOR[band],
    )


def _float_array(field: str, values: Any, shape: tuple[int, ...] | None, *, boolean: bool) -> np.ndarray:
    raw = np.asarray(values)
    expected = "1.0 (true), 0.0 (false) or NaN (missing)" if boolean else "numbers (NaN for missing)"
    if raw.dtype == object:
        items: list[float] = []
        for value in raw.ravel():
            is_bool = isinstance(value, (bool, np.bool_))
            if is_missing(value):
                items.append(math.nan)
            elif (is_bool and boolean) or (isinstance(value, numbers.Real) and not is_bool):
                items.append(float(value))
            else:
                raise InputValidationError(field, f"'{field}' must hold {expected}; got a {type(value).__name__}")
        out = np.array(items, dtype=float).reshape(raw.shape)
    elif raw.dtype.kind in ("biuf" if boolean else "iuf"):
        out = raw.astype(float)
    else:
        raise InputValidationError(field, f"'{field}' must hold {expected}; got dtype {raw.dtype}")
    if shape is not None and out.shape != shape:
        raise InputValidationError(field, f"'{field}' must have shape {shape}; got {out.shape}")
    if boolean and not np.all(np.isnan(out) | (out == 0) | (out == 1)):
        raise InputValidationError(field, f"'{field}' must hold {expected}")
    return out


def _points_array(table: _Table, values: np.ndarray) -> np.ndarray:
    bounds = np.array([bound for bound, _ in table])
    points = np.array([p for _, p in table], dtype=np.int64)
    index = np.searchsorted(bounds, np.nan_to_num(values, nan=0.0), side="left")  # first bound >= value
    return np.where(np.isnan(values), 0, points[np.minimum(index, len(table) - 1)])


def news2_arrays(
    resp_rate: Any,
    spo2: Any,
    on_oxygen: Any,
    sbp: Any,
    heart_rate: Any,
    consciousness: Any,
    temperature_c: Any,
    spo2_scale_2: Any = None,
) -> dict[str, np.ndarray]:
    """Score many records with NEWS2 at once; agrees exactly with :func:`news2` element by element.

    Parameters
    ----------
    resp_rate, spo2, sbp, heart_rate, temperature_c : array_like of float
        Canonical units (see module docstring); ``NaN`` is missing. All arrays share one shape.
    on_oxygen : array_like of float
        1.0 on supplemental oxygen, 0.0 on air, ``NaN`` missing (scored as air, counted missing).
    consciousness : array_like of object
        ACVPU strings ('A', 'C', 'V', 'P', 'U'); ``None``/``NaN`` is missing.
    spo2_scale_2 : array_like of float, optional
        1.0 where SpO2 scale 2 applies; 0.0, ``NaN`` or ``None`` (the default, for every record) mean
        scale 1.

    Returns
    -------
    dict of str to numpy.ndarray
        ``score`` (int64), ``red_flag`` (bool), ``n_missing`` (int64), ``band_code`` (int64, index into
        :data:`BANDS`) and ``minimum_acuity`` (int64), each of the input shape.

    Raises
    ------
    InputValidationError
        Naming the field, for a non-numeric array, a shape mismatch, a boolean array holding anything but
        0, 1 or NaN, or an unknown consciousness value.
    """
    rr = _float_array("resp_rate", resp_rate, None, boolean=False)
    shape = rr.shape
    sat = _float_array("spo2", spo2, shape, boolean=False)
    oxygen = _float_array("on_supplemental_oxygen", on_oxygen, shape, boolean=True)
    systolic = _float_array("sbp", sbp, shape, boolean=False)
    pulse = _float_array("heart_rate", heart_rate, shape, boolean=False)
    temp = _float_array("temperature_c", temperature_c, shape, boolean=False)
    if spo2_scale_2 is None:
        scale_2 = np.zeros(shape, dtype=bool)
    else:
        scale_2 = _float_array("spo2_scale_2", spo2_scale_2, shape, boolean=True) == 1.0

    levels = np.asarray(consciousness, dtype=object)
    if levels.shape != shape:
        raise InputValidationError("consciousness", f"'consciousness' must have shape {shape}; got {levels.shape}")
    acvpu_points = np.zeros(shape, dtype=np.int64)
    acvpu_missing = np.zeros(shape, dtype=bool)
    for i, value in enumerate(levels.ravel()):
        level = _acvpu(value)
        if level is None:
            acvpu_missing.flat[i] = True
        else:
            acvpu_points.flat[i] = _ACVPU_POINTS[level]

    on_o2 = oxygen == 1.0
    spo2_points = np.where(
        scale_2,
        np.where(on_o2, _points_array(_SPO2_SCALE_2_OXYGEN, sat), _points_array(_SPO2_SCALE_2_AIR, sat)),
        _points_array(_SPO2_SCALE_1, sat),
    )
    components = (
        _points_array(_RESP_RATE, rr),
        spo2_points,
        np.where(on_o2, _OXYGEN_POINTS, 0),
        _points_array(_SBP, systolic),
        _points_array(_HEART_RATE, pulse),
        acvpu_points,
        _points_array(_TEMPERATURE, temp),
    )
    score = np.sum(components, axis=0, dtype=np.int64).reshape(shape)
    red_flag = np.any(np.stack(components) == _RED, axis=0).reshape(shape)
    n_missing = sum(
        np.isnan(a).astype(np.int64) for a in (rr, sat, oxygen, systolic, pulse, temp)
    ) + acvpu_missing.astype(np.int64)
    band_code = np.select([score >= HIGH_MIN_SCORE, score >= MEDIUM_MIN_SCORE, red_flag], [3, 2, 1], default=0).astype(
        np.int64
    )
    floor_by_code = np.array([FLOOR[band] for band in BANDS], dtype=np.int64)
    return {
        "score": score,
        "red_flag": red_flag,
        "n_missing": np.asarray(n_missing, dtype=np.int64).reshape(shape),
        "band_code": band_code,
        "minimum_acuity": floor_by_code[band_code],
    }


def apply_floor_arrays(model_level: Any, floor: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`apply_floor`.

    Parameters
    ----------
    model_level, floor : array_like of int
        Acuity levels in 1-5, of one shape.

    Returns
    -------
    level : numpy.ndarray of int64
        ``np.minimum(model_level, floor)``.
    raised : numpy.ndarray of bool
        Where the floor made the recommendation more urgent.

    Raises
    ------
    InputValidationError
        If either array holds anything but levels 1-5, or the shapes differ.
    """
    arrays: dict[str, np.ndarray] = {}
    for field, values in (("model_level", model_level), ("floor", floor)):
        array = np.asarray(values)
        if array.dtype.kind not in "iu" or not np.isin(array, ACUITY_LEVELS).all():
            raise InputValidationError(field, f"'{field}' must hold integer acuity levels in {list(ACUITY_LEVELS)}")
        arrays[field] = array.astype(np.int64)
    model, limit = arrays["model_level"], arrays["floor"]
    if model.shape != limit.shape:
        raise InputValidationError("floor", f"'floor' must have the shape {model.shape} of 'model_level'")
    return np.minimum(model, limit), model > limit


def news2_columns(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`news2_arrays` of validated records given as :mod:`models.triage.columns` columns (absent = missing)."""
    cols = dict(columns)
    n = n_rows(cols)
    return news2_arrays(
        float_column(cols, "resp_rate", n),
        float_column(cols, "spo2", n),
        float_column(cols, "on_supplemental_oxygen", n),
        float_column(cols, "sbp", n),
        float_column(cols, "heart_rate", n),
        object_column(cols, "consciousness", n),
        float_column(cols, "temperature_c", n),
        float_column(cols, "spo2_scale_2", n),
    )


def news2_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Score every row of a frame of validated triage records.

    Parameters
    ----------
    frame : pandas.DataFrame
        Canonical columns (as returned by :func:`models.triage.record.validate_frame`); an absent NEWS2
        column is treated as missing for every row.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``frame``, with the columns of :func:`news2_arrays` plus ``band`` (str) and
        ``partial`` (bool).
    """
    import pandas as pd

    result = news2_columns(as_columns(frame))
    out = pd.DataFrame(result, index=frame.index)
    out["band"] = np.array(BANDS, dtype=object)[result["band_code"]]
    out["partial"] = result["n_missing"] > 0
    return out
