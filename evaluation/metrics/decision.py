"""Metrics of acting on a prediction: binary decisions at an operating point, and decision curves.

Operating points: sensitivity, specificity and positive predictive value of binary decisions (``flagged``,
e.g. ``p >= operating threshold``). Decision curves: the net benefit of acting on ``p >= pt`` at each threshold
probability ``pt``, and of acting on every patient.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from evaluation.metrics.inputs import as_binary, as_finite_float, binary_and_probability, check_same_length
from models.errors import InputValidationError

__all__ = [
    "net_benefit",
    "net_benefit_treat_all",
    "positive_predictive_value",
    "sensitivity",
    "specificity",
    "wilson_interval",
]


def sensitivity(y: ArrayLike, flagged: ArrayLike) -> float:
    """True-positive rate of binary decisions; NaN when there are no positives."""
    yy = as_binary(y)
    ff = as_binary(flagged, "flagged")
    check_same_length(y=yy, flagged=ff)
    return float(ff[yy == 1].mean()) if (yy == 1).any() else float("nan")


def specificity(y: ArrayLike, flagged: ArrayLike) -> float:
    """True-negative rate of binary decisions; NaN when there are no negatives."""
    yy = as_binary(y)
    ff = as_binary(flagged, "flagged")
    check_same_length(y=yy, flagged=ff)
    return float(1 - ff[yy == 0].mean()) if (yy == 0).any() else float("nan")


def positive_predictive_value(y: ArrayLike, flagged: ArrayLike) -> float:
    """Precision of binary decisions; NaN when nothing is flagged."""
    yy = as_binary(y)
    ff = as_binary(flagged, "flagged")
    check_same_length(y=yy, flagged=ff)
    return float(yy[ff == 1].mean()) if (ff == 1).any() else float("nan")


# ---------------------------------------------------------------------------------------- decision curves
def _as_thresholds(thresholds: ArrayLike) -> NDArray[np.float64]:
    arr = np.atleast_1d(np.asarray(thresholds))
    if arr.ndim != 1:
        raise InputValidationError("thresholds", f"thresholds must be a scalar or 1-dimensional; got shape {arr.shape}")
    arr = as_finite_float(arr, "thresholds")
    lo, hi = float(arr.min()), float(arr.max())
    problems = ([f"min {lo:g}"] if lo < 0.0 else []) + ([f"max {hi:g}"] if hi >= 1.0 else [])
    if problems:
        raise InputValidationError("thresholds", f"thresholds must be in [0, 1); got {' and '.join(problems)}")
    return arr


def net_benefit(y: ArrayLike, p: ArrayLike, thresholds: ArrayLike) -> NDArray[np.float64]:
    """Net benefit of acting on ``p >= pt``, at each threshold probability ``pt``.

    ``NB(pt) = TP/n - FP/n * pt / (1 - pt)``: true positives gained, less false positives weighted by the
    odds at which a clinician is indifferent between acting and not (Vickers and Elkin, 2006).

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary outcome.
    p : array-like of shape (n,)
        Predicted probability in [0, 1].
    thresholds : float or array-like of shape (k,)
        Threshold probabilities in [0, 1).

    Returns
    -------
    numpy.ndarray of shape (k,), float64
        Net benefit at each threshold (always 1-D, even for a scalar threshold).
    """
    y_arr, p_arr = binary_and_probability(y, p)
    pt = _as_thresholds(thresholds)
    n = y_arr.size
    pos = np.sort(p_arr[y_arr == 1])
    neg = np.sort(p_arr[y_arr == 0])
    tp = pos.size - np.searchsorted(pos, pt, side="left")
    fp = neg.size - np.searchsorted(neg, pt, side="left")
    return tp / n - fp / n * (pt / (1.0 - pt))


def net_benefit_treat_all(y: ArrayLike, thresholds: ArrayLike) -> NDArray[np.float64]:
    """Net benefit of acting on every patient: ``prevalence - (1 - prevalence) * pt / (1 - pt)``.

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary outcome.
    thresholds : float or array-like of shape (k,)
        Threshold probabilities in [0, 1).

    Returns
    -------
    numpy.ndarray of shape (k,), float64
        Net benefit of "treat all" at each threshold. "Treat none" is 0 everywhere.
    """
    y_arr = as_binary(y, "y")
    pt = _as_thresholds(thresholds)
    prevalence = float(y_arr.mean())
    return prevalence - (1.0 - prevalence) * (pt / (1.0 - pt))


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` at ``1 - alpha`` coverage; ``(nan, nan)`` when
    ``n`` is 0. For sensitivities and specificities counted at an operating point (monitoring after release)."""
    from scipy.stats import norm

    if isinstance(successes, bool) or isinstance(n, bool) or not 0 <= successes <= n:
        raise InputValidationError("successes", f"successes must be an integer in [0, n]; got {successes} of {n}")
    if not 0.0 < alpha < 1.0:
        raise InputValidationError("alpha", f"alpha must be in (0, 1); got {alpha}")
    if n == 0:
        return math.nan, math.nan
    z = float(norm.ppf(1 - alpha / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
