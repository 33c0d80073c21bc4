"""``vigil release``: the only way to the ``production`` alias.

For one registered model version: verify the artefact (checksum against the registry, the run's recorded ONNX
parity, never a model trained on synthetic data), check the performance floors, run the fairness audit on the
evaluation data, judge it with the versioned release policy, run the safety-invariant suite (any violation fails
the release), write the result as MLflow tags and a report, and move ``production`` only when every check passes.
Composes the packages; holds no metric logic.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.safety import SafetyReport
from evaluation.safety_report import safety_card_section, safety_tags, write_safety_report
from fairness.audit import audit
from fairness.audit_types import AuditSpec
from fairness.policy import ReleasePolicy, gate, load_policy
from fairness.report import card_groups, write_reports
from models.errors import DataSourceError, ModelArtifactError, VigilError
from models.intended_use import FindingRelease, IntendedUse, Population, dicom_age_years
from models.onnx_runtime import sha256_file
from models.registry import IMAGING_MODEL, MODEL_NAMES, TRIAGE_MODEL, Tag, parse_metric_key
from training.tracking import ModelVersionRecord, fetch_model_version, record_release_decision
from workflows.triage import PARITY_TOLERANCE, work_dir

log = logging.getLogger(__name__)

POLICY_PATH = Path(__file__).resolve().parents[1] / "fairness" / "release_policy.yaml"

#: Perturbed records of the triage safety-invariant suite at release.
SAFETY_N_GRID = 10_000
SAFETY_CHECK = "safety invariants"


class SafetySuiteUnavailableError(VigilError):
    """The safety-invariant suite cannot run on a model: no suite for its task in this build, or no films."""


@dataclass
class Check:
    """One release check: data, never an exception."""

    name: str
    status: str  # pass | fail | insufficient evidence; or, never deciding: reported | not released | not run
    reason: str


#: Check statuses that decide the release; the others are information (an audit outside the intended use, a finding
#: that is not released while others are, an audit with nothing to audit).
DECIDING = ("pass", "fail", "insufficient evidence")


@dataclass
class ReleaseOutcome:
    """Everything ``vigil release`` decided, and why."""

    model: str
    version: str
    status: str
    checks: list[Check] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)
    promoted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "promoted": self.promoted,
            "checks": [c.__dict__ for c in self.checks],
            "reports": [str(p) for p in self.reports],
        }


def artefact_checks(record: ModelVersionRecord) -> list[Check]:
    """Checksum against the registry, ONNX parity recorded at export, and real (not synthetic) training data."""
    checks = []
    expected = record.tags.get(Tag.ONNX_SHA256) or record.run_tags.get(Tag.ONNX_SHA256)
    actual = sha256_file(record.onnx_path)
    checks.append(
        Check(
            "onnx checksum",
            "pass" if expected == actual else "fail",
            "ONNX file matches the registry's sha256"
            if expected == actual
            else f"ONNX sha256 {actual[:12]}... does not match the registry's {str(expected)[:12]}...",
        )
    )
    parity = record.run_metrics.get("parity_max_abs_diff")
    ok = parity is not None and parity <= PARITY_TOLERANCE
    checks.append(
        Check(
            "onnx parity",
            "pass" if ok else "fail",
            f"max |onnxruntime - torch| at export {parity:.1e} (tolerance {PARITY_TOLERANCE:g})"
            if parity is not None
            else "the run recorded no ONNX parity check",
        )
    )
    synthetic = record.run_tags.get(Tag.SYNTHETIC_DATA, "true") != "false"
    checks.append(
        Check(
            "real training data",
            "fail" if synthetic else "pass",
            "trained on synthetic data: never released" if synthetic else "trained on real data",
        )
    )
    return checks


def floor_checks(record: ModelVersionRecord, floors: dict[str, float]) -> list[Check]:
    """Performance floors of the policy against the metrics the training run logged on its test data."""
    checks = []
    for metric, minimum in sorted(floors.items()):
        value = record.run_metrics.get(metric)
        if value is None or not np.isfinite(value):
            checks.append(Check(f"floor {metric}", "fail", f"{metric} was not recorded by the training run"))
        else:
            ok = value >= minimum
            checks.append(
                Check(
                    f"floor {metric}",
                    "pass" if ok else "fail",
                    f"{metric} = {value:.3f} ({'>=' if ok else '<'} floor {minimum})",
                )
            )
    return checks


#: Evaluation data of the triage audit and the sensitive attributes each holds.
TRIAGE_AUDIT_DATA: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("nhamcs:2020", ("sex", "age_band", "ethnicity", "payer")),
    ("ktas", ("sex", "age_band")),
)


def triage_audit_frames(
    record: ModelVersionRecord,
    data_dir: Path | None,
    datasets: tuple[tuple[str, tuple[str, ...]], ...] = TRIAGE_AUDIT_DATA,
) -> list[tuple[str, pd.DataFrame, list[str], list[tuple[str, ...]]]]:
    """(name, frame, sensitive attributes, intersections) for each triage audit.

    Admission is audited with under-triage on the visits that have a reference level; critical care (rarer)
    on every visit of a dataset that has at least 100 critical events.
    """
    from models.onnx_runtime import TriageOnnxModel
    from training.data import load_dataset

    model = TriageOnnxModel(record.onnx_path)
    thresholds = model.card.decision_rule.get("outcome_thresholds")
    if not thresholds:
        raise ModelArtifactError(
            f"{record.name} version {record.version} records no outcome operating thresholds "
            "in its model card (trained before they existed): retrain it with `vigil run`"
        )
    audits: list[tuple[str, pd.DataFrame, list[str], list[tuple[str, ...]]]] = []
    for dataset, attributes in datasets:
        frame = load_dataset(dataset, data_dir).frame.reset_index(drop=True)
        pred = model.predict(frame)
        base = pd.DataFrame(
            {
                "sex": frame["sex"].astype(str),
                "age_band": frame["age_band"].astype(str),
                "ethnicity": frame["ethnicity"].fillna("unknown").astype(str),
                "payer": frame["payer"].fillna("unknown").astype(str),
                "acuity_true": frame["acuity"].astype("float"),
                "acuity_pred": pred.recommended_level.astype(float),
            }
        )
        outcomes = ("admitted", "critical") if int(frame["critical"].sum()) >= 100 else ("admitted",)
        for outcome in outcomes:
            p = pred.p_admitted if outcome == "admitted" else pred.p_critical
            f = base.assign(
                y_true=frame[outcome].astype(int).to_numpy(), y_score=p, y_flag=(p >= thresholds[outcome]).astype(int)
            )
            if outcome == "admitted":
                # Under-triage needs a reference level: audit the visits that have one.
                f = f[f["acuity_true"].notna()].reset_index(drop=True)
            else:
                f = f.drop(columns=["acuity_true", "acuity_pred"])
            audits.append((f"{dataset} {outcome}", f, list(attributes), [("sex", "age_band")]))
    return audits


def imaging_audit_frames(
    record: ModelVersionRecord,
    data_dir: Path | None,
    findings: tuple[str, ...] | None = None,
    *,
    seed: int | None = None,
) -> list[tuple[str, pd.DataFrame, list[str], list[tuple[str, ...]]]]:
    """Study-level audit on NIH held-out patients: abnormal (any of ``findings``, default every finding NIH labels)
    vs flagged for second read by those findings."""
    from models.imaging_onnx import ImagingOnnxModel
    from training.data import resolve_data_dir
    from training.data.imaging import load_nih

    model = ImagingOnnxModel(record.onnx_path)
    seed = int(model.card.training["config"]["seed"]) if seed is None else seed
    test = load_nih(resolve_data_dir(data_dir), model.image_size, seed).split("test")
    probs, _ = model.run(test.images)
    known = test.mask.max(axis=0) > 0  # the findings NIH labels
    if findings is not None:
        known &= np.isin(model.findings, findings)
    flags = model.flags(probs)[:, known]
    abnormal = (test.labels[:, known] * test.mask[:, known]).max(axis=1)
    age = test.meta["age_years"]
    frame = pd.DataFrame(
        {
            "y_true": abnormal.astype(int),
            "y_score": probs[:, known].max(axis=1),
            "y_flag": flags.any(axis=1).astype(int),
            "cluster": test.meta["patient_id"].to_numpy(),
            "sex": test.meta["sex"].astype(str),
            "view": test.meta["view"].astype(str),
            "age_band": pd.cut(age, [0, 39.999, 59.999, 79.999, 200], labels=["18-39", "40-59", "60-79", "80+"]).astype(
                str
            ),
        }
    )
    return [("nih study-level", frame, ["sex", "age_band", "view"], [("sex", "age_band")])]


def audit_scope(policy: ReleasePolicy, model_name: str, dataset: str) -> str | None:
    """None when ``dataset`` is inside the model's intended use (its audits gate the release); otherwise the
    reason it is outside (its audits are reported as "not validated for" and never gate)."""
    use = policy.intended_use.get(model_name)
    outside = {o.name: o for o in use.not_validated_for} if use is not None else {}
    if dataset in outside:
        return f"outside the intended use ({outside[dataset].population}): {outside[dataset].reason}"
    return None


def intended_use_of(policy: ReleasePolicy, model_name: str) -> IntendedUse | None:
    """The intended use the release records on the version (``release_gate.intended_use``), from the policy."""
    use = policy.intended_use.get(model_name)
    if use is None:
        return None
    return IntendedUse(
        use.population,
        tuple({"name": o.name, "population": o.population, "reason": o.reason} for o in use.not_validated_for),
    )


#: Imaging evaluation data with per-image demographics (:func:`imaging_audit_frames`); a finding validated on other
#: data cannot have its fairness audited.
IMAGING_AUDIT_DATA = ("nih",)


@dataclass
class FindingDecision:
    """The gate's per-finding decision for a chest X-ray model: each finding's population, the data it was validated
    on, and, for each finding not released, why."""

    populations: dict[str, Population]
    validated_on: dict[str, str]
    not_released: dict[str, str]

    @property
    def released(self) -> dict[str, Population]:
        return {f: p for f, p in self.populations.items() if f not in self.not_released}

    def release(self) -> FindingRelease:
        return FindingRelease(self.released, dict(self.not_released))


def imaging_findings_decision(
    record: ModelVersionRecord, policy: ReleasePolicy, findings: tuple[str, ...], checks: list[Check] | None = None
) -> FindingDecision:
    """Floors and intended populations per finding (fairness is added by :func:`release`).

    A finding is a candidate when the policy declares its intended population and every floor the policy sets on
    it holds (``test.<data>.<finding>.<metric>``; ``<data>`` is the data it was validated on). A finding the policy
    gives no population or no floor is not released. ``checks``: the :func:`floor_checks` of the whole policy,
    when the caller has them already.
    """
    use = policy.intended_use.get(record.name)
    declared = dict(use.findings) if use is not None else {}
    floors = dict(policy.performance_floors.get(record.name, {}))
    by_name = {c.name: c for c in (checks if checks is not None else floor_checks(record, floors))}
    decision = FindingDecision({}, {}, {})
    for finding in findings:
        mine = {k: v for k, v in floors.items() if parse_metric_key(IMAGING_MODEL, k).target == finding}
        spec = declared.get(finding)
        if spec is not None:
            decision.populations[finding] = Population.from_dict(spec)
        if mine:
            decision.validated_on[finding] = next(iter(mine)).split(".")[1]
        if spec is None:
            decision.not_released[finding] = "the release policy declares no intended population for it"
        elif not mine:
            decision.not_released[finding] = "the release policy sets no performance floor for it"
        failed = [c for c in (by_name[f"floor {metric}"] for metric in mine) if c.status != "pass"]
        if mine and failed:
            decision.not_released.setdefault(
                finding, "below its performance floor: " + "; ".join(c.reason for c in failed)
            )
    return decision


def unstable_findings(report: SafetyReport) -> dict[str, str]:
    """Findings that broke an imaging stability invariant (window, contrast, flip, orientation), with why."""
    broken: dict[str, list[str]] = {}
    for result in report.results:
        for finding, n in getattr(result, "by_finding", {}).items():
            if n:
                broken.setdefault(finding, []).append(f"{result.id} ({n}/{result.n_cases})")
    return {f: "safety invariants: " + ", ".join(ids) for f, ids in broken.items()}


def production_record(name: str, base: Path) -> ModelVersionRecord | None:
    """The version at ``@production``, or None when there is none."""
    try:
        return fetch_model_version(f"{name}@production", base)
    except ModelArtifactError as exc:
        if "registry has no model version" in str(exc):
            return None
        raise


def non_inferiority_checks(
    record: ModelVersionRecord,
    policy: ReleasePolicy,
    production: ModelVersionRecord,
    frames: list[tuple[str, pd.DataFrame, list[str], list[tuple[str, ...]], Any]],
    data_dir: Path | None,
    triage_data: tuple[tuple[str, tuple[str, ...]], ...],
    n_boot: int,
) -> tuple[list[Check], list[Any]]:
    """The candidate against ``production`` on the rows of each gated audit (:mod:`evaluation.noninferiority`)."""
    from evaluation.noninferiority import compare

    assert policy.non_inferiority is not None
    if record.name == TRIAGE_MODEL:
        theirs = {name: frame for name, frame, *_ in triage_audit_frames(production, data_dir, triage_data)}
    else:
        from models.onnx_runtime import open_onnx_model

        seed = int(open_onnx_model(record.onnx_path)[1].training["config"]["seed"])
        theirs = {}
        for _, _, _, _, findings in frames:
            theirs.update({n: f for n, f, *_ in imaging_audit_frames(production, data_dir, findings, seed=seed)})
    checks, comparisons = [], []
    for name, frame, attributes, _, _ in frames:
        if audit_scope(policy, record.name, name.split(" ")[0]) is not None:
            continue
        other = theirs.get(name)
        if (
            other is None
            or len(other) != len(frame)
            or not (other["y_true"].to_numpy() == frame["y_true"].to_numpy()).all()
        ):
            checks.append(
                Check(
                    f"non-inferiority {name}",
                    "fail",
                    f"production version {production.version} could not be scored on the same rows",
                )
            )
            continue
        joined = frame.assign(y_score_prod=other["y_score"].to_numpy())
        if "acuity_pred" in other:
            joined = joined.assign(acuity_pred_prod=other["acuity_pred"].to_numpy())
        result = compare(
            name,
            joined,
            attributes=attributes,
            auroc_margin=policy.non_inferiority.auroc_margin,
            under_triage_tolerance=policy.non_inferiority.under_triage_tolerance,
            alpha=policy.alpha,
            n_boot=n_boot,
            min_group_n=policy.min_group_n,
        )
        comparisons.append(result)
        checks.append(
            Check(
                f"non-inferiority {name}",
                "pass" if result.passed else "fail",
                f"against production version {production.version}: {result.reason()}",
            )
        )
    return checks, comparisons


def imaging_safety_films(model: Any, data_dir: Path | None) -> list[Path]:
    """Films for the imaging safety suite: the NIH images of the model's own validation patients (its patient
    split, never its test patients) and every file of ``imaging/dicom_fixtures/chest``."""
    from training.data import resolve_data_dir
    from training.data.imaging import NIH_DIR, nih_patient_split

    root = resolve_data_dir(data_dir)
    films: list[Path] = []
    table = root / NIH_DIR / "derived" / "nih1000_joined_labels_demographics.csv"
    if table.is_file():
        frame = pd.read_csv(table)
        seed = int(model.card.training["config"]["seed"])
        _, split = nih_patient_split(frame, seed)
        films += [root / NIH_DIR / p for p in frame.loc[split == "validation", "staged_path"]]
    else:
        log.warning("imaging safety suite without NIH validation films: %s not found", table)
    chest = root / "imaging" / "dicom_fixtures" / "chest"
    films += sorted(p for p in chest.glob("*") if p.is_file()) if chest.is_dir() else []
    if not films:
        raise SafetySuiteUnavailableError(
            f"no films for the imaging safety suite under {root} (NIH validation split or imaging/dicom_fixtures/chest)"
        )
    return films


#: Kermany validation films in the release's imaging safety suite (seeded choice; bounds the suite's time).
SAFETY_KERMANY_FILMS = 100


def imaging_safety_film_set(
    model: Any,
    data_dir: Path | None,
    populations: dict[str, Population] | None = None,
    validated_on: dict[str, str] | None = None,
) -> tuple[list[Path], list[frozenset[str]]]:
    """The films of the imaging safety suite and, per film, the findings whose intended population it belongs to.

    :func:`imaging_safety_films` (NIH validation patients, chest DICOM fixtures) plus
    :data:`SAFETY_KERMANY_FILMS` Kermany validation films (the model's own patient split). A finding counts on a
    film when the film comes from the data the finding was validated on (``validated_on``: finding -> "nih" or
    "kermany") and, where the film states an age (NIH table, DICOM header), that age is inside the finding's
    population; a DICOM fixture counts for the findings whose population its header places it in. Without
    ``populations`` every finding counts on every film.
    """
    from training.data import resolve_data_dir
    from training.data.imaging import NIH_DIR, kermany_patient_split

    root = resolve_data_dir(data_dir)
    films = imaging_safety_films(model, data_dir)
    seed = int(model.card.training["config"]["seed"])
    try:
        paths, _, split = kermany_patient_split(root, seed)
        chosen = [paths[i] for i in np.flatnonzero(split == "validation")]
        rng = np.random.default_rng(seed)
        films += [
            chosen[i] for i in sorted(rng.choice(len(chosen), min(SAFETY_KERMANY_FILMS, len(chosen)), replace=False))
        ]
    except DataSourceError as exc:
        log.warning("imaging safety suite without Kermany films: %s", exc)
    every = frozenset(model.findings)
    if populations is None:
        return films, [every] * len(films)
    validated_on = validated_on or {}
    table = root / NIH_DIR / "derived" / "nih1000_joined_labels_demographics.csv"
    nih_age = (
        {
            str(root / NIH_DIR / p): float(a)
            for p, a in pd.read_csv(table)[["staged_path", "Patient Age"]].itertuples(index=False)
        }
        if table.is_file()
        else {}
    )
    scopes = []
    for film in films:
        if str(film) in nih_age:
            scope = {
                f
                for f, pop in populations.items()
                if validated_on.get(f) == "nih" and pop.check(nih_age[str(film)], None)[0]
            }
        elif film.suffix.lower() == ".jpeg":
            scope = {f for f in populations if validated_on.get(f) == "kermany"}
        else:
            from models.imaging import read_dicom

            try:
                ds = read_dicom(film, stop_before_pixels=True)
                age, _ = dicom_age_years(ds)
                view = str(ds.get("ViewPosition", "") or "") or None
            except VigilError:
                age, view = None, None
            scope = {f for f, pop in populations.items() if pop.check(age, view)[0]}
        scopes.append(frozenset(scope))
    return films, scopes


def run_safety_suite(
    onnx_path: Path,
    data_dir: Path | None = None,
    *,
    n_grid: int = SAFETY_N_GRID,
    seed: int = 0,
    release: FindingRelease | None = None,
    validated_on: dict[str, str] | None = None,
) -> SafetyReport:
    """The safety-invariant suite of a triage or chest X-ray ONNX model (told apart by its card).

    Raises
    ------
    SafetySuiteUnavailableError
        An imaging model and no imaging suite in this build, or no films to run it on.
    ModelArtifactError
        The file is not a Vigil model.
    """
    from models.onnx_runtime import open_onnx_model

    _, card, _ = open_onnx_model(onnx_path)
    if "pixel_path_version" not in card.features:
        from evaluation.safety_triage import run_triage_safety_suite
        from models.onnx_runtime import TriageOnnxModel

        return run_triage_safety_suite(TriageOnnxModel(onnx_path), n_grid=n_grid, seed=seed)
    from models.imaging_onnx import ImagingOnnxModel

    try:
        from evaluation.safety_imaging import run_imaging_safety_suite
    except ImportError as exc:
        raise SafetySuiteUnavailableError(
            "the imaging safety suite (evaluation.safety_imaging) is not in this build"
        ) from exc
    model = ImagingOnnxModel(onnx_path, release=release)
    populations = dict(release.released) if release is not None else None
    films, scopes = imaging_safety_film_set(model, data_dir, populations, validated_on)
    return run_imaging_safety_suite(model, films, seed=seed, scopes=scopes)


def safety_check(report: SafetyReport | None, reason: str = "") -> Check:
    """Pass only when every invariant ran and held; a violation, or a suite that did not run, fails."""
    if report is None:
        return Check(SAFETY_CHECK, "fail", f"not run: {reason}")
    return Check(SAFETY_CHECK, "pass" if report.passed else "fail", report.summary())


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
    from models.onnx_runtime import open_onnx_model

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


def release(
    ref: str,
    *,
    data_dir: Path | None = None,
    policy_path: Path = POLICY_PATH,
    n_boot: int | None = None,
    out_dir: Path | None = None,
    triage_data: tuple[tuple[str, tuple[str, ...]], ...] = TRIAGE_AUDIT_DATA,
    safety_n_grid: int = SAFETY_N_GRID,
) -> ReleaseOutcome:
    """Run every release check for ``ref`` (``NAME/VERSION`` or ``NAME@ALIAS``) and record the decision."""
    base = work_dir()
    policy = load_policy(policy_path)
    record = fetch_model_version(ref, base)
    out_dir = out_dir or base / "releases" / f"{record.name}-v{record.version}"
    out_dir.mkdir(parents=True, exist_ok=True)
    outcome = ReleaseOutcome(record.name, record.version, "fail")
    outcome.checks += artefact_checks(record)
    if record.name not in MODEL_NAMES:
        raise ModelArtifactError(f"no release procedure for model {record.name!r}")
    tampered = any(c.status == "fail" and c.name == "onnx checksum" for c in outcome.checks)
    imaging = record.name == IMAGING_MODEL
    floors = policy.performance_floors.get(record.name)
    decision: FindingDecision | None = None
    if not floors:
        outcome.checks.append(Check("performance floors", "fail", f"the policy sets no floors for {record.name}"))
    elif imaging and not tampered:
        from models.onnx_runtime import open_onnx_model

        findings = tuple(open_onnx_model(record.onnx_path)[1].features["findings"])
        floor_results = floor_checks(record, dict(floors))
        decision = imaging_findings_decision(record, policy, findings, floor_results)
        # A floor decides its finding only (FindingDecision), not the model.
        outcome.checks += [
            dataclasses.replace(c, status="not released") if c.status == "fail" else c for c in floor_results
        ]
    else:
        outcome.checks += floor_checks(record, dict(floors))
    frames: list[tuple[str, pd.DataFrame, list[str], list[tuple[str, ...]], Any]] = []
    if tampered:
        outcome.checks.append(Check("fairness", "fail", "not audited: the ONNX file failed its checksum"))
    elif decision is not None:
        for data in sorted(set(decision.validated_on.values())):
            mine = tuple(f for f, d in decision.validated_on.items() if d == data and f not in decision.not_released)
            if not mine:
                outcome.checks.append(
                    Check(f"fairness {data}", "not run", "no finding validated on it passed its floor")
                )
            elif data not in IMAGING_AUDIT_DATA:
                why = (
                    f"insufficient evidence: the {data} data record no sex or age per image, so the policy's "
                    f"required attributes ({', '.join(policy.required_attributes)}) cannot be audited"
                )
                outcome.checks.append(Check(f"fairness {data}", "not released", f"{', '.join(mine)}: {why}"))
                for f in mine:
                    decision.not_released[f] = f"fairness audit {why}"
            else:
                try:
                    frames += [
                        (name, frame, attrs, inter, mine)
                        for name, frame, attrs, inter in imaging_audit_frames(record, data_dir, mine)
                    ]
                except DataSourceError as exc:
                    outcome.checks.append(
                        Check(f"fairness {data}", "not released", f"evaluation data not available: {exc}")
                    )
                    for f in mine:
                        decision.not_released[f] = f"fairness audit not run: evaluation data not available ({exc})"
    else:
        try:
            frames = [
                (*f, None)
                for f in (
                    triage_audit_frames(record, data_dir, triage_data)
                    if not imaging
                    else imaging_audit_frames(record, data_dir)
                )
            ]
        except DataSourceError as exc:
            outcome.checks.append(Check("fairness", "insufficient evidence", f"evaluation data not available: {exc}"))
    # Family-wise control over the whole release: alpha is split equally across the audits that gate it.
    gated = [f for f in frames if audit_scope(policy, record.name, f[0].split(" ")[0]) is None]
    audit_policy = dataclasses.replace(policy, alpha=policy.alpha / max(1, len(gated)))
    gates: dict[str, Any] = {}
    audits_by_name: dict[str, Any] = {}
    for name, frame, attributes, intersections, finding_set in frames:
        outside = audit_scope(policy, record.name, name.split(" ")[0])
        spec = AuditSpec(
            y_true="y_true",
            y_score="y_score",
            y_flag="y_flag",
            sensitive_attributes=attributes,
            acuity_true="acuity_true" if "acuity_true" in frame else None,
            acuity_pred="acuity_pred" if "acuity_pred" in frame else None,
            cluster="cluster" if "cluster" in frame else None,
            intersections=intersections,
            min_group_n=policy.min_group_n,
            min_group_positives=policy.min_group_positives,
            pool_adjacent=policy.pool_adjacent,
            n_boot=n_boot or 1000,
            alpha=audit_policy.alpha,
            seed=0,
        )
        result = audit(frame, spec)
        judged = gate(result, audit_policy)
        gates[name] = judged
        audits_by_name[name] = result
        slug = name.replace(":", "_").replace(" ", "_")
        outcome.reports += write_reports(result, judged, out_dir / slug, f"{record.name} v{record.version}: {name}")
        order = {"fail": 0, "insufficient evidence": 1}
        failing = sorted((c for c in judged.checks if c.status != "pass"), key=lambda c: order.get(c.status, 2))
        reason = "; ".join(c.reason for c in failing[:5]) or "every group within the policy's tolerances"
        reason += (
            f" (family-wise alpha {audit_policy.alpha:g}: {policy.alpha:g} over {max(1, len(gated))} gated audits)"
        )
        if outside is not None:
            outcome.checks.append(
                Check(f"fairness {name}", "reported", f"{judged.status}, not gating: {outside.rstrip('.')}. {reason}")
            )
        elif finding_set is not None and decision is not None:
            status = "pass" if judged.status == "pass" else "not released"
            outcome.checks.append(
                Check(f"fairness {name}", status, f"{', '.join(finding_set)}: {judged.status}: {reason}")
            )
            if judged.status != "pass":
                for f in finding_set:
                    decision.not_released[f] = f"fairness audit {name}: {judged.status}"
        else:
            outcome.checks.append(Check(f"fairness {name}", judged.status, reason))
    comparisons: list[Any] = []
    production = None if tampered or policy.non_inferiority is None else production_record(record.name, base)
    if production is not None and production.version != record.version and frames:
        try:
            ni_checks, comparisons = non_inferiority_checks(
                record, policy, production, frames, data_dir, triage_data, n_boot or 1000
            )
        except (DataSourceError, ModelArtifactError, ValueError) as exc:
            ni_checks = [
                Check(
                    "non-inferiority", "fail", f"production version {production.version} could not be compared: {exc}"
                )
            ]
        outcome.checks += ni_checks
    finding_release: FindingRelease | None = None
    safety, safety_reason = None, ""
    if decision is not None and decision.released and not tampered:
        # Per finding, the stability invariants too: a finding whose flag or probability a routine window,
        # contrast or orientation change moves is not released; the suite is run again on what remains.
        try:
            safety = run_safety_suite(
                record.onnx_path,
                data_dir,
                n_grid=safety_n_grid,
                release=decision.release(),
                validated_on=decision.validated_on,
            )
        except SafetySuiteUnavailableError as exc:
            safety_reason = str(exc)
        unstable = unstable_findings(safety) if safety is not None else {}
        for f, why in unstable.items():
            decision.not_released[f] = why
        if unstable and decision.released:
            safety = None  # run again below on the findings that remain
    if decision is not None:
        finding_release = decision.release()
        for f in findings:
            outcome.checks.append(
                Check(
                    f"finding {f}",
                    "pass" if f in finding_release.released else "not released",
                    f"released for {decision.populations[f].description}"
                    if f in finding_release.released
                    else decision.not_released[f],
                )
            )
        if not finding_release.released:
            outcome.checks.append(
                Check(
                    "released findings",
                    "fail",
                    "no finding passed its floor, its population's "
                    "fairness audit, its stability invariants and "
                    "has a declared intended use",
                )
            )
    if tampered:
        safety_reason = "the ONNX file failed its checksum"
    elif safety is None and not safety_reason:
        suite_release = finding_release
        if decision is not None and not decision.released:
            # Nothing to release: run the suite as if every declared finding were released in its population, so
            # the card still says how the model behaves.
            suite_release = FindingRelease(dict(decision.populations), {})
        try:
            safety = run_safety_suite(
                record.onnx_path,
                data_dir,
                n_grid=safety_n_grid,
                release=suite_release,
                validated_on=decision.validated_on if decision is not None else None,
            )
        except SafetySuiteUnavailableError as exc:
            safety_reason = str(exc)
    outcome.checks.append(safety_check(safety, safety_reason))
    if safety is not None:
        outcome.reports += write_safety_report(safety, out_dir)
    statuses = {c.status for c in outcome.checks if c.status in DECIDING}
    outcome.status = (
        "fail" if "fail" in statuses else ("insufficient evidence" if "insufficient evidence" in statuses else "pass")
    )
    outcome.promoted = outcome.status == "pass"
    use = intended_use_of(policy, record.name)
    outcome.reports.append(
        write_release_card(
            record,
            outcome,
            audits_by_name,
            out_dir,
            safety=safety,
            safety_reason=safety_reason,
            use=use,
            findings=finding_release,
            comparisons=comparisons,
            production_version=production.version if production else None,
        )
    )
    summary_path = out_dir / "release_decision.json"
    summary_path.write_text(json.dumps(outcome.to_dict(), indent=2, default=str), encoding="utf-8")
    outcome.reports.append(summary_path)
    summary = "; ".join(f"{c.name}: {c.status}" for c in outcome.checks)
    tags = dict(safety_tags(safety, safety_reason))
    if use is not None:
        tags[Tag.GATE_INTENDED_USE] = use.to_json()
    if finding_release is not None:
        tags[Tag.GATE_FINDINGS] = finding_release.to_json()
    record_release_decision(
        base,
        record,
        status=outcome.status,
        policy_version=policy.policy_version,
        summary=summary,
        reports=outcome.reports,
        promote=outcome.promoted,
        extra_tags=tags,
    )
    return outcome
