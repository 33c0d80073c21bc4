"""`vigil serve` killed (SIGKILL) while it is answering: no prediction that was returned lacks its audit record, the
hash chain still verifies, and the restarted service appends to the same chain.

The DICOM node's side of the same fault (a receiver killed after acknowledging) is tested in
tests/dicom_node/test_node_restart.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from serving.store.database import Store
from tests.net import free_port
from tests.serving.records import WELL

pytestmark = pytest.mark.slow  # kills a serving process under load

REPO = Path(__file__).resolve().parents[2]


def _start(work: Path, model_folder: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "VIGIL_WORK_DIR": str(work), "VIGIL_THREADS": "1"}
    with open(work / f"serve-{port}.log", "w") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vigil.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                "1",
                "--model-dir",
                str(model_folder),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_ready(base: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"service not ready: {log.read_text()[-3000:]}")


#: Answers received before the service is killed: the kill lands under load, with requests in flight.
LOAD_BEFORE_KILL = 40


def _hammer(
    base: str,
    headers: dict[str, str],
    stop: threading.Event,
    returned: list[str],
    lock: threading.Lock,
    loaded: threading.Event,
) -> None:
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        while not stop.is_set():
            try:
                res = client.post("/v1/triage", json=WELL)
            except httpx.TransportError:
                return  # the server is gone
            assert res.status_code == 200, res.text
            with lock:
                returned.append(res.json()["request_id"])
                if len(returned) >= LOAD_BEFORE_KILL:
                    loaded.set()


def test_killed_during_load_loses_no_audit_record_and_the_chain_continues(model_folder, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'serving.db'}")
    store.create_schema()
    key = store.create_key("kill-test", ["triage"])[1]
    headers = {"Authorization": f"Bearer {key}"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, model_folder, port)
    returned: list[str] = []
    lock, stop, loaded = threading.Lock(), threading.Event(), threading.Event()
    try:
        _wait_ready(base, proc, tmp_path / f"serve-{port}.log")
        workers = [
            threading.Thread(target=_hammer, args=(base, headers, stop, returned, lock, loaded)) for _ in range(4)
        ]
        for w in workers:
            w.start()
        assert loaded.wait(timeout=120), f"only {len(returned)} answers before the deadline"
        os.killpg(proc.pid, signal.SIGKILL)  # mid-load: requests are in flight
        proc.wait(timeout=30)
        stop.set()
        for w in workers:
            w.join(timeout=30)
    finally:
        stop.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert len(returned) >= LOAD_BEFORE_KILL, "too little load reached the service before the kill"
    audited = [r.request_id for r in store.read_audit(limit=10_000)]
    assert set(returned) <= set(audited)  # every prediction a client received was audited before it was sent
    assert len(audited) - len(returned) <= 4  # at most the requests in flight: audited, never answered
    assert store.verify_audit_chain() == (True, None)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, model_folder, port)
    try:
        _wait_ready(base, proc, tmp_path / f"serve-{port}.log")
        for _ in range(5):
            assert httpx.post(f"{base}/v1/triage", json=WELL, headers=headers, timeout=30).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=40)
    assert len(store.read_audit(limit=10_000)) == len(audited) + 5
    assert store.verify_audit_chain() == (True, None)
