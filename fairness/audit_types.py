"""The audit's inputs and results: :class:`AuditSpec` and :class:`AuditResult` (re-exported by
:mod:`fairness.audit`, where they are documented in context).

Results are frozen dataclasses of one shape whatever the input. ``to_dict()`` gives strict JSON (``nan`` and
infinities become ``None``: :func:`json.dumps` with ``allow_nan=False`` accepts it) and ``from_dict()`` reads
it back, so a gate or a report can run on an audit saved to disk.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from evaluation.bootstrap import ConfidenceInterval
from models.errors import InputValidationError

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
]

SUFFICIENT = "sufficient evidence"
INSUFFICIENT = "insufficient evidence"
#: Joins column names into an intersection's name ("sex|age_band") and values into its groups ("F|65+").
INTERSECTION_SEPARATOR = "|"
#: The group of rows whose sensitive attribute is missing: reported, never dropped.
MISSING_GROUP = "<missing>"


# ------------------------------------------------------------------------------------------------ spec
def _name(value: object, field_name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputValidationError(field_name, f"{field_name} must be a non-empty column name; got {value!r}")
    return value


def _int(value: object, field_name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputValidationError(field_name, f"{field_name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _names(value: object, field_name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InputValidationError(field_name, f"{field_name} must be a list of column names; got {value!r}")
    names = tuple(_name(v, f"{field_name}[{i}]") for i, v in enumerate(value))
    if len(set(names)) != len(names):
        raise InputValidationError(field_name, f"{field_name} must not repeat a column; got {list(names)}")
    return names


@dataclass(frozen=True)
class AuditSpec:
    """Which columns of the frame hold what, and how to audit them.

    Parameters
    ----------
    y_true : str
        Binary outcome (0/1 or bool): "admitted"/"critical" for triage, "abnormal study" for imaging.
    sensitive_attributes : sequence of str
        Columns whose values define the groups, e.g. ``["sex", "age_band", "ethnicity", "payer"]``.
    y_score : str, optional
        Predicted probability of ``y_true`` in [0, 1] (AUROC, ECE, observed/expected).
    y_flag : str, optional
        Binary decision at the operating threshold (sensitivity, FNR, FPR, PPV).
    acuity_true, acuity_pred : str, optional
        True and predicted triage level 1-5, both or neither (under-triage rates).
    cluster : str, optional
        Patient id: the bootstrap resamples whole patients.
    intersections : sequence of sequences of str
        Column combinations audited jointly, e.g. ``[("sex", "age_band")]``; named ``"sex|age_band"``.
    reference_groups : mapping of str to group value
        Reference group per attribute or intersection name (``{"sex|age_band": "F|40-64"}``); otherwise
        the largest group (ties: the first in sorted order).
    pool_adjacent : mapping of str to sequence of group values
        Declared in advance (the release policy's ``small_groups.pool_adjacent``): per attribute, its groups
        in their natural order (age bands from youngest). A group of that list with insufficient evidence is
        merged with its adjacent neighbour that has fewer positives (ties: the earlier one), repeatedly, until
        every merged group has sufficient evidence or one group is left; merged groups are named by joining
        their labels with ``+`` (``"<15+15-24"``) and used in every intersection with the attribute. Only
        sizes and positives decide (never the model's results). Attributes not audited are ignored.
    min_group_n, min_group_positives : int
        Below either, a group has status ``"insufficient evidence"``.
    n_boot : int
        Bootstrap resamples. alpha : float -- ``1 - alpha`` interval coverage. seed : int -- of the resampling.
    """

    y_true: str
    sensitive_attributes: Sequence[str]
    y_score: str | None = None
    y_flag: str | None = None
    acuity_true: str | None = None
    acuity_pred: str | None = None
    cluster: str | None = None
    intersections: Sequence[Sequence[str]] = ()
    reference_groups: Mapping[str, object] = field(default_factory=dict)
    pool_adjacent: Mapping[str, Sequence[str]] = field(default_factory=dict)
    min_group_n: int = 100
    min_group_positives: int = 20
    n_boot: int = 1000
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        _name(self.y_true, "y_true")
        for name in ("y_score", "y_flag", "acuity_true", "acuity_pred", "cluster"):
            if getattr(self, name) is not None:
                _name(getattr(self, name), name)
        if (self.acuity_true is None) != (self.acuity_pred is None):
            missing = "acuity_pred" if self.acuity_pred is None else "acuity_true"
            raise InputValidationError(missing, f"{missing} is required when the other acuity column is given")
        if self.y_score is None and self.y_flag is None and self.acuity_true is None:
            raise InputValidationError(
                "y_score", "give at least one of y_score, y_flag or acuity_true/acuity_pred: nothing to audit"
            )
        attributes = _names(self.sensitive_attributes, "sensitive_attributes")
        if not attributes:
            raise InputValidationError("sensitive_attributes", "sensitive_attributes must name at least one column")
        if isinstance(self.intersections, str) or not isinstance(self.intersections, Sequence):
            raise InputValidationError(
                "intersections", f"intersections must be a list of tuples; got {self.intersections!r}"
            )
        crossings = tuple(_names(c, f"intersections[{i}]") for i, c in enumerate(self.intersections))
        for i, columns in enumerate(crossings):
            if len(columns) < 2:
                raise InputValidationError(
                    f"intersections[{i}]", f"intersections[{i}] must combine at least 2 columns; got {list(columns)}"
                )
        if not isinstance(self.reference_groups, Mapping):
            raise InputValidationError(
                "reference_groups",
                f"reference_groups must be a mapping of attribute to group; got {self.reference_groups!r}",
            )
        known = set(attributes) | {INTERSECTION_SEPARATOR.join(c) for c in crossings}
        for key in self.reference_groups:
            if key not in known:
                raise InputValidationError(
                    f"reference_groups.{key}",
                    f"reference_groups.{key}: not an audited attribute or intersection; known {sorted(known)}",
                )
        object.__setattr__(self, "sensitive_attributes", attributes)
        object.__setattr__(self, "intersections", crossings)
        object.__setattr__(self, "reference_groups", {str(k): str(v) for k, v in self.reference_groups.items()})
        if not isinstance(self.pool_adjacent, Mapping):
            raise InputValidationError(
                "pool_adjacent",
                f"pool_adjacent must map an attribute to its ordered groups; got {self.pool_adjacent!r}",
            )
        pooling = {}
        for key, order in self.pool_adjacent.items():
            groups = _names(order, f"pool_adjacent.{key}")
            if len(groups) < 2:
                raise InputValidationError(f"pool_adjacent.{key}", f"pool_adjacent.{key} must list at least 2 groups")
            pooling[str(key)] = groups
        object.__setattr__(self, "pool_adjacent", pooling)
        _int(self.min_group_n, "min_group_n", 1)
        _int(self.min_group_positives, "min_group_positives", 0)
        _int(self.n_boot, "n_boot", 1)
        _int(self.seed, "seed", 0)
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < float(alpha) < 1.0:
            raise InputValidationError("alpha", f"alpha must be in (0, 1); got {alpha!r}")

    @property
    def partitions(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """``(name, columns)`` of every audited attribute, then every intersection."""
        singles = tuple((a, (a,)) for a in self.sensitive_attributes)
        return singles + tuple((INTERSECTION_SEPARATOR.join(c), tuple(c)) for c in self.intersections)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (lists for tuples)."""
        return {
            "y_true": self.y_true,
            "y_score": self.y_score,
            "y_flag": self.y_flag,
            "acuity_true": self.acuity_true,
            "acuity_pred": self.acuity_pred,
            "cluster": self.cluster,
            "sensitive_attributes": list(self.sensitive_attributes),
            "intersections": [list(c) for c in self.intersections],
            "reference_groups": dict(self.reference_groups),
            "pool_adjacent": {k: list(v) for k, v in self.pool_adjacent.items()},
            "min_group_n": self.min_group_n,
            "min_group_positives": self.min_group_positives,
            "n_boot": self.n_boot,
            "alpha": float(self.alpha),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "intersections": [tuple(c) for c in data.get("intersections", ())]})


# ---------------------------------------------------------------------------------------------- results
def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _ci_to_dict(ci: ConfidenceInterval) -> dict[str, Any]:
    return {
        "estimate": _num(ci.estimate),
        "low": _num(ci.low),
        "high": _num(ci.high),
        "n_boot": ci.n_boot,
        "n_valid": ci.n_valid,
    }


def _ci_from_dict(d: Mapping[str, Any]) -> ConfidenceInterval:
    def f(v: float | None) -> float:
        return float("nan") if v is None else float(v)

    return ConfidenceInterval(f(d["estimate"]), f(d["low"]), f(d["high"]), int(d["n_boot"]), int(d["n_valid"]))


@dataclass(frozen=True)
class GroupResult:
    """One group: its size, evidence status, metrics with intervals and (with scores) its calibration curve.

    ``calibration`` holds ``mean_predicted``, ``observed`` and ``count`` per quantile decile (full data), or
    is ``None`` when the audit has no ``y_score``. ``support`` gives, for each rate metric, the number of
    patients it is a share of (false-negative rate: positives; high-acuity under-triage: true levels 1-2).
    """

    group: str
    n: int
    positives: int
    status: str
    reason: str
    metrics: Mapping[str, ConfidenceInterval]
    calibration: Mapping[str, tuple[float, ...]] | None
    support: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        cal = None if self.calibration is None else {k: [float(x) for x in v] for k, v in self.calibration.items()}
        return {
            "group": self.group,
            "n": self.n,
            "positives": self.positives,
            "status": self.status,
            "reason": self.reason,
            "metrics": {k: _ci_to_dict(v) for k, v in self.metrics.items()},
            "calibration": cal,
            "support": dict(self.support),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupResult:
        cal = d["calibration"]
        return cls(
            group=str(d["group"]),
            n=int(d["n"]),
            positives=int(d["positives"]),
            status=str(d["status"]),
            reason=str(d["reason"]),
            metrics={k: _ci_from_dict(v) for k, v in d["metrics"].items()},
            calibration=None if cal is None else {k: tuple(float(x) for x in v) for k, v in cal.items()},
            support={str(k): int(v) for k, v in d.get("support", {}).items()},
        )


@dataclass(frozen=True)
class GapResult:
    """A gap in one metric: ``group`` against ``comparator`` (the reference, or the smallest group).

    Attributes
    ----------
    kind : {"vs_reference", "max_min"}
    difference, ratio : ConfidenceInterval
        ``group - comparator`` and ``group / reference`` (``vs_reference``, percentile intervals), or
        ``max - min`` and ``min / max`` over the groups with sufficient evidence (``max_min``, basic
        intervals, clipped at 0).
    chance_level : float
        The size of gap that chance alone exceeds with probability ``alpha`` when the groups do not differ,
        simultaneously over every pair of the attribute's judged groups (max-T on the bootstrap deviations;
        ``~ 1.96 SE`` with two groups). A gap beyond it is evidence that the groups differ.
    status : {"sufficient evidence", "insufficient evidence"}
        Insufficient when either group (or, for ``max_min``, all but one group) lacks evidence.
    """

    metric: str
    kind: str
    group: str
    comparator: str
    difference: ConfidenceInterval
    ratio: ConfidenceInterval
    chance_level: float
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "kind": self.kind,
            "group": self.group,
            "comparator": self.comparator,
            "difference": _ci_to_dict(self.difference),
            "ratio": _ci_to_dict(self.ratio),
            "chance_level": _num(self.chance_level),
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GapResult:
        return cls(
            str(d["metric"]),
            str(d["kind"]),
            str(d["group"]),
            str(d["comparator"]),
            _ci_from_dict(d["difference"]),
            _ci_from_dict(d["ratio"]),
            float("nan") if d["chance_level"] is None else float(d["chance_level"]),
            str(d["status"]),
        )


@dataclass(frozen=True)
class AttributeResult:
    """One sensitive attribute or intersection: its groups and gaps.

    ``pooled`` maps each original group that :attr:`AuditSpec.pool_adjacent` merged to the pooled group it
    was judged in (``{"<15": "<15+15-24", "15-24": "<15+15-24"}``); empty when nothing was pooled.
    """

    attribute: str
    columns: tuple[str, ...]
    reference_group: str
    groups: tuple[GroupResult, ...]
    gaps: tuple[GapResult, ...]
    pooled: Mapping[str, str] = field(default_factory=dict)

    def group(self, label: str) -> GroupResult:
        """The group called ``label``; ``KeyError`` naming the known groups otherwise."""
        for g in self.groups:
            if g.group == label:
                return g
        raise KeyError(f"{self.attribute} has no group {label!r}; groups {[g.group for g in self.groups]}")

    def gap(self, metric: str, group: str | None = None) -> GapResult:
        """The gap of ``group`` against the reference, or the max-min gap when ``group`` is None."""
        for gap in self.gaps:
            if gap.metric == metric and (gap.kind == "max_min" if group is None else gap.group == group):
                return gap
        raise KeyError(f"{self.attribute} has no {metric} gap for {group or 'max-min'!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "columns": list(self.columns),
            "reference_group": self.reference_group,
            "groups": [g.to_dict() for g in self.groups],
            "gaps": [g.to_dict() for g in self.gaps],
            "pooled": dict(self.pooled),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AttributeResult:
        return cls(
            str(d["attribute"]),
            tuple(d["columns"]),
            str(d["reference_group"]),
            tuple(GroupResult.from_dict(g) for g in d["groups"]),
            tuple(GapResult.from_dict(g) for g in d["gaps"]),
            {str(k): str(v) for k, v in d.get("pooled", {}).items()},
        )


@dataclass(frozen=True)
class AuditResult:
    """Everything :func:`audit` found; the same type whatever the input. ``to_dict`` is strict JSON
    (non-finite numbers become ``None``) and ``from_dict`` reads it back.

    ``resamples`` holds, per attribute or intersection and metric, the metric of every group on every
    bootstrap resample (``n_boot x groups``, groups in the order of :attr:`AttributeResult.groups`): the
    release gate draws its family-wise (simultaneous) intervals from them. They stay in memory; ``to_dict``
    writes them only with ``include_resamples=True`` (a few MB), and a result read back without them cannot
    be gated.
    """

    spec: AuditSpec
    n_rows: int
    n_clusters: int | None
    metrics: tuple[str, ...]
    overall: GroupResult
    attributes: tuple[AttributeResult, ...]
    resamples: Mapping[str, Mapping[str, NDArray[np.float64]]] = field(default_factory=dict, compare=False, repr=False)

    def attribute(self, name: str) -> AttributeResult:
        """The attribute or intersection called ``name`` (``"sex"``, ``"sex|age_band"``)."""
        for a in self.attributes:
            if a.attribute == name:
                return a
        raise KeyError(f"no audited attribute {name!r}; audited {[a.attribute for a in self.attributes]}")

    def to_dict(self, include_resamples: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "spec": self.spec.to_dict(),
            "n_rows": self.n_rows,
            "n_clusters": self.n_clusters,
            "metrics": list(self.metrics),
            "overall": self.overall.to_dict(),
            "attributes": [a.to_dict() for a in self.attributes],
        }
        if include_resamples:
            out["resamples"] = {
                a: {m: [[_num(float(x)) for x in row] for row in v] for m, v in by_metric.items()}
                for a, by_metric in self.resamples.items()
            }
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditResult:
        return cls(
            AuditSpec.from_dict(d["spec"]),
            int(d["n_rows"]),
            None if d["n_clusters"] is None else int(d["n_clusters"]),
            tuple(d["metrics"]),
            GroupResult.from_dict(d["overall"]),
            tuple(AttributeResult.from_dict(a) for a in d["attributes"]),
            {
                a: {
                    m: np.array([[np.nan if x is None else x for x in row] for row in v], dtype=np.float64)
                    for m, v in by_metric.items()
                }
                for a, by_metric in d.get("resamples", {}).items()
            },
        )
