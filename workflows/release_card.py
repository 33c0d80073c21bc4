"""The release card: the gate's decision in Markdown, with the intended use, the findings released, the fairness
groups and the comparison with the version in production.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from evaluation.safety import SafetyReport
from evaluation.safety_report import safety_card_section
from fairness.report import card_groups
from models.errors import ModelArtifactError
from models.intended_use import FindingRelease, IntendedUse
from training.tracking import ModelVersionRecord
from workflows.release_checks import ReleaseOutcome

log = logging.getLogger(__name__)


def _group_summary(result: Any) -> dict[str, Any]:
    """Per attribute and group: n, positives, evaluation and point estimates (the card's 'metrics by group'); a
    group with insufficient evidence is listed as "not evaluated", never as a pass."""
    return card_groups(result)


def scope_card_section(use: IntendedUse | None, findings: FindingRelease | None) -> str:
    """Markdown: the intended population declared in the policy, what the model is not validated for, and, for
    the chest X-ray model, which findings were released for whom and which were not, with why."""
    lines = ["## Release scope (declared in the release policy)", ""]
    if use is None:
        lines.append("The release policy declares no intended use for this model.")
    else:
        lines.append(f"Intended population: {use.population}")
        for other in use.not_validated_for:
            lines.append(f"- **Not validated for** {other['population']} ({other['name']}): {other['reason']}")
    if findings is not None:
        lines += ["", "| finding | released | for whom / why not |", "|---|---|---|"]
        for f, pop in sorted(findings.released.items()):
            lines.append(f"| {f} | yes | {pop.description} |")
        for f, why in sorted(findings.not_validated.items()):
            lines.append(f"| {f} | **not validated**: never shown or flagged | {why} |")
    return "\n".join(lines) + "\n"


def write_release_card(
    record: ModelVersionRecord,
    outcome: ReleaseOutcome,
    audits: dict[str, Any],
    out_dir: Path,
    *,
    safety: SafetyReport | None = None,
    safety_reason: str = "",
    use: IntendedUse | None = None,
    findings: FindingRelease | None = None,
    comparisons: list[Any] | None = None,
    production_version: str | None = None,
) -> Path:
    """The model card (Mitchell et al. 2019) of this version, completed at release: the card shipped in the
    ONNX file (intended use, data, training, limitations) plus metrics by group, the safety invariants (each
    one's result, violations with examples) and the gate result."""
    from models.onnx_file import open_onnx_model

    checks = "\n".join(f"- **{c.status}** {c.name}: {c.reason}" for c in outcome.checks)
    safety_md = safety_card_section(safety, safety_reason)
    path = out_dir / "model_card.md"
    try:
        _, card, _ = open_onnx_model(record.onnx_path)
    except ModelArtifactError as exc:  # a tampered or corrupt artefact has no trustworthy card
        path.write_text(
            f"# Model card: {record.name} version {record.version}\n\nUnavailable: {exc}\n\n"
            f"## Release gate\nStatus: {outcome.status}\n\n## Release gate checks\n\n{checks}\n\n"
            f"{safety_md}",
            encoding="utf-8",
        )
        return path
    card.metrics = {
        **card.metrics,
        "test (training run)": {k: v for k, v in sorted(record.run_metrics.items()) if k.startswith("test.")},
        "by_group": {name: _group_summary(result) for name, result in audits.items()},
    }
    card.release_gate = {
        "status": outcome.status,
        "promoted": outcome.promoted,
        "intended_use": use.to_dict() if use is not None else None,
        "findings": json.loads(findings.to_json()) if findings is not None else None,
        "against_production": {"version": production_version, "comparisons": [c.to_dict() for c in comparisons or []]},
        "checks": [c.__dict__ for c in outcome.checks],
        "safety_invariants": safety.to_dict() if safety is not None else {"status": "not run", "reason": safety_reason},
    }
    from evaluation.noninferiority import comparison_markdown

    against = ""
    if comparisons:
        assert production_version is not None  # comparisons are only made against a production version
        against = comparison_markdown(comparisons, production_version) + "\n"
    text = (
        card.to_markdown()
        + "\n"
        + scope_card_section(use, findings)
        + "\n"
        + against
        + "## Release gate checks\n\n"
        + checks
        + "\n\n"
        + safety_md
    )
    path.write_text(text, encoding="utf-8")
    (out_dir / "model_card.json").write_text(card.to_json(), encoding="utf-8")
    return path
