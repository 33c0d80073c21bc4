"""Group metrics on many bootstrap resamples at once (private to :mod:`fairness.audit` and its helpers).

A bootstrap resample of a frame is fully described by a vector of row weights: how many times each row was
drawn (a whole cluster's rows share its draw count). Every metric of :mod:`evaluation.metrics` that the audit
reports is a function of weighted sums over a group's rows, so a block of ``b`` resamples is a ``(b, n)``
weight matrix and each metric of every group on every resample is a handful of vectorised operations on it:

* counts (sensitivity, false-negative and false-positive rates, PPV, observed/expected, under-triage) are
  weighted sums per group;
* AUROC is the weighted concordance ``sum_i w_i [negatives below i + 1/2 negatives tied with i]`` over the
  positives ``i``, from one cumulative sum of negative weights along rows sorted by (group, score);
* ECE re-estimates the quantile bin edges on each resample, exactly as :func:`numpy.quantile` would on the
  materialised resample (same order statistics, same linear interpolation), then sums ``|observed - expected|``
  per bin from cumulative sums.

The results equal the :mod:`evaluation.metrics` functions applied to the materialised resample (to floating
point rounding); ``tests/fairness/test_fairness_audit.py`` checks this oracle on explicit resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.labels import HIGH_ACUITY_MAX_LEVEL

__all__ = ["ACUITY_METRICS", "ECE_BINS", "FLAG_METRICS", "SCORE_METRICS", "Outcomes", "WeightedPartition"]

#: Metrics computed from ``y_true`` and ``y_score``.
SCORE_METRICS: tuple[str, ...] = ("auroc", "ece", "observed_expected")
#: Metrics computed from ``y_true`` and ``y_flag`` (the decision at the operating threshold).
FLAG_METRICS: tuple[str, ...] = ("sensitivity", "false_negative_rate", "false_positive_rate", "ppv")
#: Metrics computed from the true and predicted triage levels.
ACUITY_METRICS: tuple[str, ...] = ("under_triage_rate", "high_acuity_under_triage_rate")

#: Quantile bins of the ECE: the default of :func:`evaluation.metrics.calibration.expected_calibration_error`.
ECE_BINS: int = 10
_QUANTILES: NDArray[np.float64] = np.linspace(0.0, 1.0, ECE_BINS + 1)[1:-1]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Outcomes:
    """Validated per-row arrays (float64; levels as int64) of one audit; ``None`` where not given."""

    y: Array
    score: Array | None
    flag: Array | None
    acuity_true: NDArray[np.int64] | None
    acuity_pred: NDArray[np.int64] | None

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics these columns support, in report order."""
        names: list[str] = []
        if self.score is not None:
            names += SCORE_METRICS[:1]
        if self.flag is not None:
            names += FLAG_METRICS
        if self.score is not None:
            names += SCORE_METRICS[1:]
        if self.acuity_true is not None:
            names += ACUITY_METRICS
        return tuple(names)


def _prefix(x: Array) -> Array:
    """Cumulative sums along rows with a leading zero column: ``out[:, k] = x[:, :k].sum(1)``."""
    out = np.zeros((x.shape[0], x.shape[1] + 1))
    np.cumsum(x, axis=1, out=out[:, 1:])
    return out


def _ratio(num: Array, den: Array) -> Array:
    """``num / den`` with ``nan`` where ``den`` is 0 (the metric functions' "undefined")."""
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _lerp(a: Array, b: Array, t: Array) -> Array:
    """Linear interpolation exactly as numpy's quantile does it (two formulas, switched at ``t = 0.5``)."""
    diff = b - a
    out = a + diff * t
    np.subtract(b, diff * (1.0 - t), out=out, where=t >= 0.5)
    return out


class WeightedPartition:
    """One sensitive attribute (or intersection): rows split into groups, ready for weighted resamples.

    Parameters
    ----------
    codes : ndarray of int, shape (n,)
        Group index of each row, ``0 .. n_groups - 1``; every group has at least one row.
    n_groups : int
        Number of groups.
    outcomes : Outcomes
        The audit's validated columns.
    """

    def __init__(self, codes: NDArray[np.intp], n_groups: int, outcomes: Outcomes) -> None:
        self.n_groups = n_groups
        self.metrics = outcomes.metrics
        key = outcomes.score if outcomes.score is not None else np.zeros(codes.size)
        self.order = np.lexsort((key, codes))  # by group, then by score
        sorted_codes = codes[self.order]
        self.starts = np.searchsorted(sorted_codes, np.arange(n_groups), side="left")
        self.ends = np.searchsorted(sorted_codes, np.arange(n_groups), side="right")
        if np.any(self.ends <= self.starts):
            raise ValueError("every group of a partition must have at least one row")
        o = self.order
        self.y = outcomes.y[o]
        self.neg = 1.0 - self.y
        if outcomes.flag is not None:
            self.tp = self.y * outcomes.flag[o]
            self.fp = self.neg * outcomes.flag[o]
        if outcomes.score is not None:
            self.p = outcomes.score[o]
            self._prepare_auroc(sorted_codes)
        if outcomes.acuity_true is not None and outcomes.acuity_pred is not None:
            t, q = outcomes.acuity_true[o], outcomes.acuity_pred[o]
            high = t <= HIGH_ACUITY_MAX_LEVEL
            self.under = (q > t).astype(np.float64)
            self.high = high.astype(np.float64)
            self.high_under = (high & (q > HIGH_ACUITY_MAX_LEVEL)).astype(np.float64)

    def _prepare_auroc(self, sorted_codes: NDArray[np.intp]) -> None:
        n = sorted_codes.size
        new_block = np.ones(n, dtype=bool)  # a tie block: equal score within one group
        new_block[1:] = (sorted_codes[1:] != sorted_codes[:-1]) | (self.p[1:] != self.p[:-1])
        first = np.flatnonzero(new_block)
        block = np.cumsum(new_block) - 1
        block_start = first[block]
        block_end = np.r_[first[1:], n][block]
        positives = np.flatnonzero(self.y == 1)
        self._pos = positives
        self._pos_block_start = block_start[positives]
        self._pos_block_end = block_end[positives]
        self._pos_group_start = self.starts[sorted_codes[positives]]
        self._pos_bounds = (
            np.searchsorted(positives, self.starts, side="left"),
            np.searchsorted(positives, self.ends, side="left"),
        )

    # ----------------------------------------------------------------------------------------------------
    def compute(self, weights: Array) -> dict[str, Array]:
        """Every metric of every group on every resample.

        Parameters
        ----------
        weights : ndarray of shape (b, n)
            Row weights of ``b`` resamples, in the frame's row order (all ones: the full data).

        Returns
        -------
        dict of str to ndarray of shape (b, n_groups)
            One entry per metric in :attr:`metrics`; ``nan`` where the metric is undefined on a resample.
        """
        w = weights[:, self.order]

        def group_sum(values: Array | None = None) -> Array:
            return np.add.reduceat(w if values is None else w * values, self.starts, axis=1)

        n = group_sum()
        pos = group_sum(self.y)
        out: dict[str, Array] = {}
        if "sensitivity" in self.metrics:
            tp, fp = group_sum(self.tp), group_sum(self.fp)
            out["sensitivity"] = _ratio(tp, pos)
            out["false_negative_rate"] = 1.0 - out["sensitivity"]
            out["false_positive_rate"] = _ratio(fp, n - pos)
            out["ppv"] = _ratio(tp, tp + fp)
        if "auroc" in self.metrics:
            out["auroc"] = self._auroc(w, n, pos)
            out["ece"] = self._ece(w, n)
            out["observed_expected"] = _ratio(pos, group_sum(self.p))
        if "under_triage_rate" in self.metrics:
            out["under_triage_rate"] = _ratio(group_sum(self.under), n)
            out["high_acuity_under_triage_rate"] = _ratio(group_sum(self.high_under), group_sum(self.high))
        return out

    def _auroc(self, w: Array, n: Array, pos: Array) -> Array:
        below_or_tied = _prefix(w * self.neg)  # negative weight up to each sorted position
        at_block_start = below_or_tied[:, self._pos_block_start]
        below = at_block_start - below_or_tied[:, self._pos_group_start]
        tied = below_or_tied[:, self._pos_block_end] - at_block_start
        concordance = _prefix(w[:, self._pos] * (below + 0.5 * tied))
        lo, hi = self._pos_bounds
        u = concordance[:, hi] - concordance[:, lo]
        return _ratio(u, pos * (n - pos))

    def _ece(self, w: Array, n: Array) -> Array:
        b = w.shape[0]
        cum_w = _prefix(w)
        # Order statistics of the resample: rank r of group g is the first sorted row whose cumulative
        # weight (within the group) exceeds r. Offsetting each resample's cumulative weights makes the whole
        # block one increasing array, so a single searchsorted finds every rank of every group and resample.
        virtual = (n[:, :, None] - 1.0) * _QUANTILES  # numpy's "linear" method: (n - 1) * q
        previous = np.floor(virtual)
        gamma = virtual - previous
        last = virtual >= n[:, :, None] - 1.0
        rank_lo = np.where(last, n[:, :, None] - 1.0, previous)
        rank_hi = np.where(last, n[:, :, None] - 1.0, previous + 1.0)
        stride = float(cum_w[:, -1].max()) + 1.0
        offset = (np.arange(b) * stride)[:, None]
        flat = (cum_w + offset).ravel()
        base = (cum_w[:, self.starts] + offset)[:, :, None]
        row_offset = (np.arange(b) * (cum_w.shape[1]))[:, None, None]

        def order_statistic(rank: Array) -> Array:
            k = np.searchsorted(flat, (rank + base).ravel(), side="right").reshape(rank.shape) - row_offset
            return self.p[np.clip(k - 1, 0, self.p.size - 1)]

        edges = _lerp(order_statistic(rank_lo), order_statistic(rank_hi), gamma)
        # Bin k of a group holds its rows with edge[k-1] <= p < edge[k] (searchsorted side="right" on the
        # edges, as in evaluation.metrics.calibration); with rows sorted by p that is a contiguous run of positions.
        bounds = np.empty((b, self.n_groups, ECE_BINS + 1), dtype=np.intp)
        bounds[:, :, 0] = self.starts
        bounds[:, :, -1] = self.ends
        for g in range(self.n_groups):
            lo, hi = self.starts[g], self.ends[g]
            bounds[:, g, 1:-1] = lo + np.searchsorted(self.p[lo:hi], edges[:, g, :], side="left")
        flat_bounds = bounds.reshape(b, -1)
        sum_y = np.diff(np.take_along_axis(_prefix(w * self.y), flat_bounds, axis=1).reshape(bounds.shape), axis=2)
        sum_p = np.diff(np.take_along_axis(_prefix(w * self.p), flat_bounds, axis=1).reshape(bounds.shape), axis=2)
        return _ratio(np.abs(sum_y - sum_p).sum(axis=2), n)
