"""Calibration: whether predicted probabilities match observed event rates.

The reliability curve and the expected calibration error (one binning, shared), the calibration slope and
calibration-in-the-large (logistic recalibration), and the observed/expected ratio.
"""

from __future__ import annotations

import numbers
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from evaluation.metrics.inputs import binary_and_probability
from models.errors import InputValidationError

__all__ = [
    "calibration_curve",
    "calibration_slope_intercept",
    "expected_calibration_error",
    "observed_expected_ratio",
]

BinningStrategy = Literal["quantile", "uniform"]

#: Predicted probabilities are clipped to this range before taking logits.
LOGIT_CLIP: float = 1e-6

_NAN = float("nan")


def _check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise InputValidationError("n_bins", f"n_bins must be an integer >= 1; got {n_bins!r}")
    return int(n_bins)


def _check_strategy(strategy: str) -> None:
    if strategy not in ("quantile", "uniform"):
        raise InputValidationError("strategy", f"strategy must be 'quantile' or 'uniform'; got {strategy!r}")


def _bin_index(p: NDArray[np.float64], n_bins: int, strategy: str) -> NDArray[np.intp]:
    quantiles = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    inner_edges = quantiles if strategy == "uniform" else np.quantile(p, quantiles)
    # Bins are [edge_k, edge_{k+1}); p == 1 falls in the last bin.
    return np.searchsorted(inner_edges, p, side="right")


def _curve(
    y: NDArray[np.int64], p: NDArray[np.float64], n_bins: int, strategy: str
) -> dict[str, NDArray[np.float64] | NDArray[np.int64]]:
    idx = _bin_index(p, n_bins, strategy)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    keep = count > 0
    return {
        "mean_predicted": sum_p[keep] / count[keep],
        "observed": sum_y[keep] / count[keep],
        "count": count[keep].astype(np.int64),
    }


def calibration_curve(
    y: ArrayLike, p: ArrayLike, n_bins: int = 10, strategy: BinningStrategy = "quantile"
) -> dict[str, NDArray[np.float64] | NDArray[np.int64]]:
    """Reliability diagram: mean predicted probability against observed frequency, by bin.

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary outcome.
    p : array-like of shape (n,)
        Predicted probability in [0, 1].
    n_bins : int, default 10
        Number of bins requested.
    strategy : {"quantile", "uniform"}, default "quantile"
        ``"quantile"``: bins of (nearly) equal size; ``"uniform"``: equal-width bins on [0, 1]. The same
        binning as :func:`expected_calibration_error`, so the curve is what the ECE summarises.

    Returns
    -------
    dict
        ``"mean_predicted"`` (float array), ``"observed"`` (float array, the event rate) and ``"count"``
        (int array), one entry per non-empty bin in increasing order of ``p``. Empty bins are dropped, so
        the arrays may be shorter than ``n_bins`` (tied predictions, or ``"uniform"`` bins nobody falls in).
    """
    y_arr, p_arr = binary_and_probability(y, p)
    n_bins = _check_n_bins(n_bins)
    _check_strategy(strategy)
    return _curve(y_arr, p_arr, n_bins, strategy)


def expected_calibration_error(
    y: ArrayLike, p: ArrayLike, n_bins: int = 10, strategy: BinningStrategy = "quantile"
) -> float:
    """Expected calibration error: the count-weighted mean of ``|observed - mean_predicted|`` over bins.

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary outcome.
    p : array-like of shape (n,)
        Predicted probability in [0, 1].
    n_bins : int, default 10
        Number of bins.
    strategy : {"quantile", "uniform"}, default "quantile"
        Binning, as in :func:`calibration_curve`.

    Returns
    -------
    float
        ECE in [0, 1]; 0 is perfect calibration (up to binning and sampling noise, which is positive).
    """
    curve = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    count = curve["count"]
    gap = np.abs(curve["observed"] - curve["mean_predicted"])
    return float(np.sum(count * gap) / np.sum(count))


def _fit_logistic(
    x: NDArray[np.float64] | None, y: NDArray[np.int64], offset: NDArray[np.float64], max_iter: int = 100
) -> NDArray[np.float64] | None:
    """Unpenalised logistic regression of ``y`` on ``[1, x]`` with ``offset``, by Newton with step halving.

    Starts at intercept 0 and slope 1 (perfect calibration). Returns None when the fit does not converge
    (separation) or the information matrix is singular (constant ``x``).
    """
    design = np.ones((y.size, 1)) if x is None else np.column_stack([np.ones(y.size), x])
    beta = np.zeros(design.shape[1]) if x is None else np.array([0.0, 1.0])

    def nll(b: NDArray[np.float64]) -> float:
        eta = offset + design @ b
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta))

    current = nll(beta)
    for _ in range(max_iter):
        mu = expit(offset + design @ beta)
        grad = design.T @ (y - mu)
        info = (design * (mu * (1.0 - mu))[:, None]).T @ design
        if not np.all(np.isfinite(info)) or np.linalg.cond(info) > 1e12:
            return None
        step = np.linalg.solve(info, grad)
        t = 1.0
        while True:
            candidate = beta + t * step
            value = nll(candidate)
            if np.isfinite(value) and value <= current + 1e-12 * abs(current):
                break
            t /= 2.0
            if t < 1e-6:
                return None
        beta, current = candidate, value
        if np.max(np.abs(t * step)) < 1e-9:
            return beta if np.all(np.isfinite(beta)) else None
    return None


def calibration_slope_intercept(y: ArrayLike, p: ArrayLike) -> tuple[float, float]:
    """Calibration slope and calibration-in-the-large (logistic recalibration).

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary outcome.
    p : array-like of shape (n,)
        Predicted probability in [0, 1]; clipped to ``[1e-6, 1 - 1e-6]`` before taking logits.

    Returns
    -------
    slope : float
        ``b`` in the unpenalised fit ``logit P(y=1) = a + b * logit(p)``. 1 is ideal; below 1 the
        predictions are too extreme (overconfident), above 1 too timid.
    intercept : float
        Calibration-in-the-large: ``a`` in ``logit P(y=1) = a + logit(p)`` (``logit(p)`` as an offset,
        slope fixed at 1). 0 is ideal; above 0 the model under-predicts risk on average.

    Notes
    -----
    Either value is ``nan`` when its maximum-likelihood fit does not exist: one outcome class (both),
    perfect separation of the outcome by ``p`` (slope), or constant ``p`` (slope).
    """
    y_arr, p_arr = binary_and_probability(y, p)
    if y_arr.min() == y_arr.max():
        return _NAN, _NAN
    clipped = np.clip(p_arr, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    lp = np.log(clipped) - np.log1p(-clipped)
    slope_fit = _fit_logistic(lp, y_arr, np.zeros_like(lp))
    citl_fit = _fit_logistic(None, y_arr, lp)
    slope = _NAN if slope_fit is None else float(slope_fit[1])
    intercept = _NAN if citl_fit is None else float(citl_fit[0])
    return slope, intercept


def observed_expected_ratio(y: ArrayLike, p: ArrayLike) -> float:
    """Observed over expected events: ``sum(y) / sum(p)``.

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary outcome.
    p : array-like of shape (n,)
        Predicted probability in [0, 1].

    Returns
    -------
    float
        O/E ratio; 1 is ideal, above 1 the model under-predicts. ``nan`` when every ``p`` is 0.
    """
    y_arr, p_arr = binary_and_probability(y, p)
    expected = float(p_arr.sum())
    return float(y_arr.sum()) / expected if expected > 0.0 else _NAN
