"""NEWS2 for many records at once: arrays in, checked, and scored by :func:`models.triage.news2.score_arrays`.

There is one NEWS2 scoring (:func:`models.triage.news2.score_arrays`, vectorised); :func:`news2_arrays` checks
arrays of vital signs and scores them with it, as :func:`models.triage.news2.news2` does for one record, so the two
agree element by element (same points tables, same missing-value rules, same bands and floor).
:func:`apply_floor_arrays` is :func:`models.triage.news2.apply_floor` on arrays. :func:`news2_columns` and
:func:`news2_frame` score validated records given as :mod:`models.triage.columns` columns or a pandas frame (pandas
is imported only by :func:`news2_frame`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from models.errors import InputValidationError
from models.labels import ACUITY_LEVELS
from models.triage.columns import as_columns, float_column, is_missing, n_rows, object_column
from models.triage.news2 import ACVPU_POINTS, BANDS, acvpu_level, score_arrays

#: The keys of :func:`news2_arrays` that hold one row per NEWS2 parameter (not a column of :func:`news2_frame`).
PER_PARAMETER: Final = ("points", "missing")

if TYPE_CHECKING:  # pandas is only needed by news2_frame
    import pandas as pd


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
    """Score many records with NEWS2 at once; agrees exactly with :func:`models.triage.news2.news2` element by element.

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
        :data:`models.triage.news2.BANDS`) and ``minimum_acuity`` (int64), each of the input shape; and
        :data:`PER_PARAMETER`: ``points`` (int64) and ``missing`` (bool) of shape ``(7, *input shape)``, per
        parameter in :data:`models.triage.news2.PARAMETERS` order (read one record with
        :func:`models.triage.news2.result_at`).

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
        level = acvpu_level(value)
        if level is None:
            acvpu_missing.flat[i] = True
        else:
            acvpu_points.flat[i] = ACVPU_POINTS[level]

    news = score_arrays(
        rr.ravel(),
        sat.ravel(),
        oxygen.ravel(),
        systolic.ravel(),
        pulse.ravel(),
        acvpu_points.ravel(),
        acvpu_missing.ravel(),
        temp.ravel(),
        scale_2.ravel(),
    )
    return {key: value.reshape(value.shape[:-1] + shape) for key, value in news.items()}


def apply_floor_arrays(model_level: Any, floor: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`models.triage.news2.apply_floor`.

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
        Canonical columns (as returned by :func:`models.triage.record_frame.validate_frame`); an absent NEWS2
        column is treated as missing for every row.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``frame``, with the columns of :func:`news2_arrays` plus ``band`` (str) and
        ``partial`` (bool).
    """
    import pandas as pd

    result = news2_columns(as_columns(frame))
    out = pd.DataFrame({k: v for k, v in result.items() if k not in PER_PARAMETER}, index=frame.index)
    out["band"] = np.array(BANDS, dtype=object)[result["band_code"]]
    out["partial"] = result["n_missing"] > 0
    return out
