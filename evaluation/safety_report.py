"""Writing a :class:`~evaluation.safety.SafetyReport`: JSON and Markdown files, registry tags, a gate reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from evaluation.safety import SafetyReport

#: The registry tags that summarise a safety report on a model version.
TAG_STATUS: Final = "safety_invariants.status"
TAG_SUITE_VERSION: Final = "safety_invariants.suite_version"
TAG_VIOLATIONS: Final = "safety_invariants.violations"
TAG_CASES: Final = "safety_invariants.cases"


def write_safety_report(report: SafetyReport, out_dir: Path, stem: str = "safety_invariants") -> list[Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` (created); returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(report.to_markdown(), encoding="utf-8")
    return [json_path, md_path]


def safety_tags(report: SafetyReport | None, reason: str = "") -> dict[str, str]:
    """Registry tags of a report: status (``pass``/``fail``), suite version, violated invariant ids, cases.

    ``report=None`` (the suite could not run) gives status ``fail`` with ``reason`` as the violations tag.
    """
    if report is None:
        return {TAG_STATUS: "fail", TAG_VIOLATIONS: f"not run: {reason}"[:4900]}
    violated = ", ".join(f"{r.id} ({r.n_violations}/{r.n_cases})" for r in report.violations)
    return {
        TAG_STATUS: "pass" if report.passed else "fail",
        TAG_SUITE_VERSION: report.suite_version,
        TAG_VIOLATIONS: (violated or "none")[:4900],
        TAG_CASES: str(report.n_cases),
    }


def safety_card_section(report: SafetyReport | None, reason: str = "") -> str:
    """The model card's "Safety invariants" section in Markdown: every invariant, its result and examples."""
    if report is None:
        return f"## Safety invariants\n\nStatus: fail (the suite did not run: {reason})\n"
    lines = [
        "## Safety invariants",
        "",
        f"Status: {'pass' if report.passed else 'fail'}; suite {report.suite_version}; {report.n_cases} cases.",
        "",
        "| invariant | result | cases | violations | tolerance |",
        "|---|---|---:|---:|---|",
    ]
    lines += [
        f"| {r.id} | {'pass' if r.passed else 'FAIL'} | {r.n_cases} | {r.n_violations} | {r.tolerance} |"
        for r in report.results
    ]
    for r in report.violations:
        lines += ["", f"**{r.id}** violated: {r.description}"]
        lines += [f"- `{json.dumps(ex, default=str)}`" for ex in r.examples[:3]]
    return "\n".join(lines) + "\n"
