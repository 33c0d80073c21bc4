"""`vigil serve` as users run it: the MLflow registry locator, the key commands, a real uvicorn process with
several workers, and serving without torch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from serving.settings import ServingSettings
from tests.net import free_port
from tests.serving.records import WELL
from vigil.cli import app as cli

pytestmark = pytest.mark.slow  # starts vigil serve as a process

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry_copy(registered, tmp_path) -> Path:
    """A private copy of the registry (its artefacts stay where the fixture logged them)."""
    shutil.copy(registered.work / "mlflow.db", tmp_path / "mlflow.db")
    return tmp_path


def _client(work: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{work / 'mlflow.db'}")


def _release(work: Path, name: str, version: str, status: str = "pass") -> None:
    """What `vigil release` writes on a pass (its own tests cover the real gate)."""
    client = _client(work)
    client.set_model_version_tag(name, version, "release_gate.status", status)
    client.set_model_version_tag(name, version, "release_gate.policy_version", "test")
    if status == "pass":
        client.set_registered_model_alias(name, "production", version)


def _registry_service(service_factory, work: Path, **settings):
    from serving.api.app import create_app
    from serving.store.database import Store
    from workflows.registry_locator import build_locator

    cfg = ServingSettings(work_dir=work, threads=1, **settings)
    store = Store(cfg.store_url())
    store.create_schema()
    _info, key = store.create_key("registry-test", ["triage", "imaging", "admin"])
    from fastapi.testclient import TestClient

    return TestClient(create_app(cfg, locator=build_locator(cfg), store=store)), {"Authorization": f"Bearer {key}"}


def _model_error(client, headers, task: str) -> str:
    """Why ``task`` has no model: from GET /v1/models (the public /readyz says only "unavailable")."""
    assert client.get("/readyz").json()["checks"][f"model:{task}"] == "unavailable"
    (model,) = [m for m in client.get("/v1/models", headers=headers).json()["models"] if m["task"] == task]
    return model["error"]


def test_registry_candidates_are_not_served(registry_copy, service_factory):
    client, headers = _registry_service(service_factory, registry_copy)
    with client:
        assert "registry has no model version 'vigil-triage@production'" in _model_error(client, headers, "triage")
        assert client.post("/v1/triage", json=WELL, headers=headers).status_code == 503


def test_released_registry_model_is_served_and_a_failed_gate_is_refused(registry_copy, registered, service_factory):
    _release(registry_copy, "vigil-triage", registered.triage_version)
    _release(registry_copy, "vigil-cxr", registered.imaging_version, status="fail")
    _client(registry_copy).set_registered_model_alias("vigil-cxr", "production", registered.imaging_version)
    client, headers = _registry_service(service_factory, registry_copy)
    with client:
        body = client.post("/v1/triage", json=WELL, headers=headers).json()
        assert body["model"]["version"] == registered.triage_version and body["model"]["release_status"] == "pass"
        assert "no passing release-gate record (status 'fail')" in _model_error(client, headers, "imaging")


def test_registry_checksum_is_enforced(registry_copy, registered, service_factory):
    _release(registry_copy, "vigil-triage", registered.triage_version)
    _client(registry_copy).set_model_version_tag("vigil-triage", registered.triage_version, "onnx_sha256", "0" * 64)
    client, headers = _registry_service(service_factory, registry_copy)
    with client:
        assert "checksum mismatch" in _model_error(client, headers, "triage")


def test_key_commands(tmp_path):
    env = {"VIGIL_WORK_DIR": str(tmp_path)}
    res = CliRunner().invoke(cli, ["keys", "create", "--client", "ed-north", "--scope", "triage"], env=env)
    assert res.exit_code == 0, res.output
    key_id = json.loads(res.output.splitlines()[0])["key_id"]
    key = res.output.splitlines()[1].rsplit(" ", 1)[1]
    assert key.startswith("vgl_")
    listed = CliRunner().invoke(cli, ["keys", "list"], env=env).output
    assert key_id in listed and key.split("_", 2)[2] not in listed
    assert CliRunner().invoke(cli, ["keys", "revoke", key_id], env=env).exit_code == 0
    assert CliRunner().invoke(cli, ["keys", "revoke", key_id], env=env).exit_code == 2
    bad = CliRunner().invoke(cli, ["keys", "create", "--client", "x", "--scope", "root"], env=env)
    assert bad.exit_code == 2 and "scopes" in bad.output


def test_serving_imports_without_torch():
    code = (
        "import sys; import serving.api.app, serving.api.imaging, serving.fhir.response, serving.fhir.record; "
        "import workflows.serve; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


def test_vigil_serve_runs_two_workers_and_stops_cleanly(model_folder, tmp_path):
    from serving.store.database import Store

    store = Store(f"sqlite:///{tmp_path / 'serving.db'}")
    store.create_schema()
    key = store.create_key("proc-test", ["triage", "admin"])[1]
    port = free_port()
    env = {**os.environ, "VIGIL_WORK_DIR": str(tmp_path)}
    env.pop("VIGIL_THREADS", None)
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vigil.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                "2",
                "--model-dir",
                str(model_folder),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert ready is not None and ready.status_code in (200, 503), log_path.read_text()[-3000:]
        headers = {"Authorization": f"Bearer {key}"}
        pids = set()
        for _ in range(12):
            res = httpx.post(f"{base}/v1/triage", json=WELL, headers=headers, timeout=30)
            assert res.status_code == 200, res.text
        metrics = httpx.get(f"{base}/metrics", headers=headers, timeout=10).text
        assert 'vigil_predictions_total{model_version="7",task="triage"} 12.0' in metrics  # summed over workers
        children = (
            Path(f"/proc/{proc.pid}/task").exists()
            and subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        )
        pids.update(children or [])
        assert len(pids) >= 2  # uvicorn's supervisor with two worker processes
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    text = log_path.read_text()
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert f"2 worker(s), {threads} onnxruntime thread(s) each" in text
    assert key not in text and key.split("_", 2)[2] not in text
    assert proc.returncode in (0, -signal.SIGTERM)
    assert len(store.read_audit(limit=100)) == 12


# ------------------------------------------------------------------ the registry unreachable: the verified cache
def _closed_port_uri() -> str:
    """An MLflow tracking URI on loopback where nothing listens: what a registry that is down looks like."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def registry_down(monkeypatch):
    """Point the registry at a closed loopback port, without MLflow's minutes of HTTP retries."""

    def down() -> str:
        uri = _closed_port_uri()
        monkeypatch.setenv("VIGIL_MLFLOW_URI", uri)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        return uri

    return down


def _cache_record(work: Path, name: str = "vigil-triage") -> Path:
    return work / "model-cache" / f"{name}@@production" / f"{name}.release.json"


def test_unreachable_registry_serves_the_verified_cache_of_the_last_release(
    registry_copy, registered, service_factory, registry_down, caplog
):
    _release(registry_copy, "vigil-triage", registered.triage_version)
    client, headers = _registry_service(service_factory, registry_copy)
    with client:  # registry up: served from it, and cached
        first = client.post("/v1/triage", json=WELL, headers=headers).json()
    record = json.loads(_cache_record(registry_copy).read_text())
    assert record["version"] == registered.triage_version and record["release_gate"]["status"] == "pass"
    assert not _cache_record(registry_copy, "vigil-cxr").exists()  # never released: never cached

    uri = registry_down()
    started = time.monotonic()
    client, headers = _registry_service(service_factory, registry_copy)
    with caplog.at_level("WARNING"), client:
        res = client.post("/v1/triage", json=WELL, headers=headers)
        assert res.status_code == 200, res.text
        assert res.json()["model"] == first["model"]  # same version and sha256 as the registry served
        assert res.json()["acuity"] == first["acuity"]
        (triage,) = [m for m in client.get("/v1/models", headers=headers).json()["models"] if m["task"] == "triage"]
        assert triage["origin"].startswith("verified local cache") and "registry unreachable" in triage["origin"]
        imaging = _model_error(client, headers, "imaging")
        assert "unreachable" in imaging and "no verified local cache" in imaging  # never cached, so refused
    assert time.monotonic() - started < 60
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(uri in m and "serving the cached release of vigil-triage@production" in m for m in warned), warned


def test_unreachable_registry_without_a_cache_refuses_clearly(
    registry_copy, registered, service_factory, registry_down
):
    _release(registry_copy, "vigil-triage", registered.triage_version)
    uri = registry_down()
    client, headers = _registry_service(service_factory, registry_copy)
    with client:
        res = client.post("/v1/triage", json=WELL, headers=headers)
        assert res.status_code == 503
        detail = res.json()["detail"]
        assert uri in detail and "unreachable" in detail and "no verified local cache" in detail
        assert client.get("/readyz").status_code == 503


def test_a_corrupted_cache_is_refused_by_its_checksum(registry_copy, registered, service_factory, registry_down):
    _release(registry_copy, "vigil-triage", registered.triage_version)
    client, _headers = _registry_service(service_factory, registry_copy)
    with client:
        pass
    cached = _cache_record(registry_copy).with_suffix("").with_suffix(".onnx")
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    registry_down()
    client, headers = _registry_service(service_factory, registry_copy)
    with client:
        assert "checksum mismatch" in _model_error(client, headers, "triage")
        assert client.post("/v1/triage", json=WELL, headers=headers).status_code == 503


def test_a_registry_that_answers_is_obeyed_over_the_cache(registry_copy, registered, service_factory):
    _release(registry_copy, "vigil-triage", registered.triage_version)
    client, _headers = _registry_service(service_factory, registry_copy)
    with client:
        pass
    assert _cache_record(registry_copy).exists()
    _client(registry_copy).delete_registered_model_alias("vigil-triage", "production")  # un-released
    client, headers = _registry_service(service_factory, registry_copy)
    with client:
        assert client.post("/v1/triage", json=WELL, headers=headers).status_code == 503
        assert "registry has no model version" in _model_error(client, headers, "triage")


def test_reload_while_the_registry_is_down_keeps_the_model(registry_copy, registered, service_factory, registry_down):
    _release(registry_copy, "vigil-triage", registered.triage_version)
    client, headers = _registry_service(service_factory, registry_copy)
    with client:
        registry_down()
        (outcome,) = [
            r for r in client.post("/v1/admin/reload", headers=headers).json()["reloads"] if r["task"] == "triage"
        ]
        assert outcome == {
            "task": "triage",
            "status": "unchanged",
            "version": registered.triage_version,
            "reason": None,
        }  # the cache holds the version already served
        assert client.post("/v1/triage", json=WELL, headers=headers).status_code == 200
