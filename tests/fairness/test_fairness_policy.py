"""Release policy validation and the gate: injected gaps fail with the group and metric named, no gap
passes, insufficient evidence blocks only where required, the straddle rules do what the docstring says.
The gate's family-wise behaviour on simulated fair and unfair data is in test_fairness_family.py."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fairness.audit import audit
from fairness.audit_result import AuditResult
from fairness.audit_spec import AuditSpec
from fairness.gate import gate
from fairness.gate_result import GateResult
from fairness.gate_rules import judge
from fairness.policy import DEFAULT_POLICY_PATH, ReleasePolicy, load_policy
from models.errors import ConfigError

SHIPPED = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
POOLING = load_policy().pool_adjacent


def _triage(seed: int, gap: float, n_per_group: int = 2000, rare: int = 0) -> pd.DataFrame:
    """Two ethnicity groups of ``n_per_group`` (nh_black under-triaged ``gap`` more than nh_white's 10%),
    optionally ``rare`` patients of a third group; sex and age band independent of everything."""
    rng = np.random.default_rng(seed)
    groups = ["nh_white"] * n_per_group + ["nh_black"] * n_per_group + ["other"] * rare
    n = len(groups)
    rate = np.where(np.array(groups) == "nh_black", 0.10 + gap, 0.10)
    at = rng.choice([1, 2, 3, 4], n, p=[0.05, 0.25, 0.45, 0.25])
    under = rng.random(n) < rate
    mean = np.array([0.75, 0.45, 0.22, 0.08])[at - 1]
    score = rng.beta(4.0 * mean / (1 - mean), 4.0)
    return pd.DataFrame(
        {
            "ethnicity": groups,
            "sex": rng.choice(["F", "M"], n),
            "age_band": rng.choice(["18-64", "65+"], n, p=[0.7, 0.3]),
            "at": at,
            "ap": at + under,
            "y": (rng.random(n) < score).astype(int),
            "score": score,
            "flag": (score >= 0.3).astype(int),
        }
    )


def _audit(frame: pd.DataFrame, seed: int = 0, n_boot: int = 200) -> AuditResult:
    spec = AuditSpec(
        y_true="y",
        y_score="score",
        y_flag="flag",
        acuity_true="at",
        acuity_pred="ap",
        sensitive_attributes=["sex", "age_band", "ethnicity"],
        reference_groups={"ethnicity": "nh_white"},
        pool_adjacent=POOLING,
        n_boot=n_boot,
        seed=seed,
    )
    return audit(frame, spec)


# ------------------------------------------------------------------------------------------- policy
def test_shipped_policy_holds_the_agreed_tolerances() -> None:
    policy = load_policy()
    assert policy.policy_version == "2.1.0"
    assert policy.max_gap == {
        "under_triage_rate": 0.02,
        "high_acuity_under_triage_rate": 0.05,
        "false_negative_rate": 0.05,
    }
    assert policy.min_group == {"auroc": 0.70, "observed_expected": 0.80}
    assert policy.max_group == {"observed_expected": 1.25}
    assert (policy.alpha, policy.straddle_rule, policy.min_group_n, policy.min_group_positives) == (
        0.05,
        "estimate",
        100,
        20,
    )
    assert policy.required_attributes == ("sex", "age_band")


def test_shipped_policy_declares_its_criteria_small_groups_and_history() -> None:
    policy = load_policy()
    gated = {*policy.max_gap, *policy.min_group, *policy.max_group}
    assert set(policy.criteria) == gated  # every gated metric says which decision it governs and why
    assert policy.reported_only["false_negative_rate"].attributes == ("age_band",)
    assert "tenfold" in policy.reported_only["false_negative_rate"].reason
    assert not policy.judged("false_negative_rate", ("age_band",))
    assert not policy.judged("false_negative_rate", ("sex", "age_band"))  # nor in an intersection with age
    assert policy.judged("false_negative_rate", ("ethnicity",)) and policy.judged("under_triage_rate", ("age_band",))
    assert not policy.judged("ece", ("sex",)) and "ece" not in policy.max_group
    assert policy.pool_adjacent == {"age_band": ("<15", "15-24", "25-44", "45-64", "65-74", "75+")}
    assert [h.version for h in policy.history] == ["1.1.0", "2.0.0", "2.1.0"]
    assert policy.history[-1].date == "2026-12-02"


def test_shipped_policy_declares_each_models_intended_use() -> None:
    policy = load_policy()
    triage = policy.intended_use["vigil-triage"]
    assert triage.gated_data == ("nhamcs:2020",) and "US emergency departments" in triage.population
    assert [o.name for o in triage.not_validated_for] == ["ktas"] and "KTAS" in triage.not_validated_for[0].population
    cxr = policy.intended_use["vigil-cxr"].findings
    assert set(cxr) == {
        "pneumonia",
        "effusion",
        "cardiomegaly",
        "pneumothorax",
        "atelectasis",
        "nodule_mass",
        "consolidation_infiltration",
    }
    assert (cxr["pneumonia"]["min_age_years"], cxr["pneumonia"]["max_age_years"]) == (1.0, 6.0)
    assert cxr["effusion"]["min_age_years"] == 18.0 and cxr["effusion"]["max_age_years"] is None
    assert "2.1.0" in policy.history[-1].version and "after the KTAS audits" in policy.history[-1].changes


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ({"vigil-triage": {"population": ""}}, "intended_use.vigil-triage.population"),
        ({"vigil-triage": {"population": "x", "colour": 1}}, "intended_use.vigil-triage.colour"),
        (
            {
                "vigil-triage": {
                    "population": "x",
                    "gated_data": ["ktas"],
                    "not_validated_for": {"ktas": {"population": "k", "reason": "r"}},
                }
            },
            "intended_use.vigil-triage.not_validated_for.ktas",
        ),
        (
            {"vigil-triage": {"population": "x", "not_validated_for": {"ktas": {"population": "k"}}}},
            "intended_use.vigil-triage.not_validated_for.ktas",
        ),
        (
            {
                "vigil-cxr": {
                    "population": "x",
                    "findings": {"pneumonia": {"description": "c", "min_age_years": 6, "max_age_years": 1}},
                }
            },
            "intended_use.vigil-cxr.findings.pneumonia",
        ),
        (
            {"vigil-cxr": {"population": "x", "findings": {"pneumonia": {"min_age_years": 1}}}},
            "intended_use.vigil-cxr.findings.pneumonia",
        ),
    ],
)
def test_a_malformed_intended_use_is_refused_naming_the_key(patch, named) -> None:
    data = load_policy().to_dict()
    data["intended_use"] = patch
    with pytest.raises(ConfigError, match=re.escape(named)):
        ReleasePolicy.from_mapping(data)


def test_the_policy_round_trips_with_its_intended_use() -> None:
    policy = load_policy()
    assert ReleasePolicy.from_mapping(policy.to_dict()) == policy


def test_no_tolerance_of_the_previous_version_was_widened() -> None:
    policy = load_policy()
    previous = {"max_gap": {"under_triage_rate": 0.02, "false_negative_rate": 0.05}, "min_group": {"auroc": 0.70}}
    for metric, tolerance in previous["max_gap"].items():
        assert policy.max_gap[metric] <= tolerance
    for metric, tolerance in previous["min_group"].items():
        assert policy.min_group[metric] >= tolerance
    assert policy.min_group_n >= 100 and policy.min_group_positives >= 20


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"max_gaps": {"ece": 0.1}}, "max_gaps"),
        ({"max_gap": {"auc": 0.1}}, "max_gap.auc"),
        ({"max_gap": {"under_triage_rate": "0.02"}}, "max_gap.under_triage_rate"),
        ({"max_gap": {"under_triage_rate": True}}, "max_gap.under_triage_rate"),
        ({"max_gap": {"under_triage_rate": 1.5}}, "max_gap.under_triage_rate"),
        ({"min_group": {"auroc": -0.1}}, "min_group.auroc"),
        ({"max_group": ["ece"]}, "max_group"),
        ({"straddle_rule": "maybe"}, "straddle_rule"),
        ({"alpha": 0.7}, "alpha"),
        ({"alpha": "5%"}, "alpha"),
        ({"min_group_n": 2.5}, "min_group_n"),
        ({"min_group_positives": -1}, "min_group_positives"),
        ({"required_attributes": "sex"}, "required_attributes"),
        ({"policy_version": 1}, "policy_version"),
        ({"policy_version": None}, "policy_version"),
        ({"criteria": {"auroc": "discrimination"}}, "criteria.false_negative_rate"),
        ({"criteria": {**SHIPPED["criteria"], "ece": "calibration"}}, "criteria.ece"),
        ({"criteria": {**SHIPPED["criteria"], "auroc": ""}}, "criteria.auroc"),
        ({"reported_only": {"auc": {"reason": "x"}}}, "reported_only.auc"),
        ({"reported_only": {"ece": {"attributes": ["sex"]}}}, "reported_only.ece.reason"),
        ({"reported_only": {"ece": {"attributes": "sex", "reason": "x"}}}, "reported_only.ece.attributes"),
        ({"small_groups": {"pool_adjacent": {"age_band": ["<15"]}}}, "small_groups.pool_adjacent.age_band"),
        ({"small_groups": {"pool": {}}}, "small_groups"),
        ({"history": [{"version": "2.0.0", "date": "2 Dec 2026", "changes": "x"}]}, "history[0].date"),
        ({"history": [{"version": "1.0.0", "date": "2026-12-02", "changes": "x"}]}, "history"),
        ({"history": [{"version": "2.0.0", "date": "2026-12-02"}]}, "history[0]"),
        # a floor on a metric no run logs would never be checked: refused at load, naming it
        (
            {"performance_floors": {"vigil-triage": {"test.admited.auroc": 0.8}}},
            "performance_floors.vigil-triage.test.admited.auroc",
        ),
        (
            {"performance_floors": {"vigil-cxr": {"test.nih.fracture.auroc": 0.7}}},
            "performance_floors.vigil-cxr.test.nih.fracture.auroc",
        ),
        (
            {"performance_floors": {"vigil-cxr": {"test.effusion.auroc": 0.7}}},
            "performance_floors.vigil-cxr.test.effusion.auroc",
        ),
        ({"performance_floors": {"vigil-ct": {"test.admitted.auroc": 0.8}}}, "performance_floors.vigil-ct"),
    ],
)
def test_invalid_policy_names_the_key(tmp_path: Path, change: dict, key: str) -> None:
    data = {**SHIPPED, **change}
    if change.get("policy_version", "") is None:
        del data["policy_version"]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        load_policy(path)


def test_unreadable_policy_files_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("max_gap: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_policy(tmp_path / "list.yaml")


# --------------------------------------------------------------------------------------------- gate
@pytest.fixture(scope="module")
def gap_gate() -> GateResult:
    return gate(_audit(_triage(seed=1, gap=0.05)), load_policy())


def test_gate_fails_an_injected_under_triage_gap_and_names_group_and_metric(gap_gate: GateResult) -> None:
    assert gap_gate.status == "fail"
    failing = [c for c in gap_gate.checks if c.status == "fail"]
    assert [(c.check, c.attribute, c.group, c.comparator, c.metric) for c in failing] == [
        ("gap_vs_reference", "ethnicity", "nh_black", "nh_white", "under_triage_rate")
    ]
    check = failing[0]
    assert 0.03 < check.estimate < 0.07 and check.low > 0.0 and check.blocking
    assert check.reason.startswith("under_triage_rate gap for ethnicity=nh_black vs nh_white is 0.0")
    assert "above the 0.02 tolerance" in check.reason and "95% CI" in check.reason
    assert "FAIL: under_triage_rate gap for ethnicity=nh_black" in gap_gate.summary()


def test_gate_passes_without_a_gap() -> None:
    result = gate(_audit(_triage(seed=2, gap=0.0)), load_policy())
    assert result.status == "pass", result.summary()
    assert not result.failures
    kinds = {c.check for c in result.checks}
    assert {"gap_vs_reference", "group_minimum", "group_maximum"} <= kinds
    assert all(c.status == "pass" for c in result.checks)


def test_insufficient_evidence_is_reported_and_blocks_only_required_attributes() -> None:
    audited = _audit(_triage(seed=3, gap=0.0, rare=60), n_boot=100)
    policy = load_policy()
    relaxed = gate(audited, policy)
    evidence = [c for c in relaxed.checks if c.group == "other"]
    assert [(c.check, c.status, c.blocking) for c in evidence] == [("evidence", "insufficient evidence", False)]
    assert "ethnicity=other has insufficient evidence (n=60 is below min_group_n=100" in evidence[0].reason
    assert relaxed.status == "pass"  # reported, but ethnicity is not required by the shipped policy
    strict = gate(audited, dataclasses.replace(policy, required_attributes=("sex", "ethnicity")))
    assert strict.status == "insufficient evidence"
    assert [c.group for c in strict.blocking_without_evidence] == ["other"]


def test_a_required_attribute_that_was_not_audited_blocks() -> None:
    audited = _audit(_triage(seed=4, gap=0.0), n_boot=30)
    # Only the under-triage rule, so that no chance failure elsewhere can mask the coverage verdict.
    policy = dataclasses.replace(
        load_policy(),
        required_attributes=("sex", "payer"),
        max_gap={"under_triage_rate": 0.02},
        min_group={},
        max_group={},
    )
    result = gate(audited, policy)
    assert result.status == "insufficient evidence"
    (check,) = result.blocking_without_evidence
    assert (check.check, check.attribute) == ("coverage", "payer") and "not audited" in check.reason


def test_policy_metric_the_audit_lacks_is_reported_without_blocking() -> None:
    frame = _triage(seed=5, gap=0.0, n_per_group=500)
    spec = AuditSpec(
        y_true="y",
        acuity_true="at",
        acuity_pred="ap",
        sensitive_attributes=["sex", "age_band"],
        pool_adjacent=POOLING,
        n_boot=30,
    )
    result = gate(audit(frame, spec), load_policy())
    missing = {c.metric for c in result.checks if c.check == "coverage"}
    assert missing == {"false_negative_rate", "auroc", "observed_expected"}
    assert result.status == "pass"


def test_gate_refuses_an_audit_with_other_settings() -> None:
    frame = _triage(seed=6, gap=0.0, n_per_group=300)
    spec = AuditSpec(y_true="y", acuity_true="at", acuity_pred="ap", sensitive_attributes=["sex"], n_boot=5)
    with pytest.raises(ConfigError, match="'alpha'"):
        gate(audit(frame, dataclasses.replace(spec, alpha=0.1)), load_policy())
    with pytest.raises(ConfigError, match="'min_group_n'"):
        gate(audit(frame, dataclasses.replace(spec, min_group_n=50)), load_policy())
    aged = dataclasses.replace(spec, sensitive_attributes=("sex", "age_band"))
    with pytest.raises(ConfigError, match=re.escape("'small_groups.pool_adjacent.age_band'")):
        gate(audit(frame, aged), load_policy())  # the policy declares a pooling the audit did not apply
    read_back = AuditResult.from_dict(json.loads(json.dumps(audit(frame, spec).to_dict())))
    with pytest.raises(ConfigError, match="no bootstrap resamples"):
        gate(read_back, load_policy())
    kept = AuditResult.from_dict(json.loads(json.dumps(audit(frame, spec).to_dict(include_resamples=True))))
    assert gate(kept, load_policy()).to_dict() == gate(audit(frame, spec), load_policy()).to_dict()


def test_gate_result_round_trips_through_strict_json(gap_gate: GateResult) -> None:
    data = gap_gate.to_dict()
    again = GateResult.from_dict(json.loads(json.dumps(data, allow_nan=False)))
    assert again.to_dict() == data and again.status == "fail"


# --------------------------------------------------------------------------------------- the rule
@pytest.mark.parametrize(
    ("kind", "estimate", "low", "high", "rule", "fails"),
    [
        # gaps, tolerance 0.02; low/high: the family-wise interval
        ("gap", 0.061, 0.040, 0.083, "estimate", True),  # wholly beyond: fails under every rule
        ("gap", 0.061, 0.040, 0.083, "pass", True),
        ("gap", -0.061, -0.083, -0.040, "estimate", True),  # the sign does not matter
        ("gap", 0.004, -0.010, 0.015, "fail", False),  # wholly within: passes under every rule
        ("gap", 0.030, 0.010, 0.050, "estimate", True),  # straddles; beyond the tolerance, excludes 0
        ("gap", 0.030, 0.010, 0.050, "pass", False),
        ("gap", 0.015, -0.005, 0.035, "estimate", False),  # straddles, estimate within
        ("gap", 0.015, -0.005, 0.035, "fail", True),
        ("gap", 0.031, -0.001, 0.060, "estimate", False),  # beyond the tolerance, but the interval includes 0
        # levels: minimum 0.70 (AUROC), maximum 1.25 (observed/expected)
        ("minimum", 0.68, 0.66, 0.69, "pass", True),
        ("minimum", 0.68, 0.66, 0.69, "estimate", True),  # wholly below: evidence that the group is below
        ("minimum", 0.69, 0.66, 0.72, "estimate", False),  # below, but not shown below
        ("minimum", 0.69, 0.66, 0.72, "fail", True),
        ("minimum", 0.71, 0.66, 0.74, "fail", True),
        ("maximum", 1.10, 0.95, 1.24, "estimate", False),
        ("maximum", 1.30, 1.10, 1.50, "estimate", False),
        ("maximum", 1.40, 1.26, 1.55, "estimate", True),
    ],
)
def test_straddle_rules(kind: str, estimate: float, low: float, high: float, rule: str, fails: bool) -> None:
    tol = {"gap": 0.02, "minimum": 0.70, "maximum": 1.25}[kind]
    failed, note = judge(kind, estimate, low, high, tol, rule)
    assert failed is fails
    if kind == "gap":
        straddles = not (low > tol or high < -tol or (-tol <= low and high <= tol))
    else:
        straddles = low < tol < high
    assert bool(note) is straddles  # a straddling interval is always explained in the reason


def test_policy_round_trips_to_its_yaml_shape() -> None:
    policy = load_policy()
    assert ReleasePolicy.from_mapping(policy.to_dict()) == policy
