"""Percentile bootstrap confidence intervals for any metric in :mod:`evaluation.metrics`.

Rows are resampled with replacement; with ``groups`` (patient ids, say, when a patient has several ED
visits) whole groups are resampled instead (cluster bootstrap), so that correlated rows do not make an
interval look narrower than the data can support. A resample on which the metric is undefined (``nan``:
one outcome class, for example) is skipped and counted, never silently turned into a number.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.errors import InputValidationError

__all__ = ["ConfidenceInterval", "bootstrap_ci", "paired_bootstrap_difference"]

logger = logging.getLogger(__name__)

Metric = Callable[..., float]


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with a percentile bootstrap interval.

    Attributes
    ----------
    estimate : float
        The metric on the full data (not the mean of the resamples).
    low, high : float
        The ``alpha / 2`` and ``1 - alpha / 2`` percentiles of the finite resampled values; ``nan`` when
        no resample gave a finite value.
    n_boot : int
        Resamples drawn.
    n_valid : int
        Resamples on which the metric was finite (the interval is computed from these alone).
    """

    estimate: float
    low: float
    high: float
    n_boot: int
    n_valid: int

    def to_dict(self) -> dict[str, float]:
        """Return the fields as a flat ``dict`` (for a report row or an MLflow metric set)."""
        return {k: float(v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        return f"{self.estimate:.3f} ({self.low:.3f} to {self.high:.3f})"


def _check_params(n_boot: int, alpha: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise InputValidationError("n_boot", f"n_boot must be an integer >= 1; got {n_boot!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < float(alpha) < 1.0:
        raise InputValidationError("alpha", f"alpha must be in (0, 1); got {alpha!r}")


def _as_arrays(arrays: Sequence[ArrayLike]) -> list[NDArray[np.generic]]:
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, Sequence) or len(arrays) == 0:
        raise InputValidationError(
            "arrays", "arrays must be a non-empty sequence of arrays (a list or tuple, e.g. [y, p])"
        )
    out = [np.asarray(a) for a in arrays]
    for i, a in enumerate(out):
        if a.ndim == 0:
            raise InputValidationError("arrays", f"arrays[{i}] must be at least 1-dimensional; got a scalar")
    lengths = [len(a) for a in out]
    if len(set(lengths)) > 1:
        raise InputValidationError("arrays", f"arrays must all have the same length; got lengths {lengths}")
    if lengths[0] == 0:
        raise InputValidationError("arrays", "arrays must not be empty")
    return out


def _group_codes(groups: ArrayLike, n: int) -> NDArray[np.intp]:
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise InputValidationError(
            "groups", f"groups must be 1-dimensional with one id per row ({n}); got shape {g.shape}"
        )
    if g.dtype.kind == "f" and np.isnan(g).any():
        raise InputValidationError("groups", "groups must not contain missing (NaN) ids")
    try:
        _, codes = np.unique(g, return_inverse=True)
    except TypeError as err:
        raise InputValidationError("groups", "groups must be comparable ids (integers or strings)") from err
    return codes.reshape(-1)


def _resample_indices(
    n: int, groups: ArrayLike | None, n_boot: int, rng: np.random.Generator
) -> Iterator[NDArray[np.intp]]:
    """Yield ``n_boot`` row-index arrays: rows with replacement, or whole groups with replacement."""
    if groups is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, size=n)
        return
    codes = _group_codes(groups, n)
    order = np.argsort(codes, kind="stable")  # rows of group k are order[start[k] : start[k] + size[k]]
    size = np.bincount(codes)
    start = np.cumsum(size) - size
    n_groups = size.size
    for _ in range(n_boot):
        picked = rng.integers(0, n_groups, size=n_groups)
        picked_size = size[picked]
        out_start = np.cumsum(picked_size) - picked_size
        within = np.arange(int(picked_size.sum())) - np.repeat(out_start, picked_size)
        yield order[np.repeat(start[picked], picked_size) + within]


def bootstrap_ci(
    metric: Metric,
    arrays: Sequence[ArrayLike],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int | np.random.Generator = 0,
    groups: ArrayLike | None = None,
) -> ConfidenceInterval:
    """Percentile bootstrap confidence interval of ``metric(*arrays)``.

    Parameters
    ----------
    metric : callable
        Called as ``metric(*resampled_arrays)``; returns a float (``nan`` where undefined), e.g.
        :func:`evaluation.metrics.discrimination.auroc`.
    arrays : sequence of array-like
        The metric's positional arguments, all of the same length (rows along the first axis), e.g.
        ``[y, p]``. Every array is resampled with the same row indices.
    n_boot : int, default 1000
        Number of resamples.
    alpha : float, default 0.05
        ``1 - alpha`` is the coverage: 0.05 gives the 2.5th and 97.5th percentiles.
    seed : int or numpy.random.Generator, default 0
        Seed of a fresh generator, or a generator to draw from (and advance).
    groups : array-like of shape (n,), optional
        Cluster id per row (patient id, site). When given, whole clusters are resampled with replacement,
        so a resample has as many clusters as the data but a varying number of rows.

    Returns
    -------
    ConfidenceInterval
        ``estimate`` on the full data, ``low``/``high`` percentiles of the finite resamples, ``n_boot`` and
        ``n_valid``. Resamples where the metric was not finite are skipped and logged.

    Examples
    --------
    >>> from evaluation.metrics.discrimination import auroc
    >>> ci = bootstrap_ci(auroc, [y, p], n_boot=1000, seed=0)  # doctest: +SKIP
    >>> print(ci)  # doctest: +SKIP
    0.812 (0.790 to 0.833)
    """
    _check_params(n_boot, alpha)
    data = _as_arrays(arrays)
    n = len(data[0])
    rng = np.random.default_rng(seed)

    estimate = float(metric(*data))
    values = np.empty(int(n_boot), dtype=np.float64)
    for b, idx in enumerate(_resample_indices(n, groups, int(n_boot), rng)):
        values[b] = float(metric(*(a[idx] for a in data)))
    valid = values[np.isfinite(values)]

    if valid.size < n_boot:
        logger.warning(
            "bootstrap: metric %s was undefined on %d of %d resamples; interval from the %d finite ones",
            getattr(metric, "__name__", repr(metric)),
            n_boot - valid.size,
            n_boot,
            valid.size,
        )
    if valid.size == 0:
        low = high = float("nan")
    else:
        low, high = (float(q) for q in np.quantile(valid, [alpha / 2.0, 1.0 - alpha / 2.0]))
    return ConfidenceInterval(estimate=estimate, low=low, high=high, n_boot=int(n_boot), n_valid=int(valid.size))


def paired_bootstrap_difference(
    metric: Metric,
    y: ArrayLike,
    p_a: ArrayLike,
    p_b: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int | np.random.Generator = 0,
    groups: ArrayLike | None = None,
) -> ConfidenceInterval:
    """Bootstrap interval of ``metric(y, p_a) - metric(y, p_b)`` on the same resamples.

    Use it to compare a model with a baseline (NEWS2, the triage nurse) scored on the same rows: pairing
    removes the between-resample variation both share, so the interval of the difference is much narrower
    than two separate intervals would suggest.

    Parameters
    ----------
    metric : callable
        ``metric(y, p) -> float``, e.g. :func:`evaluation.metrics.discrimination.auroc` or, for triage levels,
        :func:`evaluation.metrics.acuity.weighted_kappa` (with ``p_a``, ``p_b`` predicted levels).
    y : array-like of shape (n,)
        Outcome (or true triage level).
    p_a, p_b : array-like of shape (n,)
        Predictions of model A and model B for the same rows.
    n_boot, alpha, seed, groups
        As in :func:`bootstrap_ci`.

    Returns
    -------
    ConfidenceInterval
        Of A minus B; ``n_valid`` counts resamples where both metrics were finite. An interval excluding 0
        means A and B differ at level ``alpha``.
    """

    def difference(y_r: NDArray[np.generic], a_r: NDArray[np.generic], b_r: NDArray[np.generic]) -> float:
        return float(metric(y_r, a_r)) - float(metric(y_r, b_r))

    difference.__name__ = f"difference of {getattr(metric, '__name__', 'metric')}"
    return bootstrap_ci(difference, [y, p_a, p_b], n_boot=n_boot, alpha=alpha, seed=seed, groups=groups)
