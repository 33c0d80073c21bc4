"""Fairness reports: JSON for machines, Markdown for review, one self-contained HTML file for people.

Everything written is aggregate: group labels, counts, metric estimates and intervals, calibration by decile,
and the gate's checks. No row of the audited frame (no patient id, no score of a patient) is written. The
HTML embeds its figures as base64 PNGs (matplotlib's object API, no global pyplot state), so the one file can
be attached to a model card, an MLflow run or an e-mail.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from evaluation.bootstrap import ConfidenceInterval
from fairness.audit_result import INSUFFICIENT, AuditResult, GroupResult
from fairness.gate_result import FAIL, GateResult

__all__ = ["NOT_EVALUATED", "REPORT_STEM", "card_groups", "write_reports"]

#: File names are ``<stem>.json``, ``<stem>.md`` and ``<stem>.html``.
REPORT_STEM = "fairness_report"
_DATA_URI = "data:image/png;base64,"

#: How a group with insufficient evidence is listed (model card, reports): never as a pass.
NOT_EVALUATED = "not evaluated"

_NOTES = (
    "The gate judges every check on family-wise (simultaneous, max-T bootstrap) intervals over all the checks of "
    "the audit, so that a fair model fails none of them with probability 1 - alpha; the groups and gaps tables "
    "show each metric's own percentile bootstrap interval (whole patients resampled when the audit had a cluster "
    "column; the largest-minus-smallest gap uses the basic bootstrap interval).",
    "For the chest X-ray model, false_negative_rate is the false 'no finding' rate: abnormal studies called normal.",
    "under_triage_rate: share of all patients given a less urgent level than their true one; "
    "high_acuity_under_triage_rate: share of true level 1-2 patients given level 3-5.",
    "A group with insufficient evidence is 'not evaluated': reported but never judged, never counted as 0 and "
    "never as a pass.",
)


def _status(g: GroupResult) -> str:
    return g.status if g.status != INSUFFICIENT else f"{NOT_EVALUATED} ({INSUFFICIENT})"


def card_groups(audit: AuditResult) -> dict[str, Any]:
    """Metrics by group for a model card: per attribute and group, n, positives, ``evaluation`` and estimates.

    ``evaluation`` is ``"evaluated"`` or ``"not evaluated: <why>"`` (insufficient evidence; never a pass);
    original groups that the pre-declared pooling merged are listed too, as ``"not evaluated on its own:
    pooled into <group>"``. ``overall`` holds the estimates over every row.
    """
    out: dict[str, Any] = {"overall": {k: _num(v.estimate) for k, v in audit.overall.metrics.items()}}
    for attr in audit.attributes:
        rows: dict[str, Any] = {}
        for g in attr.groups:
            evaluation = "evaluated" if g.status != INSUFFICIENT else f"{NOT_EVALUATED}: {g.reason}"
            rows[g.group] = {
                "n": g.n,
                "positives": g.positives,
                "evaluation": evaluation,
                **{k: _num(v.estimate) for k, v in g.metrics.items()},
            }
        for original, pooled in attr.pooled.items():
            rows[original] = {"evaluation": f"{NOT_EVALUATED} on its own: pooled into {pooled}"}
        out[attr.attribute] = rows
    return out


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


def _ci(ci: ConfidenceInterval) -> str:
    return f"{_fmt(ci.estimate)} ({_fmt(ci.low)} to {_fmt(ci.high)})"


def _attribute_rows(audit: AuditResult) -> Iterable[tuple[str, str, GroupResult]]:
    yield "overall", "all", audit.overall
    for attr in audit.attributes:
        for g in attr.groups:
            yield attr.attribute, g.group, g


# ------------------------------------------------------------------------------------------- markdown
def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return out


def _markdown(audit: AuditResult, gate: GateResult, title: str) -> str:
    level = f"{100 * (1 - audit.spec.alpha):g}%"
    lines = [
        f"# {title}",
        "",
        f"**Release gate: {gate.status.upper()}** (policy {gate.policy_version}, "
        f"straddle rule `{gate.straddle_rule}`, {level} intervals, {audit.spec.n_boot} bootstrap resamples "
        f"of {'patients' if audit.spec.cluster else 'rows'}; {audit.n_rows} rows)",
        "",
    ]
    flagged = [c for c in gate.checks if c.status == FAIL or (c.status == INSUFFICIENT and c.blocking)]
    if flagged:
        lines += ["## Why", ""] + [f"- **{c.status}**: {c.reason}" for c in flagged] + [""]
    if gate.notes:
        lines += ["## How the gate judged", ""] + [f"- {n}" for n in gate.notes] + [""]
    lines += ["## Checks", ""]
    lines += _md_table(
        ["status", "blocking", "policy key", "reason"],
        ([c.status, "yes" if c.blocking else "no", c.policy_key, c.reason] for c in gate.checks),
    )
    lines += ["", "## Groups", "", f"Estimates with {level} intervals.", ""]
    header = ["attribute", "group", "n", "positives", "status", *audit.metrics]
    rows = (
        [attr, label, str(g.n), str(g.positives), _status(g), *(_ci(g.metrics[m]) for m in audit.metrics)]
        for attr, label, g in _attribute_rows(audit)
    )
    lines += _md_table(header, rows)
    lines += ["", "## Gaps", "", "`vs_reference`: group minus reference; `max_min`: largest minus smallest.", ""]
    gap_rows = (
        [
            a.attribute,
            gap.metric,
            gap.kind,
            f"{gap.group} vs {gap.comparator}",
            _ci(gap.difference),
            _ci(gap.ratio),
            _fmt(gap.chance_level),
            gap.status,
        ]
        for a in audit.attributes
        for gap in a.gaps
    )
    lines += _md_table(
        ["attribute", "metric", "kind", "groups", "difference", "ratio", "chance level", "status"], gap_rows
    )
    lines += ["", "## Notes", ""] + [f"- {n}" for n in _NOTES] + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- figures
def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _metric_figure(audit: AuditResult, gate: GateResult, metric: str) -> str:
    rows = list(_attribute_rows(audit))
    fig = Figure(figsize=(7.0, 0.6 + 0.28 * len(rows)))
    ax = fig.subplots()
    for i, (_, _, g) in enumerate(rows):
        ci = g.metrics[metric]
        if not math.isfinite(ci.estimate):
            continue
        weak = g.status == INSUFFICIENT
        ax.barh(i, ci.estimate, color="#bbbbbb" if weak else "#4878a8", hatch="//" if weak else None, height=0.7)
        if math.isfinite(ci.low) and math.isfinite(ci.high):
            # The interval need not contain the estimate (ECE's resamples are biased upward): draw it as is.
            ax.plot([ci.low, ci.high], [i, i], color="black", lw=1, marker="|", ms=6)
    ax.set_yticks(range(len(rows)), [f"{a}={g}" if a != "overall" else "overall" for a, g, _ in rows], fontsize=7)
    ax.invert_yaxis()
    for c in gate.checks:
        if c.metric == metric and c.check in ("group_minimum", "group_maximum") and math.isfinite(c.tolerance):
            ax.axvline(c.tolerance, color="#c0392b", ls="--", lw=1)
            break
    ax.set_xlabel(
        f"{metric} (bars: estimate; whiskers: {100 * (1 - audit.spec.alpha):g}% interval; grey: insufficient evidence)",
        fontsize=8,
    )
    return _png(fig)


def _calibration_figure(audit: AuditResult, attribute: str, groups: Sequence[GroupResult]) -> str:
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls=":")
    for g in groups:
        if g.calibration is None:
            continue
        style = ":" if g.status == INSUFFICIENT else "-"
        ax.plot(g.calibration["mean_predicted"], g.calibration["observed"], marker="o", ms=3, ls=style, label=g.group)
    ax.set_xlabel("mean predicted (by decile)", fontsize=8)
    ax.set_ylabel("observed", fontsize=8)
    ax.set_title(f"calibration by {attribute}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


# ------------------------------------------------------------------------------------------------ html
def _html_table(header: Sequence[str], rows: Iterable[tuple[str, Sequence[str]]]) -> str:
    """``rows``: ``(status, cells)``; the status becomes the row's CSS class."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="{html.escape(status.replace(" ", "-"))}">'
        + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        + "</tr>"
        for status, cells in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(audit: AuditResult, gate: GateResult, title: str) -> str:
    level = f"{100 * (1 - audit.spec.alpha):g}%"
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="verdict {html.escape(gate.status.replace(" ", "-"))}">Release gate: '
        f"<strong>{html.escape(gate.status.upper())}</strong></p>",
        f"<p>Policy {html.escape(gate.policy_version)}, straddle rule <code>{html.escape(gate.straddle_rule)}</code>, "
        f"{level} intervals from {audit.spec.n_boot} bootstrap resamples of "
        f"{'patients' if audit.spec.cluster else 'rows'}; {audit.n_rows} rows.</p>",
    ]
    flagged = [c for c in gate.checks if c.status == FAIL or (c.status == INSUFFICIENT and c.blocking)]
    if flagged:
        items = "".join(f"<li><strong>{html.escape(c.status)}</strong>: {html.escape(c.reason)}</li>" for c in flagged)
        parts.append(f"<h2>Why</h2><ul>{items}</ul>")
    if gate.notes:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in gate.notes)
        parts.append(f"<h2>How the gate judged</h2><ul>{notes}</ul>")
    parts.append("<h2>Checks</h2>")
    parts.append(
        _html_table(
            ["status", "blocking", "policy key", "reason"],
            ((c.status, [c.status, "yes" if c.blocking else "no", c.policy_key, c.reason]) for c in gate.checks),
        )
    )
    parts.append(f"<h2>Groups</h2><p>Estimates with {level} intervals.</p>")
    rows = list(_attribute_rows(audit))
    parts.append(
        _html_table(
            ["attribute", "group", "n", "positives", "status", *audit.metrics],
            (
                (
                    g.status,
                    [a, label, str(g.n), str(g.positives), _status(g), *(_ci(g.metrics[m]) for m in audit.metrics)],
                )
                for a, label, g in rows
            ),
        )
    )
    parts.append(
        "<h2>Gaps</h2><p><code>vs_reference</code>: group minus reference; "
        "<code>max_min</code>: largest minus smallest.</p>"
    )
    gaps = [(a.attribute, gap) for a in audit.attributes for gap in a.gaps]
    parts.append(
        _html_table(
            ["attribute", "metric", "kind", "groups", "difference", "ratio", "chance level", "status"],
            (
                (
                    g.status,
                    [
                        a,
                        g.metric,
                        g.kind,
                        f"{g.group} vs {g.comparator}",
                        _ci(g.difference),
                        _ci(g.ratio),
                        _fmt(g.chance_level),
                        g.status,
                    ],
                )
                for a, g in gaps
            ),
        )
    )
    parts.append("<h2>Metrics by group</h2>")
    for m in audit.metrics:
        parts.append(
            f'<figure><img alt="{html.escape(m)} by group" src="{_DATA_URI}{_metric_figure(audit, gate, m)}">'
            f"<figcaption>{html.escape(m)}</figcaption></figure>"
        )
    if audit.overall.calibration is not None:
        parts.append("<h2>Calibration by group</h2>")
        for attr in audit.attributes:
            img = _calibration_figure(audit, attr.attribute, attr.groups)
            parts.append(
                f'<figure><img alt="calibration by {html.escape(attr.attribute)}" src="{_DATA_URI}{img}"></figure>'
            )
    parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in _NOTES) + "</ul>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
        "tr.fail td{background:#fbe3e1}tr.insufficient-evidence td{background:#f3f3f3;color:#666}"
        ".verdict{font-size:1.4em}.verdict.fail{color:#b03a2e}.verdict.pass{color:#1e8449}"
        ".verdict.insufficient-evidence{color:#9a7d0a}figure{display:inline-block;margin:0.5em}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )


# ----------------------------------------------------------------------------------------------- entry
def write_reports(audit_result: AuditResult, gate_result: GateResult, out_dir: str | Path, title: str) -> list[Path]:
    """Write the audit and the gate's verdict as JSON, Markdown and self-contained HTML.

    Parameters
    ----------
    audit_result : AuditResult
    gate_result : GateResult
    out_dir : str or Path
        Created if missing; existing report files are overwritten.
    title : str
        Heading of the Markdown and HTML (e.g. "Triage model v3: fairness audit").

    Returns
    -------
    list of Path
        ``[json, markdown, html]``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{REPORT_STEM}.{ext}" for ext in ("json", "md", "html")]
    payload = {"title": title, "gate": gate_result.to_dict(), "audit": audit_result.to_dict()}
    paths[0].write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    paths[1].write_text(_markdown(audit_result, gate_result, title), encoding="utf-8")
    paths[2].write_text(_html(audit_result, gate_result, title), encoding="utf-8")
    return paths
