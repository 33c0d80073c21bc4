"""Discrimination: how well a score ranks positive outcomes above negative ones (AUROC, AUPRC).

Both take a binary outcome ``y`` and a score ``p`` (a probability or any finite score where larger means "more
likely positive"), and return ``nan`` when ``y`` holds only one class.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from evaluation.metrics.inputs import as_binary, as_finite_float, as_probability, check_same_length

__all__ = ["auprc", "auroc", "expected_auroc"]

_NAN = float("nan")


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
    y_arr = as_binary(y, "y")
    s = as_finite_float(p, "p")
    check_same_length(y=y_arr, p=s)
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
    y_arr = as_binary(y, "y")
    s = as_finite_float(p, "p")
    check_same_length(y=y_arr, p=s)
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


def expected_auroc(p: ArrayLike) -> float:
    """The AUROC a calibrated score ``p`` is expected to reach on its own patients, before any outcome is known.

    Confidence-based performance estimation (as NannyML's CBPE): if each outcome is an independent Bernoulli(p_i),
    a pair (i, j) is a (positive, negative) pair with probability p_i (1 - p_j), so the expected AUROC is
    ``sum over i != j of p_i (1 - p_j) [p_i > p_j, ties 1/2] / sum over i != j of p_i (1 - p_j)``. Valid only while
    the score stays calibrated for these patients (covariate shift, not a change in how outcomes follow the
    inputs): it cannot see a model going wrong, only a population changing. ``nan`` for fewer than 2 scores or
    when every score is 0 or every score is 1.
    """
    arr = as_probability(p)
    n = arr.size
    if n < 2:
        return float("nan")
    order = np.sort(arr)
    neg = 1.0 - order
    # For each score, the weight of the negatives strictly below it and tied with it.
    below = np.concatenate(([0.0], np.cumsum(neg)))  # below[k] = sum of neg[:k]
    left = np.searchsorted(order, order, side="left")
    right = np.searchsorted(order, order, side="right")
    strictly = below[left]
    tied = below[right] - below[left] - neg  # the same score, the pair (i, i) left out
    numerator = float(np.sum(order * (strictly + 0.5 * tied)))
    denominator = float(np.sum(order) * np.sum(neg) - np.sum(order * neg))
    return numerator / denominator if denominator > 0 else float("nan")
