"""The frame an audit reads: its columns checked into per-row arrays, and the groups they define.

:func:`read_outcomes` and :func:`cluster_codes` check the columns an :class:`~fairness.audit_spec.AuditSpec` names
(:class:`models.errors.InputValidationError` naming the spec field and the column); :func:`partitions` codes the
rows of every audited attribute and intersection into groups, after the pre-declared pooling of small adjacent
groups (:attr:`AuditSpec.pool_adjacent <fairness.audit_spec.AuditSpec.pool_adjacent>`), and picks each one's
reference group; :func:`evidence` says whether a group is large enough to be judged. Used by
:func:`fairness.audit.audit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fairness._weighted import Outcomes
from fairness.audit_result import INSUFFICIENT, SUFFICIENT
from fairness.audit_spec import INTERSECTION_SEPARATOR, MISSING_GROUP, AuditSpec
from models.errors import InputValidationError
from models.labels import ACUITY_LEVELS

__all__ = ["OVERALL", "Partition", "cluster_codes", "evidence", "partitions", "read_outcomes"]

#: The partition of all rows as one group (the audit's ``overall`` row).
OVERALL = "overall"
_ALL = "all"


def _column(frame: pd.DataFrame, spec_field: str, column: str) -> pd.Series:
    if column not in frame.columns:
        raise InputValidationError(spec_field, f"{spec_field} column {column!r} is not in the frame")
    series = frame[column]
    if series.isna().any():
        raise InputValidationError(
            spec_field, f"{spec_field} column {column!r} has {int(series.isna().sum())} missing value(s)"
        )
    return series


def _numeric(series: pd.Series, spec_field: str) -> NDArray[np.float64]:
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        raise InputValidationError(
            spec_field, f"{spec_field} column {series.name!r} must be numeric; got {series.dtype}"
        )
    return series.to_numpy(dtype=np.float64)


def _binary(frame: pd.DataFrame, spec_field: str, column: str) -> NDArray[np.float64]:
    arr = _numeric(_column(frame, spec_field, column), spec_field)
    if not np.all((arr == 0) | (arr == 1)):
        raise InputValidationError(spec_field, f"{spec_field} column {column!r} must hold only 0 and 1")
    return arr


def read_outcomes(frame: pd.DataFrame, spec: AuditSpec) -> Outcomes:
    """The label, score, flag and triage-level columns ``spec`` names, checked (binary labels and flags, scores in
    [0, 1], levels 1-5, nothing missing); :class:`~models.errors.InputValidationError` names the field otherwise."""
    y = _binary(frame, "y_true", spec.y_true)
    score = flag = acuity_true = acuity_pred = None
    if spec.y_score is not None:
        score = _numeric(_column(frame, "y_score", spec.y_score), "y_score")
        if not np.all(np.isfinite(score)) or score.min() < 0.0 or score.max() > 1.0:
            raise InputValidationError(
                "y_score", f"y_score column {spec.y_score!r} must be in [0, 1]; got {score.min():g} to {score.max():g}"
            )
    if spec.y_flag is not None:
        flag = _binary(frame, "y_flag", spec.y_flag)
    if spec.acuity_true is not None and spec.acuity_pred is not None:
        levels = []
        for name, column in (("acuity_true", spec.acuity_true), ("acuity_pred", spec.acuity_pred)):
            arr = _numeric(_column(frame, name, column), name)
            if not np.all(np.isin(arr, ACUITY_LEVELS)):
                raise InputValidationError(name, f"{name} column {column!r} must hold triage levels 1-5")
            levels.append(arr.astype(np.int64))
        acuity_true, acuity_pred = levels
    return Outcomes(y=y, score=score, flag=flag, acuity_true=acuity_true, acuity_pred=acuity_pred)


def _labels(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        raise InputValidationError("sensitive_attributes", f"sensitive attribute column {column!r} is not in the frame")
    values = frame[column].reset_index(drop=True)  # positions, like every other column: the index is ignored
    return values.astype(object).where(values.notna(), MISSING_GROUP).astype(str).rename(column)


def cluster_codes(frame: pd.DataFrame, spec: AuditSpec) -> NDArray[np.intp] | None:
    """Each row's cluster (patient) as a code 0..k-1, or ``None`` when ``spec`` names no cluster column."""
    if spec.cluster is None:
        return None
    values = _column(frame, "cluster", spec.cluster).to_numpy()
    try:
        _, codes = np.unique(values, return_inverse=True)  # the coding evaluation.bootstrap uses
    except TypeError as err:
        raise InputValidationError("cluster", f"cluster column {spec.cluster!r} must hold comparable ids") from err
    return codes.reshape(-1)


@dataclass
class Partition:
    """The rows of one audited attribute or intersection coded into groups (``codes`` index ``labels``, sorted),
    its reference group's position, the pooling applied, and (filled by the audit's bootstrap) every group's metric
    on every resample."""

    name: str
    columns: tuple[str, ...]
    features: pd.Series | pd.DataFrame
    labels: list[str]
    codes: NDArray[np.intp]
    reference: int = 0
    boot: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    pooled: dict[str, str] = field(default_factory=dict)


def _pool(labels: pd.Series, order: tuple[str, ...], y: NDArray[np.float64], spec: AuditSpec) -> dict[str, str]:
    """The pre-declared pooling of adjacent groups (:attr:`AuditSpec.pool_adjacent`): original -> pooled label.

    Blocks of adjacent groups (in ``order``, those present in the data) start as single groups; while a block
    lacks evidence, the block with the fewest positives among those lacking it (ties: the earliest) is merged
    with its adjacent block with fewer positives (ties: the earlier). Only group sizes and positives decide.
    """
    values = labels.to_numpy(dtype=str)
    present = [g for g in order if np.any(values == g)]
    blocks = [[g] for g in present]
    n = {g: int(np.sum(values == g)) for g in present}
    pos = {g: int(y[values == g].sum()) for g in present}

    def short(block: list[str]) -> bool:
        return evidence(sum(n[g] for g in block), sum(pos[g] for g in block), spec)[0] == INSUFFICIENT

    def positives(block: list[str]) -> int:
        return sum(pos[g] for g in block)

    while len(blocks) > 1 and any(short(b) for b in blocks):
        k = min((i for i, b in enumerate(blocks) if short(b)), key=lambda i: (positives(blocks[i]), i))
        neighbours = [j for j in (k - 1, k + 1) if 0 <= j < len(blocks)]
        j = min(neighbours, key=lambda i: (positives(blocks[i]), i))
        lo, hi = min(j, k), max(j, k)
        blocks[lo : hi + 1] = [blocks[lo] + blocks[hi]]
    return {g: "+".join(b) for b in blocks if len(b) > 1 for g in b}


def partitions(frame: pd.DataFrame, spec: AuditSpec, y: NDArray[np.float64]) -> list[Partition]:
    """The :data:`OVERALL` partition (all rows, one group), then one per attribute and intersection of ``spec``, in
    its order, with small adjacent groups pooled as declared; the reference group is the requested one (after
    pooling) or the largest."""
    n = len(frame)
    out = [Partition(OVERALL, (), pd.Series([_ALL] * n, name=OVERALL), [_ALL], np.zeros(n, dtype=np.intp))]
    pooled: dict[str, dict[str, str]] = {}
    for column, order in spec.pool_adjacent.items():
        if column in spec.sensitive_attributes:
            pooled[column] = _pool(_labels(frame, column), tuple(order), y, spec)

    def labels_of(column: str) -> pd.Series:
        raw = _labels(frame, column)
        return raw.replace(pooled[column]) if pooled.get(column) else raw

    for name, columns in spec.partitions:
        labels = pd.concat([labels_of(c) for c in columns], axis=1)
        joined = labels.agg(INTERSECTION_SEPARATOR.join, axis=1) if len(columns) > 1 else labels.iloc[:, 0]
        uniques, codes = np.unique(joined.to_numpy(dtype=str), return_inverse=True)
        features = labels if len(columns) > 1 else labels.iloc[:, 0]
        part = Partition(name, columns, features, [str(u) for u in uniques], codes.reshape(-1))
        part.pooled = pooled.get(columns[0], {}) if len(columns) == 1 else {}
        requested = cast("str | None", spec.reference_groups.get(name))  # AuditSpec stores its values as str
        requested = part.pooled.get(requested, requested) if requested is not None else None
        if requested is None:
            part.reference = int(np.argmax(np.bincount(part.codes)))  # the largest; ties: first in sorted order
        elif requested in part.labels:
            part.reference = part.labels.index(requested)
        else:
            raise InputValidationError(
                f"reference_groups.{name}", f"reference_groups.{name}: group {requested!r} is not in the data"
            )
        out.append(part)
    return out


def evidence(n: int, positives: int, spec: AuditSpec) -> tuple[str, str]:
    """``(status, reason)`` of a group of ``n`` rows with ``positives`` positives: insufficient evidence below
    ``spec.min_group_n`` or ``spec.min_group_positives`` (the reason says which), else sufficient."""
    short = []
    if n < spec.min_group_n:
        short.append(f"n={n} is below min_group_n={spec.min_group_n}")
    if positives < spec.min_group_positives:
        short.append(f"{positives} positives are below min_group_positives={spec.min_group_positives}")
    return (INSUFFICIENT if short else SUFFICIENT), "; ".join(short)
