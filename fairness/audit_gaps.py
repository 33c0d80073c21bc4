"""Gaps between the groups of one attribute, with intervals from the audit's bootstrap resamples.

:func:`gaps` gives every group against the reference and the largest minus the smallest group, each as a
difference and a ratio with its interval and its chance level (see "Gaps" in :mod:`fairness.audit`);
:func:`percentile_interval` is the interval of every group metric too. Used by :func:`fairness.audit.audit`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.typing import NDArray

from evaluation.bootstrap import ConfidenceInterval
from fairness.audit_result import INSUFFICIENT, SUFFICIENT, GapResult

__all__ = ["gaps", "percentile_interval"]


def percentile_interval(estimate: float, values: NDArray[np.float64], alpha: float) -> ConfidenceInterval:
    """``estimate`` with the ``1 - alpha`` percentile interval of the finite ``values`` (its resamples); ``n_valid``
    counts them, and the interval is ``nan`` when none is finite."""
    valid = values[np.isfinite(values)]
    if valid.size == 0:
        low = high = float("nan")
    else:
        low, high = (float(q) for q in np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0]))
    return ConfidenceInterval(float(estimate), low, high, int(values.size), int(valid.size))


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b != 0.0 else float("nan")


def _quantile(values: NDArray[np.float64], q: float) -> float:
    valid = values[np.isfinite(values)]
    return float(np.quantile(valid, q)) if valid.size else float("nan")


def _basic_interval(estimate: float, values: NDArray[np.float64], alpha: float, upper: float) -> ConfidenceInterval:
    """Basic bootstrap interval ``[2 est - q_hi, 2 est - q_lo]`` clipped to ``[0, upper]``.

    Used for the largest-minus-smallest gap: re-taking the max and min on each resample biases the resampled
    values upward (extremes of noise), and the basic interval reflects that bias back instead of adding it.
    """
    pct = percentile_interval(estimate, values, alpha)
    if not math.isfinite(estimate) or pct.n_valid == 0:
        return ConfidenceInterval(float(estimate), float("nan"), float("nan"), pct.n_boot, pct.n_valid)
    low, high = (min(max(2.0 * estimate - q, 0.0), upper) for q in (pct.high, pct.low))
    return ConfidenceInterval(float(estimate), low, high, pct.n_boot, pct.n_valid)


def _pairwise_chance(
    boot: NDArray[np.float64], estimates: NDArray[np.float64], judged: NDArray[np.intp], alpha: float
) -> dict[tuple[int, int], float]:
    """Chance levels of every gap between two judged groups at once (max-T, as in Tukey's HSD).

    For pairs ``(i, j)`` the bootstrap deviations ``(m*_i - m*_j) - (m_i - m_j)`` approximate the sampling
    error of each gap; ``c`` is the ``1 - alpha`` quantile of ``max_pairs |deviation| / SE_pair`` over the
    resamples, and the chance level of a pair is ``c * SE_pair``. When no group truly differs, no gap of the
    attribute exceeds its chance level with probability about ``1 - alpha``. With two groups ``c ~ 1.96``.
    Keys are ``(min(i, j), max(i, j))``.
    """
    pairs = list(itertools.combinations(sorted(int(g) for g in judged), 2))
    if not pairs:
        return {}
    first, second = (np.array(side) for side in zip(*pairs, strict=True))
    deviation = (boot[:, first] - boot[:, second]) - (estimates[first] - estimates[second])
    deviation = deviation[np.all(np.isfinite(deviation), axis=1)]
    if deviation.shape[0] < 2:
        return dict.fromkeys(pairs, float("nan"))
    se = deviation.std(axis=0, ddof=1)
    scaled = np.divide(np.abs(deviation), se, out=np.zeros_like(deviation), where=se > 0)
    c = float(np.quantile(scaled.max(axis=1), 1.0 - alpha))
    return {pair: c * float(s) for pair, s in zip(pairs, se, strict=True)}


def gaps(
    metric: str,
    labels: list[str],
    estimates: NDArray[np.float64],
    boot: NDArray[np.float64],
    sufficient: NDArray[np.bool_],
    ref: int,
    alpha: float,
) -> list[GapResult]:
    """Every group against the reference, then the largest minus the smallest, from the same resamples.

    ``estimates`` are ``metric`` of the groups ``labels`` on the data and ``boot`` on every resample (``n_boot x
    groups``); ``sufficient`` marks the groups with evidence and ``ref`` is the reference group's position.
    """
    upper = 1.0 if metric != "observed_expected" else math.inf
    judged = np.flatnonzero(sufficient & np.isfinite(estimates))
    with np.errstate(divide="ignore", invalid="ignore"):
        chance = _pairwise_chance(boot, estimates, judged, alpha)
        diff = boot - boot[:, [ref]]
        ratio = np.where(boot[:, [ref]] != 0.0, boot / boot[:, [ref]], np.nan)
        out = []
        for g in range(len(labels)):
            if g == ref:
                continue
            gap = estimates[g] - estimates[ref]
            # A pair outside the judged family (insufficient evidence) gets its own, single-comparison level.
            level = chance.get((min(g, ref), max(g, ref)), _quantile(np.abs(diff[:, g] - gap), 1.0 - alpha))
            out.append(
                GapResult(
                    metric=metric,
                    kind="vs_reference",
                    group=labels[g],
                    comparator=labels[ref],
                    difference=percentile_interval(gap, diff[:, g], alpha),
                    ratio=percentile_interval(_ratio(estimates[g], estimates[ref]), ratio[:, g], alpha),
                    chance_level=float(level),
                    status=SUFFICIENT if sufficient[g] and sufficient[ref] else INSUFFICIENT,
                )
            )
        if judged.size < 2:
            nan_ci = ConfidenceInterval(float("nan"), float("nan"), float("nan"), boot.shape[0], 0)
            out.append(GapResult(metric, "max_min", "", "", nan_ci, nan_ci, float("nan"), INSUFFICIENT))
            return out
        order = judged[np.argsort(estimates[judged], kind="stable")]
        lo, hi = int(order[0]), int(order[-1])
        sub = boot[:, judged]  # a resample where a judged group is undefined gives nan and is skipped
        top, bottom = sub.max(axis=1), sub.min(axis=1)
        out.append(
            GapResult(
                metric=metric,
                kind="max_min",
                group=labels[hi],
                comparator=labels[lo],
                difference=_basic_interval(estimates[hi] - estimates[lo], top - bottom, alpha, upper),
                ratio=_basic_interval(
                    _ratio(estimates[lo], estimates[hi]), np.where(top != 0.0, bottom / top, np.nan), alpha, 1.0
                ),
                chance_level=chance[(min(lo, hi), max(lo, hi))],
                status=SUFFICIENT,
            )
        )
    return out
