"""Serving fixtures: small real models (trained here on synthetic data, registered in a SQLite MLflow store),
a local model folder with passing release records, a SQLite key/audit store, and a client per app."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from models.onnx_runtime import sha256_file
from serving.model_source import ResolvedModel, write_local_release

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


@dataclass
class Service:
    client: TestClient
    store: object
    keys: dict[str, str]  # scope name (or "all", "none") -> plaintext key

    def headers(self, who: str = "all", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}", **extra}


@contextmanager
def make_service(tmp_path: Path, model_folder: Path, **settings: object) -> Iterator[Service]:
    """An app on ``model_folder`` with a fresh SQLite store and one key per scope (plus one with all)."""
    from serving.app import create_app
    from serving.settings import ServingSettings
    from serving.store import Store

    cfg = ServingSettings(work_dir=tmp_path, model_source="local", model_dir=model_folder, threads=1,
                          **settings)  # type: ignore[arg-type]
    store = Store(cfg.store_url())
    store.create_schema()
    keys = {}
    for who, scopes in (("all", ["triage", "imaging", "admin"]), ("triage", ["triage"]), ("imaging", ["imaging"]),
                        ("admin", ["admin"])):
        keys[who] = store.create_key(f"test-{who}", scopes)[1]
    app = create_app(cfg, store=store)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Service(client, store, keys)


@pytest.fixture
def service(tmp_path, model_folder) -> Iterator[Service]:
    with make_service(tmp_path, model_folder) as svc:
        yield svc


@pytest.fixture
def service_factory():
    """:func:`make_service`, for tests that need their own model folder or settings."""
    return make_service
