"""Findings of the HTTP security review (issue 14): bounded metric labels, deeply nested JSON, client disconnects,
what the public readiness route says, repeated key headers, security headers, slash redirects and trusted hosts."""

from __future__ import annotations

import logging
import re
import uuid

import pytest

from models.errors import ConfigError
from serving.api.json_body import MAX_JSON_DEPTH, nesting_exceeds
from serving.api.metrics import METHODS, STATUSES, UNMATCHED, method_label, route_label, status_label
from serving.settings import ServingSettings, load_settings
from tests.net import free_port
from tests.serving.asgi import post_scope
from tests.serving.records import WELL

JSON_ROUTES = ["/v1/triage", "/v1/triage/batch", "/cds-services/vigil-triage"]
_SERIES = re.compile(r"^(vigil_http_[a-z_]+?)(?:_bucket|_count|_sum|_created)?\{(.*)\} ")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _series(text: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for line in text.splitlines():
        match = _SERIES.match(line)
        if match:
            labels = {k: v for k, v in _LABEL.findall(match[2]) if k != "le"}
            out.append((match[1], labels))
    return out


# ------------------------------------------------------------------------------ 1. metric labels are bounded
def test_metric_labels_stay_in_fixed_sets_whatever_methods_and_paths_are_sent(service):
    marker = "ZQXJ"
    for i in range(60):
        method = f"{marker}{i}" + ("A" * 15_000 if i % 10 == 0 else "")
        assert service.client.request(method, "/healthz").status_code == 405
        assert service.client.request(method, f"/{marker}-{uuid.uuid4().hex}").status_code in (404, 405)
        assert service.client.get(f"/v1/{marker}/{uuid.uuid4().hex}").status_code == 404
    text = service.client.get("/metrics", headers=service.headers("admin")).text
    assert marker.lower() not in text.lower()
    series = _series(text)
    templates = {*service.client.get("/openapi.json").json()["paths"], "/openapi.json", "/metrics"}
    requests = {tuple(sorted(labels.items())) for name, labels in series if name == "vigil_http_requests_total"}
    assert 0 < len(requests) <= 6, requests
    for name, labels in series:
        assert labels.get("method", "GET") in METHODS | {"other"}, (name, labels)
        assert labels["route"] in templates | {UNMATCHED}, (name, labels)
        assert labels.get("status", "200") in {str(s) for s in STATUSES} | {"1xx", "2xx", "3xx", "4xx", "5xx", "other"}
    assert ("method", "other") in {item for labels in requests for item in labels}
    assert ("route", "/healthz") in {item for labels in requests for item in labels}


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("GET", "GET"),
        ("PATCH", "PATCH"),
        ("get", "other"),
        ("TRACE", "other"),
        ("X" * 15_000, "other"),
        (None, "other"),
    ],
)
def test_method_label(value, label):
    assert method_label(value) == label


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (200, "200"),
        (422, "422"),
        (418, "4xx"),
        (299, "2xx"),
        (599, "5xx"),
        (99, "other"),
        (600, "other"),
        ("200", "other"),
    ],
)
def test_status_label(value, label):
    assert status_label(value) == label


def test_route_label_reads_only_a_route_template():
    class Route:
        path = "/cds-services/{service_id}"

    assert route_label(Route()) == "/cds-services/{service_id}"
    assert route_label(None) == UNMATCHED and route_label(object()) == UNMATCHED


# ------------------------------------------------------------------------------ 2. deeply nested JSON, disconnects
@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 1000 + b"]" * 1000,
        b"[" * 1000,
        b'{"a":' * 1000 + b"1" + b"}" * 1000,
        b'{"records": [{"age_years": 30, "sex": "male", "x": ' + b"[" * 200 + b"]" * 200 + b"}]}",
    ],
    ids=["array-1000", "unclosed-1000", "object-1000", "record-200"],
)
def test_deeply_nested_json_is_a_422_naming_the_body(service, caplog, path, body):
    caplog.set_level(logging.INFO)
    res = service.client.post(
        path, content=body, headers=service.headers("triage", **{"Content-Type": "application/json"})
    )
    assert res.status_code == 422, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    problem = res.json()
    assert problem["errors"][0]["field"] == "body" and f"deeper than {MAX_JSON_DEPTH}" in problem["detail"]
    assert "Traceback" not in res.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_nesting_limit_admits_exactly_its_depth():
    def nest(depth: int) -> object:
        value: object = 1
        for i in range(depth):
            value = [value] if i % 2 else {"k": value}
        return value

    assert not nesting_exceeds(nest(MAX_JSON_DEPTH), MAX_JSON_DEPTH)
    assert nesting_exceeds(nest(MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH)
    assert not nesting_exceeds(1, 0) and not nesting_exceeds({"a": [1, 2], "b": {}}, 2)
    assert nesting_exceeds(nest(100_000), MAX_JSON_DEPTH)  # iterative: no RecursionError of its own


def test_an_ordinary_record_still_passes_the_depth_check(service):
    res = service.client.post("/v1/triage", json=WELL, headers=service.headers("triage"))
    assert res.status_code == 200, res.text


@pytest.mark.parametrize(
    ("path", "content_type", "scope_name"),
    [("/v1/triage", "application/json", "triage"), ("/v1/imaging/second-read", "application/dicom", "imaging")],
)
def test_a_client_that_disconnects_mid_body_is_logged_at_info_not_error(
    service, caplog, path, content_type, scope_name
):
    """Drives the app at the ASGI level (TestClient always sends the whole body): part of a body, then
    ``http.disconnect``, as uvicorn delivers a client that went away."""
    messages = [{"type": "http.request", "body": b'{"age_years": 3', "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = post_scope(path, content_type, service.keys[scope_name])
    caplog.set_level(logging.INFO)
    service.client.portal.call(service.client.app, scope, receive, send)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    disconnected = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert disconnected and all(r.levelno == logging.INFO for r in disconnected)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [400]


# ------------------------------------------------------------------------------ 3. public readiness says little
def test_readyz_names_components_but_not_the_database_user_host_or_error(tmp_path, model_folder, caplog):
    from fastapi.testclient import TestClient

    from serving.api.app import create_app
    from serving.store.database import Store

    port = free_port()  # nothing listens there: the store is down
    cfg = ServingSettings(
        work_dir=tmp_path,
        model_source="local",
        model_dir=model_folder,
        threads=1,
        audit_url=f"postgresql+psycopg://vigil_reader@127.0.0.1:{port}/vigil_audit",
    )
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(cfg, store=Store(cfg.store_url())), raise_server_exceptions=False) as client:
        res = client.get("/readyz")
    assert res.status_code == 503
    assert res.json() == {
        "status": "not ready",
        "checks": {"model:triage": "ok", "model:imaging": "ok", "audit_store": "unavailable"},
    }
    for secret in ("vigil_reader", "127.0.0.1", str(port), "vigil_audit", "postgresql", "refused"):
        assert secret not in res.text
    logged = [r.getMessage() for r in caplog.records if "not ready: audit_store" in r.getMessage()]
    assert logged and "vigil_reader" in logged[0] and str(port) in logged[0]  # the operator still learns why


def test_readyz_reports_the_dicom_node_by_its_heartbeat(tmp_path, model_folder, caplog):
    """With the node run by `vigil serve` (heartbeat set), /readyz says whether its port is being served."""
    import os
    import time

    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    heartbeat = tmp_path / "dicom-node.heartbeat"
    cfg = ServingSettings(
        work_dir=tmp_path, model_source="local", model_dir=model_folder, threads=1, dicom_node_heartbeat=heartbeat
    )
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(cfg), raise_server_exceptions=False) as client:
        missing = client.get("/readyz")
        heartbeat.write_text("123\n")
        fresh = client.get("/readyz")
        old = time.time() - 30
        os.utime(heartbeat, (old, old))
        stale = client.get("/readyz")
    assert (missing.status_code, missing.json()["checks"]["dicom_node"]) == (503, "unavailable")
    assert (fresh.status_code, fresh.json()["checks"]["dicom_node"]) == (200, "ok")
    assert (stale.status_code, stale.json()["checks"]["dicom_node"]) == (503, "unavailable")
    assert str(tmp_path) not in missing.text + stale.text  # the reason goes to the log only
    reasons = [r.getMessage() for r in caplog.records if "not ready: dicom_node" in r.getMessage()]
    assert len(reasons) == 2 and "not running" in reasons[0] and "30 s old" in reasons[1]


def test_readyz_does_not_mention_a_dicom_node_it_does_not_run(tmp_path, model_folder):
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    cfg = ServingSettings(work_dir=tmp_path, model_source="local", model_dir=model_folder, threads=1)
    with TestClient(create_app(cfg)) as client:
        assert "dicom_node" not in client.get("/readyz").json()["checks"]


def test_readyz_gives_no_reason_for_a_missing_model_but_the_log_and_v1_models_do(
    service_factory, tmp_path, model_folder, caplog
):
    import shutil

    folder = tmp_path / "models"
    shutil.copytree(model_folder, folder)
    (folder / "vigil-cxr.release.json").unlink()
    caplog.set_level(logging.WARNING)
    with service_factory(tmp_path, folder) as svc:
        ready = svc.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"model:triage": "ok", "model:imaging": "unavailable", "audit_store": "ok"}
        (imaging,) = [
            m for m in svc.client.get("/v1/models", headers=svc.headers()).json()["models"] if m["task"] == "imaging"
        ]
        assert "release-gate" in imaging["error"]
    assert any(
        "not ready: model:imaging" in r.getMessage() and "release-gate" in r.getMessage() for r in caplog.records
    )


# ------------------------------------------------------------------------------ 4. key headers, response headers
@pytest.mark.parametrize("which", ["X-API-Key", "Authorization"])
@pytest.mark.parametrize("second", ["same", "other"])
def test_a_repeated_key_header_is_refused(service, which, second):
    key = service.keys["triage"]
    value = (lambda k: f"Bearer {k}") if which == "Authorization" else (lambda k: k)
    other = key if second == "same" else "vgl_nottherightkey_xyz"
    for pair in ([value(key), value(other)], [value(other), value(key)]):
        res = service.client.post("/v1/triage", json=WELL, headers=[(which, pair[0]), (which, pair[1])])
        assert res.status_code == 401, res.text
        assert 'error="invalid_request"' in res.headers["www-authenticate"]
        assert which.lower() in res.json()["detail"] and key not in res.text


def test_one_key_in_each_header_still_works(service):
    key = service.keys["triage"]
    res = service.client.post("/v1/triage", json=WELL, headers={"Authorization": f"Bearer {key}", "X-API-Key": key})
    assert res.status_code == 200, res.text


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/healthz", {}, 200),
        ("GET", "/readyz", {}, 200),
        ("POST", "/v1/triage", {"json": WELL}, 200),
        ("POST", "/v1/triage", {"json": WELL, "headers": {}}, 401),
        ("POST", "/v1/triage", {"content": b"{", "headers_json": True}, 422),
        ("GET", "/no/such/route", {}, 404),
        ("PUT", "/healthz", {}, 405),
        ("POST", "/v1/triage", {"content": b"x" * 2_000_000, "headers_json": True}, 413),
        ("GET", "/openapi.json", {}, 200),
    ],
)
def test_every_response_has_nosniff_and_no_server_banner(service, method, path, kwargs, status):
    kwargs = dict(kwargs)
    headers = service.headers(
        "all", **({"Content-Type": "application/json"} if kwargs.pop("headers_json", False) else {})
    )
    headers = kwargs.pop("headers", headers)
    res = service.client.request(method, path, headers=headers, **kwargs)
    assert res.status_code == status, res.text
    assert res.headers["x-content-type-options"] == "nosniff"
    assert "server" not in res.headers


def test_vigil_serve_runs_uvicorn_without_its_server_header(monkeypatch):
    import uvicorn

    from workflows import serve

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(serve, "configure_logging", lambda **kwargs: None)
    monkeypatch.setenv("VIGIL_THREADS", "1")
    serve.serve(host="127.0.0.1", port=free_port(), workers=1)
    assert calls and calls[0]["server_header"] is False


# ------------------------------------------------------------------------------ 5. no slash redirects, trusted hosts
@pytest.mark.parametrize("path", ["/v1/triage/", "/healthz/", "/cds-services/"])
def test_a_trailing_slash_is_a_404_not_a_redirect(service, path):
    method = "POST" if path.startswith("/v1/") else "GET"
    res = service.client.request(method, path, headers={"Host": "testserver"}, follow_redirects=False)
    assert res.status_code == 404 and "location" not in res.headers


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::2]"])
def test_an_untrusted_host_is_refused_before_routing(service, host):
    res = service.client.post("/v1/triage/", json=WELL, headers={"Host": host}, follow_redirects=False)
    assert res.status_code == 400 and "location" not in res.headers and "evil" not in res.text
    assert res.headers["x-content-type-options"] == "nosniff" and res.headers["x-request-id"]


@pytest.mark.parametrize("host", ["testserver", "localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"])
def test_the_default_trusted_hosts_are_answered(service, host):
    assert service.client.get("/healthz", headers={"Host": host}).status_code == 200


def test_trusted_hosts_setting_admits_the_configured_names_only(service_factory, tmp_path, model_folder):
    with service_factory(tmp_path, model_folder, trusted_hosts="vigil.example.org, *.ed.example.org,testserver") as svc:
        ok = ["vigil.example.org", "a.ed.example.org:443", "testserver"]
        refused = ["ed.example.org", "localhost", "127.0.0.1", "vigil.example.org.evil.example"]
        assert [svc.client.get("/healthz", headers={"Host": h}).status_code for h in ok] == [200] * len(ok)
        assert [svc.client.get("/healthz", headers={"Host": h}).status_code for h in refused] == [400] * len(refused)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "at least one host"),
        (" , ", "at least one host"),
        ("a.*.example.org", "wildcard"),
        ("localhost:8000", "without scheme, port or path"),
        ("https://vigil.example.org", "without scheme"),
        ("vigil.example.org/v1", "without scheme, port or path"),
    ],
)
def test_a_malformed_trusted_hosts_setting_is_refused_naming_it(monkeypatch, value, message):
    monkeypatch.setenv("VIGIL_TRUSTED_HOSTS", value)
    with pytest.raises(ConfigError, match=rf"VIGIL_TRUSTED_HOSTS.*{message}"):
        load_settings()


def test_trusted_hosts_setting_from_the_environment(monkeypatch):
    monkeypatch.setenv("VIGIL_TRUSTED_HOSTS", "Vigil.Example.org,*.ed.example.org,[::1]")
    assert load_settings().trusted_host_list() == ["vigil.example.org", "*.ed.example.org", "[::1]"]


def test_interactive_docs_are_off_unless_enabled(service, service_factory, tmp_path, model_folder):
    """Issue 14 finding 16: /docs and /redoc load Swagger UI and ReDoc from a public CDN; they are served only with
    VIGIL_DOCS=true. The OpenAPI description itself is always served."""
    assert service.client.get("/openapi.json").status_code == 200
    assert service.client.get("/docs").status_code == 404 and service.client.get("/redoc").status_code == 404
    (tmp_path / "docs").mkdir()
    with service_factory(tmp_path / "docs", model_folder, docs=True) as svc:
        page = svc.client.get("/docs")
        assert page.status_code == 200 and "swagger-ui" in page.text
