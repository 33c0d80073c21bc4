"""One end-to-end triage run shared by the integration modules that need one (the pipeline and the release tests),
trained once per test session instead of once per module."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

from tests.conftest import isolated_work

#: The configuration of the shared run: 4 epochs on 2,500 synthetic visits, 50 bootstrap resamples, one thread (the
#: slow tier runs several workers on the 2 cores).
TRIAGE_RUN_OVERRIDES = {
    "epochs": 4,
    "synthetic_train_n": 2500,
    "synthetic_test_n": 1200,
    "bootstrap_resamples": 50,
    "threads": 1,
}


def _session_root(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A folder shared by every pytest-xdist worker of this session (and by no other session)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def shared_triage_run(tmp_path_factory, worker_id):
    """(work folder, TriageRunResult) of the session's triage run: the first worker to ask trains it, the others wait
    on a file lock and read the pickled result. Nobody writes to this work folder: see :func:`triage_run`."""
    root = _session_root(tmp_path_factory, worker_id) / "shared-triage-run"
    root.mkdir(exist_ok=True)
    record = root / "result.pickle"
    with FileLock(str(root / "lock")):
        if not record.exists():
            from training.config import load_triage_config
            from workflows.triage import run_triage

            with isolated_work(root / "work"):
                result = run_triage(load_triage_config(overrides=TRIAGE_RUN_OVERRIDES), progress=False)
            record.write_bytes(pickle.dumps(result))
    return root / "work", pickle.loads(record.read_bytes())


@pytest.fixture(scope="module")
def triage_run(shared_triage_run, tmp_path_factory, isolated_env):
    """The shared run, in a module's own copy of its work folder (MLflow store, reports), as the work folder of the
    module's tests: what one module registers, promotes or releases, no other module sees."""
    work, result = shared_triage_run
    copy = tmp_path_factory.mktemp("work")
    shutil.copytree(work, copy, dirs_exist_ok=True)
    with isolated_env(copy):
        yield copy, result
