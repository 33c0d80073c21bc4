"""Validation of a frame of triage records, column by column, against the fields of :mod:`models.triage.record`.

:func:`validate_frame` applies the field declarations that :func:`models.triage.record.validate_record` applies to
one record (ranges, units, vocabularies, booleans, text limits, date-times, dbp below sbp, ACVPU filled from GCS) to
a pandas frame, for dataset adapters and the canonical CSV.

Two validation modes exist:

``strict``
    Any out-of-range or unknown value is an error naming the field, the row and the value. Used for the
    API and for a site's own CSV export.
``coerce``
    Out-of-range or unknown values become missing and are counted per field. Used only by adapters of
    public research datasets whose codebooks contain sentinel and implausible values (documented in
    their PROVENANCE.md); the counts are logged and reported with the data digest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from models.errors import InputValidationError, RecordValidationErrors
from models.triage.record import (
    BOOLEAN_FIELDS,
    CATEGORICAL_FIELDS,
    DATETIME_FIELDS,
    FALSE_TEXTS,
    NUMERIC_FIELDS,
    TEXT_FIELDS,
    TRUE_TEXTS,
    consciousness_from_gcs,
)

if TYPE_CHECKING:  # pandas is only needed when a frame is validated
    import pandas as pd

Mode = Literal["strict", "coerce"]


def _parse_numbers(raw: pd.Series, present: pd.Series) -> pd.Series:
    """The numbers of the present cells of ``raw``; NaN where a cell is not a number (booleans included).

    ``pandas.to_numeric`` decides which texts are numbers, but its parser can be one unit in the last place
    off (it reads ``"1.1222548805798613"`` as ``1.1222548805798611``), so text cells are re-read with Python's
    correctly rounded ``float``: a CSV then gives the value written in it, the value
    :func:`models.triage.record.validate_record` gives for the same text. Booleans are refused here as
    :func:`~models.triage.record.validate_record` refuses them.
    """
    import numpy as np
    import pandas as pd

    numbers = pd.to_numeric(raw.where(present), errors="coerce").astype(float)
    values = raw.to_numpy(dtype=object)
    exact = numbers.to_numpy(dtype=float, copy=True)
    parsed = ~np.isnan(exact)
    kinds = [type(v) for v in values]
    text = np.fromiter((k is str for k in kinds), dtype=bool, count=len(values)) & parsed
    boolean = np.fromiter((k is bool or k is np.bool_ for k in kinds), dtype=bool, count=len(values))
    exact[boolean] = np.nan
    if text.any():
        try:
            exact[text] = values[text].astype(float)
        except ValueError:  # a text pandas reads and Python does not: keep pandas' value for that one
            for i in np.flatnonzero(text):
                try:
                    exact[i] = float(values[i])
                except ValueError:
                    pass
    return pd.Series(exact, index=numbers.index)


def validate_frame(frame: pd.DataFrame, mode: Mode = "strict") -> tuple[pd.DataFrame, dict[str, int]]:
    """Validate a frame of triage records column by column.

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns named as :data:`models.triage.record.RECORD_FIELDS` (absent optional columns are added as
        missing); any other columns are kept untouched (labels, identifiers) and are not validated here.
    mode : {"strict", "coerce"}
        ``strict`` raises on the first problems (up to 50 collected), naming row (1-based) and field.
        ``coerce`` turns out-of-range or unknown values into missing and counts them per field.

    Returns
    -------
    frame : pandas.DataFrame
        A copy with canonical dtypes: float for numeric fields, canonical strings or missing for
        categoricals, pandas ``boolean`` for booleans.
    coerced : dict
        Per field, how many values were set to missing (always empty in strict mode).
    """
    import numpy as np
    import pandas as pd

    if mode not in ("strict", "coerce"):
        raise ValueError(f"mode must be 'strict' or 'coerce'; got {mode!r}")
    out = frame.copy()
    errors: list[InputValidationError] = []
    coerced: dict[str, int] = {}

    def fail(field: str, mask: pd.Series, describe: str) -> None:
        bad = np.flatnonzero(mask.to_numpy())
        if mode == "coerce":
            if len(bad):
                coerced[field] = coerced.get(field, 0) + len(bad)
            return
        for i in bad[: max(0, 50 - len(errors))]:
            value = frame[field].iloc[i] if field in frame else None
            errors.append(InputValidationError(field, describe.format(value=str(value)[:32]), row=int(i) + 1))

    for spec in NUMERIC_FIELDS:
        raw = out[spec.name] if spec.name in out else pd.Series(np.nan, index=out.index)
        as_text = raw.astype("string").str.strip()
        present = raw.notna() & (as_text != "")
        numbers = _parse_numbers(raw, present)
        not_number = present & numbers.isna()
        fail(spec.name, not_number, f"'{spec.name}' must be a number in {spec.unit}; got {{value!r}}")
        out_of_range = numbers.notna() & ~numbers.between(spec.low, spec.high)
        if spec.integer:
            out_of_range |= numbers.notna() & (numbers != np.round(numbers))
        fail(
            spec.name,
            out_of_range,
            f"'{spec.name}' must be in [{spec.low:g}, {spec.high:g}] {spec.unit}"
            + (" and whole" if spec.integer else "")
            + "; got {value}",
        )
        numbers[not_number | out_of_range] = np.nan
        if spec.required:
            fail(spec.name, numbers.isna() & ~(not_number | out_of_range), f"'{spec.name}' is required")
        out[spec.name] = numbers

    for cspec in CATEGORICAL_FIELDS:
        raw = out[cspec.name] if cspec.name in out else pd.Series(pd.NA, index=out.index, dtype="object")
        text = raw.astype("string").str.strip()
        lookup = {v.lower(): v for v in cspec.values}
        canon = text.str.lower().map(lookup)
        present = text.notna() & (text != "")
        unknown = present & canon.isna()
        fail(cspec.name, unknown, f"'{cspec.name}' must be one of {list(cspec.values)}; got {{value!r}}")
        if cspec.required:
            if cspec.name == "sex":
                canon = canon.fillna("unknown")
            else:
                fail(cspec.name, canon.isna() & ~unknown, f"'{cspec.name}' is required")
        out[cspec.name] = canon.astype("object").where(canon.notna(), None)

    for name in BOOLEAN_FIELDS:
        raw = out[name] if name in out else pd.Series(pd.NA, index=out.index, dtype="object")
        text = raw.astype("string").str.strip().str.lower()
        mapped = text.map(
            lambda t: True if t in TRUE_TEXTS else (False if t in FALSE_TEXTS else None), na_action="ignore"
        )
        present = text.notna() & (text != "")
        bad = present & mapped.isna()
        fail(name, bad, f"'{name}' must be true or false; got {{value!r}}")
        out[name] = mapped.astype("boolean")

    for name, limit in TEXT_FIELDS.items():
        raw = out[name] if name in out else pd.Series(pd.NA, index=out.index, dtype="object")
        text = raw.astype("string").str.strip()
        too_long = text.str.len().fillna(0) > limit
        fail(name, too_long, f"'{name}' must be at most {limit} characters")
        text = text.where(~too_long & (text != ""))
        out[name] = text.astype("object").where(text.notna(), None)

    for name in DATETIME_FIELDS:
        raw = out[name] if name in out else pd.Series(pd.NA, index=out.index, dtype="object")
        parsed = pd.to_datetime(raw, errors="coerce", format="ISO8601") if len(raw) else raw
        present = raw.notna() & (raw.astype("string").str.strip() != "")
        fail(name, present & parsed.isna(), f"'{name}' must be an ISO 8601 date-time; got {{value!r}}")
        out[name] = parsed

    # Diastolic at or above systolic is a transcription error: both become missing (coerce) or an error.
    inverted = out["sbp"].notna() & out["dbp"].notna() & (out["dbp"] >= out["sbp"])
    fail("dbp", inverted, "'dbp' must be below 'sbp'; got dbp {value}")
    if mode == "coerce":
        out.loc[inverted, ["sbp", "dbp"]] = np.nan

    # ACVPU from GCS where ACVPU is missing (never the reverse).
    fill = out["consciousness"].isna() & out["gcs"].notna()
    if fill.any():
        out.loc[fill, "consciousness"] = out.loc[fill, "gcs"].map(consciousness_from_gcs)

    if errors:
        raise RecordValidationErrors(errors)
    return out, coerced
