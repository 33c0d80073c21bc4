"""Release policy and gate: criteria and tolerances declared in advance, judged with family-wise error control.

:func:`load_policy` reads ``fairness/release_policy.yaml`` (or another file) and validates it at the edge: an
unknown key, a wrong type or an out-of-range value raises :class:`models.errors.ConfigError` naming the key.
:func:`gate` turns an :class:`~fairness.audit.AuditResult` into a :class:`GateResult`: data, not an
exception, with an overall status ``"pass"``, ``"fail"`` or ``"insufficient evidence"`` and one
:class:`Check` per judgement, each with a reason in plain words naming the group and the metric.

What the policy declares
------------------------
``max_gap`` / ``min_group`` / ``max_group``: the gated metrics and their tolerances; ``criteria``: for each
gated metric, the clinical decision it governs and why; ``reported_only``: metrics computed and reported but
not judged, on which attributes (an intersection containing one of them too), and why; ``small_groups``: the
pre-declared pooling of adjacent groups (:attr:`fairness.audit.AuditSpec.pool_adjacent`); ``history``: every
version with its date and changes.

Checks
------
``gap_vs_reference`` (``max_gap.<metric>``)
    ``group - reference`` for every judged group.
``max_min_gap`` (``max_gap.<metric>``)
    largest minus smallest judged group, when that pair does not include the reference (otherwise it is the
    same comparison as a ``gap_vs_reference`` check and is not judged twice).
``group_minimum`` / ``group_maximum`` (``min_group.<metric>`` / ``max_group.<metric>``)
    every judged group must be at least / at most the tolerance.
``evidence``
    one per group with insufficient evidence: "not evaluated", never a pass; blocks release, making the overall
    status ``"insufficient evidence"``, only in an attribute the policy lists as required. Also one per gap
    whose rate has fewer than ``min_group_positives`` patients in a group's denominator (e.g. high-acuity
    under-triage of a group with 12 true level 1-2 patients): not evaluated, does not block.
``coverage``
    a required attribute that was not audited (blocks), or a policy metric the audit could not compute (the
    audit had no such columns: an imaging audit has no triage levels; reported, does not block).

Overall: ``"fail"`` if any check fails, else ``"insufficient evidence"`` if any blocking check lacks evidence,
else ``"pass"``.

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
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from evaluation.bootstrap import ConfidenceInterval
from fairness.audit_types import INSUFFICIENT, SUFFICIENT, AttributeResult, AuditResult, GapResult, GroupResult
from fairness.family import FamilyWise, Statistic, simultaneous
from fairness.policy_schema import (
    DEFAULT_POLICY_PATH,
    SECTIONS,
    STRADDLE_RULES,
    HistoryEntry,
    ModelIntendedUse,
    NonInferiority,
    OutsidePopulation,
    ReleasePolicy,
    ReportedOnly,
    load_policy,
)
from models.errors import ConfigError

__all__ = [
    "DEFAULT_POLICY_PATH",
    "FAIL",
    "PASS",
    "STRADDLE_RULES",
    "Check",
    "GateResult",
    "HistoryEntry",
    "ModelIntendedUse",
    "NonInferiority",
    "OutsidePopulation",
    "ReleasePolicy",
    "ReportedOnly",
    "gate",
    "load_policy",
]

PASS, FAIL = "pass", "fail"
_SECTIONS = SECTIONS


# ----------------------------------------------------------------------------------------------- gate
@dataclass(frozen=True)
class Check:
    """One judgement of the gate.

    Attributes
    ----------
    check : str
        ``gap_vs_reference``, ``max_min_gap``, ``group_minimum``, ``group_maximum``, ``evidence`` or ``coverage``.
    policy_key : str
        The policy entry applied, e.g. ``"max_gap.under_triage_rate"``.
    attribute, group, comparator, metric : str
        What was judged ("" where not applicable); ``comparator`` is the other group of a gap.
    estimate, low, high, tolerance : float
        The estimate and its interval (a gap's signed difference), and the tolerance; ``nan`` when absent.
    status : str
        ``"pass"``, ``"fail"`` or ``"insufficient evidence"``.
    blocking : bool
        Whether this check stops release: every failure, and insufficient evidence in a required attribute.
    reason : str
        The judgement in plain words, naming the group and the metric.
    """

    check: str
    policy_key: str
    attribute: str
    group: str
    comparator: str
    metric: str
    estimate: float
    low: float
    high: float
    tolerance: float
    status: str
    blocking: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("estimate", "low", "high", "tolerance"):
            d[k] = float(d[k]) if math.isfinite(d[k]) else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Check:
        nums = {k: float("nan") if d[k] is None else float(d[k]) for k in ("estimate", "low", "high", "tolerance")}
        return cls(**{**d, **nums})


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict: ``status`` and every check behind it.

    ``family_size`` statistics were judged together with family-wise error ``alpha``; ``critical_value`` is
    their max-T multiplier (each judged interval is ``estimate +- critical_value * SE``). ``notes`` list what
    the policy reports without judging, and which groups were pooled.
    """

    status: str
    policy_version: str
    straddle_rule: str
    alpha: float
    checks: tuple[Check, ...]
    family_size: int = 0
    critical_value: float = math.nan
    notes: tuple[str, ...] = ()

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == FAIL)

    @property
    def blocking_without_evidence(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == INSUFFICIENT and c.blocking)

    def summary(self) -> str:
        """One line per failing or blocking check, after the overall status."""
        lines = [
            f"fairness gate (policy {self.policy_version}): {self.status} "
            f"({self.family_size} checks judged together, family-wise alpha {self.alpha:g})"
        ]
        lines += [f"  FAIL: {c.reason}" for c in self.failures]
        lines += [f"  INSUFFICIENT EVIDENCE: {c.reason}" for c in self.blocking_without_evidence]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "policy_version": self.policy_version,
            "straddle_rule": self.straddle_rule,
            "alpha": self.alpha,
            "family_size": self.family_size,
            "critical_value": self.critical_value if math.isfinite(self.critical_value) else None,
            "notes": list(self.notes),
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        checks = tuple(Check.from_dict(c) for c in d["checks"])
        critical = d.get("critical_value")
        return cls(
            str(d["status"]),
            str(d["policy_version"]),
            str(d["straddle_rule"]),
            float(d["alpha"]),
            checks,
            int(d.get("family_size", 0)),
            math.nan if critical is None else float(critical),
            tuple(str(n) for n in d.get("notes", ())),
        )


def _judge(kind: str, estimate: float, low: float, high: float, tol: float, rule: str) -> tuple[bool, str]:
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


def _judged_groups(attr: AttributeResult, metric: str, min_support: int) -> list[int]:
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


def _gap_key(attribute: str, metric: str, a: str, b: str) -> tuple[str, ...]:
    return ("gap", attribute, metric, *sorted((a, b)))


class _Gate:
    def __init__(self, audit: AuditResult, policy: ReleasePolicy) -> None:
        self.audit, self.policy = audit, policy
        self.level_name = f"family-wise {100 * (1 - policy.alpha):g}% interval"
        self.checks: list[Check] = []
        self.notes: list[str] = []
        self.family = self._family()

    # ------------------------------------------------------------------------------------------ family
    def _levels(self) -> dict[str, None]:
        return dict.fromkeys([*self.policy.min_group, *self.policy.max_group])

    def _family(self) -> FamilyWise:
        """Every statistic the gate will judge, with simultaneous intervals over all of them."""
        statistics: list[Statistic] = []
        for attr in self.audit.attributes:
            boot = self.audit.resamples.get(attr.attribute)
            if boot is None:
                raise ConfigError(
                    f"the audit of '{attr.attribute}' carries no bootstrap resamples (read back from JSON without "
                    "them?): the gate needs them for its family-wise intervals; re-run fairness.audit.audit"
                )
            for metric in self.policy.max_gap:
                if metric not in boot or not self.policy.judged(metric, attr.columns):
                    continue
                judged = _judged_groups(attr, metric, self.policy.min_group_positives)
                for i, j in itertools.combinations(judged, 2):
                    gi, gj = attr.groups[i], attr.groups[j]
                    a, b = sorted((gi.group, gj.group))
                    first, second = (i, j) if a == gi.group else (j, i)
                    estimate = (
                        attr.groups[first].metrics[metric].estimate - attr.groups[second].metrics[metric].estimate
                    )
                    resampled = boot[metric][:, first] - boot[metric][:, second]
                    floor = _null_se(gi, gj, metric)
                    key = _gap_key(attr.attribute, metric, a, b)
                    tolerance = self.policy.max_gap[metric] if self.policy.straddle_rule != "fail" else 0.0
                    statistics.append(Statistic(key, estimate, resampled, floor, tolerance))
            for metric in self._levels():
                if metric not in boot or not self.policy.judged(metric, attr.columns):
                    continue
                for i in _judged_groups(attr, metric, self.policy.min_group_positives):
                    g = attr.groups[i]
                    key = ("level", attr.attribute, metric, g.group)
                    estimate = g.metrics[metric].estimate
                    slacks = []
                    if metric in self.policy.min_group:
                        slacks.append(estimate - self.policy.min_group[metric])
                    if metric in self.policy.max_group:
                        slacks.append(self.policy.max_group[metric] - estimate)
                    slack = min(slacks)
                    if self.policy.straddle_rule == "fail":
                        slack = -math.inf  # every level may fail: none is screened out
                    statistics.append(Statistic(key, estimate, boot[metric][:, i], slack=slack))
        return simultaneous(statistics, self.policy.alpha)

    # ----------------------------------------------------------------------------------------- helpers
    def add(
        self,
        check: str,
        key: str,
        attr: str,
        group: str,
        comparator: str,
        metric: str,
        values: tuple[float, float, float],
        tol: float,
        status: str,
        blocking: bool,
        reason: str,
    ) -> None:
        # Blocking: does this check stop release? A failure always does; insufficient evidence only where the
        # caller says so (a required attribute); a pass never does.
        blocking = status == FAIL or (status == INSUFFICIENT and blocking)
        self.checks.append(Check(check, key, attr, group, comparator, metric, *values, tol, status, blocking, reason))

    def interval(self, estimate: float, low: float, high: float, ci: ConfidenceInterval) -> str:
        alone = ""
        if math.isfinite(ci.low) and math.isfinite(ci.high):
            alone = f"; {100 * (1 - self.policy.alpha):g}% CI alone {ci.low:.3f} to {ci.high:.3f}"
        return f"{estimate:.3f} ({self.level_name} {low:.3f} to {high:.3f} over {self.family.size} checks{alone})"

    # --------------------------------------------------------------------------------------------- run
    def run(self) -> GateResult:
        audited = {a.attribute: a for a in self.audit.attributes}
        for name in self.policy.required_attributes:
            if name not in audited:
                reason = f"sensitive attribute '{name}' is required by the policy but was not audited"
                nan3 = (math.nan,) * 3
                self.add(
                    "coverage", "required_attributes", name, "", "", "", nan3, math.nan, INSUFFICIENT, True, reason
                )
        for section in _SECTIONS:
            for metric, tol in getattr(self.policy, section).items():
                if metric not in self.audit.metrics:
                    reason = f"{metric} is in the policy ({section}) but the audit did not compute it (no such columns)"
                    nan3 = (math.nan,) * 3
                    key = f"{section}.{metric}"
                    self.add("coverage", key, "", "", "", metric, nan3, tol, INSUFFICIENT, False, reason)
        for metric, exempt in self.policy.reported_only.items():
            if metric in self.audit.metrics:
                where = ", ".join(exempt.attributes) if exempt.attributes else "every attribute"
                self.notes.append(f"{metric} is reported, not judged, on {where}: {exempt.reason}")
        for attr in self.audit.attributes:
            if attr.pooled:
                pools: dict[str, list[str]] = {}
                for original, pooled in attr.pooled.items():
                    pools.setdefault(pooled, []).append(original)
                for pooled, originals in pools.items():
                    self.notes.append(
                        f"{attr.attribute}: {', '.join(originals)} lack evidence alone and are judged together as "
                        f"{pooled} (small_groups.pool_adjacent); none of them is evaluated on its own"
                    )
            self.attribute(attr)
        c = self.family.critical_value
        self.notes.insert(
            0,
            f"{self.family.size} statistics judged together: family-wise alpha {self.policy.alpha:g}, max-T critical "
            f"value {c:.2f} over {self.family.n_resamples} resamples (1.96 for one check; "
            f"{self.family.n_screened} group levels far inside their tolerance screened out of the maximum)",
        )
        statuses = [ch.status for ch in self.checks]
        blocked = any(ch.status == INSUFFICIENT and ch.blocking for ch in self.checks)
        status = FAIL if FAIL in statuses else INSUFFICIENT if blocked else PASS
        p = self.policy
        return GateResult(
            status,
            p.policy_version,
            p.straddle_rule,
            p.alpha,
            tuple(self.checks),
            self.family.size,
            c,
            tuple(self.notes),
        )

    def attribute(self, attr: AttributeResult) -> None:
        required = attr.attribute in self.policy.required_attributes
        name = attr.attribute
        for g in attr.groups:
            if g.status != SUFFICIENT:
                reason = f"{name}={g.group} has insufficient evidence ({g.reason}): not evaluated, never a pass"
                nan3 = (math.nan,) * 3
                key = "min_group_n, min_group_positives"
                self.add("evidence", key, name, g.group, "", "", nan3, math.nan, INSUFFICIENT, required, reason)
                continue
            for section, kind in (("min_group", "minimum"), ("max_group", "maximum")):
                for metric, tol in getattr(self.policy, section).items():
                    if metric in g.metrics and self.policy.judged(metric, attr.columns):
                        self.level(attr, g.group, metric, g.metrics[metric], section, kind, tol, required)
        for metric, tol in self.policy.max_gap.items():
            if not self.policy.judged(metric, attr.columns):
                continue
            judged = {attr.groups[i].group for i in _judged_groups(attr, metric, self.policy.min_group_positives)}
            for gap in attr.gaps:
                if gap.metric != metric or gap.kind != "vs_reference" or gap.status != SUFFICIENT:
                    continue
                if {gap.group, gap.comparator} <= judged:
                    self.gap(attr, gap, tol, required)
                    continue
                short = next(attr.group(g) for g in (gap.comparator, gap.group) if g not in judged)
                count = short.support.get(metric, short.positives)
                reason = (
                    f"{metric} gap for {name}={gap.group} vs {gap.comparator}: not evaluated, {name}={short.group} "
                    f"has {count} patients this rate is a share of (< {self.policy.min_group_positives}) or no estimate"
                )
                nan3 = (math.nan,) * 3
                key = f"max_gap.{metric}"
                self.add(
                    "evidence", key, name, gap.group, gap.comparator, metric, nan3, tol, INSUFFICIENT, False, reason
                )
            self.max_min(attr, metric, tol, required, judged)

    def level(
        self,
        attr: AttributeResult,
        group: str,
        metric: str,
        ci: ConfidenceInterval,
        section: str,
        kind: str,
        tol: float,
        required: bool,
    ) -> None:
        key, check = f"{section}.{metric}", f"group_{kind}"
        low, high = self.family.interval(("level", attr.attribute, metric, group), ci.estimate)
        values = (ci.estimate, low, high)
        where = f"{metric} for {attr.attribute}={group}"
        if not all(math.isfinite(v) for v in values):
            reason = f"{where} is undefined on the data or its resamples: insufficient evidence, not evaluated"
            self.add(check, key, attr.attribute, group, "", metric, values, tol, INSUFFICIENT, required, reason)
            return
        failed, note = _judge(kind, *values, tol, self.policy.straddle_rule)
        if kind == "minimum":
            side = "below" if failed else "at or above" if ci.estimate >= tol else "not shown below"
        else:
            side = "above" if failed else "at or below" if ci.estimate <= tol else "not shown above"
        reason = f"{where} is {self.interval(*values, ci)}, {side} the {tol:g} {kind}{note}"
        self.add(check, key, attr.attribute, group, "", metric, values, tol, FAIL if failed else PASS, required, reason)

    def max_min(self, attr: AttributeResult, metric: str, tol: float, required: bool, judged: set[str]) -> None:
        """The largest against the smallest judged group, unless that pair includes the reference (judged
        already as a ``gap_vs_reference`` check)."""
        groups = [g for g in attr.groups if g.group in judged]
        if len(groups) < 2:
            return
        ordered = sorted(groups, key=lambda g: g.metrics[metric].estimate)
        low, high = ordered[0], ordered[-1]
        if attr.reference_group in (low.group, high.group):
            return
        audited = next((g for g in attr.gaps if g.metric == metric and g.kind == "max_min"), None)
        estimate = high.metrics[metric].estimate - low.metrics[metric].estimate
        if audited is not None and (audited.group, audited.comparator) == (high.group, low.group):
            difference = audited.difference
        else:
            difference = ConfidenceInterval(estimate, math.nan, math.nan, 0, 0)
        gap = GapResult(metric, "max_min", high.group, low.group, difference, difference, math.nan, SUFFICIENT)
        self.gap(attr, gap, tol, required)

    def gap(self, attr: AttributeResult, gap: GapResult, tol: float, required: bool) -> None:
        d = gap.difference
        low, high = self.family.interval(_gap_key(attr.attribute, gap.metric, gap.group, gap.comparator), d.estimate)
        values = (d.estimate, low, high)
        check = "gap_vs_reference" if gap.kind == "vs_reference" else "max_min_gap"
        what = "gap" if gap.kind == "vs_reference" else "largest-minus-smallest gap"
        where = f"{gap.metric} {what} for {attr.attribute}={gap.group} vs {gap.comparator}"
        key = f"max_gap.{gap.metric}"
        args = (check, key, attr.attribute, gap.group, gap.comparator, gap.metric, values, tol)
        if not all(math.isfinite(v) for v in values):
            reason = f"{where} is undefined on the data or its resamples: insufficient evidence, not evaluated"
            self.add(*args, INSUFFICIENT, required, reason)
            return
        failed, note = _judge("gap", *values, tol, self.policy.straddle_rule)
        if not failed:
            side = f"within the ±{tol:g} tolerance" if abs(d.estimate) <= tol else "not shown beyond 0"
        elif d.estimate >= 0:
            side = f"above the {tol:g} tolerance"
        else:
            side = f"below -{tol:g}, beyond the {tol:g} tolerance"
        reason = f"{where} is {self.interval(*values, d)}, {side}{note}"
        self.add(*args, FAIL if failed else PASS, required, reason)


def gate(audit_result: AuditResult, policy: ReleasePolicy) -> GateResult:
    """Judge an audit against a release policy, with family-wise error control over every check.

    Parameters
    ----------
    audit_result : AuditResult
        From :func:`fairness.audit.audit` (with its resamples; see :class:`~fairness.audit.AuditResult`).
    policy : ReleasePolicy
        From :func:`load_policy`.

    Returns
    -------
    GateResult
        ``status`` ``"pass"``, ``"fail"`` or ``"insufficient evidence"`` and every check with its reason.

    Raises
    ------
    models.errors.ConfigError
        When the audit was run with settings the policy does not accept: another interval level
        (``alpha``), evidence thresholds below the policy's (``min_group_n``, ``min_group_positives``),
        another pooling of small groups (``small_groups.pool_adjacent``) for an audited attribute, or without
        its bootstrap resamples.
    """
    spec = audit_result.spec
    if not math.isclose(spec.alpha, policy.alpha):
        raise ConfigError(f"config key 'alpha': the audit used {spec.alpha:g} but the policy requires {policy.alpha:g}")
    for key in ("min_group_n", "min_group_positives"):
        if getattr(spec, key) < getattr(policy, key):
            raise ConfigError(
                f"config key '{key}': the audit used {getattr(spec, key)} but the policy requires at least "
                f"{getattr(policy, key)}"
            )
    for attribute in spec.sensitive_attributes:
        declared = tuple(policy.pool_adjacent.get(attribute, ()))
        used = tuple(spec.pool_adjacent.get(attribute, ()))
        if declared != used:
            raise ConfigError(
                f"config key 'small_groups.pool_adjacent.{attribute}': the audit pooled {list(used)} but the policy "
                f"declares {list(declared)}; pass AuditSpec(pool_adjacent=policy.pool_adjacent)"
            )
    return _Gate(audit_result, policy).run()
