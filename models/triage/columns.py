"""Validated triage records as columns: the one input shape of the encoder, NEWS2 and the ONNX runtime.

A :data:`Columns` maps each canonical field to a numpy array (one value per record). Training passes a
pandas DataFrame (converted by :func:`as_columns`, cheaply: numeric columns keep their float dtype); serving
builds columns straight from validated record dicts (:func:`columns_from_records`), which costs microseconds
where a one-row DataFrame costs a millisecond. Both reach the same encoding code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from models.triage.record import RECORD_FIELDS

if TYPE_CHECKING:
    import pandas as pd

Columns: TypeAlias = dict[str, np.ndarray]

#: Below this many rows, element-wise Python beats pandas' vectorised conversion (its fixed cost dominates).
_SMALL = 256


def columns_from_records(records: Sequence[Mapping[str, Any]]) -> Columns:
    """Columns of validated record dicts (:func:`models.triage.record.validate_record` output)."""
    out: Columns = {}
    for name in RECORD_FIELDS:
        column = np.empty(len(records), dtype=object)
        column[:] = [r.get(name) for r in records]
        out[name] = column
    return out


def as_columns(data: pd.DataFrame | Mapping[str, np.ndarray]) -> Columns:
    """Columns of a DataFrame (numeric dtypes kept) or of a mapping of arrays (returned as a dict)."""
    if isinstance(data, Mapping):
        return {str(k): np.asarray(v) for k, v in data.items()}
    return {str(name): data[name].to_numpy() for name in data.columns}


def n_rows(columns: Columns) -> int:
    """Number of records in ``columns`` (0 when there is no column)."""
    return len(next(iter(columns.values()))) if columns else 0


def take(columns: Columns, index: slice | np.ndarray) -> Columns:
    """The records at ``index`` (a slice or integer positions)."""
    return {name: values[index] for name, values in columns.items()}


def _to_float(value: Any) -> float:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def float_column(columns: Columns, name: str, n: int) -> np.ndarray:
    """A column as float64, missing (None, NaN, absent column, non-numeric) as NaN."""
    values = columns.get(name)
    if values is None:
        return np.full(n, np.nan)
    if values.dtype.kind in "fiub":
        return values.astype(float)
    if len(values) <= _SMALL:
        return np.array([_to_float(v) for v in values], dtype=float)
    import pandas as pd

    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)


def object_column(columns: Columns, name: str, n: int) -> np.ndarray:
    """A column as an object array (``None`` for an absent column)."""
    values = columns.get(name)
    if values is None:
        return np.full(n, None, dtype=object)
    return values if values.dtype == object else values.astype(object)


def is_missing(value: Any) -> bool:
    """None, NaN, pandas' NA/NaT or an empty string (pandas is not imported to tell)."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return True
    if isinstance(value, str) and value.strip() == "":
        return True
    kind = type(value)
    return kind.__module__.startswith("pandas") and kind.__name__ in ("NAType", "NaTType")


def missing_mask(columns: Columns, name: str, n: int) -> np.ndarray:
    """Boolean array: the field is missing in each record."""
    values = columns.get(name)
    if values is None:
        return np.ones(n, dtype=bool)
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind in "iub":
        return np.zeros(n, dtype=bool)
    return np.array([is_missing(v) for v in values], dtype=bool)
