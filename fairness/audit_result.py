"""What the audit found: :class:`AuditResult` and its parts (documented in context in :mod:`fairness.audit`).

Results are frozen dataclasses of one shape whatever the input. ``to_dict()`` gives strict JSON (``nan`` and
infinities become ``None``: :func:`json.dumps` with ``allow_nan=False`` accepts it) and ``from_dict()`` reads
it back, so a gate or a report can run on an audit saved to disk.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from evaluation.bootstrap import ConfidenceInterval
from fairness.audit_spec import AuditSpec

__all__ = ["INSUFFICIENT", "SUFFICIENT", "AttributeResult", "AuditResult", "GapResult", "GroupResult"]

#: A group's (or gap's) evidence status: judged, or too small to judge ("not evaluated", never a pass).
SUFFICIENT = "sufficient evidence"
INSUFFICIENT = "insufficient evidence"


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
    """Everything :func:`fairness.audit.audit` found; the same type whatever the input. ``to_dict`` is strict JSON
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
