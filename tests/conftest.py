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

from models.onnx_file import sha256_file
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


PASSING_GATE = {
    "status": "pass",
    "policy_version": "test",
    "checked_utc": "2026-11-23T00:00:00Z",
    "summary": "test fixture",
}


@dataclass(frozen=True)
class Registered:
    work: Path
    triage_onnx: Path
    imaging_onnx: Path
    triage_version: str
    imaging_version: str


def _train_small_models(work: Path) -> Registered:
    from training.config import load_imaging_config, load_triage_config
    from workflows.imaging import run_imaging
    from workflows.triage import run_triage

    with isolated_work(work):
        # One thread each: under pytest-xdist the workers share the cores, and torch's spinning intra-op threads
        # slowed a training several-fold when oversubscribed.
        triage = run_triage(
            load_triage_config(
                overrides={
                    "epochs": 3,
                    "synthetic_train_n": 2000,
                    "synthetic_test_n": 600,
                    "bootstrap_resamples": 10,
                    "threads": 1,
                }
            ),
            progress=False,
        )
        imaging = run_imaging(
            load_imaging_config(
                overrides={
                    "epochs": 2,
                    "patience": 2,
                    "synthetic_n": 200,
                    "image_size": 64,
                    "batch_size": 32,
                    "bootstrap_resamples": 10,
                    "threads": 1,
                }
            ),
            progress=False,
        )
    return Registered(
        work, triage.onnx_path, imaging.shipped_path, triage.registered_version, imaging.registered_version
    )


REPO = Path(__file__).resolve().parents[1]
#: What the small models are built from: a change to any of these trains them again.
_MODEL_SOURCES = (
    "models",
    "training",
    "evaluation",
    "fairness",
    "workflows",
    "serving/model_source.py",
    "requirements.lock",
    "tests/conftest.py",
)


def _source_key() -> str:
    import hashlib

    digest = hashlib.sha256()
    for name in _MODEL_SOURCES:
        path = REPO / name
        files = sorted(p for p in path.rglob("*") if p.suffix in {".py", ".yaml"}) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(REPO)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cached_small_models() -> Registered:
    """Both models trained briefly on synthetic data and registered @candidate (never released).

    Trained once and kept in ``$VIGIL_TEST_MODEL_CACHE`` (default ``.vigil-test-cache/`` in the repository, ignored
    by git) under a digest of the code they are built from, so that the fast tier, the slow tier and every
    pytest-xdist worker use the same models and a second ``make test`` does not train again; any change to that
    code trains them afresh (entries older than the two newest others are removed). Whoever gets here first trains
    while the others wait on a file lock. Tests that write to a registry work on a copy of ``mlflow.db``, never on
    this one. ``make test`` builds them before the fast tier (``python -m tests.build_models``), so that tier runs on
    prebuilt models.
    """
    import json
    import shutil

    from filelock import FileLock

    cache = Path(os.environ.get("VIGIL_TEST_MODEL_CACHE", REPO / ".vigil-test-cache"))
    cache.mkdir(parents=True, exist_ok=True)
    key = _source_key()
    record = cache / key / "registered.json"
    with FileLock(str(cache / "lock")):
        if not record.exists():
            # Keep the two newest other entries: a run still using its models (another checkout state, another
            # terminal) must not lose them under its feet; older ones go.
            others = sorted(
                (d for d in cache.iterdir() if d.is_dir() and d.name != key),
                key=lambda d: d.stat().st_mtime,
                reverse=True,
            )
            for old in others[2:]:
                shutil.rmtree(old, ignore_errors=True)
            done = _train_small_models(cache / key / "work")
            record.write_text(json.dumps({k: str(v) for k, v in vars(done).items()}), encoding="utf-8")
    fields = json.loads(record.read_text(encoding="utf-8"))
    return Registered(
        Path(fields["work"]),
        Path(fields["triage_onnx"]),
        Path(fields["imaging_onnx"]),
        fields["triage_version"],
        fields["imaging_version"],
    )


@pytest.fixture(scope="session")
def registered() -> Registered:
    """The small models of :func:`cached_small_models`."""
    return cached_small_models()


@pytest.fixture(scope="session")
def model_folder(registered, tmp_path_factory) -> Path:
    """A local model folder whose release records say the gate passed (a stand-in for `vigil release`)."""
    folder = tmp_path_factory.mktemp("models")
    for task, name, path in (
        ("triage", "vigil-triage", registered.triage_onnx),
        ("imaging", "vigil-cxr", registered.imaging_onnx),
    ):
        write_local_release(folder, ResolvedModel(task, name, "7", path, sha256_file(path), dict(PASSING_GATE), "test"))
    return folder


#: The text every module holding a slow test contains (``pytestmark = pytest.mark.slow``, ``@pytest.mark.slow``,
#: ``pytest.param(..., marks=pytest.mark.slow)``).
SLOW_MARK_TEXT = "mark.slow"


def _test_module(path: Path) -> bool:
    return path.suffix == ".py" and path.name.startswith("test_")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The slow tier (``-m slow``) does not import the modules that hold no slow test.

    Every pytest-xdist worker imports every collected module before ``-m`` deselects: 16 s of imports per worker for
    the whole suite against 6 s for the 23 modules with slow tests. A module without the text ``mark.slow`` has no
    slow test; :func:`pytest_collection_modifyitems` checks that this stays true on every run of the fast tier.
    """
    if config.getoption("markexpr", "") != "slow" or not _test_module(collection_path):
        return None
    return SLOW_MARK_TEXT not in collection_path.read_text(encoding="utf-8")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Test modules that need the small trained models run last (a stable sort: order within a module is kept).

    Under pytest-xdist the first worker to need the models trains them while the other workers run every module
    that does not; before, every worker soon waited on the training's lock with its core idle.

    Also refuses to run when a slow test sits in a module without the text ``mark.slow`` (a marker applied some
    other way): :func:`pytest_ignore_collect` would leave it out of the slow tier, and no tier would run it.
    """
    slow_modules = {item.path for item in items if item.get_closest_marker("slow")}
    hidden = sorted(str(path) for path in slow_modules if SLOW_MARK_TEXT not in path.read_text(encoding="utf-8"))
    if hidden:
        raise pytest.UsageError(
            f"slow tests in modules without the text {SLOW_MARK_TEXT!r} (the slow tier would not collect them): "
            + ", ".join(hidden)
        )
    needs = {item.nodeid.split("::")[0] for item in items if "registered" in getattr(item, "fixturenames", ())}
    items.sort(key=lambda item: item.nodeid.split("::")[0] in needs)
