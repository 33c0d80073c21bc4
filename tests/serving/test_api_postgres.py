"""The service with its audit store on the PostgreSQL server at 127.0.0.1, including the server going away.

The database "going away" is a TCP relay in front of PostgreSQL that the test stops and starts: the service
sees exactly what a stopped database looks like (refused and reset connections).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from serving.store.database import Store
from tests.postgres import PG_URL
from tests.serving.records import WELL

pytestmark = pytest.mark.slow  # stops PostgreSQL connections under load


class Relay:
    """A loopback TCP relay to PostgreSQL that can be cut (every connection reset) and restored."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.conns.clear()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def pg_schema():
    url = make_url(PG_URL)
    try:
        with socket.create_connection((url.host, url.port or 5432), timeout=2):
            pass
    except OSError:
        pytest.skip(f"PostgreSQL not reachable at {url.host}:{url.port} (set VIGIL_TEST_PG_URL)")
    schema = f"vigil_test_{uuid.uuid4().hex}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url, schema
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_postgres_audit_store_refuses_while_down_and_recovers(pg_schema, tmp_path, model_folder, service_factory):
    url, schema = pg_schema
    relay = Relay(url.host, url.port or 5432)
    try:
        relayed = (
            url.set(host="127.0.0.1", port=relay.port)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        with service_factory(tmp_path, model_folder, audit_url=relayed) as svc:
            assert isinstance(svc.store, Store) and svc.store.kind == "PostgreSQL"
            ok = svc.client.post("/v1/triage", json=WELL, headers=svc.headers("triage"))
            assert ok.status_code == 200
            relay.cut()
            down = svc.client.post("/v1/triage", json=WELL, headers=svc.headers("triage"))
            assert down.status_code == 503 and "acuity" not in down.text
            assert svc.client.get("/readyz").status_code == 503
            relay.restore()
            again = svc.client.post("/v1/triage", json=WELL, headers=svc.headers("triage"))
            assert again.status_code == 200, again.text
            assert svc.client.get("/readyz").status_code == 200
            ids = [r.request_id for r in svc.store.read_audit(limit=10)]
            assert ids == [ok.json()["request_id"], again.json()["request_id"]]
            assert svc.store.verify_audit_chain() == (True, None)
    finally:
        relay.close()


def _hammer(svc, stop, results, lock) -> None:
    """Post triage records until ``stop``; keep (status, request id, body has a result) of each response."""
    while not stop.is_set():
        res = svc.client.post("/v1/triage", json=WELL, headers=svc.headers("triage"))
        body = res.json()
        with lock:
            results.append((time.monotonic(), res.status_code, body.get("request_id"), "acuity" in body))


def _wait_for(results, lock, condition, timeout_s: float = 60.0) -> None:
    """Until ``condition(results)`` holds (what the hammering threads have seen), or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with lock:
            if condition(results):
                return
        time.sleep(0.01)
    raise AssertionError(f"not reached in {timeout_s} s; statuses seen: {sorted({s for _t, s, _i, _b in results})}")


def test_database_stopped_mid_load_returns_no_unaudited_prediction(pg_schema, tmp_path, model_folder, service_factory):
    url, schema = pg_schema
    relay = Relay(url.host, url.port or 5432)
    results: list[tuple[float, int, str | None, bool]] = []
    lock, stop = threading.Lock(), threading.Event()
    try:
        relayed = (
            url.set(host="127.0.0.1", port=relay.port)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        with service_factory(tmp_path, model_folder, audit_url=relayed) as svc:
            workers = [threading.Thread(target=_hammer, args=(svc, stop, results, lock)) for _ in range(4)]
            for w in workers:
                w.start()
            _wait_for(results, lock, lambda r: sum(s == 200 for _t, s, _i, _b in r) >= 20)  # under load
            cut_at = time.monotonic()
            relay.cut()
            _wait_for(results, lock, lambda r: any(s == 503 and t > cut_at for t, s, _i, _b in r))
            restored_at = time.monotonic()
            relay.restore()
            _wait_for(results, lock, lambda r: any(s == 200 and t > restored_at + 1.0 for t, s, _i, _b in r))
            stop.set()
            for w in workers:
                w.join(timeout=60)
            audited = {r.request_id for r in svc.store.read_audit(limit=10_000)}
            assert svc.store.verify_audit_chain() == (True, None)
    finally:
        stop.set()
        relay.close()
    statuses = {status for _t, status, _id, _r in results}
    assert statuses <= {200, 503}, statuses
    served = [(t, rid) for t, status, rid, has_result in results if status == 200]
    assert all(has_result == (status == 200) for _t, status, _id, has_result in results)  # a 503 carries no result
    assert {rid for _t, rid in served} <= audited  # every prediction returned was audited first
    assert any(t < cut_at for t, _ in served) and any(t > restored_at + 1.0 for t, _ in served)  # it recovered
    assert any(status == 503 for t, status, _id, _r in results if cut_at < t < restored_at)
