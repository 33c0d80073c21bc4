"""Shared set-up of the tests: an isolated work folder with no real data and no MLflow server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


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
