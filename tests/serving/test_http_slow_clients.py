"""Issue 14 finding 4: slow HTTP clients are timed out.

Partial-header and silent sockets are closed by the server's header deadline (:class:`DeadlineH11Protocol`, on a
real uvicorn server on 127.0.0.1); a request body that stops, or trickles, gets 408 from the middleware's body
deadlines; ``vigil serve`` runs uvicorn with both and a concurrency limit; and the documented nginx configuration
(docs/reverse_proxy.md), run in front of the service, cuts off a partial-header client.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn

from serving.api.http_limits import DeadlineH11Protocol, uvicorn_limits
from serving.api.metrics import ServiceMetrics
from serving.api.middleware import RequestContextMiddleware
from serving.settings import ServingSettings
from tests.apt_tools import tool_or_skip
from tests.net import free_port, running

pytestmark = pytest.mark.slow  # slow clients against uvicorn and nginx

DEADLINE_S = 0.5
REPO = Path(__file__).resolve().parents[2]


class ShortDeadline(DeadlineH11Protocol):
    header_timeout_s = DEADLINE_S


async def _slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers after ``?wait`` seconds (longer than the header deadline: a request being answered is not cut)."""
    if scope["type"] != "http":
        return
    if scope["query_string"] == b"wait":
        await anyio.sleep(DEADLINE_S * 2)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _closed_within(sock: socket.socket, seconds: float, *, trickle: bytes = b"") -> float | None:
    """Seconds until the server closed ``sock`` (sending ``trickle`` a byte at a time meanwhile), or None."""
    started = time.monotonic()
    sock.settimeout(0.05)
    sent = 0
    while time.monotonic() - started < seconds:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            data = None
        except OSError:  # reset, or a TLS connection cut without close_notify
            return time.monotonic() - started
        if data == b"":
            return time.monotonic() - started
        if trickle:
            try:
                sock.sendall(trickle[sent % len(trickle) : sent % len(trickle) + 1])
            except OSError:
                return time.monotonic() - started
            sent += 1
    return None


@pytest.mark.parametrize("opening", [b"", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"], ids=["silent", "partial"])
def test_a_socket_without_complete_headers_is_closed_at_the_header_deadline(opening):
    with running(_slow_app, http=ShortDeadline) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(opening)
        # A partial-header client keeps sending one header byte every 50 ms: the deadline is not renewed by them.
        closed = _closed_within(sock, DEADLINE_S * 8, trickle=b"X-Slow: abcdefgh" if opening else b"")
        assert closed is not None, "the server kept a socket without complete headers open"
        assert closed < DEADLINE_S * 4


def test_the_header_deadline_restarts_after_each_response_and_spares_slow_answers():
    with running(_slow_app, http=ShortDeadline) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(DEADLINE_S * 6)
        for _ in range(2):  # the answer takes twice the header deadline and still arrives, twice on one connection
            sock.sendall(b"GET /?wait HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while not answer.endswith(b"ok"):
                chunk = sock.recv(4096)
                assert chunk, "the connection was closed while its request was being answered"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 1")  # then the next request's headers stall
        closed = _closed_within(sock, DEADLINE_S * 8, trickle=b"27.0.0.1")
        assert closed is not None and closed < DEADLINE_S * 4


def test_plain_uvicorn_keeps_a_partial_header_socket_open_which_is_why_the_protocol_exists():
    """The control: without DeadlineH11Protocol the same client is never cut off (uvicorn 0.54)."""
    with running(_slow_app) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert _closed_within(sock, DEADLINE_S * 3, trickle=b"X-Slow: abcdefgh") is None


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def _call(middleware: RequestContextMiddleware, pieces: Any) -> tuple[list[dict[str, Any]], float]:
    """Run one POST through ``middleware`` with a body from the async iterator ``pieces``; the answer's messages
    and how long it took (the test itself gives up after 10 s)."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/triage",
        "raw_path": b"/v1/triage",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def receive() -> dict[str, Any]:
        return await pieces.__anext__()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> float:
        started = time.monotonic()
        with anyio.fail_after(10):
            await middleware(scope, receive, send)
        return time.monotonic() - started

    return sent, anyio.run(main)


def _middleware(**deadlines: float) -> RequestContextMiddleware:
    return RequestContextMiddleware(_echo_app, metrics=ServiceMetrics(), limit_for=lambda path: 10**9, **deadlines)


def test_a_body_that_stops_arriving_is_answered_408_and_the_connection_closed():
    async def stalls():
        yield {"type": "http.request", "body": b"{", "more_body": True}
        await anyio.sleep_forever()
        yield {}  # pragma: no cover

    sent, took = _call(_middleware(body_idle_timeout_s=0.2, body_timeout_s=60), stalls())
    start = sent[0]
    assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
    assert b"did not arrive in time" in sent[1]["body"] and took < 2


def test_a_trickling_body_is_cut_at_the_total_body_deadline():
    async def trickles():
        while True:  # a byte every 20 ms: never idle for long, never done
            await anyio.sleep(0.02)
            yield {"type": "http.request", "body": b"x", "more_body": True}

    sent, took = _call(_middleware(body_idle_timeout_s=0.2, body_timeout_s=0.5), trickles())
    assert sent[0]["status"] == 408 and 0.4 < took < 3


def test_a_body_that_arrives_in_time_is_untouched_and_no_deadline_applies_afterwards():
    async def prompt():
        yield {"type": "http.request", "body": b"ab", "more_body": True}
        yield {"type": "http.request", "body": b"c", "more_body": False}

    sent, _ = _call(_middleware(body_idle_timeout_s=0.2, body_timeout_s=0.5), prompt())
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"3"


def test_the_service_applies_the_body_deadlines_from_its_settings(service_factory, tmp_path, model_folder):
    with service_factory(tmp_path, model_folder, http_body_idle_timeout_s=0.2) as svc:
        middleware = svc.client.app.middleware_stack
        while not isinstance(middleware, RequestContextMiddleware):
            middleware = middleware.app
        assert (middleware.body_idle_timeout_s, middleware.body_timeout_s) == (0.2, 120.0)


def test_vigil_serve_runs_uvicorn_with_the_header_deadline_and_a_concurrency_limit(monkeypatch):
    from workflows import serve

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(serve, "configure_logging", lambda **kwargs: None)
    monkeypatch.setenv("VIGIL_THREADS", "1")
    serve.serve(host="127.0.0.1", port=free_port(), workers=1)
    assert issubclass(calls[0]["http"], DeadlineH11Protocol)
    assert calls[0]["limit_concurrency"] == ServingSettings().http_limit_concurrency
    assert uvicorn_limits(ServingSettings(http_limit_concurrency=7)) == {"limit_concurrency": 7}


# ------------------------------------------------------------------------------ the documented reverse proxy
def _nginx() -> str:
    """The nginx binary, installed with apt-get when this runs as root (as CI does); else the test is skipped."""
    return tool_or_skip(
        "nginx", "nginx-light", "the checks of docs/reverse_proxy.md's configuration", also_look_in=(Path("/usr/sbin"),)
    )


def documented_nginx_config() -> str:
    """The nginx configuration block of docs/reverse_proxy.md (the one marked 'vigil.conf')."""
    text = (REPO / "docs" / "reverse_proxy.md").read_text()
    match = re.search(r"```nginx\n# vigil\.conf.*?\n(.*?)```", text, re.DOTALL)
    assert match, "docs/reverse_proxy.md has no ```nginx block starting with '# vigil.conf'"
    return match.group(1)


def _site_config(tmp: Path, nginx_port: int, app_port: int) -> Path:
    """The documented configuration, with this test's ports, a fresh certificate and a 1 s header deadline."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-days",
            "1",
            "-keyout",
            str(tmp / "vigil.key"),
            "-out",
            str(tmp / "vigil.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    site = documented_nginx_config()
    for pattern, value in (
        (r"listen\s+443\s+ssl;", f"listen 127.0.0.1:{nginx_port} ssl;"),
        (r"server\s+127\.0\.0\.1:8000", f"server 127.0.0.1:{app_port}"),
        (r"ssl_certificate\s+\S+;", f"ssl_certificate {tmp / 'vigil.crt'};"),
        (r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {tmp / 'vigil.key'};"),
        (r"client_header_timeout\s+\S+;", "client_header_timeout 1s;"),
    ):
        site, n = re.subn(pattern, value, site)
        assert n == 1, f"docs/reverse_proxy.md's configuration has no single '{pattern}'"
    (tmp / "vigil.conf").write_text(site)
    temp = {name: tmp / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for folder in temp.values():
        folder.mkdir()
    conf = tmp / "nginx.conf"
    # As root, nginx's workers would run as 'nobody', who cannot reach this test's private folders.
    conf.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"""worker_processes 1;
pid {tmp / "nginx.pid"};
error_log {tmp / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {tmp / "vigil.conf"};
}}
"""
    )
    return conf


def test_the_documented_nginx_configuration_cuts_off_a_partial_header_client(tmp_path, model_folder):
    from serving.api.app import create_app
    from serving.store.database import Store

    nginx = _nginx()
    cfg = ServingSettings(
        work_dir=tmp_path, model_source="local", model_dir=model_folder, threads=1, trusted_hosts="localhost"
    )
    store = Store(cfg.store_url())
    store.create_schema()
    nginx_port = free_port()
    with running(create_app(cfg, store=store), http=ShortDeadline, lifespan="on") as app_port:
        conf = _site_config(tmp_path, nginx_port, app_port)
        checked = subprocess.run(
            [nginx, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True, timeout=30, check=False
        )
        assert checked.returncode == 0, checked.stderr
        proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            context = ssl.create_default_context(cafile=str(tmp_path / "vigil.crt"))
            deadline = time.monotonic() + 20
            while True:  # nginx is up once it accepts a connection
                try:
                    raw = socket.create_connection(("127.0.0.1", nginx_port), timeout=5)
                    break
                except ConnectionRefusedError:
                    assert proc.poll() is None and time.monotonic() < deadline, (
                        f"nginx did not start: {(tmp_path / 'error.log').read_text()[-2000:]}"
                    )
                    time.sleep(0.05)
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := tls.recv(4096):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200") and b'{"status":"ok"}' in answer
            assert b"server: nginx/" not in answer.lower()  # server_tokens off: no version
            with context.wrap_socket(
                socket.create_connection(("127.0.0.1", nginx_port), timeout=5), server_hostname="localhost"
            ) as tls:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
                closed = _closed_within(tls, 8, trickle=b"X-Slow: abcdefgh")
            assert closed is not None, "nginx kept a partial-header client connected"
            assert closed < 5
        finally:
            proc.terminate()
            proc.wait(10)
