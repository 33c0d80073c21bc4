"""The safety-invariant suite's result types: one per invariant, one report per model.

An invariant is a metamorphic or invariance property a model must hold for every case (record or image) the
suite generates, e.g. "a vital sign moving further into danger never lowers a risk". The suite is versioned
(:data:`SAFETY_SUITE_VERSION`): a released model's card names the version it passed, and changing any
invariant, tolerance or generator bumps it. A single violation fails the invariant, and a failed invariant
blocks release (``vigil release``). The triage suite is :mod:`evaluation.safety_triage` (its checks in
:mod:`evaluation.safety_triage_fields` and :mod:`evaluation.safety_triage_complaints`), the imaging suite
:mod:`evaluation.safety_imaging` (its generated cases in :mod:`evaluation.safety_imaging_cases`);
docs/clinical_safety.md explains each invariant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import numpy as np

#: Bump when an invariant, a tolerance or a case generator changes.
SAFETY_SUITE_VERSION: Final = "safety-invariants/2"

#: At most this many violating cases are kept per invariant (as examples in reports and the card).
MAX_EXAMPLES: Final = 5


@dataclass(frozen=True)
class InvariantResult:
    """The outcome of one invariant over every case generated for it.

    Attributes
    ----------
    id : str
        Stable identifier, e.g. ``"triage.deterioration_never_lowers_risk"``.
    description : str
        What must hold, in one sentence a clinician can read.
    rationale : str
        Why it exists (the harm it prevents).
    n_cases : int
        Cases checked (records, record pairs or images).
    n_violations : int
        Cases that broke it; 0 to pass.
    tolerance : str
        The tolerance applied, in words ("none", "probability change <= 0.05", ...).
    examples : list of dict
        Up to :data:`MAX_EXAMPLES` violating cases, as plain JSON values (no patient data: generated cases).
    worst : float
        The largest violation magnitude seen (0 when none), in the invariant's own unit.
    by_finding : dict
        Imaging stability invariants: violations per finding (a case may count for several findings), so the
        release gate can withhold the findings that broke it and release the others.
    """

    id: str
    description: str
    rationale: str
    n_cases: int
    n_violations: int
    tolerance: str = "none"
    examples: tuple[dict[str, Any], ...] = ()
    worst: float = 0.0
    by_finding: Mapping[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.n_cases > 0 and self.n_violations == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "rationale": self.rationale,
            "n_cases": self.n_cases,
            "n_violations": self.n_violations,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "worst": self.worst,
            "examples": list(self.examples),
            **({"by_finding": dict(self.by_finding)} if self.by_finding else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InvariantResult:
        return cls(
            id=str(d["id"]),
            description=str(d["description"]),
            rationale=str(d["rationale"]),
            n_cases=int(d["n_cases"]),
            n_violations=int(d["n_violations"]),
            tolerance=str(d.get("tolerance", "none")),
            examples=tuple(d.get("examples", ())),
            worst=float(d.get("worst", 0.0)),
            by_finding={str(k): int(v) for k, v in dict(d.get("by_finding", {})).items()},
        )


@dataclass(frozen=True)
class SafetyReport:
    """Every invariant's result for one model."""

    model_name: str
    model_version: str
    task: str  # "triage" or "imaging"
    results: tuple[InvariantResult, ...]
    suite_version: str = SAFETY_SUITE_VERSION
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        """True only when at least one invariant ran and none was violated."""
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def violations(self) -> tuple[InvariantResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def n_cases(self) -> int:
        return sum(r.n_cases for r in self.results)

    def summary(self) -> str:
        if self.passed:
            return f"{len(self.results)} invariants, {self.n_cases} cases, no violation ({self.suite_version})"
        failed = ", ".join(f"{r.id} ({r.n_violations}/{r.n_cases})" for r in self.violations)
        return f"violated: {failed} ({self.suite_version})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite_version": self.suite_version,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "task": self.task,
            "passed": self.passed,
            "n_cases": self.n_cases,
            "results": [r.to_dict() for r in self.results],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SafetyReport:
        return cls(
            model_name=str(d["model_name"]),
            model_version=str(d["model_version"]),
            task=str(d["task"]),
            results=tuple(InvariantResult.from_dict(r) for r in d["results"]),
            suite_version=str(d.get("suite_version", SAFETY_SUITE_VERSION)),
            notes=tuple(str(n) for n in d.get("notes", ())),
        )

    def to_markdown(self) -> str:
        lines = [
            f"# Safety invariants: {self.model_name} {self.model_version}",
            "",
            f"Suite {self.suite_version}; {'PASS' if self.passed else 'FAIL'}: {self.summary()}",
            "",
            "| invariant | cases | violations | tolerance | worst |",
            "|---|---:|---:|---|---:|",
        ]
        lines += [f"| {r.id} | {r.n_cases} | {r.n_violations} | {r.tolerance} | {r.worst:.4g} |" for r in self.results]
        for r in self.violations:
            lines += ["", f"## {r.id}", "", r.description, "", f"Why: {r.rationale}", ""]
            lines += [f"- example: `{ex}`" for ex in r.examples]
        lines += [f"\n{n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def invariant(
    id: str,
    description: str,
    rationale: str,
    n_cases: int,
    magnitudes: Sequence[float] | np.ndarray,
    examples: Sequence[dict[str, Any]],
    *,
    tolerance: float = 0.0,
    tolerance_text: str | None = None,
) -> InvariantResult:
    """Build a result from per-case violation magnitudes (> ``tolerance`` is a violation).

    ``magnitudes`` holds one number per case (how far the case went the wrong way; <= 0 when it held);
    ``examples`` holds the matching case descriptions, of which the violating ones are kept.
    """
    bad = [i for i, m in enumerate(magnitudes) if m > tolerance]
    worst = max((float(magnitudes[i]) for i in bad), default=0.0)
    bad.sort(key=lambda i: -float(magnitudes[i]))
    return InvariantResult(
        id=id,
        description=description,
        rationale=rationale,
        n_cases=int(n_cases),
        n_violations=len(bad),
        tolerance=tolerance_text if tolerance_text is not None else ("none" if tolerance == 0 else f"{tolerance:g}"),
        examples=tuple({**examples[i], "violation": round(float(magnitudes[i]), 6)} for i in bad[:MAX_EXAMPLES]),
        worst=worst,
    )
