"""Family-wise (simultaneous) intervals over every check of the release gate: the max-T bootstrap.

The gate judges many statistics at once: every pair of judged groups of every attribute and intersection for
each gap metric, and every judged group for each level metric (a *family*). A fair model must fail none of
them with probability at least ``1 - alpha`` **for the whole family**, not per check. With the audit's
bootstrap resamples ``theta*`` of every statistic ``theta`` (differences of two groups' resampled metrics for a
gap), the standardised deviation of statistic ``k`` on resample ``b`` is ``|theta*_bk - theta_k| / SE_k``
(``SE_k`` its bootstrap standard deviation); the critical value ``c`` is the ``1 - alpha`` quantile over
resamples of the largest standardised deviation in the family. Then, approximately,
``P(|theta_k - true_k| <= c SE_k for every k) >= 1 - alpha``: the intervals ``theta_k +- c SE_k`` are
simultaneous (Westfall & Young 1993, single-step max-T; Tukey's HSD is the special case of all pairs of one
attribute under normality). Correlated statistics (the pairs of one attribute, a group and the
intersections containing it, a metric and its complement) make ``c`` smaller than Bonferroni's bound.
With one statistic ``c ~ 1.96`` at ``alpha = 0.05``.

The gate fails a gap only when it is beyond its tolerance ``tol_k`` *and* beyond ``c SE_k``: with no true gap
that needs ``|Z_k| > max(tol_k / SE_k, c)``. A resample's deviation within its own tolerance therefore cannot
count towards a false alarm, and is set to 0 before the maximum is taken: ``c`` is the ``1 - alpha`` quantile
of ``max_k |Z*_k| 1{|Z*_k| > tol_k / SE_k}``, exactly the chance that a fair model fails any check (a group
level's null is its tolerance, so its ``tol_k`` is 0). This gives the same family-wise error with a smaller
``c`` when some gaps are judged on groups so large that the tolerance binds.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = ["FamilyWise", "Statistic", "simultaneous"]


@dataclass(frozen=True)
class Statistic:
    """One member of the family: a key naming it, its estimate on the data and its value on each resample.

    ``tolerance``: the statistic fails only beyond it as well as beyond its interval (a gap's tolerance; 0
    for a group level, whose null is the tolerance itself). ``min_se`` floors its standard error: for a
    difference of two rates, the standard error of the difference under "no difference" from the pooled rate
    (the two-proportion test's). The bootstrap alone says a rate estimated at 0 (no missed event among 25)
    has no variance, and would judge a gap against it too sure. ``slack`` (group levels only): how far
    inside its tolerance the estimate is (``estimate - minimum``, ``maximum - estimate``), for the screening
    step of :func:`simultaneous`.
    """

    key: Hashable
    estimate: float
    resampled: NDArray[np.float64]
    min_se: float = 0.0
    tolerance: float = 0.0
    slack: float | None = None


@dataclass(frozen=True)
class FamilyWise:
    """The family's critical value and each statistic's bootstrap standard error.

    Attributes
    ----------
    critical_value : float
        ``c``: the ``1 - alpha`` quantile of the largest standardised deviation over the family; ``nan`` for
        an empty family or too few valid resamples.
    size : int
        Statistics in the family.
    n_resamples : int
        Resamples the quantile was taken over.
    n_screened : int
        Group levels left out of the maximum because they are far inside their tolerance (first step).
    standard_errors : mapping
        Key to ``SE_k`` (``nan`` when fewer than two resamples were finite).
    """

    critical_value: float
    size: int
    n_resamples: int
    standard_errors: Mapping[Hashable, float] = field(default_factory=dict)
    n_screened: int = 0

    def interval(self, key: Hashable, estimate: float) -> tuple[float, float]:
        """``estimate -+ c SE`` for the statistic ``key``; ``(nan, nan)`` when either is undefined."""
        se = self.standard_errors.get(key, math.nan)
        half = self.critical_value * se
        if not (math.isfinite(half) and math.isfinite(estimate)):
            return math.nan, math.nan
        return estimate - half, estimate + half


def simultaneous(statistics: Sequence[Statistic], alpha: float) -> FamilyWise:
    """Max-T critical value of a family of statistics from their bootstrap resamples.

    Group levels (statistics with a ``slack``) go through a first screening step (Romano, Shaikh & Wolf 2014,
    "A practical two-step method for testing moment inequalities"): with ``beta = alpha / 10``, a level whose
    ``1 - beta`` simultaneous interval over the levels lies wholly inside its tolerance (``slack > c_beta SE``)
    cannot be at its tolerance (the least favourable "fair" case) unless that ``beta`` event happened, so it
    is left out of the maximum; ``c`` is then taken at ``alpha - beta`` over the rest. The family-wise error
    stays at most ``alpha``; the critical value no longer pays for levels far from any tolerance.

    Parameters
    ----------
    statistics : sequence of Statistic
        Each with ``resampled`` of the same length ``b`` (the audit's resamples, in the same order, so that the
        correlation between statistics is kept).
    alpha : float
        Family-wise error rate: the chance that a fair model fails any check.

    Returns
    -------
    FamilyWise
    """
    if not statistics:
        return FamilyWise(math.nan, 0, 0, {})
    deviation = np.column_stack([s.resampled - s.estimate for s in statistics]).astype(np.float64)
    finite = np.isfinite(deviation)
    counts = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, np.where(finite, deviation, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)
        squares = np.where(finite, (deviation - mean) ** 2, 0.0).sum(axis=0)
        se = np.where(counts > 1, np.sqrt(squares / np.maximum(counts - 1, 1)), np.nan)
        se = np.where(np.isfinite(se), np.maximum(se, [s.min_se for s in statistics]), se)
        usable = np.isfinite(se) & (se > 0)
        scaled = np.where(finite & usable, np.abs(deviation) / np.where(usable, se, 1.0), 0.0)
        # A deviation within its own tolerance cannot raise a false alarm, whatever c is: it does not count.
        tau = np.array([s.tolerance for s in statistics]) / np.where(usable, se, np.inf)
        scaled = np.where(scaled > tau, scaled, 0.0)
    b = scaled.shape[0]
    if b < 2:
        return FamilyWise(math.nan, len(statistics), b, {s.key: float(v) for s, v in zip(statistics, se, strict=True)})
    levels = np.array([s.slack is not None for s in statistics])
    keep = np.ones(len(statistics), dtype=bool)
    level = alpha
    if levels.any():
        beta = alpha / 10.0
        c_beta = float(np.quantile(scaled[:, levels].max(axis=1), 1.0 - beta))
        slack = np.array([np.inf if s.slack is None else s.slack for s in statistics])
        keep = ~levels | ~(slack > c_beta * np.where(usable, se, np.inf))
        level = alpha - beta
    largest = scaled[:, keep].max(axis=1) if keep.any() else np.zeros(b)
    c = float(np.quantile(largest, 1.0 - level))
    errors = {s.key: float(v) for s, v in zip(statistics, se, strict=True)}
    return FamilyWise(c, len(statistics), b, errors, int((~keep).sum()))
