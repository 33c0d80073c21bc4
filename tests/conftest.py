"""Shared set-up of the tests: an isolated work folder with no real data and no MLflow server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def isolated_work(work: Path) -> Iterator[Path]:
    """Point Vigil at ``work`` (runs, SQLite MLflow store) and at a data folder that does not exist.

    The no-data path is the point: the main job must run on the synthetic generator and say so.
    """
    mp = pytest.MonkeyPatch()
    mp.setenv("VIGIL_WORK_DIR", str(work))
    mp.setenv("VIGIL_DATA_DIR", str(work / "no-data-here"))
    # Set, not deleted: mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, and only a variable monkeypatch set
    # is removed again on undo (a deleted-when-absent one would leak into every later test).
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work.resolve() / 'mlflow.db'}")
    mp.delenv("VIGIL_MLFLOW_URI", raising=False)
    try:
        yield work
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def isolated_env():
    """The :func:`isolated_work` context manager, for module-scoped fixtures."""
    return isolated_work
