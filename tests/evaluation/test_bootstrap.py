"""Percentile and cluster bootstrap confidence intervals."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from evaluation.bootstrap import ConfidenceInterval, bootstrap_ci, paired_bootstrap_difference
from evaluation.metrics.discrimination import auroc
from models.errors import InputValidationError


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, n), 0.0, 1.0)  # AUROC ~ 0.8
    return y, p


def _width(ci: ConfidenceInterval) -> float:
    return ci.high - ci.low


class _Counter:
    """A metric that returns its call number (0 is the full-data estimate), nan where ``nan_if`` says so."""

    def __init__(self, nan_if=lambda k: False) -> None:
        self.calls = 0
        self.nan_if = nan_if

    def __call__(self, *arrays: np.ndarray) -> float:
        k = self.calls
        self.calls += 1
        return float("nan") if self.nan_if(k) else float(k)


def test_interval_contains_the_full_data_estimate() -> None:
    y, p = _synthetic(1000, seed=0)
    ci = bootstrap_ci(auroc, [y, p], n_boot=300, seed=0)
    assert ci.estimate == auroc(y, p)
    assert ci.low < ci.estimate < ci.high
    assert (ci.n_boot, ci.n_valid) == (300, 300)


def test_interval_shrinks_with_n() -> None:
    small = bootstrap_ci(auroc, list(_synthetic(250, seed=1)), n_boot=300, seed=0)
    large = bootstrap_ci(auroc, list(_synthetic(4000, seed=1)), n_boot=300, seed=0)
    assert _width(large) < 0.5 * _width(small)  # 16x the rows: about a quarter of the width


def test_percentiles_of_the_resampled_values() -> None:
    # Resample values are 1, 2, ..., 101, so the 5th and 95th percentiles are exactly 6 and 96.
    ci = bootstrap_ci(_Counter(), [np.arange(5)], n_boot=101, alpha=0.1, seed=0)
    assert (ci.estimate, ci.low, ci.high) == (0.0, 6.0, 96.0)


def test_undefined_resamples_are_skipped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    metric = _Counter(nan_if=lambda k: k % 2 == 1)  # resamples 1, 3, ..., 99 undefined
    with caplog.at_level(logging.WARNING, logger="evaluation.bootstrap"):
        ci = bootstrap_ci(metric, [np.arange(5)], n_boot=100, alpha=0.5, seed=0)
    assert (ci.n_boot, ci.n_valid) == (100, 50)
    expected = np.quantile(np.arange(2, 101, 2), [0.25, 0.75])
    assert (ci.low, ci.high) == pytest.approx(tuple(expected))
    assert "undefined on 50 of 100 resamples" in caplog.text


def test_one_class_resamples_of_auroc_are_skipped() -> None:
    y = np.array([1] + [0] * 9)
    p = np.linspace(0.9, 0.0, 10)
    ci = bootstrap_ci(auroc, [y, p], n_boot=400, seed=0)
    # A resample misses the only positive with probability 0.9**10 ~ 0.35.
    assert 200 < ci.n_valid < 320
    assert np.isfinite(ci.low) and np.isfinite(ci.high)


def test_no_valid_resample_gives_nan_bounds() -> None:
    ci = bootstrap_ci(auroc, [np.zeros(5, dtype=int), np.linspace(0, 1, 5)], n_boot=20, seed=0)
    assert ci.n_valid == 0
    assert np.isnan(ci.estimate) and np.isnan(ci.low) and np.isnan(ci.high)


def test_cluster_bootstrap_is_wider_when_rows_are_duplicated_within_groups() -> None:
    y0, p0 = _synthetic(300, seed=2)
    copies = 6
    y, p = np.repeat(y0, copies), np.repeat(p0, copies)
    patient = np.repeat(np.arange(300), copies)
    rows = bootstrap_ci(auroc, [y, p], n_boot=300, seed=0)
    clusters = bootstrap_ci(auroc, [y, p], n_boot=300, seed=0, groups=patient)
    original = bootstrap_ci(auroc, [y0, p0], n_boot=300, seed=0)
    assert _width(clusters) > 1.8 * _width(rows)  # ~sqrt(6) = 2.45 expected
    # Duplicating every patient adds no information: the cluster interval matches the original data's.
    assert _width(clusters) == pytest.approx(_width(original), rel=0.3)


def test_cluster_resamples_keep_groups_whole() -> None:
    groups = np.array(["c", "a", "b", "a", "c", "c", "d"])  # unsorted string ids, sizes 2, 1, 3, 1
    size = {"a": 2, "b": 1, "c": 3, "d": 1}

    def check(g: np.ndarray) -> float:
        ids, counts = np.unique(g, return_counts=True)
        drawn = [c // size[i] for i, c in zip(ids, counts, strict=True)]
        assert all(c % size[i] == 0 for i, c in zip(ids, counts, strict=True))
        assert sum(drawn) == len(size)  # as many clusters as the data has
        return 0.0

    ci = bootstrap_ci(check, [groups], n_boot=50, seed=0, groups=groups)
    assert ci.n_valid == 50


def test_same_seed_same_interval_different_seed_different() -> None:
    y, p = _synthetic(500, seed=3)
    a = bootstrap_ci(auroc, [y, p], n_boot=200, seed=7)
    b = bootstrap_ci(auroc, [y, p], n_boot=200, seed=7)
    c = bootstrap_ci(auroc, [y, p], n_boot=200, seed=8)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    g1 = bootstrap_ci(auroc, [y, p], n_boot=200, seed=np.random.default_rng(7))
    assert g1 == a  # a generator seeded 7 draws the same resamples as seed=7


def test_a_passed_generator_is_advanced() -> None:
    y, p = _synthetic(500, seed=3)
    rng = np.random.default_rng(11)
    first = bootstrap_ci(auroc, [y, p], n_boot=100, seed=rng)
    second = bootstrap_ci(auroc, [y, p], n_boot=100, seed=rng)
    assert (first.low, first.high) != (second.low, second.high)


def test_paired_difference_uses_the_same_resamples() -> None:
    y, p = _synthetic(800, seed=4)
    # p**3 ranks rows exactly like p, so on every shared resample the AUROCs are equal.
    ci = paired_bootstrap_difference(auroc, y, p, p**3, n_boot=200, seed=0)
    assert (ci.estimate, ci.low, ci.high, ci.n_valid) == (0.0, 0.0, 0.0, 200)


def test_paired_difference_detects_a_better_model() -> None:
    y, p = _synthetic(800, seed=5)
    noise = np.random.default_rng(0).random(800)
    ci = paired_bootstrap_difference(auroc, y, p, noise, n_boot=300, seed=0)
    assert ci.estimate == pytest.approx(auroc(y, p) - auroc(y, noise))
    assert 0.0 < ci.low < ci.estimate < ci.high


def test_confidence_interval_is_frozen_and_flat() -> None:
    ci = ConfidenceInterval(estimate=0.8, low=0.7, high=0.9, n_boot=10, n_valid=9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ci.low = 0.0  # type: ignore[misc]
    assert ci.to_dict() == {"estimate": 0.8, "low": 0.7, "high": 0.9, "n_boot": 10.0, "n_valid": 9.0}
    assert str(ci) == "0.800 (0.700 to 0.900)"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_boot": 0}, r"n_boot must be an integer >= 1; got 0"),
        ({"alpha": 1.5}, r"alpha must be in \(0, 1\); got 1.5"),
        ({"arrays": [np.arange(3), np.arange(4)]}, r"arrays must all have the same length; got lengths \[3, 4\]"),
        ({"arrays": np.arange(3)}, r"arrays must be a non-empty sequence"),
        ({"groups": np.arange(2)}, r"groups must be 1-dimensional with one id per row \(3\); got shape \(2,\)"),
        ({"groups": np.array([1.0, np.nan, 2.0])}, r"groups must not contain missing \(NaN\) ids"),
    ],
)
def test_bootstrap_arguments_are_validated(kwargs, match) -> None:
    call = {"metric": _Counter(), "arrays": [np.arange(3)], "n_boot": 5} | kwargs
    with pytest.raises(InputValidationError, match=match):
        bootstrap_ci(**call)
