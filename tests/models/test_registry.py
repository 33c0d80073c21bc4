"""The registry names shared by training, release and serving (models.registry): metric keys round-trip, and a key
no training run logs is refused naming the part that is wrong."""

from __future__ import annotations

import pytest

from models.errors import InputValidationError
from models.labels import IMAGING_FINDINGS, OUTCOMES
from models.registry import (
    IMAGING_MODEL,
    TRIAGE_MODEL,
    MetricKey,
    Tag,
    imaging_metric,
    parse_metric_key,
    triage_metric,
)


def test_every_key_the_runs_log_parses_back_into_its_parts():
    for outcome in OUTCOMES:
        key = triage_metric("test", outcome, "auroc")
        assert key == f"test.{outcome}.auroc"
        assert parse_metric_key(TRIAGE_MODEL, key) == MetricKey("test", None, outcome, "auroc")
    for finding in IMAGING_FINDINGS:
        key = imaging_metric("test", "nih", finding)
        assert parse_metric_key(IMAGING_MODEL, key) == MetricKey("test", "nih", finding, "auroc")
        assert str(parse_metric_key(IMAGING_MODEL, key)) == key


@pytest.mark.parametrize(
    ("model", "key", "problem"),
    [
        (TRIAGE_MODEL, "test.admited.auroc", "unknown outcome 'admited'"),
        (TRIAGE_MODEL, "test.admitted.auc", "unknown metric 'auc'"),
        (TRIAGE_MODEL, "train.admitted.auroc", "unknown split 'train'"),
        (TRIAGE_MODEL, "test.nih.admitted.auroc", "expected <split>.<outcome>.<metric>"),
        (IMAGING_MODEL, "test.nih.fracture.auroc", "unknown finding 'fracture'"),
        (IMAGING_MODEL, "test.chexpert.effusion.auroc", "unknown source 'chexpert'"),
        (IMAGING_MODEL, "test.effusion.auroc", "expected test.<source>.<finding>.auroc"),
        ("vigil-ct", "test.admitted.auroc", "unknown model 'vigil-ct'"),
    ],
)
def test_a_key_no_run_logs_is_refused_naming_the_part(model, key, problem):
    with pytest.raises(InputValidationError, match=problem):
        parse_metric_key(model, key)


def test_the_gate_tags_share_one_prefix():
    gate = [v for k, v in vars(Tag).items() if k.startswith("GATE_") and k != "GATE_PREFIX"]
    assert gate and all(v.startswith(Tag.GATE_PREFIX) for v in gate)
