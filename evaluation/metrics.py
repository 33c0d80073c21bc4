"""Pure metric functions: discrimination, calibration, triage-level agreement and decision curves.

Everything here takes plain arrays and returns plain floats or numpy arrays (numpy, scipy and scikit-learn
only). Inputs are validated once, at the edge, and a bad input raises
:class:`models.errors.InputValidationError` (a ``ValueError``) whose message names the argument and the
problem, e.g. ``"p must be in [0, 1]; got max 1.3"``. A metric that is undefined for the data it is given
(one outcome class, no high-acuity patients) returns ``nan`` rather than raising, so that a bootstrap can
skip that resample and count it.

Conventions
-----------
* ``y`` is a binary outcome (0/1 or bool), ``p`` a predicted probability of ``y == 1``.
* Triage levels follow :data:`models.labels.ACUITY_LEVELS`: 1 is the most urgent, 5 the least.
  Under-triage means a predicted level that is *less urgent* (numerically greater) than the true level.
"""

from __future__ import annotations

import numbers
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit
from scipy.stats import rankdata
from sklearn.metrics import cohen_kappa_score

from models.errors import InputValidationError
from models.labels import ACUITY_LEVELS, HIGH_ACUITY_MAX_LEVEL

__all__ = [
    "acuity_confusion",
    "acuity_summary",
    "auprc",
    "auroc",
    "calibration_curve",
    "calibration_slope_intercept",
    "exact_agreement",
    "expected_calibration_error",
    "high_acuity_under_triage_rate",
    "net_benefit",
    "net_benefit_treat_all",
    "observed_expected_ratio",
    "over_triage_rate",
    "under_triage_rate",
    "weighted_kappa",
]

BinningStrategy = Literal["quantile", "uniform"]

#: Predicted probabilities are clipped to this range before taking logits.
LOGIT_CLIP: float = 1e-6

_NAN = float("nan")


# --------------------------------------------------------------------------------------------------------
# Validation at the edge
# --------------------------------------------------------------------------------------------------------
def _as_1d_numeric(x: ArrayLike, name: str) -> NDArray[np.generic]:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise InputValidationError(name, f"{name} must be 1-dimensional; got shape {arr.shape}")
    if arr.size == 0:
        raise InputValidationError(name, f"{name} must not be empty")
    if arr.dtype.kind not in "biuf":
        raise InputValidationError(name, f"{name} must be numeric; got dtype {arr.dtype}")
    return arr


def _check_same_length(**arrays: NDArray[np.generic]) -> None:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        names = " and ".join(lengths)
        got = " and ".join(str(v) for v in lengths.values())
        raise InputValidationError(next(iter(lengths)), f"{names} must have the same length; got {got}")


def _as_binary(y: ArrayLike, name: str = "y") -> NDArray[np.int64]:
    arr = _as_1d_numeric(y, name)
    ok = (arr == 0) | (arr == 1)
    if not np.all(ok):
        bad = arr[~ok][0]
        raise InputValidationError(name, f"{name} must contain only 0 and 1; got {bad.item()!r}")
    return arr.astype(np.int64, copy=False)


def _as_finite_float(x: ArrayLike, name: str) -> NDArray[np.float64]:
    arr = _as_1d_numeric(x, name).astype(np.float64, copy=False)
    finite = np.isfinite(arr)
    if not np.all(finite):
        n_bad = int(np.count_nonzero(~finite))
        raise InputValidationError(name, f"{name} must be finite; got {n_bad} NaN or infinite value(s)")
    return arr


def _as_probability(p: ArrayLike, name: str = "p") -> NDArray[np.float64]:
    arr = _as_finite_float(p, name)
    lo, hi = float(arr.min()), float(arr.max())
    problems = ([f"min {lo:g}"] if lo < 0.0 else []) + ([f"max {hi:g}"] if hi > 1.0 else [])
    if problems:
        raise InputValidationError(name, f"{name} must be in [0, 1]; got {' and '.join(problems)}")
    return arr


def _binary_and_probability(y: ArrayLike, p: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    y_arr, p_arr = _as_binary(y, "y"), _as_probability(p, "p")
    _check_same_length(y=y_arr, p=p_arr)
    return y_arr, p_arr


def _as_acuity(x: ArrayLike, name: str) -> NDArray[np.int64]:
    arr = _as_1d_numeric(x, name)
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
    _check_same_length(y_true=t, y_pred=p)
    return t, p


def _check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise InputValidationError("n_bins", f"n_bins must be an integer >= 1; got {n_bins!r}")
    return int(n_bins)


def _check_strategy(strategy: str) -> None:
    if strategy not in ("quantile", "uniform"):
        raise InputValidationError("strategy", f"strategy must be 'quantile' or 'uniform'; got {strategy!r}")


# --------------------------------------------------------------------------------------------------------
# Discrimination
# --------------------------------------------------------------------------------------------------------
def auroc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve (the concordance probability).

    Computed from mid-ranks (Mann-Whitney U), so a tied positive/negative pair counts one half; equal to
    :func:`sklearn.metrics.roc_auc_score` but several times faster, which matters inside a bootstrap.

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary outcome, 0/1 or bool.
    p : array-like of shape (n,)
        Predicted probability, or any finite score where larger means "more likely positive" (a NEWS2
        total, for example); only the order matters.

    Returns
    -------
    float
        AUROC in [0, 1], or ``nan`` when ``y`` holds only one class.
    """
    y_arr = _as_binary(y, "y")
    s = _as_finite_float(p, "p")
    _check_same_length(y=y_arr, p=s)
    n_pos = int(y_arr.sum())
    n_neg = y_arr.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return _NAN
    ranks = rankdata(s)
    u = float(ranks[y_arr == 1].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def auprc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the precision-recall curve, as average precision.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds, without interpolation; equal to
    :func:`sklearn.metrics.average_precision_score`.

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary outcome, 0/1 or bool.
    p : array-like of shape (n,)
        Predicted probability, or any finite score where larger means "more likely positive".

    Returns
    -------
    float
        Average precision in [0, 1], or ``nan`` when ``y`` holds only one class.
    """
    y_arr = _as_binary(y, "y")
    s = _as_finite_float(p, "p")
    _check_same_length(y=y_arr, p=s)
    n_pos = int(y_arr.sum())
    if n_pos == 0 or n_pos == y_arr.size:
        return _NAN
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    # The last row of each run of equal scores is where a threshold admits the whole tie.
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tp = np.cumsum(y_arr[order])[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


# --------------------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------------------
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
    y_arr, p_arr = _binary_and_probability(y, p)
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
    y_arr, p_arr = _binary_and_probability(y, p)
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
    y_arr, p_arr = _binary_and_probability(y, p)
    expected = float(p_arr.sum())
    return float(y_arr.sum()) / expected if expected > 0.0 else _NAN


# --------------------------------------------------------------------------------------------------------
# Triage level (acuity) agreement
# --------------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------------
# Decision curve analysis
# --------------------------------------------------------------------------------------------------------
def _as_thresholds(thresholds: ArrayLike) -> NDArray[np.float64]:
    arr = np.atleast_1d(np.asarray(thresholds))
    if arr.ndim != 1:
        raise InputValidationError("thresholds", f"thresholds must be a scalar or 1-dimensional; got shape {arr.shape}")
    arr = _as_finite_float(arr, "thresholds")
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
    y_arr, p_arr = _binary_and_probability(y, p)
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
    y_arr = _as_binary(y, "y")
    pt = _as_thresholds(thresholds)
    prevalence = float(y_arr.mean())
    return prevalence - (1.0 - prevalence) * (pt / (1.0 - pt))


# ---------------------------------------------------------------------------------------- operating points
def sensitivity(y: ArrayLike, flagged: ArrayLike) -> float:
    """True-positive rate of binary decisions; NaN when there are no positives."""
    yy = _as_binary(y)
    ff = _as_binary(flagged, "flagged")
    _check_same_length(y=yy, flagged=ff)
    return float(ff[yy == 1].mean()) if (yy == 1).any() else float("nan")


def specificity(y: ArrayLike, flagged: ArrayLike) -> float:
    """True-negative rate of binary decisions; NaN when there are no negatives."""
    yy = _as_binary(y)
    ff = _as_binary(flagged, "flagged")
    _check_same_length(y=yy, flagged=ff)
    return float(1 - ff[yy == 0].mean()) if (yy == 0).any() else float("nan")


def positive_predictive_value(y: ArrayLike, flagged: ArrayLike) -> float:
    """Precision of binary decisions; NaN when nothing is flagged."""
    yy = _as_binary(y)
    ff = _as_binary(flagged, "flagged")
    _check_same_length(y=yy, flagged=ff)
    return float(yy[ff == 1].mean()) if (ff == 1).any() else float("nan")
