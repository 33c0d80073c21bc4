"""The release policy as data: :class:`ReleasePolicy`, read and validated at the edge by :func:`load_policy`.

An unknown key, a wrong type or an out-of-range value raises :class:`models.errors.ConfigError` naming the key
(``"config key 'max_gap.auc' names an unknown metric"``). What each key means is documented in the shipped
``fairness/release_policy.yaml`` and in :mod:`fairness.policy`, which re-exports everything here and holds the
gate.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.errors import ConfigError, InputValidationError
from models.registry import MODEL_NAMES, parse_metric_key

__all__ = [
    "DEFAULT_POLICY_PATH",
    "METRICS",
    "SECTIONS",
    "STRADDLE_RULES",
    "HistoryEntry",
    "ModelIntendedUse",
    "NonInferiority",
    "OutsidePopulation",
    "ReleasePolicy",
    "ReportedOnly",
    "load_policy",
]

DEFAULT_POLICY_PATH = Path(__file__).with_name("release_policy.yaml")
STRADDLE_RULES = ("estimate", "fail", "pass")
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
    "intended_use",
    "non_inferiority",
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
class OutsidePopulation:
    """A population a model was checked on outside its intended use: audited and reported, never gated."""

    name: str  # the evaluation data set, as ``vigil release`` names it (e.g. "ktas")
    population: str
    reason: str


@dataclass(frozen=True)
class ModelIntendedUse:
    """``intended_use.<model>``: whom a model is for, which evaluation data lie inside that (gated: must pass) and
    which outside it (reported as "not validated for"); for the chest X-ray model, each finding's population."""

    population: str
    gated_data: tuple[str, ...] = ()
    not_validated_for: tuple[OutsidePopulation, ...] = ()
    #: finding -> {description, min_age_years, max_age_years, views} (models.intended_use.Population's fields)
    findings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class NonInferiority:
    """``non_inferiority``: how much worse than the model in production a candidate may be, and why."""

    auroc_margin: float
    under_triage_tolerance: float
    reason: str


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
    #: Per model: its intended population, the evaluation data inside it (gated) and outside it (reported).
    intended_use: Mapping[str, ModelIntendedUse] = field(default_factory=dict)
    #: Against the version at @production: {"auroc_margin", "under_triage_tolerance"} and why (None: not compared).
    non_inferiority: NonInferiority | None = None

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
        intended_use = _intended_use(data.get("intended_use", {}))
        non_inferiority = _non_inferiority(data.get("non_inferiority"))
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
            intended_use=intended_use,
            non_inferiority=non_inferiority,
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
        d["intended_use"] = {
            m: {
                "population": u.population,
                "gated_data": list(u.gated_data),
                "not_validated_for": {
                    o.name: {"population": o.population, "reason": o.reason} for o in u.not_validated_for
                },
                "findings": {f: dict(v) for f, v in u.findings.items()},
            }
            for m, u in self.intended_use.items()
        }
        if self.non_inferiority is None:
            del d["non_inferiority"]
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
    """The performance floors: model name -> metric key -> least value; every model and metric named must be one
    Vigil's training runs log (:mod:`models.registry`), so a typo is an error at load, not a floor never checked."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"config key 'performance_floors' must map model names to metric floors; got {type(value).__name__}"
        )
    out: dict[str, dict[str, float]] = {}
    for model, floors in value.items():
        if str(model) not in MODEL_NAMES:
            raise ConfigError(
                f"config key 'performance_floors.{model}' names an unknown model; known: {', '.join(MODEL_NAMES)}"
            )
        if not isinstance(floors, Mapping) or not floors:
            raise ConfigError(f"config key 'performance_floors.{model}' must map metric names to minimum values")
        for metric in floors:
            try:
                parse_metric_key(str(model), str(metric))
            except InputValidationError as exc:
                raise ConfigError(f"config key 'performance_floors.{model}.{metric}': {exc.message}") from exc
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


def _intended_use(value: object) -> dict[str, ModelIntendedUse]:
    if value is None or value == {}:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key 'intended_use' must map model names to their intended use; got {value!r}")
    out = {}
    for model, spec in value.items():
        key = f"intended_use.{model}"
        if not isinstance(spec, Mapping):
            raise ConfigError(
                f"config key '{key}' must be a mapping with population (and gated_data, not_validated_for, findings)"
            )
        unknown = sorted(set(spec) - {"population", "gated_data", "not_validated_for", "findings"})
        if unknown:
            raise ConfigError(f"config key '{key}.{unknown[0]}' is not an intended-use key")
        gated = spec.get("gated_data", [])
        if not isinstance(gated, list) or not all(isinstance(g, str) and g for g in gated):
            raise ConfigError(f"config key '{key}.gated_data' must be a list of evaluation data names")
        outside = spec.get("not_validated_for", {}) or {}
        if not isinstance(outside, Mapping):
            raise ConfigError(f"config key '{key}.not_validated_for' must map data names to population and reason")
        others = []
        for name, item in outside.items():
            where = f"{key}.not_validated_for.{name}"
            if not isinstance(item, Mapping) or set(item) != {"population", "reason"}:
                raise ConfigError(f"config key '{where}' must have exactly the keys population and reason")
            if name in gated:
                raise ConfigError(f"config key '{where}': {name} is also in gated_data")
            others.append(
                OutsidePopulation(
                    str(name),
                    _text(item["population"], f"{where}.population"),
                    _text(item["reason"], f"{where}.reason"),
                )
            )
        findings = {}
        for finding, item in (spec.get("findings", {}) or {}).items():
            where = f"{key}.findings.{finding}"
            if (
                not isinstance(item, Mapping)
                or "description" not in item
                or set(item) - {"description", "min_age_years", "max_age_years", "views"}
            ):
                raise ConfigError(
                    f"config key '{where}' must have description and optionally min_age_years, max_age_years and views"
                )
            low, high = item.get("min_age_years"), item.get("max_age_years")
            low = None if low is None else _number(low, f"{where}.min_age_years", 0.0, 150.0)
            high = None if high is None else _number(high, f"{where}.max_age_years", 0.0, 150.0)
            if low is not None and high is not None and not low < high:
                raise ConfigError(f"config key '{where}': min_age_years must be below max_age_years")
            views = item.get("views")
            if views is not None and (not isinstance(views, list) or not all(isinstance(v, str) for v in views)):
                raise ConfigError(f"config key '{where}.views' must be a list of ViewPosition values")
            findings[str(finding)] = {
                "description": _text(item["description"], f"{where}.description"),
                "min_age_years": low,
                "max_age_years": high,
                "views": views,
            }
        out[str(model)] = ModelIntendedUse(
            _text(spec.get("population"), f"{key}.population"), tuple(gated), tuple(others), findings
        )
    return out


def _non_inferiority(value: object) -> NonInferiority | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"auroc_margin", "under_triage_tolerance", "reason"}:
        raise ConfigError(
            "config key 'non_inferiority' must have exactly the keys auroc_margin, under_triage_tolerance and reason"
        )
    return NonInferiority(
        _number(value["auroc_margin"], "non_inferiority.auroc_margin", 0.0, 0.2),
        _number(value["under_triage_tolerance"], "non_inferiority.under_triage_tolerance", 0.0, 0.2),
        _text(value["reason"], "non_inferiority.reason"),
    )


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


#: The tolerance sections of a policy, and the metrics a policy may name (public names for the gate).
SECTIONS = _SECTIONS
METRICS = tuple(_METRIC_BOUNDS)
