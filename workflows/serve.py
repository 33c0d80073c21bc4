"""``vigil serve`` and ``vigil dicom-node``: the service composed with the models the settings name, run by
uvicorn, and the DICOM node in its own (supervised) process.

Models come from the MLflow registry through :class:`workflows.registry_locator.RegistryLocator` (the default) or
from a local ONNX folder (``VIGIL_MODEL_SOURCE=local``).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from models.errors import VigilError
from serving.api.http_limits import DeadlineH11Protocol, uvicorn_limits
from workflows.logs import configure_logging
from workflows.registry_locator import bound_registry_retries, build_locator

log = logging.getLogger(__name__)


def configure_serve(
    *,
    workers: int,
    allow_unreleased: bool = False,
    triage_model: str | None = None,
    imaging_model: str | None = None,
    model_dir: Path | None = None,
) -> None:
    """Put ``vigil serve``'s options into the ``VIGIL_*`` environment (the worker processes read their settings
    from it) and check the settings once, before any worker starts.

    Raises
    ------
    VigilError
        A bad setting (named), a bad ``VIGIL_AUDIT_ANCHOR_*`` setting, or ``VIGIL_DICOM_NODE=true`` with more than
        one worker.
    """
    from serving.settings import load_settings
    from serving.store.audit_anchor import open_anchor

    env = {}
    if allow_unreleased:
        env["VIGIL_ALLOW_UNRELEASED"] = "true"
    if triage_model:
        env["VIGIL_TRIAGE_MODEL"] = triage_model
    if imaging_model:
        env["VIGIL_IMAGING_MODEL"] = imaging_model
    if model_dir:
        env.update({"VIGIL_MODEL_SOURCE": "local", "VIGIL_MODEL_DIR": str(model_dir.resolve())})
    os.environ.update(env)
    settings = load_settings()  # a bad setting fails here, once, with its name
    open_anchor()  # and so does a bad VIGIL_AUDIT_ANCHOR_* setting
    if settings.dicom_node and workers > 1:
        raise VigilError(
            "VIGIL_DICOM_NODE=true needs --workers 1 (one Storage SCP per port); run "
            "`vigil dicom-node` beside a multi-worker `vigil serve` instead"
        )


def create_service(settings: Any | None = None) -> Any:
    """The FastAPI app for ``settings`` (default: the environment), models from the registry or a folder."""
    from serving.api.app import create_app
    from serving.settings import get_settings

    settings = settings or get_settings()
    return create_app(settings, locator=build_locator(settings))


def app_factory() -> Any:
    """Entry point of each uvicorn worker process (``workflows.serve:app_factory``, factory mode)."""
    configure_logging(with_process=True)
    bound_registry_retries()
    return create_service()


class NoDelayH11Protocol(DeadlineH11Protocol):
    """uvicorn's h11 protocol with Nagle's algorithm off on every accepted socket, and the request-header
    deadline of :class:`serving.api.http_limits.DeadlineH11Protocol` (issue 14 finding 4).

    With ``--workers`` > 1 uvicorn hands the workers a socket created with ``proto=0``, and asyncio sets
    TCP_NODELAY only on sockets whose proto is IPPROTO_TCP: each keep-alive request after the first then waited
    ~40 ms for a delayed ACK (docs/serving_benchmark.md; uvicorn issue #3149). Module-level so that uvicorn can
    pickle it into its worker processes.
    """

    def connection_made(self, transport: Any, *args: Any, **kwargs: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport, *args, **kwargs)


def serve(*, host: str, port: int, workers: int) -> None:
    """Run the service with uvicorn; several workers share the CPUs without oversubscribing threads.

    Each worker gets ``cpus // workers`` onnxruntime threads (at least 1) unless ``VIGIL_THREADS`` is set, and
    with more than one worker the Prometheus metrics of all workers are aggregated through a shared folder.
    """
    import uvicorn

    from models.onnx_file import default_threads
    from serving.settings import get_settings

    if "VIGIL_THREADS" not in os.environ:
        os.environ["VIGIL_THREADS"] = str(max(1, default_threads() // workers))
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="vigil-metrics-")
    configure_logging(with_process=True)
    node = _node_in_child_process()
    log.info(
        "serving on http://%s:%d with %d worker(s), %s onnxruntime thread(s) each; OpenAPI at /docs",
        host,
        port,
        workers,
        os.environ["VIGIL_THREADS"],
    )
    try:
        # server_header=False: no 'server: uvicorn' banner naming the software to a scanner.
        uvicorn.run(
            "workflows.serve:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http=NoDelayH11Protocol,
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=30,
            server_header=False,
            **uvicorn_limits(get_settings()),
        )
    finally:
        if node is not None:
            node.stop()


def _node_in_child_process() -> NodeSupervisor | None:
    """With ``VIGIL_DICOM_NODE=true``, start the DICOM node as a supervised child process (``vigil dicom-node``)
    and tell the API's workers not to run it themselves; None when the node is not asked for.

    In its own process, whatever a DICOM peer makes the node spend (memory, threads, a crash) cannot take the HTTP
    API with it; STOW-RS and the worklist reach the node's queue and storage folder as they do beside a separate
    ``vigil dicom-node``.
    """
    from serving.settings import load_settings

    settings = load_settings()
    if not settings.dicom_node:
        return None
    os.environ["VIGIL_DICOM_NODE"] = "false"  # the app in the worker process(es): the child runs the node
    if "VIGIL_DICOM_NODE_HEARTBEAT" not in os.environ:  # the child touches it, /readyz of the app reads it
        heartbeat = Path(settings.work_dir) / "dicom-node.heartbeat"
        heartbeat.parent.mkdir(parents=True, exist_ok=True)
        heartbeat.unlink(missing_ok=True)
        os.environ["VIGIL_DICOM_NODE_HEARTBEAT"] = str(heartbeat.resolve())
    supervisor = NodeSupervisor()
    supervisor.start()
    return supervisor


class NodeSupervisor:
    """Runs the DICOM node in a child process and starts it again whenever it exits, until :meth:`stop`.

    Each unexpected exit is logged at ERROR with its exit status (the HTTP API keeps serving meanwhile); restarts
    back off from ``first_delay_s``, doubling to ``max_delay_s``, and the delay resets once a child has run for
    ``healthy_after_s``. The child is in its own session (a terminal's Ctrl-C reaches only ``vigil serve``, which
    stops it in order) and stops by itself if ``vigil serve`` dies (``VIGIL_DICOM_PARENT_PID``).

    Parameters
    ----------
    command : list of str or None
        The child's command line; default ``python -m vigil.cli dicom-node``.
    stop_timeout_s : float
        On stop, how long the child may take after SIGTERM (its in-flight associations and work) before SIGKILL.
    """

    def __init__(
        self,
        command: list[str] | None = None,
        *,
        first_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        healthy_after_s: float = 60.0,
        stop_timeout_s: float = 45.0,
    ) -> None:
        import sys
        import threading

        self.command = command or [sys.executable, "-m", "vigil.cli", "dicom-node"]
        self.first_delay_s, self.max_delay_s, self.healthy_after_s = first_delay_s, max_delay_s, healthy_after_s
        self.stop_timeout_s = stop_timeout_s
        self.starts = 0
        self.last_exit: int | None = None
        self._proc: Any = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="dicom-node-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        """The running child's process id, or None between runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        import subprocess
        import time

        delay = self.first_delay_s
        env = {**os.environ, "VIGIL_DICOM_PARENT_PID": str(os.getpid())}
        while not self._stopping.is_set():
            with self._lock:
                if self._stopping.is_set():
                    return
                self._proc = subprocess.Popen(self.command, env=env, start_new_session=True)
                self.starts += 1
            log.info("DICOM node started in child process %d", self._proc.pid)
            began = time.monotonic()
            code = self._proc.wait()
            self.last_exit = code
            if self._stopping.is_set():
                return
            if time.monotonic() - began >= self.healthy_after_s:
                delay = self.first_delay_s
            log.error(
                "the DICOM node process %d exited with status %d; the HTTP API keeps serving, the DICOM "
                "port is closed until it is started again in %.0f s",
                self._proc.pid,
                code,
                delay,
            )
            if self._stopping.wait(delay):
                return
            delay = min(self.max_delay_s, delay * 2)

    def stop(self) -> None:
        """Stop supervising; SIGTERM the child (SIGKILL after ``stop_timeout_s``) and wait for it."""
        import subprocess

        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.error("the DICOM node process %d did not stop within %.0f s; killed", proc.pid, self.stop_timeout_s)
                proc.kill()
                proc.wait()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def run_dicom_node() -> None:
    """``vigil dicom-node``: the Storage SCP and second-read workers in this process, until SIGINT or SIGTERM.

    Models come from the same place as ``vigil serve`` (registry or local folder, release gate enforced); the
    audit store is the service's; the queue and received instances follow ``VIGIL_DICOM_*``.
    """
    import signal
    import threading

    from models.onnx_file import default_threads
    from serving.dicom_node.node import DicomNode
    from serving.dicom_node.settings import load_dicom_settings
    from serving.model_source import ModelHolder
    from serving.settings import get_settings
    from serving.store.audit_anchor import open_anchor
    from serving.store.database import Store

    configure_logging(with_process=True)
    bound_registry_retries()
    settings = get_settings()
    store = Store(settings.store_url(), anchor=open_anchor())
    store.create_schema()
    holder = ModelHolder(
        build_locator(settings),
        allow_unreleased=settings.allow_unreleased,
        threads=settings.threads or default_threads(),
        tasks=("imaging",),
    )
    holder.load_all()
    node = DicomNode(load_dicom_settings(work_dir=settings.work_dir), holder, store)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node.start()
    parent = os.environ.get("VIGIL_DICOM_PARENT_PID")  # set when `vigil serve` runs the node as its child
    heartbeat = settings.dicom_node_heartbeat  # /readyz of `vigil serve` reads it (serving.api.ops)
    warned_at = -math.inf
    try:
        while True:
            if heartbeat is not None:
                try:
                    heartbeat.write_text(f"{os.getpid()}\n", encoding="ascii")
                except OSError as exc:  # never fatal; said once a minute at most
                    if time.monotonic() - warned_at >= 60:
                        warned_at = time.monotonic()
                        log.warning(
                            "cannot write the DICOM node's heartbeat %s (%s): /readyz will report the node unavailable",
                            heartbeat,
                            type(exc).__name__,
                        )
            if stop.wait(1.0):
                break
            if parent is not None and str(os.getppid()) != parent:
                log.warning("`vigil serve` (process %s) is gone: stopping the DICOM node", parent)
                break
    finally:
        if heartbeat is not None:
            heartbeat.unlink(missing_ok=True)
        node.stop()
        store.dispose()
