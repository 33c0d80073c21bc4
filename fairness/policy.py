"""The release policy as data: :class:`ReleasePolicy`, read and validated at the edge by :func:`load_policy`.

The file's keys, types and ranges are declared on pydantic models (:class:`models.config_schema.ConfigModel`:
unknown keys refused, values taken strictly), with the rules that tie keys together (every gated metric states
its criterion, the history ends with this version, ...) as their validators. Any problem raises
:class:`models.errors.ConfigError` naming the key (``"config key 'max_gap.auc' names an unknown metric"``).
What each key means is documented in the shipped ``fairness/release_policy.yaml`` and, for the gate that applies
it, in :mod:`fairness.gate`.

The validated file becomes a :class:`ReleasePolicy` (a frozen dataclass, in the shape the gate and the release
workflow read): the parts of the file already in that shape are their own models (:class:`ReportedOnly`,
:class:`HistoryEntry`, :class:`NonInferiority`); the intended use of each model is reshaped into
:class:`ModelIntendedUse`.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from models.config_schema import ConfigModel, key_problem, validate_config
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
StraddleRule = Literal["estimate", "fail", "pass"]
STRADDLE_RULES: tuple[str, ...] = get_args(StraddleRule)
#: The tolerance sections of a policy.
SECTIONS = ("max_gap", "min_group", "max_group")
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
METRICS = tuple(_METRIC_BOUNDS)


def _known_metric(name: str) -> str:
    if name not in _METRIC_BOUNDS:
        raise key_problem(f"names an unknown metric; known {sorted(_METRIC_BOUNDS)}")
    return name


def _known_model(name: str) -> str:
    if name not in MODEL_NAMES:
        raise key_problem(f"names an unknown model; known: {', '.join(MODEL_NAMES)}")
    return name


def _distinct(groups: list[str]) -> list[str]:
    if len(set(groups)) != len(groups):
        raise key_problem(f"repeats a group; got {groups!r}")
    return groups


def _iso_date(value: object) -> object:
    """An unquoted YAML date (read as a ``datetime.date``) as the text it was written as."""
    return value.isoformat() if isinstance(value, datetime.date) else value


#: Free text that says something (surrounding space dropped).
Text = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1)]
#: A column, group or data set name.
Name = Annotated[StrictStr, StringConstraints(min_length=1)]
Metric = Annotated[StrictStr, AfterValidator(_known_metric)]
ModelName = Annotated[StrictStr, AfterValidator(_known_model)]
Rate = Annotated[StrictFloat, Field(ge=0.0, le=1.0)]
Age = Annotated[StrictFloat, Field(ge=0.0, le=150.0)]
Margin = Annotated[StrictFloat, Field(ge=0.0, le=0.2)]
#: A section's tolerances (its upper bound depends on the metric: ``_METRIC_BOUNDS``).
Tolerances = dict[Metric, Annotated[StrictFloat, Field(ge=0.0)]]


# ------------------------------------------------------------------------------- parts read as they are
class ReportedOnly(ConfigModel):
    """``reported_only.<metric>``: a metric the gate does not judge, on ``attributes`` (every attribute when
    empty), and why."""

    attributes: tuple[Name, ...] = ()
    reason: Text


class HistoryEntry(ConfigModel):
    """One version of the policy: when it was declared and what changed."""

    version: Text
    date: Annotated[StrictStr, BeforeValidator(_iso_date), StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    changes: Text


class NonInferiority(ConfigModel):
    """``non_inferiority``: how much worse than the model in production a candidate may be, and why."""

    auroc_margin: Margin
    under_triage_tolerance: Margin
    reason: Text


# ---------------------------------------------------------------------------------------------- policy
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
        return validate_config(_PolicyFile, data, "a release policy").policy()

    def to_dict(self) -> dict[str, Any]:
        """Plain types, in the YAML's shape."""
        out: dict[str, Any] = {
            "policy_version": self.policy_version,
            "description": self.description,
            "alpha": self.alpha,
            "straddle_rule": self.straddle_rule,
            "min_group_n": self.min_group_n,
            "min_group_positives": self.min_group_positives,
            "required_attributes": list(self.required_attributes),
            **{section: dict(getattr(self, section)) for section in SECTIONS},
            "performance_floors": {m: dict(floors) for m, floors in self.performance_floors.items()},
            "criteria": dict(self.criteria),
            "reported_only": {
                m: {"attributes": list(r.attributes), "reason": r.reason} for m, r in self.reported_only.items()
            },
            "small_groups": {"pool_adjacent": {k: list(v) for k, v in self.pool_adjacent.items()}},
            "history": [h.model_dump() for h in self.history],
            "intended_use": {
                m: {
                    "population": u.population,
                    "gated_data": list(u.gated_data),
                    "not_validated_for": {
                        o.name: {"population": o.population, "reason": o.reason} for o in u.not_validated_for
                    },
                    "findings": {f: dict(v) for f, v in u.findings.items()},
                }
                for m, u in self.intended_use.items()
            },
        }
        if self.small_groups_reason:
            out["small_groups"]["reason"] = self.small_groups_reason
        if self.non_inferiority is not None:
            out["non_inferiority"] = self.non_inferiority.model_dump()
        return out


# ------------------------------------------------------------------------------------- the file's schema
class _SmallGroups(ConfigModel):
    pool_adjacent: dict[StrictStr, Annotated[list[Name], Field(min_length=2), AfterValidator(_distinct)]] | None = None
    reason: Text = ""


class _Outside(ConfigModel):
    population: Text
    reason: Text


class _Finding(ConfigModel):
    description: Text
    min_age_years: Age | None = None
    max_age_years: Age | None = None
    views: list[StrictStr] | None = None

    @model_validator(mode="after")
    def _ages_in_order(self) -> _Finding:
        low, high = self.min_age_years, self.max_age_years
        if low is not None and high is not None and not low < high:
            raise key_problem("must be below max_age_years", "min_age_years")
        return self


class _IntendedUse(ConfigModel):
    population: Text
    gated_data: list[Name] = Field(default_factory=list)
    not_validated_for: dict[StrictStr, _Outside] | None = None
    findings: dict[StrictStr, _Finding] | None = None

    @model_validator(mode="after")
    def _inside_or_outside(self) -> _IntendedUse:
        for name in self.not_validated_for or {}:
            if name in self.gated_data:
                raise key_problem("is also in gated_data", "not_validated_for", name)
        return self

    def use(self) -> ModelIntendedUse:
        outside = (self.not_validated_for or {}).items()
        return ModelIntendedUse(
            self.population,
            tuple(self.gated_data),
            tuple(OutsidePopulation(name, o.population, o.reason) for name, o in outside),
            {finding: spec.model_dump() for finding, spec in (self.findings or {}).items()},
        )


class _PolicyFile(ConfigModel):
    """``fairness/release_policy.yaml``, key by key (an absent or empty optional section means none)."""

    policy_version: Text
    description: StrictStr = ""
    alpha: Annotated[StrictFloat, Field(gt=0.0, lt=0.5)]
    straddle_rule: StraddleRule
    min_group_n: Annotated[StrictInt, Field(ge=1)] = 100
    min_group_positives: Annotated[StrictInt, Field(ge=0)] = 20
    required_attributes: list[Name] = Field(default_factory=list)
    max_gap: Tolerances | None = None
    min_group: Tolerances | None = None
    max_group: Tolerances | None = None
    #: model -> metric key -> least value; every key one its training runs log (models.registry), so that a typo
    #: is an error at load, not a floor never checked.
    performance_floors: dict[ModelName, Annotated[dict[StrictStr, Rate], Field(min_length=1)]] | None = None
    criteria: dict[StrictStr, Text] | None = None
    reported_only: dict[Metric, ReportedOnly] | None = None
    small_groups: _SmallGroups | None = None
    history: list[HistoryEntry] | None = None
    intended_use: dict[StrictStr, _IntendedUse] | None = None
    non_inferiority: NonInferiority | None = None

    @field_validator("performance_floors")
    @classmethod
    def _logged_metrics(cls, floors: dict[str, dict[str, float]] | None) -> dict[str, dict[str, float]] | None:
        for model, minima in (floors or {}).items():
            for metric in minima:
                try:
                    parse_metric_key(model, metric)
                except InputValidationError as exc:
                    raise key_problem(f"is not a metric its runs log: {exc.message}", model, metric) from exc
        return floors

    @model_validator(mode="after")
    def _consistent(self) -> _PolicyFile:
        sections = {s: getattr(self, s) or {} for s in SECTIONS}
        if not any(sections.values()):
            raise key_problem("has nothing to check: 'max_gap', 'min_group' and 'max_group' are all empty")
        for section, tolerances in sections.items():
            for metric, tolerance in tolerances.items():
                if tolerance > _METRIC_BOUNDS[metric]:
                    bound = _METRIC_BOUNDS[metric]
                    raise key_problem(f"must be in [0, {bound:g}]; got {tolerance}", section, metric)
        gated = {m for tolerances in sections.values() for m in tolerances}
        if self.criteria:
            for metric in self.criteria:
                if metric not in gated:
                    raise key_problem(f"names a metric no tolerance gates; gated {sorted(gated)}", "criteria", metric)
            for metric in sorted(gated - set(self.criteria)):
                raise key_problem("is required: every gated metric states why it governs", "criteria", metric)
        if self.history:
            if self.history[-1].version != self.policy_version:
                raise key_problem(
                    f"must end with this policy_version {self.policy_version!r}; got {self.history[-1].version!r}",
                    "history",
                )
            if [h.date for h in self.history] != sorted(h.date for h in self.history):
                raise key_problem("must be in date order, oldest first", "history")
        return self

    def policy(self) -> ReleasePolicy:
        small = self.small_groups or _SmallGroups()
        return ReleasePolicy(
            policy_version=self.policy_version,
            alpha=self.alpha,
            straddle_rule=self.straddle_rule,
            min_group_n=self.min_group_n,
            min_group_positives=self.min_group_positives,
            required_attributes=tuple(self.required_attributes),
            max_gap=dict(self.max_gap or {}),
            min_group=dict(self.min_group or {}),
            max_group=dict(self.max_group or {}),
            description=self.description,
            performance_floors={m: dict(floors) for m, floors in (self.performance_floors or {}).items()},
            criteria=dict(self.criteria or {}),
            reported_only=dict(self.reported_only or {}),
            pool_adjacent={a: tuple(groups) for a, groups in (small.pool_adjacent or {}).items()},
            small_groups_reason=small.reason,
            history=tuple(self.history or ()),
            intended_use={m: use.use() for m, use in (self.intended_use or {}).items()},
            non_inferiority=self.non_inferiority,
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
