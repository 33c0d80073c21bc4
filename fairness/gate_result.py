"""The gate's verdict as data: :class:`GateResult`, the overall status and one :class:`Check` per judgement.

Written by :func:`fairness.gate.gate`; ``to_dict()`` gives strict JSON (non-finite numbers become ``None``) and
``from_dict()`` reads it back, so reports and the release record can be built from a saved verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fairness.audit_result import INSUFFICIENT

__all__ = ["FAIL", "PASS", "Check", "GateResult"]

#: A check's (and the gate's) status besides :data:`fairness.audit_result.INSUFFICIENT` ("insufficient evidence").
PASS, FAIL = "pass", "fail"


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
