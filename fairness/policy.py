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

import itertools
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evaluation.bootstrap import ConfidenceInterval
from fairness.audit_types import INSUFFICIENT, SUFFICIENT, AttributeResult, AuditResult, GapResult, GroupResult
from fairness.family import FamilyWise, Statistic, simultaneous
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
    "criteria",
    "reported_only",
    "small_groups",
    "history",
    *_SECTIONS,
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class ReportedOnly:
    """A metric the gate does not judge, on ``attributes`` (every attribute when empty), and why."""

    attributes: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class HistoryEntry:
    """One version of the policy: when it was declared and what changed."""

    version: str
    date: str
    changes: str


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
    #: Per gated metric, the clinical decision it governs and why this criterion (declared before evaluation).
    criteria: Mapping[str, str] = field(default_factory=dict)
    #: Metrics computed and reported but not judged, where, and why.
    reported_only: Mapping[str, ReportedOnly] = field(default_factory=dict)
    #: ``small_groups.pool_adjacent``: per ordered attribute, its groups in order (see AuditSpec.pool_adjacent).
    pool_adjacent: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: ``small_groups.reason``: why groups are pooled as they are.
    small_groups_reason: str = ""
    #: What was declared when, oldest first; the last entry is this version.
    history: tuple[HistoryEntry, ...] = ()

    def judged(self, metric: str, columns: Sequence[str]) -> bool:
        """Whether ``metric`` is judged on the attribute or intersection of ``columns`` (not reported only)."""
        exempt = self.reported_only.get(metric)
        return exempt is None or (bool(exempt.attributes) and not set(exempt.attributes) & set(columns))

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
        gated = {m for section in sections.values() for m in section}
        criteria = _criteria(data.get("criteria", {}), gated)
        reported_only = _reported_only(data.get("reported_only", {}))
        pool, pool_reason = _small_groups(data.get("small_groups", {}))
        history = _history(data.get("history", []), version)
        return cls(
            policy_version=version,
            alpha=alpha,
            straddle_rule=rule,
            min_group_n=_integer(data.get("min_group_n", 100), "min_group_n", 1),
            min_group_positives=_integer(data.get("min_group_positives", 20), "min_group_positives", 0),
            required_attributes=tuple(required),
            description=description,
            performance_floors=_floors(data.get("performance_floors", {})),
            criteria=criteria,
            reported_only=reported_only,
            pool_adjacent=pool,
            small_groups_reason=pool_reason,
            history=history,
            **sections,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain types, in the YAML's shape."""
        d = asdict(self)
        d["required_attributes"] = list(self.required_attributes)
        d["reported_only"] = {
            m: {"attributes": list(r.attributes), "reason": r.reason} for m, r in self.reported_only.items()
        }
        d["small_groups"] = {"pool_adjacent": {k: list(v) for k, v in self.pool_adjacent.items()}}
        if self.small_groups_reason:
            d["small_groups"]["reason"] = self.small_groups_reason
        del d["pool_adjacent"], d["small_groups_reason"]
        d["history"] = [asdict(h) for h in self.history]
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
        raise ConfigError(
            f"config key 'performance_floors' must map model names to metric floors; got {type(value).__name__}"
        )
    out: dict[str, dict[str, float]] = {}
    for model, floors in value.items():
        if not isinstance(floors, Mapping) or not floors:
            raise ConfigError(f"config key 'performance_floors.{model}' must map metric names to minimum values")
        out[str(model)] = {
            str(metric): _number(minimum, f"performance_floors.{model}.{metric}", 0.0, 1.0)
            for metric, minimum in floors.items()
        }
    return out


def _text(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"config key '{key}' must be a non-empty string; got {value!r}")
    return value.strip()


def _criteria(value: object, gated: set[str]) -> dict[str, str]:
    if value is None or value == {}:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key 'criteria' must map gated metrics to their reasons; got {type(value).__name__}")
    out = {}
    for metric, why in value.items():
        if metric not in gated:
            raise ConfigError(
                f"config key 'criteria.{metric}' names a metric no tolerance gates; gated {sorted(gated)}"
            )
        out[str(metric)] = _text(why, f"criteria.{metric}")
    for metric in sorted(gated - set(out)):
        raise ConfigError(f"config key 'criteria.{metric}' is required: every gated metric states why it governs")
    return out


def _reported_only(value: object) -> dict[str, ReportedOnly]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key 'reported_only' must map metrics to where and why; got {type(value).__name__}")
    out = {}
    for metric, entry in value.items():
        key = f"reported_only.{metric}"
        if metric not in _METRIC_BOUNDS:
            raise ConfigError(f"config key '{key}' names an unknown metric; known {sorted(_METRIC_BOUNDS)}")
        if not isinstance(entry, Mapping) or set(entry) - {"attributes", "reason"}:
            raise ConfigError(f"config key '{key}' must be a mapping with 'reason' and optionally 'attributes'")
        attributes = entry.get("attributes", [])
        if not isinstance(attributes, list) or not all(isinstance(a, str) and a for a in attributes):
            raise ConfigError(f"config key '{key}.attributes' must be a list of attribute names; got {attributes!r}")
        out[str(metric)] = ReportedOnly(tuple(attributes), _text(entry.get("reason"), f"{key}.reason"))
    return out


def _small_groups(value: object) -> tuple[dict[str, tuple[str, ...]], str]:
    if value is None or value == {}:
        return {}, ""
    if not isinstance(value, Mapping) or set(value) - {"pool_adjacent", "reason"}:
        raise ConfigError("config key 'small_groups' must be a mapping with 'pool_adjacent' and 'reason'")
    pools = value.get("pool_adjacent", {}) or {}
    if not isinstance(pools, Mapping):
        raise ConfigError("config key 'small_groups.pool_adjacent' must map attributes to their ordered groups")
    out = {}
    for attribute, order in pools.items():
        key = f"small_groups.pool_adjacent.{attribute}"
        if not isinstance(order, list) or len(order) < 2 or not all(isinstance(g, str) and g for g in order):
            raise ConfigError(f"config key '{key}' must list at least 2 groups in order; got {order!r}")
        if len(set(order)) != len(order):
            raise ConfigError(f"config key '{key}' repeats a group; got {order!r}")
        out[str(attribute)] = tuple(order)
    reason = _text(value["reason"], "small_groups.reason") if "reason" in value else ""
    return out, reason


def _history(value: object, version: str) -> tuple[HistoryEntry, ...]:
    if value is None or value == []:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"config key 'history' must be a list of {{version, date, changes}}; got {value!r}")
    out = []
    for i, entry in enumerate(value):
        key = f"history[{i}]"
        if not isinstance(entry, Mapping) or set(entry) != {"version", "date", "changes"}:
            raise ConfigError(f"config key '{key}' must have exactly the keys version, date and changes")
        date = str(entry["date"])
        if not _DATE.match(date):
            raise ConfigError(f"config key '{key}.date' must be a date YYYY-MM-DD; got {entry['date']!r}")
        out.append(
            HistoryEntry(_text(entry["version"], f"{key}.version"), date, _text(entry["changes"], f"{key}.changes"))
        )
    if out[-1].version != version:
        raise ConfigError(
            f"config key 'history' must end with this policy_version {version!r}; got {out[-1].version!r}"
        )
    if [h.date for h in out] != sorted(h.date for h in out):
        raise ConfigError("config key 'history' must be in date order, oldest first")
    return tuple(out)


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
        return (
            f"{estimate:.3f} ({self.level_name} {low:.3f} to {high:.3f} over {self.family.size} checks; "
            f"{100 * (1 - self.policy.alpha):g}% CI alone {ci.low:.3f} to {ci.high:.3f})"
        )

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
            side = "below" if failed else "not shown below"
        else:
            side = "above" if failed else "not shown above"
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
