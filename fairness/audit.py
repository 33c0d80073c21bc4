"""Fairness audit: every metric for every group of every sensitive attribute, with bootstrap intervals.

The audit answers "is the model equally good for everyone?" with numbers a release gate
(:func:`fairness.gate.gate`) can judge. Input is one row per prediction with its label, the model's score
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
:func:`fairness.gate.gate` fails a gap only when it is beyond the tolerance and there is evidence of a
difference: its interval excludes 0 and it is beyond its chance level.
Point estimates are each metric's :mod:`evaluation.metrics` function on the group's rows (equal to fairlearn's
``MetricFrame.by_group``, the oracle of the tests). Every group's metric on every resample is kept
in ``AuditResult.resamples``: the release gate takes its family-wise intervals over all the checks it makes from
them (:mod:`fairness.family`).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from evaluation.metrics.acuity import high_acuity_under_triage_rate, under_triage_rate
from evaluation.metrics.calibration import calibration_curve, expected_calibration_error, observed_expected_ratio
from evaluation.metrics.decision import positive_predictive_value, sensitivity, specificity
from evaluation.metrics.discrimination import auroc
from fairness._weighted import FLAG_METRICS, SCORE_METRICS, Outcomes, WeightedPartition
from fairness.audit_frame import Partition, cluster_codes, evidence, partitions, read_outcomes
from fairness.audit_gaps import gaps, percentile_interval
from fairness.audit_result import SUFFICIENT, AttributeResult, AuditResult, GapResult, GroupResult
from fairness.audit_spec import AuditSpec
from models.errors import InputValidationError
from models.labels import HIGH_ACUITY_MAX_LEVEL

__all__ = ["audit"]

logger = logging.getLogger(__name__)

#: Row-weight cells per vectorised block of resamples (bounds memory at a few tens of MB).
_BLOCK_CELLS = 2_000_000


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


def _bootstrap(parts: list[Partition], outcomes: Outcomes, clusters: NDArray[np.intp] | None, spec: AuditSpec) -> None:
    """Fill ``p.boot[metric]`` (n_boot x groups) of every partition from one stream of resamples."""
    n = outcomes.y.size
    rng = np.random.default_rng(spec.seed)
    kernels = [WeightedPartition(p.codes, len(p.labels), outcomes) for p in parts]
    for p in parts:
        p.boot = {m: np.empty((spec.n_boot, len(p.labels))) for m in outcomes.metrics}
    block = max(1, min(spec.n_boot, _BLOCK_CELLS // n))
    for b0 in range(0, spec.n_boot, block):
        b1 = min(spec.n_boot, b0 + block)
        weights = _weights(n, clusters, b1 - b0, rng)
        for p, kernel in zip(parts, kernels, strict=True):
            for m, values in kernel.compute(weights).items():
                p.boot[m][b0:b1] = values


def _groups(
    p: Partition, outcomes: Outcomes, by_group: dict[str, dict[str, float]], spec: AuditSpec
) -> list[GroupResult]:
    sizes = np.bincount(p.codes, minlength=len(p.labels))
    positives = np.bincount(p.codes, weights=outcomes.y, minlength=len(p.labels)).astype(np.int64)
    out = []
    for g, label in enumerate(p.labels):
        status, reason = evidence(int(sizes[g]), int(positives[g]), spec)
        calibration = None
        if outcomes.score is not None:
            mask = p.codes == g
            curve = calibration_curve(outcomes.y[mask], outcomes.score[mask])
            calibration = {k: tuple(float(x) for x in v) for k, v in curve.items()}
        metrics = {m: percentile_interval(by_group[label][m], p.boot[m][:, g], spec.alpha) for m in outcomes.metrics}
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
    outcomes = read_outcomes(frame, spec)
    clusters = cluster_codes(frame, spec)
    parts = partitions(frame, spec, outcomes.y)
    _bootstrap(parts, outcomes, clusters, spec)

    overall_estimates = _point_estimates(outcomes, parts[0].codes, parts[0].labels, outcomes.metrics)
    results = []
    for p in parts[1:]:
        by_group = _point_estimates(outcomes, p.codes, p.labels, outcomes.metrics)
        groups = _groups(p, outcomes, by_group, spec)
        sufficient = np.array([g.status == SUFFICIENT for g in groups])
        found: list[GapResult] = []
        for m in outcomes.metrics:
            estimates = np.array([by_group[label][m] for label in p.labels])
            found += gaps(m, p.labels, estimates, p.boot[m], sufficient, p.reference, spec.alpha)
        results.append(
            AttributeResult(p.name, p.columns, p.labels[p.reference], tuple(groups), tuple(found), dict(p.pooled))
        )

    overall = _groups(parts[0], outcomes, overall_estimates, spec)[0]
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
        resamples={p.name: dict(p.boot) for p in parts[1:]},
    )
