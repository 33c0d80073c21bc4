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

from models.errors import ConfigError

__all__ = [
    "DEFAULT_POLICY_PATH",
    "METRICS",
    "SECTIONS",
    "STRADDLE_RULES",
    "HistoryEntry",
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


#: The tolerance sections of a policy, and the metrics a policy may name (public names for the gate).
SECTIONS = _SECTIONS
METRICS = tuple(_METRIC_BOUNDS)
