"""The gate's decision rule: which statistics of an audit it judges together, and how it judges each one.

:func:`family_of` gathers every statistic :func:`fairness.gate.gate` will judge on one audit and gives each its
family-wise (simultaneous) interval; :func:`judge` decides one interval against its tolerance under the policy's
``straddle_rule``; :func:`judged_groups` says which groups of an attribute are judged on a metric.

Family-wise decision rule (``alpha``, ``straddle_rule``)
---------------------------------------------------------
The *family* is every statistic the gate judges on one audit: every pair of judged groups of every attribute
and intersection for each gated gap metric (all pairs, because the largest-minus-smallest gap is one of them,
chosen by the data), and every judged group for each gated level metric. Each statistic gets a simultaneous
interval ``estimate +- c SE`` from the audit's bootstrap resamples (max-T, :mod:`fairness.family`), with ``c``
chosen so that a fair model (no gap; every level at worst at its tolerance) fails **any** check with
probability at most ``alpha``. Under ``straddle_rule: estimate`` (shipped):

* a gap fails when ``|gap| > tolerance`` **and** its simultaneous interval excludes 0 (evidence that the
  groups differ): ``|D| > max(tolerance, c SE)``;
* a group level fails when its simultaneous interval lies wholly beyond the tolerance (evidence that the group
  is beyond it).

``pass`` fails only an interval wholly beyond the tolerance (a subset of ``estimate``'s failures, so the same
error control); ``fail`` fails any interval reaching beyond the tolerance (the audit must show compliance; no
false-alarm guarantee).

Requirement (issue "release-worthy models"): at the real audit's shape (4 attributes, 2-8 groups each, the
sex x age band intersection, every gated metric: about 270 statistics) a fair model fails the whole gate at
most 5% of the time, and a 5 pp under-triage gap between two groups of 2,000 at a 10% base rate is caught at
least 90% of the time. With ``SE = 0.0104`` for that gap, power is ``Phi((0.05 - c SE) / SE)``: 0.998 with two
groups alone (``c ~ 2.2``, 7 statistics), about 0.89 for that one pair's check at ``c ~ 3.6``; the gap is also
seen in the intersection's cells, so the gate catches it more often than the single check does.
``benchmarks/fairness_power.py`` measures both by simulation through the real audit and gate
(``docs/fairness_gate_power.md``). The 1.x rule (per-attribute chance levels, point-estimate levels) held 5%
per attribute and metric only: 7.5% for the whole gate with two groups, 14% with four.
"""

from __future__ import annotations

import itertools
import math

from fairness.audit_result import SUFFICIENT, AttributeResult, AuditResult, GroupResult
from fairness.family import FamilyWise, Statistic, simultaneous
from fairness.policy import ReleasePolicy
from models.errors import ConfigError

__all__ = ["family_of", "gap_key", "judge", "judged_groups", "level_key"]


def judge(kind: str, estimate: float, low: float, high: float, tol: float, rule: str) -> tuple[bool, str]:
    """Fail or not, and a note when the interval straddles the tolerance. ``kind``: gap, minimum, maximum.

    ``low`` and ``high`` are the family-wise (simultaneous) interval. Under ``straddle_rule: estimate`` a gap
    fails when its estimate is beyond the tolerance *and* the interval excludes 0 (evidence that the groups
    differ at all); a level (minimum, maximum) fails when the interval lies wholly beyond the tolerance
    (evidence that the group is beyond it).
    """
    if kind == "gap":
        beyond, wholly_beyond = abs(estimate) > tol, low > tol or high < -tol
        within = -tol <= low and high <= tol
        differs = low > 0.0 or high < 0.0
    elif kind == "minimum":
        beyond, wholly_beyond, within, differs = estimate < tol, high < tol, low >= tol, False
    else:
        beyond, wholly_beyond, within, differs = estimate > tol, low > tol, high <= tol, False
    if wholly_beyond or within:
        return wholly_beyond, ""
    if rule == "fail":
        return True, "; the interval reaches beyond the tolerance, which fails under straddle_rule 'fail'"
    if rule == "pass":
        return False, "; the interval straddles the tolerance, which passes under straddle_rule 'pass'"
    if kind != "gap":
        return False, (
            "; the interval straddles the tolerance (no evidence that the group is beyond it), which passes "
            "under straddle_rule 'estimate'"
        )
    if beyond and not differs:
        return False, (
            "; the point estimate is beyond the tolerance but the interval includes 0 (no evidence that the "
            "groups differ), which passes under straddle_rule 'estimate'"
        )
    return beyond, "; the interval straddles the tolerance, judged by the point estimate (straddle_rule 'estimate')"


def judged_groups(attr: AttributeResult, metric: str, min_support: int) -> list[int]:
    """Positions of the groups judged on ``metric``: sufficient evidence, a finite estimate and, for a rate,
    at least ``min_support`` patients it is a share of (e.g. 20 truly level 1-2 patients for high-acuity
    under-triage)."""
    return [
        i
        for i, g in enumerate(attr.groups)
        if g.status == SUFFICIENT
        and metric in g.metrics
        and math.isfinite(g.metrics[metric].estimate)
        and g.support.get(metric, min_support) >= min_support
    ]


def _null_se(a: GroupResult, b: GroupResult, metric: str) -> float:
    """Standard error of a difference of two rates with no difference (pooled rate); 0 when not a rate."""
    m_a, m_b = a.support.get(metric, 0), b.support.get(metric, 0)
    if m_a <= 0 or m_b <= 0:
        return 0.0
    pooled = (a.metrics[metric].estimate * m_a + b.metrics[metric].estimate * m_b) / (m_a + m_b)
    return math.sqrt(max(pooled * (1.0 - pooled), 0.0) * (1.0 / m_a + 1.0 / m_b))


def gap_key(attribute: str, metric: str, a: str, b: str) -> tuple[str, ...]:
    """The family's key of the gap between groups ``a`` and ``b`` (either order) of ``attribute`` in ``metric``."""
    return ("gap", attribute, metric, *sorted((a, b)))


def level_key(attribute: str, metric: str, group: str) -> tuple[str, ...]:
    """The family's key of ``group``'s level of ``metric``."""
    return ("level", attribute, metric, group)


def family_of(audit: AuditResult, policy: ReleasePolicy) -> FamilyWise:
    """Every statistic the gate will judge on ``audit``, with simultaneous intervals over all of them.

    Raises
    ------
    models.errors.ConfigError
        The audit carries no bootstrap resamples (read back from JSON without them).
    """
    statistics: list[Statistic] = []
    for attr in audit.attributes:
        boot = audit.resamples.get(attr.attribute)
        if boot is None:
            raise ConfigError(
                f"the audit of '{attr.attribute}' carries no bootstrap resamples (read back from JSON without "
                "them?): the gate needs them for its family-wise intervals; re-run fairness.audit.audit"
            )
        for metric in policy.max_gap:
            if metric not in boot or not policy.judged(metric, attr.columns):
                continue
            judged = judged_groups(attr, metric, policy.min_group_positives)
            for i, j in itertools.combinations(judged, 2):
                gi, gj = attr.groups[i], attr.groups[j]
                a, b = sorted((gi.group, gj.group))
                first, second = (i, j) if a == gi.group else (j, i)
                estimate = attr.groups[first].metrics[metric].estimate - attr.groups[second].metrics[metric].estimate
                resampled = boot[metric][:, first] - boot[metric][:, second]
                floor = _null_se(gi, gj, metric)
                key = gap_key(attr.attribute, metric, a, b)
                tolerance = policy.max_gap[metric] if policy.straddle_rule != "fail" else 0.0
                statistics.append(Statistic(key, estimate, resampled, floor, tolerance))
        for metric in dict.fromkeys([*policy.min_group, *policy.max_group]):
            if metric not in boot or not policy.judged(metric, attr.columns):
                continue
            for i in judged_groups(attr, metric, policy.min_group_positives):
                g = attr.groups[i]
                key = level_key(attr.attribute, metric, g.group)
                estimate = g.metrics[metric].estimate
                slacks = []
                if metric in policy.min_group:
                    slacks.append(estimate - policy.min_group[metric])
                if metric in policy.max_group:
                    slacks.append(policy.max_group[metric] - estimate)
                slack = min(slacks)
                if policy.straddle_rule == "fail":
                    slack = -math.inf  # every level may fail: none is screened out
                statistics.append(Statistic(key, estimate, boot[metric][:, i], slack=slack))
    return simultaneous(statistics, policy.alpha)
