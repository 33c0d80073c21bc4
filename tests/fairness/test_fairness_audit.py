"""Fairness audit: per-group estimates against fairlearn and hand-masked oracles, bootstrap against
materialised resamples and evaluation.bootstrap, evidence handling, gap coverage, clusters, types."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, false_negative_rate, false_positive_rate
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from evaluation.bootstrap import bootstrap_ci
from evaluation.metrics.acuity import high_acuity_under_triage_rate, under_triage_rate
from evaluation.metrics.calibration import expected_calibration_error, observed_expected_ratio
from evaluation.metrics.decision import positive_predictive_value, sensitivity, specificity
from evaluation.metrics.discrimination import auroc
from fairness._weighted import Outcomes, WeightedPartition, _lerp
from fairness.audit import audit
from fairness.audit_result import INSUFFICIENT, SUFFICIENT, AuditResult
from fairness.audit_spec import MISSING_GROUP, AuditSpec
from models.errors import InputValidationError

ALL_METRICS = (
    "auroc",
    "sensitivity",
    "false_negative_rate",
    "false_positive_rate",
    "ppv",
    "ece",
    "observed_expected",
    "under_triage_rate",
    "high_acuity_under_triage_rate",
)


def _frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Triage-like rows: sex, age band, an ethnicity with one rare group, calibrated scores, triage levels."""
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(2.0, 4.0, n), 3)  # rounded: ties in the scores, as real models produce
    at = rng.choice([1, 2, 3, 4, 5], n, p=[0.05, 0.2, 0.4, 0.25, 0.1])
    return pd.DataFrame(
        {
            "sex": rng.choice(["F", "M"], n),
            "age_band": rng.choice(["18-39", "40-64", "65+"], n, p=[0.45, 0.35, 0.2]),
            "ethnicity": rng.choice(["a", "b", "c", "rare"], n, p=[0.5, 0.3, 0.18, 0.02]),
            "y": (rng.random(n) < p).astype(int),
            "p": p,
            "flag": (p > 0.35).astype(int),
            "at": at,
            "ap": np.clip(at + rng.choice([-1, 0, 1], n, p=[0.1, 0.75, 0.15]), 1, 5),
            "patient": rng.integers(0, n // 2, n),
        }
    )


def _spec(**overrides: object) -> AuditSpec:
    base: dict[str, object] = dict(
        y_true="y",
        y_score="p",
        y_flag="flag",
        acuity_true="at",
        acuity_pred="ap",
        sensitive_attributes=["sex", "age_band", "ethnicity"],
        intersections=[("sex", "age_band")],
        n_boot=100,
        seed=0,
    )
    base.update(overrides)
    return AuditSpec(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _frame()


@pytest.fixture(scope="module")
def result(frame: pd.DataFrame) -> AuditResult:
    return audit(frame, _spec())


# ------------------------------------------------------------------------------------------- oracles
def test_group_estimates_equal_an_independent_metricframe(frame: pd.DataFrame, result: AuditResult) -> None:
    # Independent implementations where they exist (scikit-learn, fairlearn's own rates), evaluation's otherwise.
    def ece(y: np.ndarray, p: np.ndarray) -> float:
        return expected_calibration_error(y, p)

    by_score = {"auroc": roc_auc_score, "ece": ece, "observed_expected": lambda y, p: np.sum(y) / np.sum(p)}
    by_flag = {
        "sensitivity": recall_score,
        "false_negative_rate": false_negative_rate,
        "false_positive_rate": false_positive_rate,
        "ppv": precision_score,
    }
    by_level = {
        "under_triage_rate": lambda t, q: np.mean(np.asarray(q) > np.asarray(t)),
        "high_acuity_under_triage_rate": lambda t, q: np.mean(np.asarray(q)[np.asarray(t) <= 2] > 2),
    }
    for name, columns in (("sex", ["sex"]), ("ethnicity", ["ethnicity"]), ("sex|age_band", ["sex", "age_band"])):
        features = frame[columns] if len(columns) > 1 else frame[columns[0]]
        oracle = pd.concat(
            [
                MetricFrame(metrics=by_score, y_true=frame.y, y_pred=frame.p, sensitive_features=features).by_group,
                MetricFrame(metrics=by_flag, y_true=frame.y, y_pred=frame.flag, sensitive_features=features).by_group,
                MetricFrame(
                    metrics=by_level, y_true=frame["at"], y_pred=frame.ap, sensitive_features=features
                ).by_group,
            ],
            axis=1,
        )
        attr = result.attribute(name)
        assert len(attr.groups) == len(oracle)
        for key, row in oracle.iterrows():
            label = "|".join(key) if isinstance(key, tuple) else key
            group = attr.group(label)
            for metric in ALL_METRICS:
                assert group.metrics[metric].estimate == pytest.approx(float(row[metric]), abs=1e-12), (label, metric)


def test_group_metric_recomputed_on_the_masked_subset(frame: pd.DataFrame, result: AuditResult) -> None:
    for name, label, mask in (
        ("sex", "F", frame.sex == "F"),
        ("sex|age_band", "M|65+", (frame.sex == "M") & (frame.age_band == "65+")),
    ):
        sub = frame[mask]
        group = result.attribute(name).group(label)
        assert (group.n, group.positives) == (len(sub), int(sub.y.sum()))
        expected = {
            "auroc": auroc(sub.y, sub.p),
            "ece": expected_calibration_error(sub.y, sub.p),
            "observed_expected": observed_expected_ratio(sub.y, sub.p),
            "sensitivity": sensitivity(sub.y, sub.flag),
            "false_negative_rate": 1 - sensitivity(sub.y, sub.flag),
            "false_positive_rate": 1 - specificity(sub.y, sub.flag),
            "ppv": positive_predictive_value(sub.y, sub.flag),
            "under_triage_rate": under_triage_rate(sub["at"], sub.ap),
            "high_acuity_under_triage_rate": high_acuity_under_triage_rate(sub["at"], sub.ap),
        }
        for metric, value in expected.items():
            assert group.metrics[metric].estimate == pytest.approx(value, abs=1e-12), (label, metric)


def test_vectorised_resamples_equal_the_metrics_on_materialised_resamples(frame: pd.DataFrame) -> None:
    # The bootstrap never materialises a resample; here we do, and compare every metric of every group.
    codes = pd.factorize(frame.ethnicity, sort=True)[0]
    outcomes = Outcomes(
        y=frame.y.to_numpy(float),
        score=frame.p.to_numpy(float),
        flag=frame.flag.to_numpy(float),
        acuity_true=frame["at"].to_numpy(),
        acuity_pred=frame.ap.to_numpy(),
    )
    kernel = WeightedPartition(codes, 4, outcomes)
    rng = np.random.default_rng(7)
    draws = [rng.integers(0, len(frame), len(frame)) for _ in range(4)]
    values = kernel.compute(np.stack([np.bincount(d, minlength=len(frame)) for d in draws]).astype(float))
    for b, idx in enumerate(draws):
        for g in range(4):
            sub = frame.iloc[idx[codes[idx] == g]]
            expected = {
                "auroc": auroc(sub.y, sub.p),
                "ece": expected_calibration_error(sub.y, sub.p),
                "observed_expected": observed_expected_ratio(sub.y, sub.p),
                "sensitivity": sensitivity(sub.y, sub.flag),
                "false_positive_rate": 1 - specificity(sub.y, sub.flag),
                "ppv": positive_predictive_value(sub.y, sub.flag),
                "under_triage_rate": under_triage_rate(sub["at"], sub.ap),
                "high_acuity_under_triage_rate": high_acuity_under_triage_rate(sub["at"], sub.ap),
            }
            for metric, value in expected.items():
                got = values[metric][b, g]
                assert (math.isnan(value) and math.isnan(got)) or got == pytest.approx(value, abs=1e-12), metric


def test_quantile_interpolation_is_bit_for_bit_numpys() -> None:
    # ECE bin edges are re-estimated on every resample; a row lying exactly on an edge must fall in the same
    # bin as numpy.quantile would put it, so the interpolation must round exactly as numpy's does.
    rng = np.random.default_rng(0)
    a, b = np.sort(rng.random((2, 2000)), axis=0)  # a <= b, as neighbouring order statistics
    t = rng.random(2000)
    expected = np.array([np.quantile([x, y], q) for x, y, q in zip(a, b, t, strict=True)])
    assert np.array_equal(_lerp(a, b, t), expected)


@pytest.mark.parametrize("cluster", [None, "patient"])
def test_overall_interval_equals_evaluation_bootstrap_ci(frame: pd.DataFrame, cluster: str | None) -> None:
    result = audit(frame, _spec(cluster=cluster, n_boot=150, seed=11))
    groups = None if cluster is None else frame[cluster].to_numpy()
    for metric, fn, cols in (("auroc", auroc, ["y", "p"]), ("under_triage_rate", under_triage_rate, ["at", "ap"])):
        oracle = bootstrap_ci(fn, [frame[c].to_numpy() for c in cols], n_boot=150, seed=11, groups=groups)
        ours = result.overall.metrics[metric]
        assert ours.estimate == pytest.approx(oracle.estimate, abs=1e-12)
        assert (ours.low, ours.high) == pytest.approx((oracle.low, oracle.high), abs=1e-12)
        assert ours.n_valid == oracle.n_valid == 150


# ------------------------------------------------------------------------------------------ evidence
def test_insufficient_evidence_is_flagged_never_zero_never_judged(frame: pd.DataFrame, result: AuditResult) -> None:
    ethnicity = result.attribute("ethnicity")
    rare = ethnicity.group("rare")
    assert rare.n < 100 and rare.status == INSUFFICIENT
    assert "min_group_n=100" in rare.reason
    # Still computed where defined, and equal to the masked subset, not replaced by 0.
    sub = frame[frame.ethnicity == "rare"]
    assert rare.metrics["auroc"].estimate == pytest.approx(auroc(sub.y, sub.p))
    assert ethnicity.gap("under_triage_rate", "rare").status == INSUFFICIENT
    for gap in ethnicity.gaps:
        if gap.kind == "max_min":
            assert "rare" not in (gap.group, gap.comparator)
    assert all(g.status == SUFFICIENT for g in ethnicity.groups if g.group != "rare")


def test_undefined_metric_of_a_group_is_none_in_json_not_zero() -> None:
    frame = _frame(n=1500, seed=3)
    frame.loc[frame.ethnicity == "rare", "y"] = 0  # no positives: sensitivity and AUROC are undefined
    result = audit(frame, _spec(n_boot=30))
    rare = result.attribute("ethnicity").group("rare")
    assert rare.positives == 0 and rare.status == INSUFFICIENT and "0 positives" in rare.reason
    assert math.isnan(rare.metrics["sensitivity"].estimate) and math.isnan(rare.metrics["auroc"].estimate)
    as_json = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    rare_json = next(
        g for a in as_json["attributes"] if a["attribute"] == "ethnicity" for g in a["groups"] if g["group"] == "rare"
    )
    assert rare_json["metrics"]["sensitivity"]["estimate"] is None


def test_the_frame_index_is_ignored() -> None:
    frame = _frame(n=1200, seed=6)
    shuffled = frame.iloc[::-1].set_axis(frame.index * 7 + 3)  # reversed rows, unrelated index labels
    a, b = audit(frame, _spec(n_boot=5)), audit(shuffled, _spec(n_boot=5))
    for name in ("sex", "sex|age_band"):
        for group in a.attribute(name).groups:
            other = b.attribute(name).group(group.group)
            assert other.n == group.n
            assert other.metrics["auroc"].estimate == pytest.approx(group.metrics["auroc"].estimate, abs=1e-12)


def test_missing_attribute_values_form_their_own_group() -> None:
    frame = _frame(n=1200, seed=4)
    frame.loc[frame.index[:150], "ethnicity"] = None
    result = audit(frame, _spec(n_boot=20))
    missing = result.attribute("ethnicity").group(MISSING_GROUP)
    assert missing.n == 150
    assert sum(g.n for g in result.attribute("ethnicity").groups) == len(frame)


# -------------------------------------------------------------------------------------- gaps, clusters
def test_gap_estimates_are_differences_and_ratios_of_group_estimates(result: AuditResult) -> None:
    ethnicity = result.attribute("ethnicity")
    ref = ethnicity.reference_group
    assert ref == "a"  # the largest group
    for metric in ALL_METRICS:
        est = {g.group: g.metrics[metric].estimate for g in ethnicity.groups}
        for group in ("b", "c", "rare"):
            gap = ethnicity.gap(metric, group)
            assert (gap.group, gap.comparator) == (group, ref)
            assert gap.difference.estimate == pytest.approx(est[group] - est[ref])
            assert gap.ratio.estimate == pytest.approx(est[group] / est[ref])
        judged = {k: v for k, v in est.items() if k != "rare"}  # "rare" lacks evidence
        top, bottom = max(judged, key=judged.__getitem__), min(judged, key=judged.__getitem__)
        spread = ethnicity.gap(metric)
        assert (spread.kind, spread.group, spread.comparator) == ("max_min", top, bottom)
        assert spread.difference.estimate == pytest.approx(judged[top] - judged[bottom])
        assert spread.ratio.estimate == pytest.approx(judged[bottom] / judged[top])
        assert 0.0 <= spread.difference.low <= spread.difference.high
        assert spread.chance_level > 0.0


def _two_groups(rng: np.random.Generator, n: int, rates: tuple[float, float]) -> pd.DataFrame:
    group = np.repeat(["ref", "other"], n)
    at = rng.choice([1, 2, 3, 4], 2 * n, p=[0.05, 0.25, 0.45, 0.25])
    under = rng.random(2 * n) < np.repeat(rates, n)
    return pd.DataFrame({"group": group, "at": at, "ap": at + under, "y": rng.integers(0, 2, 2 * n)})


def test_gap_interval_contains_the_true_gap() -> None:
    # 95% intervals of a true 5 pp gap: expect ~19 of 20 to cover it; fewer than 16 would be a broken interval.
    covered = 0
    chance_below_gap = 0
    for seed in range(20):
        frame = _two_groups(np.random.default_rng(seed), 1500, (0.10, 0.15))
        spec = AuditSpec(
            y_true="y",
            acuity_true="at",
            acuity_pred="ap",
            sensitive_attributes=["group"],
            reference_groups={"group": "ref"},
            n_boot=200,
            seed=seed,
        )
        gap = audit(frame, spec).attribute("group").gap("under_triage_rate", "other")
        covered += gap.difference.low <= 0.05 <= gap.difference.high
        chance_below_gap += gap.chance_level < 0.05
        assert gap.chance_level == pytest.approx(1.96 * 0.0120, rel=0.25)  # ~ z SE of the difference
    assert covered >= 16
    assert chance_below_gap == 20


def test_cluster_bootstrap_is_wider_than_row_bootstrap_for_duplicated_clusters() -> None:
    base = _frame(n=800, seed=5)
    base["patient"] = np.arange(len(base))
    frame = pd.concat([base] * 4, ignore_index=True)  # every patient seen 4 times, identically
    rows = audit(frame, _spec(n_boot=200, intersections=[]))
    clusters = audit(frame, _spec(n_boot=200, intersections=[], cluster="patient"))
    assert clusters.n_clusters == 800 and rows.n_clusters is None
    for metric in ("auroc", "under_triage_rate", "sensitivity"):
        r, c = rows.attribute("sex").group("F").metrics[metric], clusters.attribute("sex").group("F").metrics[metric]
        assert (c.high - c.low) > 1.5 * (r.high - r.low), metric  # ~2x: 4 copies carry 1 patient's information


# ------------------------------------------------------------------------------------ shape and types
def test_intersections_are_audited_with_every_observed_combination(frame: pd.DataFrame, result: AuditResult) -> None:
    names = [a.attribute for a in result.attributes]
    assert names == ["sex", "age_band", "ethnicity", "sex|age_band"]
    crossing = result.attribute("sex|age_band")
    assert crossing.columns == ("sex", "age_band")
    expected = sorted(f"{s}|{a}" for s, a in frame[["sex", "age_band"]].drop_duplicates().itertuples(index=False))
    assert [g.group for g in crossing.groups] == expected
    assert sum(g.n for g in crossing.groups) == len(frame)
    assert crossing.reference_group == frame.sex.str.cat(frame.age_band, sep="|").value_counts().idxmax()


def test_result_round_trips_through_strict_json(result: AuditResult) -> None:
    data = result.to_dict()
    text = json.dumps(data, allow_nan=False)
    again = AuditResult.from_dict(json.loads(text))
    assert isinstance(again, AuditResult)
    assert again.to_dict() == data
    assert (
        again.attribute("ethnicity").group("a").metrics["auroc"]
        == result.attribute("ethnicity").group("a").metrics["auroc"]
    )


def test_result_type_is_stable_across_inputs(frame: pd.DataFrame) -> None:
    shapes = []
    for spec in (
        _spec(n_boot=10),
        _spec(n_boot=10, y_score=None, y_flag=None, intersections=[]),  # triage levels only
        _spec(n_boot=10, acuity_true=None, acuity_pred=None, sensitive_attributes=["sex"], intersections=[]),
    ):
        r = audit(frame, spec)
        assert type(r) is AuditResult
        d = r.to_dict()
        shapes.append(
            (sorted(d), sorted(d["overall"]), sorted(d["attributes"][0]), sorted(d["attributes"][0]["gaps"][0]))
        )
        assert set(r.overall.metrics) == set(r.metrics)
    assert shapes[0] == shapes[1] == shapes[2]
    assert audit(frame, _spec(n_boot=10, y_score=None, y_flag=None)).metrics == ALL_METRICS[-2:]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (dict(y_score="nope"), "y_score", "y_score column 'nope' is not in the frame"),
        (dict(y_score="at"), "y_score", r"must be in \[0, 1\]"),
        (dict(y_true="p"), "y_true", "only 0 and 1"),
        (dict(acuity_true="flag"), "acuity_true", "triage levels 1-5"),
        (dict(acuity_pred=None), "acuity_pred", "acuity_pred is required"),
        (dict(sensitive_attributes=["sex", "zip"]), "sensitive_attributes", "'zip' is not in the frame"),
        (dict(sensitive_attributes="sex"), "sensitive_attributes", "list of column names"),
        (dict(intersections=[("sex",)]), "intersections[0]", "at least 2 columns"),
        (dict(reference_groups={"sex": "X"}), "reference_groups.sex", "'X' is not in the data"),
        (dict(reference_groups={"payer": "x"}), "reference_groups.payer", "not an audited attribute"),
        (dict(n_boot=0), "n_boot", "n_boot must be an integer >= 1"),
        (dict(alpha=1.5), "alpha", r"alpha must be in \(0, 1\)"),
        (dict(min_group_n=True), "min_group_n", "integer"),
    ],
)
def test_invalid_input_names_the_field(frame: pd.DataFrame, change: dict, field: str, message: str) -> None:
    with pytest.raises(InputValidationError, match=message) as info:
        audit(frame, _spec(**{"n_boot": 5, **change}))
    assert info.value.field == field
