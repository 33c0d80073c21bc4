"""Release policy and gate: tolerances fixed in advance, judged against an audit's intervals.

:func:`load_policy` reads ``fairness/release_policy.yaml`` (or another file) and validates it at the edge: an
unknown key, a wrong type or an out-of-range value raises :class:`models.errors.ConfigError` naming the key.
:func:`gate` turns an :class:`~fairness.audit.AuditResult` into a :class:`GateResult`: data, not an
exception, with an overall status ``"pass"``, ``"fail"`` or ``"insufficient evidence"`` and one
:class:`Check` per judgement, each with a reason in plain words naming the group and the metric.

Checks
------
``gap_vs_reference`` (``max_gap.<metric>``)
    ``|group - reference|`` for every group with sufficient evidence (the reference too).
``max_min_gap`` (``max_gap.<metric>``)
    largest minus smallest group, when that pair does not include the reference (otherwise it is the same
    comparison as a ``gap_vs_reference`` check and is not judged twice).
``group_minimum`` / ``group_maximum`` (``min_group.<metric>`` / ``max_group.<metric>``)
    every group with sufficient evidence must be at least / at most the tolerance.
``evidence``
    one per group with insufficient evidence (or an undefined metric): never a pass; blocks release, making
    the overall status ``"insufficient evidence"``, only in an attribute the policy lists as required.
``coverage``
    a required attribute that was not audited (blocks), or a policy metric the audit could not compute (the
    audit had no such columns: an imaging audit has no triage levels; reported, does not block).

Overall: ``"fail"`` if any check fails, else ``"insufficient evidence"`` if any blocking check lacks evidence,
else ``"pass"``.

Decision rule (``straddle_rule``) and its derivation
-----------------------------------------------------
Each check has an estimate, a ``1 - alpha`` bootstrap interval ``[low, high]`` and a tolerance. An interval
wholly beyond the tolerance fails and one wholly within passes under every rule; the rule decides the rest:

* ``estimate`` (the default): judged by the point estimate. A *gap* fails only when ``|gap| > tolerance``
  **and** there is evidence that the groups differ at all: its interval excludes 0 and ``|gap| >
  chance_level``. The chance level
  (see :mod:`fairness.audit`) is the size of gap chance alone exceeds with probability ``alpha``; with two
  groups it is ``~ z SE`` and the condition is "the interval excludes 0"; with more groups it holds
  simultaneously over every pair of the attribute's groups (max-T, as Tukey's HSD).
* ``fail``: an interval reaching beyond the tolerance fails (the audit must show compliance).
* ``pass``: only an interval wholly beyond the tolerance fails (the audit must show a violation).

Requirement: with two groups of n = 2,000 and a base under-triage rate of 10%, tolerance 0.02, the gate must
(a) fail a 5-percentage-point gap (10% vs 15%) at least 90% of the time and (b) fail at most 5% of the time
when there is no gap. The estimated gap ``D`` is approximately normal with standard error
``SE = sqrt(p0 q0 / n + p1 q1 / n)``: 0.00949 with no gap, 0.01043 with the 5 pp gap; ``z = 1.96``.

* ``pass`` (lower bound beyond the tolerance): fails when ``D - z SE > 0.02``, so power at a 5 pp gap is
  ``Phi((0.05 - 0.02 - 1.96 * 0.01043) / 0.01043) = Phi(0.92) = 0.82``: misses (a).
* ``fail`` (upper bound beyond the tolerance): with no gap ``|D| + z SE > 0.02`` whenever ``|D| > 0.0014``,
  a false alarm rate of 0.88: misses (b). Showing compliance with a 0.02 tolerance needs
  ``SE`` well under ``0.02 / 1.96``, i.e. several times more patients per group.
* ``estimate``: fails when ``|D| > max(tolerance, z SE)``. (b) The chance-level condition alone is a
  two-sided level-``alpha`` test, so false alarms are at most 5% at any n; at n = 2,000 the tolerance binds
  (0.02 > 1.96 * 0.00949 = 0.0186) and the rate is ``2 (1 - Phi(0.02 / 0.00949)) = 0.035``. (a) Power at a
  5 pp gap is ``Phi((0.05 - max(0.02, 0.0204)) / 0.01043) = Phi(2.83) = 0.998``; 90% power holds from
  about n = 920 per group. Power is 0.50 at a 2 pp gap and 0.84 at 3 pp: a gap at the tolerance is caught
  half the time, as a point-estimate rule should.

``benchmarks/fairness_power.py`` checks these figures by simulation through the real audit and gate
(``docs/fairness_gate_power.md``). The 5% holds per attribute and gated metric, simultaneously over the
groups of the attribute; with several attributes, intersections and gated metrics the gate makes several
such families of comparisons, and the chance of at least one false alarm grows with their number (the
benchmark measures it for the shipped policy).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evaluation.bootstrap import ConfidenceInterval
from fairness.audit_types import INSUFFICIENT, SUFFICIENT, AttributeResult, AuditResult, GapResult
from models.errors import ConfigError

__all__ = ["DEFAULT_POLICY_PATH", "STRADDLE_RULES", "Check", "GateResult", "ReleasePolicy", "gate", "load_policy"]

DEFAULT_POLICY_PATH = Path(__file__).with_name("release_policy.yaml")
STRADDLE_RULES = ("estimate", "fail", "pass")
PASS, FAIL = "pass", "fail"
_SECTIONS = ("max_gap", "min_group", "max_group")
#: Metrics a policy may name, and the largest tolerance that makes sense for each.
_METRIC_BOUNDS: dict[str, float] = {
    "auroc": 1.0,
    "sensitivity": 1.0,
    "false_negative_rate": 1.0,
    "false_positive_rate": 1.0,
    "ppv": 1.0,
    "ece": 1.0,
    "observed_expected": math.inf,
    "under_triage_rate": 1.0,
    "high_acuity_under_triage_rate": 1.0,
}
_KEYS = {
    "policy_version",
    "description",
    "alpha",
    "straddle_rule",
    "min_group_n",
    "min_group_positives",
    "required_attributes",
    "performance_floors",
    *_SECTIONS,
}


# --------------------------------------------------------------------------------------------- policy
@dataclass(frozen=True)
class ReleasePolicy:
    """A validated release policy; build it with :func:`load_policy` or :meth:`from_mapping`."""

    policy_version: str
    alpha: float
    straddle_rule: str
    min_group_n: int
    min_group_positives: int
    required_attributes: tuple[str, ...]
    max_gap: Mapping[str, float]
    min_group: Mapping[str, float]
    max_group: Mapping[str, float]
    description: str = ""
    #: Per registered model, the least value of each metric its training run logged on test data
    #: (e.g. ``{"vigil-triage": {"test.admitted.auroc": 0.80}}``); checked by ``vigil release``.
    performance_floors: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: object) -> ReleasePolicy:
        """Validate a parsed policy; :class:`~models.errors.ConfigError` names the first bad key."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a release policy must be a mapping of keys to values; got {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in _KEYS)
        if unknown:
            raise ConfigError(f"config key '{unknown[0]}' is not a release policy key; known keys {sorted(_KEYS)}")
        for key in ("policy_version", "alpha", "straddle_rule"):
            if key not in data:
                raise ConfigError(f"config key '{key}' is required")
        version = data["policy_version"]
        if not isinstance(version, str) or not version.strip():
            raise ConfigError(f"config key 'policy_version' must be a non-empty string; got {version!r}")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"config key 'description' must be a string; got {type(description).__name__}")
        alpha = _number(data["alpha"], "alpha", 0.0, 0.5)
        if alpha in (0.0, 0.5):
            raise ConfigError(f"config key 'alpha' must be in (0, 0.5); got {alpha}")
        rule = data["straddle_rule"]
        if rule not in STRADDLE_RULES:
            raise ConfigError(f"config key 'straddle_rule' must be one of {list(STRADDLE_RULES)}; got {rule!r}")
        required = data.get("required_attributes", [])
        if not isinstance(required, list) or not all(isinstance(a, str) and a for a in required):
            raise ConfigError(f"config key 'required_attributes' must be a list of attribute names; got {required!r}")
        sections = {s: _section(data.get(s, {}), s) for s in _SECTIONS}
        if not any(sections.values()):
            raise ConfigError("config keys 'max_gap', 'min_group' and 'max_group' are all empty: nothing to check")
        return cls(
            policy_version=version,
            alpha=alpha,
            straddle_rule=rule,
            min_group_n=_integer(data.get("min_group_n", 100), "min_group_n", 1),
            min_group_positives=_integer(data.get("min_group_positives", 20), "min_group_positives", 0),
            required_attributes=tuple(required),
            description=description,
            performance_floors=_floors(data.get("performance_floors", {})),
            **sections,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain types, in the YAML's shape."""
        d = asdict(self)
        d["required_attributes"] = list(self.required_attributes)
        return d


def _number(value: object, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"config key '{key}' must be a number; got {type(value).__name__} {value!r}")
    if not (low <= float(value) <= high) or math.isnan(float(value)):
        raise ConfigError(f"config key '{key}' must be in [{low:g}, {high:g}]; got {value}")
    return float(value)


def _integer(value: object, key: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"config key '{key}' must be an integer; got {type(value).__name__} {value!r}")
    if value < low:
        raise ConfigError(f"config key '{key}' must be >= {low}; got {value}")
    return int(value)


def _section(value: object, section: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key '{section}' must map metric names to tolerances; got {type(value).__name__}")
    out = {}
    for metric, tolerance in value.items():
        key = f"{section}.{metric}"
        if metric not in _METRIC_BOUNDS:
            raise ConfigError(f"config key '{key}' names an unknown metric; known {sorted(_METRIC_BOUNDS)}")
        out[str(metric)] = _number(tolerance, key, 0.0, _METRIC_BOUNDS[metric])
    return out


def _floors(value: object) -> dict[str, dict[str, float]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key 'performance_floors' must map model names to metric floors; got "
                          f"{type(value).__name__}")
    out: dict[str, dict[str, float]] = {}
    for model, floors in value.items():
        if not isinstance(floors, Mapping) or not floors:
            raise ConfigError(f"config key 'performance_floors.{model}' must map metric names to minimum values")
        out[str(model)] = {str(metric): _number(minimum, f"performance_floors.{model}.{metric}", 0.0, 1.0)
                           for metric, minimum in floors.items()}
    return out


def load_policy(path: str | Path | None = None) -> ReleasePolicy:
    """Read and validate a release policy (default: the shipped ``fairness/release_policy.yaml``).

    Raises
    ------
    models.errors.ConfigError
        The file is missing or not YAML, or a key is unknown, of the wrong type or out of range (named).
    """
    file = Path(path) if path is not None else DEFAULT_POLICY_PATH
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"release policy file not found or unreadable: {file}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"release policy file {file.name} is not valid YAML: {exc}") from exc
    return ReleasePolicy.from_mapping(data)


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
    """The gate's verdict: ``status`` and every check behind it."""

    status: str
    policy_version: str
    straddle_rule: str
    alpha: float
    checks: tuple[Check, ...]

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == FAIL)

    @property
    def blocking_without_evidence(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == INSUFFICIENT and c.blocking)

    def summary(self) -> str:
        """One line per failing or blocking check, after the overall status."""
        lines = [f"fairness gate (policy {self.policy_version}): {self.status}"]
        lines += [f"  FAIL: {c.reason}" for c in self.failures]
        lines += [f"  INSUFFICIENT EVIDENCE: {c.reason}" for c in self.blocking_without_evidence]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "policy_version": self.policy_version,
            "straddle_rule": self.straddle_rule,
            "alpha": self.alpha,
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateResult:
        checks = tuple(Check.from_dict(c) for c in d["checks"])
        return cls(str(d["status"]), str(d["policy_version"]), str(d["straddle_rule"]), float(d["alpha"]), checks)


def _judge(
    kind: str, estimate: float, low: float, high: float, tol: float, rule: str, chance: float = 0.0
) -> tuple[bool, str]:
    """Fail or not, and a note when the interval straddles the tolerance. ``kind``: gap, minimum, maximum.

    For a gap, ``chance`` is its chance level: under ``straddle_rule: estimate`` a straddling gap fails only
    with evidence that the groups differ at all, i.e. its interval excludes 0 *and* it is beyond ``chance``
    (the same condition with two groups; simultaneous over the attribute's groups with more).
    """
    if kind == "gap":
        beyond, wholly_beyond = abs(estimate) > tol, low > tol or high < -tol
        within = -tol <= low and high <= tol
        differs = (low > 0.0 or high < 0.0) and abs(estimate) > chance
    elif kind == "minimum":
        beyond, wholly_beyond, within, differs = estimate < tol, high < tol, low >= tol, True
    else:
        beyond, wholly_beyond, within, differs = estimate > tol, low > tol, high <= tol, True
    if wholly_beyond or within:
        return wholly_beyond, ""
    if rule == "fail":
        return True, "; the interval reaches beyond the tolerance, which fails under straddle_rule 'fail'"
    if rule == "pass":
        return False, "; the interval straddles the tolerance, which passes under straddle_rule 'pass'"
    if beyond and not differs:
        why = (
            "the interval includes 0" if low <= 0.0 <= high else f"it is within the {chance:.3f} chance alone produces"
        )
        return False, (
            f"; the point estimate is beyond the tolerance but {why} (no evidence that the groups differ), "
            "which passes under straddle_rule 'estimate'"
        )
    return beyond, "; the interval straddles the tolerance, judged by the point estimate (straddle_rule 'estimate')"


class _Gate:
    def __init__(self, audit: AuditResult, policy: ReleasePolicy) -> None:
        self.audit, self.policy = audit, policy
        self.ci = f"{100 * (1 - policy.alpha):g}% CI"
        self.checks: list[Check] = []

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

    def interval(self, estimate: float, low: float, high: float) -> str:
        return f"{estimate:.3f} ({self.ci} {low:.3f} to {high:.3f})"

    def run(self) -> GateResult:
        audited = {a.attribute: a for a in self.audit.attributes}
        for name in self.policy.required_attributes:
            if name not in audited:
                reason = f"sensitive attribute '{name}' is required by the policy but was not audited"
                self.add(
                    "coverage",
                    "required_attributes",
                    name,
                    "",
                    "",
                    "",
                    (math.nan,) * 3,
                    math.nan,
                    INSUFFICIENT,
                    True,
                    reason,
                )
        for section in _SECTIONS:
            for metric, tol in getattr(self.policy, section).items():
                if metric not in self.audit.metrics:
                    reason = f"{metric} is in the policy ({section}) but the audit did not compute it (no such columns)"
                    self.add(
                        "coverage",
                        f"{section}.{metric}",
                        "",
                        "",
                        "",
                        metric,
                        (math.nan,) * 3,
                        tol,
                        INSUFFICIENT,
                        False,
                        reason,
                    )
        for attr in self.audit.attributes:
            self.attribute(attr)
        statuses = [c.status for c in self.checks]
        blocked = any(c.status == INSUFFICIENT and c.blocking for c in self.checks)
        status = FAIL if FAIL in statuses else INSUFFICIENT if blocked else PASS
        p = self.policy
        return GateResult(status, p.policy_version, p.straddle_rule, p.alpha, tuple(self.checks))

    def attribute(self, attr: AttributeResult) -> None:
        required = attr.attribute in self.policy.required_attributes
        name = attr.attribute
        for g in attr.groups:
            if g.status != SUFFICIENT:
                reason = f"{name}={g.group} has insufficient evidence ({g.reason}): its metrics and gaps are not judged"
                self.add(
                    "evidence",
                    "min_group_n, min_group_positives",
                    name,
                    g.group,
                    "",
                    "",
                    (math.nan,) * 3,
                    math.nan,
                    INSUFFICIENT,
                    required,
                    reason,
                )
                continue
            for section, kind in (("min_group", "minimum"), ("max_group", "maximum")):
                for metric, tol in getattr(self.policy, section).items():
                    if metric in g.metrics:
                        self.level(attr, g.group, metric, g.metrics[metric], section, kind, tol, required)
        for metric, tol in self.policy.max_gap.items():
            for gap in attr.gaps:
                if gap.metric != metric or gap.status != SUFFICIENT:
                    continue
                if gap.kind == "max_min" and attr.reference_group in (gap.group, gap.comparator):
                    continue  # the same pair as a gap_vs_reference check
                self.gap(attr, gap, tol, required)

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
        values = (ci.estimate, ci.low, ci.high)
        where = f"{metric} for {attr.attribute}={group}"
        if not all(math.isfinite(v) for v in values):
            reason = f"{where} is undefined on the data or its resamples: insufficient evidence"
            self.add(check, key, attr.attribute, group, "", metric, values, tol, INSUFFICIENT, required, reason)
            return
        failed, note = _judge(kind, *values, tol, self.policy.straddle_rule)
        if kind == "minimum":
            side = "below" if failed else "at or above"
        else:
            side = "above" if failed else "at or below"
        reason = f"{where} is {self.interval(*values)}, {side} the {tol:g} {kind}{note}"
        self.add(check, key, attr.attribute, group, "", metric, values, tol, FAIL if failed else PASS, required, reason)

    def gap(self, attr: AttributeResult, gap: GapResult, tol: float, required: bool) -> None:
        d = gap.difference
        values = (d.estimate, d.low, d.high)
        check = "gap_vs_reference" if gap.kind == "vs_reference" else "max_min_gap"
        what = "gap" if gap.kind == "vs_reference" else "largest-minus-smallest gap"
        where = f"{gap.metric} {what} for {attr.attribute}={gap.group} vs {gap.comparator}"
        key = f"max_gap.{gap.metric}"
        if not all(math.isfinite(v) for v in (*values, gap.chance_level)):
            reason = f"{where} is undefined on the data or its resamples: insufficient evidence"
            self.add(
                check,
                key,
                attr.attribute,
                gap.group,
                gap.comparator,
                gap.metric,
                values,
                tol,
                INSUFFICIENT,
                required,
                reason,
            )
            return
        failed, note = _judge("gap", *values, tol, self.policy.straddle_rule, gap.chance_level)
        if not failed:
            side = f"within the ±{tol:g} tolerance"
        elif d.estimate >= 0:
            side = f"above the {tol:g} tolerance (chance level {gap.chance_level:.3f})"
        else:
            side = f"below -{tol:g}, beyond the {tol:g} tolerance (chance level {gap.chance_level:.3f})"
        reason = f"{where} is {self.interval(*values)}, {side}{note}"
        self.add(
            check,
            key,
            attr.attribute,
            gap.group,
            gap.comparator,
            gap.metric,
            values,
            tol,
            FAIL if failed else PASS,
            required,
            reason,
        )


def gate(audit_result: AuditResult, policy: ReleasePolicy) -> GateResult:
    """Judge an audit against a release policy.

    Parameters
    ----------
    audit_result : AuditResult
        From :func:`fairness.audit.audit` (or :meth:`AuditResult.from_dict` of a saved one).
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
        (``alpha``), or evidence thresholds below the policy's (``min_group_n``, ``min_group_positives``).
        The tolerances were derived for the policy's settings; judging other intervals would be meaningless.
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
    return _Gate(audit_result, policy).run()
