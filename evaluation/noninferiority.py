"""Never worse than what is serving: a candidate against the model at ``@production``, on the same rows.

:func:`compare` takes one evaluation frame scored by both models (``y_true``; ``y_score`` and ``y_score_prod``;
optionally ``acuity_true``, ``acuity_pred`` and ``acuity_pred_prod``, and a ``cluster`` column such as the
patient) and returns :class:`Comparison`:

- **Discrimination**: the AUROC difference (candidate minus production) with a paired percentile bootstrap
  interval (rows, or whole clusters, resampled together for both models, so the interval is of the difference
  itself). Non-inferior when the interval's lower end (``alpha / 2`` quantile) is above ``-auroc_margin``.
- **Under-triage by group**: for every group of every attribute given, the share of visits given a less urgent
  level than the reference level, candidate minus production. Worse beyond ``under_triage_tolerance`` fails
  when the point estimate exceeds it (the same estimate rule as the fairness gate's gaps; the bootstrap interval
  is reported beside it).

The margin and the tolerance are the release policy's (``non_inferiority``), declared before a comparison is run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True)
class GroupChange:
    attribute: str
    group: str
    n: int
    production: float
    candidate: float
    low: float
    high: float

    @property
    def change(self) -> float:
        return self.candidate - self.production


@dataclass
class Comparison:
    """Candidate vs production on one evaluation frame."""

    name: str
    n: int
    auroc_candidate: float
    auroc_production: float
    auroc_low: float
    auroc_high: float
    auroc_margin: float
    under_triage_tolerance: float
    groups: list[GroupChange] = field(default_factory=list)

    @property
    def auroc_difference(self) -> float:
        return self.auroc_candidate - self.auroc_production

    @property
    def worse_groups(self) -> list[GroupChange]:
        return [g for g in self.groups if g.change > self.under_triage_tolerance]

    @property
    def passed(self) -> bool:
        return self.auroc_low > -self.auroc_margin and not self.worse_groups

    def reason(self) -> str:
        text = (
            f"AUROC {self.auroc_candidate:.3f} vs production {self.auroc_production:.3f}: difference "
            f"{self.auroc_difference:+.3f} (paired bootstrap {self.auroc_low:+.3f} to {self.auroc_high:+.3f}; "
            f"non-inferior when the lower end is above -{self.auroc_margin:g})"
        )
        if self.groups:
            worst = max(self.groups, key=lambda g: g.change)
            text += (
                f"; under-triage by group: largest change {worst.attribute}={worst.group} "
                f"{worst.production:.3f} -> {worst.candidate:.3f} ({worst.change:+.3f}, tolerance "
                f"+{self.under_triage_tolerance:g})"
            )
            if self.worse_groups:
                text += "; worse beyond tolerance: " + ", ".join(
                    f"{g.attribute}={g.group} {g.change:+.3f}" for g in self.worse_groups[:5]
                )
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": self.n,
            "passed": self.passed,
            "auroc_candidate": self.auroc_candidate,
            "auroc_production": self.auroc_production,
            "auroc_difference": self.auroc_difference,
            "auroc_interval": [self.auroc_low, self.auroc_high],
            "auroc_margin": self.auroc_margin,
            "under_triage_tolerance": self.under_triage_tolerance,
            "groups": [
                {
                    "attribute": g.attribute,
                    "group": g.group,
                    "n": g.n,
                    "production": g.production,
                    "candidate": g.candidate,
                    "change": g.change,
                    "interval": [g.low, g.high],
                }
                for g in self.groups
            ],
        }


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def compare(
    name: str,
    frame: pd.DataFrame,
    *,
    attributes: Sequence[str] = (),
    auroc_margin: float,
    under_triage_tolerance: float,
    alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    min_group_n: int = 100,
) -> Comparison:
    """Candidate (``y_score``, ``acuity_pred``) against production (``*_prod``) on the rows of ``frame``.

    Groups below ``min_group_n`` rows are not compared (as in the fairness audit).

    Raises
    ------
    ValueError
        A required column is missing, or ``y_true`` has one class only.
    """
    for column in ("y_true", "y_score", "y_score_prod"):
        if column not in frame:
            raise ValueError(f"the comparison frame has no {column!r} column")
    y = frame["y_true"].to_numpy(dtype=int)
    if not 0 < y.sum() < len(y):
        raise ValueError(f"{name}: y_true has one class only; AUROC is undefined")
    new, old = frame["y_score"].to_numpy(float), frame["y_score_prod"].to_numpy(float)
    rng = np.random.default_rng(seed)
    members = None  # rows resampled one by one, or whole clusters (e.g. a patient's studies) together
    if "cluster" in frame:
        _, inverse = np.unique(frame["cluster"].to_numpy(), return_inverse=True)
        members = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]
    triage = all(c in frame for c in ("acuity_true", "acuity_pred", "acuity_pred_prod"))
    under_new = (frame["acuity_pred"] > frame["acuity_true"]).to_numpy() if triage else None
    under_old = (frame["acuity_pred_prod"] > frame["acuity_true"]).to_numpy() if triage else None
    group_rows = {
        (a, str(g)): np.flatnonzero(frame[a].astype(str).to_numpy() == str(g))
        for a in (attributes if triage else ())
        for g in sorted(frame[a].astype(str).unique())
    }
    group_rows = {k: v for k, v in group_rows.items() if len(v) >= min_group_n}
    diffs: list[float] = []
    group_diffs: dict[tuple[str, str], list[float]] = {k: [] for k in group_rows}
    for _ in range(n_boot):
        if members is None:
            rows = rng.integers(0, len(frame), len(frame))
        else:
            rows = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
        diffs.append(_auroc(y[rows], new[rows]) - _auroc(y[rows], old[rows]))
        if triage:
            assert under_new is not None and under_old is not None  # both computed when triage
            weight = np.bincount(rows, minlength=len(frame))
            for key, idx in group_rows.items():
                w = weight[idx]
                if w.sum():
                    group_diffs[key].append(float((w * under_new[idx]).sum() - (w * under_old[idx]).sum()) / w.sum())
    lo, hi = np.nanquantile(np.array(diffs), [alpha / 2, 1 - alpha / 2])
    groups = []
    for (attribute, group), idx in group_rows.items():
        assert under_new is not None and under_old is not None  # group_rows is empty unless triage
        values = np.array(group_diffs[(attribute, group)])
        g_lo, g_hi = np.quantile(values, [alpha / 2, 1 - alpha / 2]) if len(values) else (np.nan, np.nan)
        groups.append(
            GroupChange(
                attribute,
                group,
                len(idx),
                float(under_old[idx].mean()),
                float(under_new[idx].mean()),
                float(g_lo),
                float(g_hi),
            )
        )
    return Comparison(
        name,
        len(frame),
        _auroc(y, new),
        _auroc(y, old),
        float(lo),
        float(hi),
        auroc_margin,
        under_triage_tolerance,
        groups,
    )


def comparison_markdown(comparisons: Sequence[Comparison], production_version: str) -> str:
    """The model card's section: each evaluation frame, the AUROC difference, and under-triage by group."""
    lines = [
        f"## Against the model in production (version {production_version})",
        "",
        "| evaluation | n | AUROC candidate | AUROC production | difference (paired 95% interval) | margin | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.name} | {c.n} | {c.auroc_candidate:.3f} | {c.auroc_production:.3f} | "
            f"{c.auroc_difference:+.3f} ({c.auroc_low:+.3f} to {c.auroc_high:+.3f}) | -{c.auroc_margin:g} | "
            f"{'non-inferior' if c.passed else '**worse**'} |"
        )
    for c in comparisons:
        if c.groups:
            lines += [
                "",
                f"Under-triage by group, {c.name} (tolerance +{c.under_triage_tolerance:g}):",
                "",
                "| group | n | production | candidate | change (95% interval) |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {g.attribute}={g.group} | {g.n} | {g.production:.3f} | {g.candidate:.3f} | "
                f"{g.change:+.3f} ({g.low:+.3f} to {g.high:+.3f}) |"
                for g in c.groups
            ]
    return "\n".join(lines) + "\n"
