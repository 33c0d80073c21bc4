"""evaluation.noninferiority: a candidate is compared with the model in production on the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.noninferiority import compare, comparison_markdown


def frame(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    score = np.clip(0.3 + 0.3 * y + rng.normal(0, 0.2, n), 0, 1)  # AUROC about 0.85
    truth = rng.integers(1, 6, n)
    return pd.DataFrame(
        {
            "y_true": y.astype(int),
            "y_score": score,
            "y_score_prod": score,
            "acuity_true": truth,
            "acuity_pred": truth,
            "acuity_pred_prod": truth,
            "sex": np.where(rng.random(n) < 0.5, "female", "male"),
        }
    )


def test_the_same_model_is_non_inferior_to_itself() -> None:
    result = compare("same", frame(), attributes=["sex"], auroc_margin=0.01, under_triage_tolerance=0.02, n_boot=200)
    assert result.passed and result.auroc_difference == 0 and result.auroc_low == result.auroc_high == 0
    assert {g.group for g in result.groups} == {"female", "male"} and all(g.change == 0 for g in result.groups)
    assert "non-inferior" in comparison_markdown([result], "4")


def test_a_worse_ranking_fails_on_the_lower_end_of_the_paired_interval() -> None:
    f = frame()
    noisy = np.clip(f["y_score"] + np.random.default_rng(1).normal(0, 0.3, len(f)), 0, 1)
    result = compare("worse", f.assign(y_score=noisy), auroc_margin=0.01, under_triage_tolerance=0.02, n_boot=200)
    assert result.auroc_difference < -0.05 and result.auroc_high < 0 and not result.passed
    assert "-0.01" in result.reason() and "**worse**" in comparison_markdown([result], "4")


def test_a_group_under_triaged_more_fails_even_when_the_auroc_holds() -> None:
    f = frame()
    women = (f["sex"] == "female").to_numpy()
    pred = f["acuity_pred"].to_numpy().copy()
    flip = women & (np.random.default_rng(2).random(len(f)) < 0.1) & (pred < 5)
    pred[flip] += 1  # a less urgent level for about 8% of women
    result = compare(
        "group",
        f.assign(acuity_pred=pred),
        attributes=["sex"],
        auroc_margin=0.01,
        under_triage_tolerance=0.02,
        n_boot=200,
    )
    assert [(g.attribute, g.group) for g in result.worse_groups] == [("sex", "female")]
    assert not result.passed and "sex=female" in result.reason()
    men = next(g for g in result.groups if g.group == "male")
    assert men.change == 0


def test_small_groups_are_not_compared_and_bad_frames_are_refused() -> None:
    f = frame(300)
    result = compare(
        "small", f, attributes=["sex"], auroc_margin=0.01, under_triage_tolerance=0.02, n_boot=50, min_group_n=200
    )
    assert result.groups == []
    with pytest.raises(ValueError, match="y_score_prod"):
        compare("x", f.drop(columns="y_score_prod"), auroc_margin=0.01, under_triage_tolerance=0.02)
    with pytest.raises(ValueError, match="one class"):
        compare("x", f.assign(y_true=0), auroc_margin=0.01, under_triage_tolerance=0.02)
