"""vigil release on a chest X-ray model: the gate decides finding by finding and records the decision on the version."""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.slow  # runs the imaging release gate and its safety suite


def test_the_imaging_release_records_each_findings_decision(registered, isolated_env, tmp_path):
    from mlflow import MlflowClient

    from models.intended_use import finding_release_from_json, intended_use_from_json
    from models.labels import IMAGING_FINDINGS
    from workflows.release import release

    # On a copy of the session's registry (its artefacts stay where they were logged): the session's models are
    # shared with other tests, and under pytest-xdist with other workers, which must not see this release.
    shutil.copy(registered.work / "mlflow.db", tmp_path / "mlflow.db")
    with isolated_env(tmp_path) as work:
        outcome = release(f"vigil-cxr/{registered.imaging_version}", n_boot=100)
        tags = (
            MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
            .get_model_version("vigil-cxr", registered.imaging_version)
            .tags
        )
    by_name = {c.name: c for c in outcome.checks}
    assert outcome.status == "fail" and not outcome.promoted
    for finding in IMAGING_FINDINGS:  # the synthetic run logged no floor metric of real data
        assert by_name[f"finding {finding}"].status == "not released"
        assert "was not recorded" in by_name[f"finding {finding}"].reason
    assert by_name["released findings"].status == "fail"
    # A finding that fails decides that finding, not the model: its floor check is information, not a failure.
    assert by_name["floor test.kermany.pneumonia.auroc"].status == "not released"
    decision = finding_release_from_json(tags["release_gate.findings"], IMAGING_FINDINGS)
    assert decision is not None and decision.released == {} and set(decision.not_validated) == set(IMAGING_FINDINGS)
    use = intended_use_from_json(tags["release_gate.intended_use"])
    assert use is not None and "chest radiographs" in use.population
    card = next(p for p in outcome.reports if p.name == "model_card.md").read_text()
    assert "## Release scope" in card and "**not validated**: never shown or flagged" in card
    card_json = json.loads(
        (next(p for p in outcome.reports if p.name == "model_card.md").parent / "model_card.json").read_text()
    )
    assert set(card_json["release_gate"]["findings"]["not_validated"]) == set(IMAGING_FINDINGS)
