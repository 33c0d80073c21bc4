"""Shared set-up of the tests: an isolated work folder with no real data and no MLflow server, and small real
models (trained once per session on synthetic data, registered in a SQLite MLflow store) with a local model
folder whose release records pass, for the serving and DICOM node tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from models.onnx_runtime import sha256_file
from serving.model_source import ResolvedModel, write_local_release


@contextmanager
def isolated_work(work: Path) -> Iterator[Path]:
    """Point Vigil at ``work`` (runs, SQLite MLflow store) and at a data folder that does not exist.

    The no-data path is the point: the main job must run on the synthetic generator and say so.
    """
    had_uri = "MLFLOW_TRACKING_URI" in os.environ
    mp = pytest.MonkeyPatch()
    mp.setenv("VIGIL_WORK_DIR", str(work))
    mp.setenv("VIGIL_DATA_DIR", str(work / "no-data-here"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("VIGIL_MLFLOW_URI", raising=False)
    try:
        yield work
    finally:
        mp.undo()
        # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; monkeypatch does not remove a variable that was
        # absent when it was deleted, so this work folder's URI would leak into every later test.
        if not had_uri:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def isolated_env():
    """The :func:`isolated_work` context manager, for module-scoped fixtures."""
    return isolated_work


PASSING_GATE = {"status": "pass", "policy_version": "test", "checked_utc": "2026-11-23T00:00:00Z",
                "summary": "test fixture"}


@dataclass(frozen=True)
class Registered:
    work: Path
    triage_onnx: Path
    imaging_onnx: Path
    triage_version: str
    imaging_version: str


@pytest.fixture(scope="session")
def registered(tmp_path_factory, isolated_env) -> Registered:
    """Both models trained briefly on synthetic data and registered @candidate (never released)."""
    from training.config import load_imaging_config, load_triage_config
    from vigil.pipeline import run_triage
    from vigil.pipeline_imaging import run_imaging

    # The environment is isolated while training only: this fixture lives for the whole session.
    with isolated_env(tmp_path_factory.mktemp("serving-work")) as work:
        triage = run_triage(load_triage_config(overrides={
            "epochs": 3, "synthetic_train_n": 2000, "synthetic_test_n": 600, "bootstrap_resamples": 10}),
            progress=False)
        imaging = run_imaging(load_imaging_config(overrides={
            "epochs": 2, "patience": 2, "synthetic_n": 200, "image_size": 64, "batch_size": 32,
            "bootstrap_resamples": 10}), progress=False)
    return Registered(work, triage.onnx_path, imaging.shipped_path, triage.registered_version,
                      imaging.registered_version)


@pytest.fixture(scope="session")
def model_folder(registered, tmp_path_factory) -> Path:
    """A local model folder whose release records say the gate passed (a stand-in for `vigil release`)."""
    folder = tmp_path_factory.mktemp("models")
    for task, name, path in (("triage", "vigil-triage", registered.triage_onnx),
                             ("imaging", "vigil-cxr", registered.imaging_onnx)):
        write_local_release(folder, ResolvedModel(task, name, "7", path, sha256_file(path), dict(PASSING_GATE),
                                                  "test"))
    return folder
