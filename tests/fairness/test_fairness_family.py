"""The gate's family-wise behaviour: simultaneous intervals, whole-gate false alarms on simulated fair data,
power on unfair data, and the pre-declared rule for small groups (pooling; "not evaluated", never a pass)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from fairness.audit import audit
from fairness.audit_result import AuditResult
from fairness.audit_spec import AuditSpec
from fairness.family import Statistic, simultaneous
from fairness.gate import gate
from fairness.gate_result import GateResult
from fairness.policy import load_policy
from fairness.report import card_groups

pytestmark = pytest.mark.slow  # simulates the fairness gate's error rates

POLICY = load_policy()
BANDS = ["<15", "15-24", "25-44", "45-64"]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


# ------------------------------------------------------------------------------------- simultaneous
def _normal_statistics(rng: np.random.Generator, k: int, b: int, rho: float) -> list[Statistic]:
    shared = rng.standard_normal(b)
    return [
        Statistic(("s", i), 0.0, math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.standard_normal(b))
        for i in range(k)
    ]


def test_one_statistic_gets_the_usual_two_sided_critical_value() -> None:
    family = simultaneous(_normal_statistics(np.random.default_rng(0), 1, 20_000, 0.0), 0.05)
    assert family.critical_value == pytest.approx(1.96, abs=0.05)
    assert family.size == 1 and family.standard_errors[("s", 0)] == pytest.approx(1.0, abs=0.02)


def test_independent_statistics_need_the_sidak_value_and_correlated_ones_less() -> None:
    rng = np.random.default_rng(1)
    independent = simultaneous(_normal_statistics(rng, 20, 20_000, 0.0), 0.05).critical_value
    sidak = norm.isf((1 - 0.95 ** (1 / 20)) / 2)  # 3.02
    assert independent == pytest.approx(sidak, abs=0.08)
    correlated = simultaneous(_normal_statistics(rng, 20, 20_000, 0.9), 0.05).critical_value
    assert 1.96 < correlated < independent - 0.3


def test_a_deviation_within_its_tolerance_does_not_raise_the_critical_value() -> None:
    rng = np.random.default_rng(2)
    judged = _normal_statistics(rng, 1, 20_000, 0.0)
    bound = [Statistic(("t", i), 0.0, rng.standard_normal(20_000), tolerance=10.0) for i in range(50)]
    assert simultaneous(judged + bound, 0.05).critical_value == pytest.approx(1.96, abs=0.05)
    assert simultaneous(judged + [dataclass_replace_tolerance(s) for s in bound], 0.05).critical_value > 3.0


def dataclass_replace_tolerance(s: Statistic) -> Statistic:
    return Statistic(s.key, s.estimate, s.resampled, s.min_se, 0.0, s.slack)


def test_group_levels_far_inside_their_tolerance_are_screened_out() -> None:
    rng = np.random.default_rng(3)
    gaps = _normal_statistics(rng, 1, 20_000, 0.0)
    far = [Statistic(("level", i), 0.0, rng.standard_normal(20_000), slack=50.0) for i in range(30)]
    near = [Statistic(("level", i), 0.0, rng.standard_normal(20_000), slack=0.0) for i in range(30)]
    screened = simultaneous(gaps + far, 0.05)
    assert screened.n_screened == 30 and screened.critical_value == pytest.approx(norm.isf(0.045 / 2), abs=0.06)
    kept = simultaneous(gaps + near, 0.05)
    assert kept.n_screened == 0 and kept.critical_value > 3.0


def test_a_rate_without_resampling_variance_gets_the_pooled_floor() -> None:
    constant = Statistic("zero", 0.0, np.zeros(20_000), min_se=0.04)
    family = simultaneous([constant, *_normal_statistics(np.random.default_rng(5), 1, 20_000, 0.0)], 0.05)
    assert family.standard_errors["zero"] == pytest.approx(0.04)
    assert family.interval("zero", 0.05)[0] < 0.0  # 0.05 against a rate of 0 among few events: no evidence


# ------------------------------------------------------------------------------- simulated audits
def _frame(rng: np.random.Generator, n: int, ethnicity: list[str], gap: float = 0.0) -> pd.DataFrame:
    """A calibrated model, equal in every group except ``gap`` more under-triage in ethnicity ``"b"``."""
    eth = np.array(ethnicity, dtype=object)
    at = rng.choice([1, 2, 3, 4], n, p=[0.05, 0.25, 0.45, 0.25])
    rate = np.where(eth == "b", 0.10 + gap, 0.10)
    ap = at + (rng.random(n) < rate)
    score = rng.beta(np.array([6.0, 3.0, 1.5, 0.6])[at - 1], 4.0)
    return pd.DataFrame(
        {
            "sex": rng.choice(["F", "M"], n),
            "age_band": rng.choice(BANDS, n),
            "ethnicity": eth,
            "at": at,
            "ap": ap,
            "score": score,
            "y": (rng.random(n) < score).astype(int),
            "flag": (score >= 0.2).astype(int),
        }
    )


def _gate(frame: pd.DataFrame, seed: int, n_boot: int = 80) -> GateResult:
    spec = AuditSpec(
        y_true="y",
        y_score="score",
        y_flag="flag",
        acuity_true="at",
        acuity_pred="ap",
        sensitive_attributes=["sex", "age_band", "ethnicity"],
        intersections=[("sex", "age_band")],
        reference_groups={"ethnicity": "a"},
        pool_adjacent=POLICY.pool_adjacent,
        n_boot=n_boot,
        seed=seed,
    )
    return gate(audit(frame, spec), POLICY)


def _per_check_failure(result: GateResult) -> bool:
    """What the gate would decide with no family-wise control: every check on its own 1.96 SE."""
    c = result.critical_value
    for check in result.checks:
        if check.status not in ("pass", "fail"):
            continue
        se = (check.high - check.low) / (2 * c)
        if check.check in ("gap_vs_reference", "max_min_gap"):
            if abs(check.estimate) > max(check.tolerance, 1.96 * se):
                return True
        else:
            beyond = (
                check.estimate - check.tolerance if check.check == "group_maximum" else check.tolerance - check.estimate
            )
            if beyond > 1.96 * se:
                return True
    return False


def test_a_fair_model_fails_the_whole_gate_at_most_alpha_of_the_time() -> None:
    """100 seeded fair data sets of the audit's shape (3 attributes, 8 groups, a 2 x 4 intersection, every gated
    metric; ~100 statistics judged together): the whole gate fails at most 5% of the time (within its Wilson
    interval), where judging each check on its own would fail far more often."""
    runs, gate_fails, per_check_fails, sizes = 100, 0, 0, []
    for seed in range(runs):
        rng = np.random.default_rng([7, seed])
        result = _gate(_frame(rng, 1000, list(rng.choice(["a", "b", "c"], 1000, p=[0.5, 0.3, 0.2]))), seed)
        gate_fails += result.status == "fail"
        per_check_fails += _per_check_failure(result)
        sizes.append(result.family_size)
    assert min(sizes) > 60  # a family of the real audit's kind, not a single comparison
    low, _ = wilson(gate_fails, runs)
    assert low <= 0.05, f"whole-gate false alarms {gate_fails}/{runs}"
    per_check_low, _ = wilson(per_check_fails, runs)
    assert per_check_low > 0.05, f"without family-wise control {per_check_fails}/{runs}: the test could not fail"


def test_a_5pp_under_triage_gap_between_groups_of_2000_is_caught() -> None:
    """Within a family of ~100 statistics. The requirement is >= 90% (about 93% expected at this family's
    critical value); 20 seeds with 80 resamples check it loosely, benchmarks/fairness_power.py measures it."""
    caught, runs = 0, 20
    for seed in range(runs):
        rng = np.random.default_rng([8, seed])
        result = _gate(_frame(rng, 4000, ["a"] * 2000 + ["b"] * 2000, gap=0.05), seed)
        assert result.family_size > 60
        caught += any(
            c.metric == "under_triage_rate" and c.attribute == "ethnicity" and c.group == "b" for c in result.failures
        )
    assert caught >= 16, f"caught {caught}/{runs}"


# ---------------------------------------------------------------------------------------- small groups
def _rare(seed: int) -> pd.DataFrame:
    """Critical care: rare in the young (about 10 events in each of <15 and 15-24), common later."""
    rng = np.random.default_rng(seed)
    sizes = {"<15": 900, "15-24": 800, "25-44": 1500, "45-64": 1500}
    rates = {"<15": 0.012, "15-24": 0.014, "25-44": 0.05, "45-64": 0.09}
    band = np.repeat(list(sizes), list(sizes.values()))
    n = band.size
    score = np.clip(pd.Series(band).map(rates).to_numpy() * rng.lognormal(0.0, 0.3, n), 0.0, 1.0)
    y = (rng.random(n) < score).astype(int)
    payer = rng.choice(["medicaid", "private", "no_charge"], n, p=[0.6, 0.39, 0.01])
    return pd.DataFrame({"sex": rng.choice(["F", "M"], n), "age_band": band, "payer": payer, "y": y, "score": score})


def _rare_audit(frame: pd.DataFrame) -> AuditResult:
    spec = AuditSpec(
        y_true="y",
        y_score="score",
        sensitive_attributes=["sex", "age_band", "payer"],
        intersections=[("sex", "age_band")],
        pool_adjacent=POLICY.pool_adjacent,
        n_boot=60,
    )
    return audit(frame, spec)


def test_rare_outcome_pools_adjacent_young_bands_declared_in_the_policy() -> None:
    frame = _rare(0)
    young = frame[frame.age_band.isin(["<15", "15-24"])]
    assert young.groupby("age_band").y.sum().max() < 20 <= young.y.sum()  # neither alone, both together
    result = _rare_audit(frame)
    age = result.attribute("age_band")
    assert [g.group for g in age.groups] == ["25-44", "45-64", "<15+15-24"]
    assert age.pooled == {"<15": "<15+15-24", "15-24": "<15+15-24"}
    assert age.group("<15+15-24").status == "sufficient evidence"
    assert {g.group for g in result.attribute("sex|age_band").groups} >= {"F|<15+15-24", "M|<15+15-24"}
    verdict = gate(result, POLICY)
    assert verdict.status != "insufficient evidence", verdict.summary()  # age_band is required: no longer blocked
    assert any("<15, 15-24 lack evidence alone" in note for note in verdict.notes)


def test_groups_without_evidence_are_not_evaluated_never_a_pass() -> None:
    result = _rare_audit(_rare(0))
    verdict = gate(result, POLICY)
    payer = [c for c in verdict.checks if c.attribute == "payer" and c.group == "no_charge"]
    assert [(c.check, c.status) for c in payer] == [("evidence", "insufficient evidence")]
    assert "not evaluated, never a pass" in payer[0].reason and not payer[0].blocking  # payer is not required
    card = card_groups(result)
    assert card["payer"]["no_charge"]["evaluation"].startswith("not evaluated: ")
    assert card["payer"]["medicaid"]["evaluation"] == "evaluated"
    assert card["age_band"]["<15"] == {"evaluation": "not evaluated on its own: pooled into <15+15-24"}


def test_pooling_is_not_applied_when_every_band_has_evidence() -> None:
    frame = _rare(2).assign(y=lambda f: (np.random.default_rng(2).random(len(f)) < 0.2).astype(int))
    age = _rare_audit(frame).attribute("age_band")
    assert age.pooled == {} and [g.group for g in age.groups] == ["15-24", "25-44", "45-64", "<15"]


def test_a_rate_with_too_few_patients_in_its_denominator_is_not_evaluated() -> None:
    """High-acuity under-triage of a group with fewer than 20 true level 1-2 patients is not judged."""
    rng = np.random.default_rng(4)
    frame = _frame(rng, 3000, list(rng.choice(["a", "b"], 3000)))
    frame.loc[(frame.ethnicity == "b") & (frame["at"] <= 2), "at"] = 3  # no high-acuity patient in b ...
    frame.loc[frame.index[(frame.ethnicity == "b")][:10], "at"] = 2  # ... but ten
    frame["ap"] = np.maximum(frame["ap"], frame["at"])
    result = _gate(frame, 0, n_boot=40)
    (check,) = [c for c in result.checks if c.metric == "high_acuity_under_triage_rate" and c.attribute == "ethnicity"]
    assert (check.check, check.status, check.blocking) == ("evidence", "insufficient evidence", False)
    assert "not evaluated" in check.reason


@pytest.mark.parametrize(
    ("pool", "field"),
    [({"age_band": "<15"}, "pool_adjacent.age_band"), ({"age_band": ["<15"]}, "pool_adjacent.age_band")],
)
def test_invalid_pooling_names_the_field(pool: dict, field: str) -> None:
    from models.errors import InputValidationError

    with pytest.raises(InputValidationError, match=field):
        AuditSpec(y_true="y", y_score="score", sensitive_attributes=["age_band"], pool_adjacent=pool)
