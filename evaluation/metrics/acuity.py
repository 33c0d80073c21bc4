"""Triage-level (acuity) agreement: exact agreement, weighted kappa, under- and over-triage, confusion.

Triage levels follow :data:`models.labels.ACUITY_LEVELS`: 1 is the most urgent, 5 the least. Under-triage means
a predicted level that is *less urgent* (numerically greater) than the true level.
"""

from __future__ import annotations

import numbers
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import cohen_kappa_score

from evaluation.metrics.inputs import as_1d_numeric, check_same_length
from models.errors import InputValidationError
from models.labels import ACUITY_LEVELS, HIGH_ACUITY_MAX_LEVEL

__all__ = [
    "acuity_confusion",
    "acuity_summary",
    "exact_agreement",
    "high_acuity_under_triage_rate",
    "over_triage_rate",
    "under_triage_rate",
    "weighted_kappa",
]

_NAN = float("nan")


def _as_acuity(x: ArrayLike, name: str) -> NDArray[np.int64]:
    arr = as_1d_numeric(x, name)
    if arr.dtype.kind == "b":
        raise InputValidationError(name, f"{name} must contain triage levels, not booleans")
    ok = np.isin(arr, ACUITY_LEVELS)
    if not np.all(ok):
        bad = arr[~ok][0]
        raise InputValidationError(
            name, f"{name} must contain triage levels {ACUITY_LEVELS[0]}-{ACUITY_LEVELS[-1]}; got {bad.item()!r}"
        )
    return arr.astype(np.int64, copy=False)


def _acuity_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    t, p = _as_acuity(y_true, "y_true"), _as_acuity(y_pred, "y_pred")
    check_same_length(y_true=t, y_pred=p)
    return t, p


def exact_agreement(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of patients whose predicted triage level equals the true level.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Triage levels 1 (most urgent) to 5 (least urgent).

    Returns
    -------
    float
        Agreement in [0, 1].
    """
    t, p = _acuity_pair(y_true, y_pred)
    return float(np.mean(t == p))


def weighted_kappa(y_true: ArrayLike, y_pred: ArrayLike, weights: Literal["linear", "quadratic"] = "linear") -> float:
    """Weighted Cohen's kappa over the five triage levels.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Triage levels 1 to 5.
    weights : {"linear", "quadratic"}, default "linear"
        Disagreement weight ``|i - j|`` or ``(i - j) ** 2`` between levels ``i`` and ``j``; levels absent
        from the data still count in the distance (labels are always 1-5).

    Returns
    -------
    float
        Kappa in [-1, 1]; 1 is perfect agreement. ``nan`` when it is undefined, i.e. both arrays hold one
        and the same level only.
    """
    if weights not in ("linear", "quadratic"):
        raise InputValidationError("weights", f"weights must be 'linear' or 'quadratic'; got {weights!r}")
    t, p = _acuity_pair(y_true, y_pred)
    if t.min() == t.max() == p.min() == p.max():
        return _NAN
    return float(cohen_kappa_score(t, p, labels=list(ACUITY_LEVELS), weights=weights))


def under_triage_rate(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of patients predicted at a less urgent (numerically greater) level than the true level.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Triage levels 1 to 5.

    Returns
    -------
    float
        Under-triage rate in [0, 1], over all patients.
    """
    t, p = _acuity_pair(y_true, y_pred)
    return float(np.mean(p > t))


def over_triage_rate(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of patients predicted at a more urgent (numerically smaller) level than the true level.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Triage levels 1 to 5.

    Returns
    -------
    float
        Over-triage rate in [0, 1], over all patients.
    """
    t, p = _acuity_pair(y_true, y_pred)
    return float(np.mean(p < t))


def _check_max_level(max_level: int) -> int:
    if isinstance(max_level, bool) or not isinstance(max_level, numbers.Integral) or max_level not in ACUITY_LEVELS:
        raise InputValidationError("max_level", f"max_level must be one of {ACUITY_LEVELS}; got {max_level!r}")
    return int(max_level)


def high_acuity_under_triage_rate(
    y_true: ArrayLike, y_pred: ArrayLike, max_level: int = HIGH_ACUITY_MAX_LEVEL
) -> float:
    """Among truly high-acuity patients, the fraction predicted outside the high-acuity levels.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Triage levels 1 to 5.
    max_level : int, default 2
        High acuity means a level ``<= max_level`` (levels 1-2 by default).

    Returns
    -------
    float
        ``P(y_pred > max_level | y_true <= max_level)``; ``nan`` when no patient is truly high-acuity.
        A level-1 patient predicted at level 2 is *not* counted: this is the clinically dangerous miss.
    """
    max_level = _check_max_level(max_level)
    t, p = _acuity_pair(y_true, y_pred)
    high = t <= max_level
    if not np.any(high):
        return _NAN
    return float(np.mean(p[high] > max_level))


def acuity_confusion(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[np.int64]:
    """Confusion matrix of triage levels.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Triage levels 1 to 5.

    Returns
    -------
    numpy.ndarray of shape (5, 5), int64
        ``C[i, j]`` is the number of patients with true level ``i + 1`` predicted at level ``j + 1``
        (rows true, columns predicted). Entries above the diagonal are under-triage.
    """
    t, p = _acuity_pair(y_true, y_pred)
    k = len(ACUITY_LEVELS)
    flat = (t - ACUITY_LEVELS[0]) * k + (p - ACUITY_LEVELS[0])
    return np.bincount(flat, minlength=k * k).reshape(k, k).astype(np.int64)


def acuity_summary(y_true: ArrayLike, y_pred: ArrayLike, max_level: int = HIGH_ACUITY_MAX_LEVEL) -> dict[str, float]:
    """Every triage-level agreement metric at once.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Triage levels 1 to 5.
    max_level : int, default 2
        Passed to :func:`high_acuity_under_triage_rate`.

    Returns
    -------
    dict of str to float
        Keys ``n``, ``exact_agreement``, ``kappa_linear``, ``kappa_quadratic``,
        ``under_triage_rate``, ``over_triage_rate`` and ``high_acuity_under_triage_rate``, always all
        present (``nan`` where undefined).
    """
    t, p = _acuity_pair(y_true, y_pred)
    return {
        "n": float(t.size),
        "exact_agreement": exact_agreement(t, p),
        "kappa_linear": weighted_kappa(t, p, weights="linear"),
        "kappa_quadratic": weighted_kappa(t, p, weights="quadratic"),
        "under_triage_rate": under_triage_rate(t, p),
        "over_triage_rate": over_triage_rate(t, p),
        "high_acuity_under_triage_rate": high_acuity_under_triage_rate(t, p, max_level=max_level),
    }
