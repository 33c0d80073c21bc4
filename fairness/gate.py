"""The release gate: an audit judged against the release policy, with family-wise error control.

:func:`gate` turns an :class:`~fairness.audit_result.AuditResult` into a
:class:`~fairness.gate_result.GateResult`: data, not an exception, with an overall status ``"pass"``, ``"fail"``
or ``"insufficient evidence"`` and one :class:`~fairness.gate_result.Check` per judgement, each with a reason in
plain words naming the group and the metric. The policy is read by :func:`fairness.policy.load_policy`; the
decision rule (which statistics are judged together, and the straddle rules) is in :mod:`fairness.gate_rules`.

What the policy declares
------------------------
``max_gap`` / ``min_group`` / ``max_group``: the gated metrics and their tolerances; ``criteria``: for each
gated metric, the clinical decision it governs and why; ``reported_only``: metrics computed and reported but
not judged, on which attributes (an intersection containing one of them too), and why; ``small_groups``: the
pre-declared pooling of adjacent groups (:attr:`fairness.audit_spec.AuditSpec.pool_adjacent`); ``history``: every
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

Each check is judged on its family-wise interval under the policy's ``straddle_rule``
(:mod:`fairness.gate_rules`, "Family-wise decision rule").
"""

from __future__ import annotations

import math

from evaluation.bootstrap import ConfidenceInterval
from fairness.audit_result import INSUFFICIENT, SUFFICIENT, AttributeResult, AuditResult, GapResult
from fairness.gate_result import FAIL, PASS, Check, GateResult
from fairness.gate_rules import family_of, gap_key, judge, judged_groups, level_key
from fairness.policy import SECTIONS, ReleasePolicy
from models.errors import ConfigError

__all__ = ["gate"]


class _Gate:
    """One judgement of an audit: walks the policy over the audit's attributes, adding a :class:`Check` each."""

    def __init__(self, audit: AuditResult, policy: ReleasePolicy) -> None:
        self.audit, self.policy = audit, policy
        self.level_name = f"family-wise {100 * (1 - policy.alpha):g}% interval"
        self.checks: list[Check] = []
        self.notes: list[str] = []
        self.family = family_of(audit, policy)

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
        for section in SECTIONS:
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
            judged = {attr.groups[i].group for i in judged_groups(attr, metric, self.policy.min_group_positives)}
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
        low, high = self.family.interval(level_key(attr.attribute, metric, group), ci.estimate)
        values = (ci.estimate, low, high)
        where = f"{metric} for {attr.attribute}={group}"
        if not all(math.isfinite(v) for v in values):
            reason = f"{where} is undefined on the data or its resamples: insufficient evidence, not evaluated"
            self.add(check, key, attr.attribute, group, "", metric, values, tol, INSUFFICIENT, required, reason)
            return
        failed, note = judge(kind, *values, tol, self.policy.straddle_rule)
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
        low, high = self.family.interval(gap_key(attr.attribute, gap.metric, gap.group, gap.comparator), d.estimate)
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
        failed, note = judge("gap", *values, tol, self.policy.straddle_rule)
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
        From :func:`fairness.audit.audit` (with its resamples; see :class:`~fairness.audit_result.AuditResult`).
    policy : ReleasePolicy
        From :func:`fairness.policy.load_policy`.

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
