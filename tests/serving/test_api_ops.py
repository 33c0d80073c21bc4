"""Access control, readiness, metrics, the models route, release-gate refusal, checksums and reload."""

from __future__ import annotations

import json
import logging
import shutil
import threading

import pytest

from serving.api.schemas import ModelsOut
from tests.serving.records import WELL

PROTECTED = [
    ("POST", "/v1/triage", "triage"),
    ("POST", "/v1/triage/batch", "triage"),
    ("POST", "/cds-services/vigil-triage", "triage"),
    ("POST", "/v1/imaging/second-read", "imaging"),
    ("POST", "/dicomweb/studies", "imaging"),
    ("POST", "/dicomweb/studies/1.2.3", "imaging"),
    ("POST", "/v1/outcomes", "outcomes"),
    ("POST", "/v1/outcomes/batch", "outcomes"),
    ("GET", "/v1/imaging/flags", "imaging"),
    ("GET", "/v1/models", None),
    ("GET", "/metrics", "admin"),
    ("POST", "/v1/admin/reload", "admin"),
]
PUBLIC = [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/cds-services")]
_TEMPLATES = {
    "/cds-services/vigil-triage": "/cds-services/{service_id}",
    "/dicomweb/studies/1.2.3": "/dicomweb/studies/{study}",
}


def test_the_access_tables_cover_every_operation_of_the_service(service):
    """A new route must be added to PROTECTED (with its scope) or PUBLIC, so that the tests below cover it."""
    spec = service.client.get("/openapi.json").json()
    operations = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    listed = {(m, _TEMPLATES.get(p, p)) for m, p, _scope in PROTECTED} | set(PUBLIC)
    assert operations == listed
    for method, path in operations - set(PUBLIC):
        assert spec["paths"][path][method.lower()].get("security"), f"{method} {path} documents no security"


@pytest.mark.parametrize(("method", "path", "scope"), PROTECTED)
def test_every_protected_route_needs_a_valid_key_with_its_scope(service, method, path, scope):
    res = service.client.request(method, path)
    assert res.status_code == 401 and res.headers["www-authenticate"].startswith("Bearer")
    assert res.headers["content-type"].startswith("application/problem+json")
    res = service.client.request(method, path, headers={"Authorization": "Bearer vgl_nottherightkey_xyz"})
    assert res.status_code == 401 and "invalid_token" in res.headers["www-authenticate"]
    if scope is not None:
        wrong = next(w for w in ("triage", "imaging", "admin") if w != scope)
        res = service.client.request(method, path, headers=service.headers(wrong))
        assert res.status_code == 403 and f'scope="{scope}"' in res.headers["www-authenticate"]


def test_a_revoked_key_is_refused_on_every_route_and_no_key_reaches_the_logs(service, caplog):
    caplog.set_level(logging.DEBUG)
    info, key = service.store.create_key("soon-revoked", ["triage", "imaging", "outcomes", "admin"])
    before = len(service.store.read_audit(limit=10_000))
    assert service.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert service.store.revoke_key(info.key_id)
    for method, path, _scope in PROTECTED:
        for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
            res = service.client.request(method, path, headers=headers)
            assert res.status_code == 401, (method, path, res.status_code)
            assert "invalid_token" in res.headers["www-authenticate"]
    for method, path in PUBLIC:
        assert service.client.request(method, path, headers={"X-API-Key": key}).status_code == 200
    assert len(service.store.read_audit(limit=10_000)) == before  # nothing was scored for a revoked key
    for presented in (key, *service.keys.values()):
        assert presented not in caplog.text and presented.split("_", 2)[2] not in caplog.text


def test_revoked_key_is_refused_and_keys_never_reach_the_logs(service, caplog):
    key = service.keys["triage"]
    caplog.set_level(logging.DEBUG)
    assert service.client.post("/v1/triage", json=WELL, headers={"X-API-Key": key}).status_code == 200
    key_id = next(k.key_id for k in service.store.list_keys() if k.client == "test-triage")
    assert service.store.revoke_key(key_id)
    res = service.client.post("/v1/triage", json=WELL, headers={"X-API-Key": key})
    assert res.status_code == 401
    secret = key.split("_", 2)[2]
    assert secret not in caplog.text and key not in caplog.text
    assert "72" not in [r.getMessage() for r in caplog.records]  # no body values logged as messages
    assert any("/v1/triage" in r.getMessage() and "rid=" in r.getMessage() for r in caplog.records)


def test_audit_records_cannot_be_changed_through_the_api(service):
    assert service.client.post("/v1/triage", json=WELL, headers=service.headers("all")).status_code == 200
    before = service.store.read_audit(limit=10_000)
    paths = service.client.get("/openapi.json").json()["paths"]
    assert not any("audit" in p for p in paths)  # no route reads, writes or deletes audit records
    for _method, path, _scope in PROTECTED:
        declared = {m.upper() for m in paths[_TEMPLATES.get(path, path)]}
        for other in {"PUT", "PATCH", "DELETE"} - declared:
            res = service.client.request(other, path, headers=service.headers("all"))
            assert res.status_code == 405, (other, path, res.status_code)
    for path in ("/v1/audit", "/v1/audit/1", "/audit"):
        for method in ("GET", "PUT", "PATCH", "DELETE", "POST"):
            assert service.client.request(method, path, headers=service.headers("all")).status_code == 404
    assert service.store.read_audit(limit=10_000) == before
    assert service.store.verify_audit_chain() == (True, None)


def test_health_readiness_and_models(service):
    assert service.client.get("/healthz").json() == {"status": "ok"}
    ready = service.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    res = service.client.get("/v1/models", headers=service.headers("triage"))
    models = ModelsOut.model_validate(res.json()).models
    assert {m.task for m in models} == {"triage", "imaging"}
    for m in models:
        assert m.loaded and m.release_gate["status"] == "pass" and m.card["decision_support_statement"]


def test_metrics_count_requests_and_predictions(service):
    service.client.post("/v1/triage", json=WELL, headers=service.headers("triage"))
    text = service.client.get("/metrics", headers=service.headers("admin")).text
    assert 'vigil_http_requests_total{method="POST",route="/v1/triage",status="200"} 1.0' in text
    assert 'vigil_predictions_total{model_version="7",task="triage"} 1.0' in text
    assert 'vigil_model_loaded{task="imaging"} 1.0' in text


def test_openapi_documents_every_route(service):
    spec = service.client.get("/openapi.json").json()
    for _method, path, _scope in PROTECTED:
        assert _TEMPLATES.get(path, path) in spec["paths"]
    for path in ("/healthz", "/readyz", "/cds-services"):
        assert path in spec["paths"]
    body = spec["paths"]["/v1/triage"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["age_years", "sex"] and body["additionalProperties"] is False
    assert body["properties"]["heart_rate"]["maximum"] == 300


def _folder_without_release(src, dst, drop: str):
    shutil.copytree(src, dst)
    (dst / f"{drop}.release.json").unlink()
    return dst


def test_model_without_a_release_record_is_refused(service_factory, tmp_path, model_folder):
    folder = _folder_without_release(model_folder, tmp_path / "models", "vigil-triage")
    with service_factory(tmp_path, folder) as svc:
        res = svc.client.post("/v1/triage", json=WELL, headers=svc.headers("triage"))
        assert res.status_code == 503 and "release-gate" in res.json()["detail"]
        ready = svc.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["model:imaging"] == "ok"


def test_override_serves_an_unreleased_model_flagged_and_logged(service_factory, tmp_path, model_folder, caplog):
    folder = _folder_without_release(model_folder, tmp_path / "models", "vigil-triage")
    caplog.set_level(logging.WARNING)
    with service_factory(tmp_path, folder, allow_unreleased=True) as svc:
        body = svc.client.post("/v1/triage", json=WELL, headers=svc.headers("triage")).json()
        assert body["model"]["unreleased_override"] is True and body["flags"]["unreleased_model"] is True
        assert body["model"]["release_status"] == "not run"
        audit = svc.store.read_audit(limit=10)[-1]
        assert "UNRELEASED" in audit.model_version
    assert any("OVERRIDE" in r.getMessage() for r in caplog.records)


def test_a_tampered_onnx_file_is_refused_by_checksum(service_factory, tmp_path, model_folder):
    folder = tmp_path / "models"
    shutil.copytree(model_folder, folder)
    with open(folder / "vigil-cxr.onnx", "ab") as handle:
        handle.write(b"\0")
    with service_factory(tmp_path, folder) as svc:
        assert svc.client.get("/readyz").json()["checks"]["model:imaging"] == "unavailable"  # no reason: public
        (imaging,) = [
            m for m in svc.client.get("/v1/models", headers=svc.headers()).json()["models"] if m["task"] == "imaging"
        ]
        assert "checksum mismatch" in imaging["error"]
        assert svc.client.post("/v1/triage", json=WELL, headers=svc.headers("triage")).status_code == 200


def test_reload_swaps_versions_without_failing_requests(service_factory, tmp_path, model_folder):
    folder = tmp_path / "models"
    shutil.copytree(model_folder, folder)
    record_path = folder / "vigil-triage.release.json"
    with service_factory(tmp_path, folder) as svc:
        statuses: list[int] = []
        versions: set[str] = set()
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                res = svc.client.post("/v1/triage", json=WELL, headers=svc.headers("triage"))
                statuses.append(res.status_code)
                if res.status_code == 200:
                    versions.add(res.json()["model"]["version"])

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        outcomes = []
        for t in threads:
            t.start()
        try:
            for version in ("8", "9", "10"):
                record = json.loads(record_path.read_text())
                record_path.write_text(json.dumps({**record, "version": version}))
                res = svc.client.post("/v1/admin/reload", headers=svc.headers("admin"))
                outcomes.append(next(r for r in res.json()["reloads"] if r["task"] == "triage"))
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert outcomes == [
            {"task": "triage", "status": "loaded", "version": v, "reason": None} for v in ("8", "9", "10")
        ]
        assert statuses and set(statuses) == {200}
        assert "10" in versions
        again = svc.client.post("/v1/admin/reload", headers=svc.headers("admin")).json()["reloads"]
        assert next(r for r in again if r["task"] == "triage")["status"] == "unchanged"


def test_failed_reload_keeps_serving_the_current_model(service_factory, tmp_path, model_folder):
    folder = tmp_path / "models"
    shutil.copytree(model_folder, folder)
    with service_factory(tmp_path, folder) as svc:
        record = json.loads((folder / "vigil-triage.release.json").read_text())
        (folder / "vigil-triage.release.json").write_text(
            json.dumps({**record, "version": "99", "onnx_sha256": "0" * 64})
        )
        res = svc.client.post("/v1/admin/reload", headers=svc.headers("admin")).json()["reloads"]
        triage = next(r for r in res if r["task"] == "triage")
        assert triage["status"] == "failed" and "checksum" in triage["reason"] and triage["version"] == "7"
        body = svc.client.post("/v1/triage", json=WELL, headers=svc.headers("triage")).json()
        assert body["model"]["version"] == "7"
