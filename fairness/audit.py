"""Fairness audit: every metric for every group of every sensitive attribute, with bootstrap intervals.

The audit answers "is the model equally good for everyone?" with numbers a release gate
(:func:`fairness.policy.gate`) can judge. Input is one row per prediction with its label, the model's score
and decision, optional triage levels and a patient id, and the sensitive attributes, described by an
:class:`AuditSpec`. :func:`audit` returns an :class:`AuditResult`: per group ``n``, ``positives`` and each
metric as an estimate with a percentile bootstrap interval, and the gaps between groups (each group against
a reference group, and the largest minus the smallest group) with intervals from the same resamples.

Metrics (each from :mod:`evaluation.metrics`, so there is one definition of each)
--------------------------------------------------------------------------------
``auroc``, ``ece`` (10 quantile bins), ``observed_expected`` (sum(y) / sum(score))
    from ``y_true`` and ``y_score``.
``sensitivity``, ``false_negative_rate``, ``false_positive_rate``, ``ppv``
    from ``y_true`` and ``y_flag`` (the decision at the operating threshold). For the chest X-ray model, with
    ``y_true`` = "the study is abnormal" and ``y_flag`` = "the model flagged a finding", the *false "no
    finding" rate* (an abnormal study called normal) is exactly ``false_negative_rate``; it is not reported
    twice.
``under_triage_rate``, ``high_acuity_under_triage_rate``
    from ``acuity_true`` and ``acuity_pred`` (levels 1-5, 1 most urgent): the share of all patients given a
    less urgent level than their true one, and the share of truly level 1-2 patients given level 3-5.

Evidence
--------
A group with fewer than ``min_group_n`` rows or ``min_group_positives`` positives has status
``"insufficient evidence"``. Its metrics are still computed where defined, but it is never judged, never
counted as 0 and never as a pass; it is left out of the largest-minus-smallest gap, and its gap against the
reference is flagged ``"insufficient evidence"`` too.

Bootstrap
---------
One set of ``n_boot`` resamples of the whole frame (rows, or whole clusters when ``cluster`` is given: a
patient's visits stay together) is drawn from ``numpy.random.default_rng(seed)`` in the same order as
:func:`evaluation.bootstrap.bootstrap_ci`, so the interval of the ``overall`` row equals ``bootstrap_ci`` with
the same seed. Every group metric is recomputed on every resample (:mod:`fairness._weighted`, vectorised as
row weights), and every gap interval comes from those same resamples, so the correlation between groups
within a resample is kept. Intervals are percentiles of the finite resampled values; ``n_valid`` counts them.

Small groups
------------
``spec.pool_adjacent`` (declared in the release policy before any evaluation) merges a group of an ordered
attribute (age bands) that lacks evidence with an adjacent one, by sizes and positives alone; the pooled group
is judged, and ``AttributeResult.pooled`` records which original groups it holds.

Gaps
----
``vs_reference``: ``group - reference`` (difference) and ``group / reference`` (ratio), percentile intervals.
``max_min``: among groups with sufficient evidence and a defined estimate, ``max - min`` (difference, >= 0)
and ``min / max`` (ratio, fairlearn's convention); ``group``/``comparator`` name the groups that are
largest/smallest on the full data. The max and min are re-taken on each resample, which biases the resampled
range upward (with equal groups the percentile interval would exclude 0 every time), so its interval is the
basic bootstrap interval ``[2 est - q_hi, 2 est - q_lo]``, clipped at 0.

Each gap also carries a ``chance_level``: how large a gap chance alone produces when the groups do not
differ. It holds simultaneously over every pair of the attribute's judged groups (max-T, as in Tukey's HSD:
``c * SE_pair`` with ``c`` the ``1 - alpha`` quantile over resamples of ``max_pairs |D* - D| / SE_pair``), so
the reference comparisons and the largest-minus-smallest gap of five ethnicity groups together give about
``alpha`` chance of a false alarm, not one ``alpha`` each; with two groups it is ``~ 1.96 SE``.
:func:`fairness.policy.gate` fails a gap only when it is beyond the tolerance and there is evidence of a
difference: its interval excludes 0 and it is beyond its chance level.
Point estimates are each metric's :mod:`evaluation.metrics` function on the group's rows (equal to fairlearn's
``MetricFrame.by_group``, the oracle of the tests). Every group's metric on every resample is kept
in ``AuditResult.resamples``: the release gate takes its family-wise intervals over all the checks it makes from
them (:mod:`fairness.family`).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from evaluation.bootstrap import ConfidenceInterval
from evaluation.metrics import (
    auroc,
    calibration_curve,
    expected_calibration_error,
    high_acuity_under_triage_rate,
    observed_expected_ratio,
    positive_predictive_value,
    sensitivity,
    specificity,
    under_triage_rate,
)
from fairness._weighted import FLAG_METRICS, SCORE_METRICS, Outcomes, WeightedPartition
from fairness.audit_types import (
    INSUFFICIENT,
    INTERSECTION_SEPARATOR,
    MISSING_GROUP,
    SUFFICIENT,
    AttributeResult,
    AuditResult,
    AuditSpec,
    GapResult,
    GroupResult,
)
from models.errors import InputValidationError
from models.labels import ACUITY_LEVELS, HIGH_ACUITY_MAX_LEVEL

__all__ = [
    "INSUFFICIENT",
    "INTERSECTION_SEPARATOR",
    "MISSING_GROUP",
    "SUFFICIENT",
    "AttributeResult",
    "AuditResult",
    "AuditSpec",
    "GapResult",
    "GroupResult",
    "audit",
]

logger = logging.getLogger(__name__)

OVERALL = "overall"
_ALL = "all"

#: Row-weight cells per vectorised block of resamples (bounds memory at a few tens of MB).
_BLOCK_CELLS = 2_000_000


# ------------------------------------------------------------------------------------------- validation
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


def _outcomes(frame: pd.DataFrame, spec: AuditSpec) -> Outcomes:
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


def _cluster_codes(frame: pd.DataFrame, spec: AuditSpec) -> NDArray[np.intp] | None:
    if spec.cluster is None:
        return None
    values = _column(frame, "cluster", spec.cluster).to_numpy()
    try:
        _, codes = np.unique(values, return_inverse=True)  # the coding evaluation.bootstrap uses
    except TypeError as err:
        raise InputValidationError("cluster", f"cluster column {spec.cluster!r} must hold comparable ids") from err
    return codes.reshape(-1)


# ---------------------------------------------------------------------------------------- computation
def _fnr(y: ArrayLike, flagged: ArrayLike) -> float:
    return 1.0 - sensitivity(y, flagged)


def _fpr(y: ArrayLike, flagged: ArrayLike) -> float:
    return 1.0 - specificity(y, flagged)


_METRIC_FUNCTIONS = {
    "auroc": auroc,
    "ece": expected_calibration_error,
    "observed_expected": observed_expected_ratio,
    "sensitivity": sensitivity,
    "false_negative_rate": _fnr,
    "false_positive_rate": _fpr,
    "ppv": positive_predictive_value,
    "under_triage_rate": under_triage_rate,
    "high_acuity_under_triage_rate": high_acuity_under_triage_rate,
}


def _point_estimates(
    outcomes: Outcomes, codes: NDArray[np.intp], labels: list[str], metrics: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """By-group estimates, each from its :mod:`evaluation.metrics` function on the group's rows (keyed by label).

    Equal to fairlearn's ``MetricFrame(...).by_group`` with the same functions (the oracle test checks it),
    without its per-call overhead, which dominated the audit's run time.
    """
    columns = {
        m: (outcomes.y, outcomes.score)
        if m in SCORE_METRICS
        else (outcomes.y, outcomes.flag)
        if m in FLAG_METRICS
        else (outcomes.acuity_true, outcomes.acuity_pred)
        for m in metrics
    }
    out: dict[str, dict[str, float]] = {}
    for g, label in enumerate(labels):
        mask = codes == g
        out[label] = {}
        for m in metrics:
            y_true, y_pred = columns[m]
            assert y_true is not None and y_pred is not None  # metrics lists only what the columns support
            with np.errstate(divide="ignore", invalid="ignore"):
                out[label][m] = float(_METRIC_FUNCTIONS[m](y_true[mask], y_pred[mask]))
    return out


def _weights(n: int, clusters: NDArray[np.intp] | None, b: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """Row weights of ``b`` resamples, drawn exactly as evaluation.bootstrap draws its indices."""
    out = np.empty((b, n))
    if clusters is None:
        for k in range(b):
            out[k] = np.bincount(rng.integers(0, n, size=n), minlength=n)
    else:
        n_clusters = int(clusters.max()) + 1
        for k in range(b):
            out[k] = np.bincount(rng.integers(0, n_clusters, size=n_clusters), minlength=n_clusters)[clusters]
    return out


def _interval(estimate: float, values: NDArray[np.float64], alpha: float) -> ConfidenceInterval:
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
    pct = _interval(estimate, values, alpha)
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


def _gaps(
    metric: str,
    labels: list[str],
    estimates: NDArray[np.float64],
    boot: NDArray[np.float64],
    sufficient: NDArray[np.bool_],
    ref: int,
    alpha: float,
) -> list[GapResult]:
    """Every group against the reference, then the largest minus the smallest, from the same resamples."""
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
                    difference=_interval(gap, diff[:, g], alpha),
                    ratio=_interval(_ratio(estimates[g], estimates[ref]), ratio[:, g], alpha),
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


@dataclass
class _Partition:
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
        return _evidence(sum(n[g] for g in block), sum(pos[g] for g in block), spec)[0] == INSUFFICIENT

    def positives(block: list[str]) -> int:
        return sum(pos[g] for g in block)

    while len(blocks) > 1 and any(short(b) for b in blocks):
        k = min((i for i, b in enumerate(blocks) if short(b)), key=lambda i: (positives(blocks[i]), i))
        neighbours = [j for j in (k - 1, k + 1) if 0 <= j < len(blocks)]
        j = min(neighbours, key=lambda i: (positives(blocks[i]), i))
        lo, hi = min(j, k), max(j, k)
        blocks[lo : hi + 1] = [blocks[lo] + blocks[hi]]
    return {g: "+".join(b) for b in blocks if len(b) > 1 for g in b}


def _partitions(frame: pd.DataFrame, spec: AuditSpec, y: NDArray[np.float64]) -> list[_Partition]:
    n = len(frame)
    out = [_Partition(OVERALL, (), pd.Series([_ALL] * n, name=OVERALL), [_ALL], np.zeros(n, dtype=np.intp))]
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
        part = _Partition(name, columns, features, [str(u) for u in uniques], codes.reshape(-1))
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


def _bootstrap(
    partitions: list[_Partition], outcomes: Outcomes, clusters: NDArray[np.intp] | None, spec: AuditSpec
) -> None:
    """Fill ``p.boot[metric]`` (n_boot x groups) of every partition from one stream of resamples."""
    n = outcomes.y.size
    rng = np.random.default_rng(spec.seed)
    kernels = [WeightedPartition(p.codes, len(p.labels), outcomes) for p in partitions]
    for p in partitions:
        p.boot = {m: np.empty((spec.n_boot, len(p.labels))) for m in outcomes.metrics}
    block = max(1, min(spec.n_boot, _BLOCK_CELLS // n))
    for b0 in range(0, spec.n_boot, block):
        b1 = min(spec.n_boot, b0 + block)
        weights = _weights(n, clusters, b1 - b0, rng)
        for p, kernel in zip(partitions, kernels, strict=True):
            for m, values in kernel.compute(weights).items():
                p.boot[m][b0:b1] = values


def _evidence(n: int, positives: int, spec: AuditSpec) -> tuple[str, str]:
    short = []
    if n < spec.min_group_n:
        short.append(f"n={n} is below min_group_n={spec.min_group_n}")
    if positives < spec.min_group_positives:
        short.append(f"{positives} positives are below min_group_positives={spec.min_group_positives}")
    return (INSUFFICIENT if short else SUFFICIENT), "; ".join(short)


def _groups(
    p: _Partition, outcomes: Outcomes, by_group: dict[str, dict[str, float]], spec: AuditSpec
) -> list[GroupResult]:
    sizes = np.bincount(p.codes, minlength=len(p.labels))
    positives = np.bincount(p.codes, weights=outcomes.y, minlength=len(p.labels)).astype(np.int64)
    out = []
    for g, label in enumerate(p.labels):
        status, reason = _evidence(int(sizes[g]), int(positives[g]), spec)
        calibration = None
        if outcomes.score is not None:
            mask = p.codes == g
            curve = calibration_curve(outcomes.y[mask], outcomes.score[mask])
            calibration = {k: tuple(float(x) for x in v) for k, v in curve.items()}
        metrics = {m: _interval(by_group[label][m], p.boot[m][:, g], spec.alpha) for m in outcomes.metrics}
        support = _support(outcomes, p.codes == g)
        out.append(GroupResult(label, int(sizes[g]), int(positives[g]), status, reason, metrics, calibration, support))
    return out


def _support(outcomes: Outcomes, mask: NDArray[np.bool_]) -> dict[str, int]:
    """Per rate metric, the number of the group's patients it is a share of."""
    y = outcomes.y[mask]
    out: dict[str, int] = {}
    if outcomes.flag is not None:
        flagged = int(outcomes.flag[mask].sum())
        out |= {"sensitivity": int(y.sum()), "false_negative_rate": int(y.sum())}
        out |= {"false_positive_rate": int(y.size - y.sum()), "ppv": flagged}
    if outcomes.acuity_true is not None:
        high = int(np.sum(outcomes.acuity_true[mask] <= HIGH_ACUITY_MAX_LEVEL))
        out |= {"under_triage_rate": int(mask.sum()), "high_acuity_under_triage_rate": high}
    return out


def audit(frame: pd.DataFrame, spec: AuditSpec) -> AuditResult:
    """Audit a model's predictions group by group; see the module docstring for what is computed.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per prediction, with the columns ``spec`` names. Missing values in a sensitive attribute
        form the group ``"<missing>"``; missing values anywhere else are an error.
    spec : AuditSpec
        Columns, attributes, intersections, evidence thresholds and bootstrap settings.

    Returns
    -------
    AuditResult
        ``overall`` (all rows, as one group) and one :class:`AttributeResult` per attribute, then per
        intersection, in the order of the spec.

    Raises
    ------
    models.errors.InputValidationError
        Naming the spec field (and column) at fault: a missing column, a non-binary label, a score outside
        [0, 1], a triage level outside 1-5, a reference group absent from the data.
    """
    started = time.perf_counter()
    if not isinstance(frame, pd.DataFrame) or len(frame) == 0:
        raise InputValidationError("frame", "frame must be a non-empty pandas DataFrame")
    outcomes = _outcomes(frame, spec)
    clusters = _cluster_codes(frame, spec)
    partitions = _partitions(frame, spec, outcomes.y)
    _bootstrap(partitions, outcomes, clusters, spec)

    overall_estimates = _point_estimates(outcomes, partitions[0].codes, partitions[0].labels, outcomes.metrics)
    results = []
    for p in partitions[1:]:
        by_group = _point_estimates(outcomes, p.codes, p.labels, outcomes.metrics)
        groups = _groups(p, outcomes, by_group, spec)
        sufficient = np.array([g.status == SUFFICIENT for g in groups])
        gaps: list[GapResult] = []
        for m in outcomes.metrics:
            estimates = np.array([by_group[label][m] for label in p.labels])
            gaps += _gaps(m, p.labels, estimates, p.boot[m], sufficient, p.reference, spec.alpha)
        results.append(
            AttributeResult(p.name, p.columns, p.labels[p.reference], tuple(groups), tuple(gaps), dict(p.pooled))
        )

    overall = _groups(partitions[0], outcomes, overall_estimates, spec)[0]
    logger.info(
        "fairness audit: %d rows, %d attributes, %d groups, %d resamples in %.1f s",
        len(frame),
        len(results),
        sum(len(a.groups) for a in results),
        spec.n_boot,
        time.perf_counter() - started,
    )
    return AuditResult(
        spec=spec,
        n_rows=len(frame),
        n_clusters=None if clusters is None else int(clusters.max()) + 1,
        metrics=outcomes.metrics,
        overall=overall,
        attributes=tuple(results),
        resamples={p.name: dict(p.boot) for p in partitions[1:]},
    )
