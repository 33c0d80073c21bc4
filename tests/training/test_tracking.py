"""The registry reader (training.tracking.fetch_model_version) on a SQLite MLflow store."""

from __future__ import annotations

import pytest

from models.errors import ModelArtifactError
from tests.conftest import isolated_work


def test_a_version_registered_by_hand_without_a_run_is_refused_clearly(tmp_path):
    """A version someone registered outside a Vigil run has no run to check its artefact against: a clear error
    naming it, never a TypeError from the MLflow client."""
    from mlflow import MlflowClient

    from training.tracking import fetch_model_version, tracking_settings

    with isolated_work(tmp_path) as work:
        client = MlflowClient(tracking_settings(work, "vigil-triage").tracking_uri)
        client.create_registered_model("vigil-triage")
        version = client.create_model_version("vigil-triage", source=str(tmp_path / "model"), run_id=None)
        with pytest.raises(ModelArtifactError, match=r"vigil-triage/1 was not registered from a run"):
            fetch_model_version(f"vigil-triage/{version.version}", work)
