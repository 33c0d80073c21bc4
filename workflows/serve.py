"""``vigil serve``: the service composed with the MLflow registry, and the API-key commands.

Serving does not import training; this module (the composition root) gives it a locator that reads the
registry through :mod:`training.tracking`: the alias (``production`` by default) names the version, the
version's tags carry the ONNX sha256 and the release gate's record.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import ModelArtifactError, RegistryUnavailableError
from models.registry import Tag
from models.triage.onnx import sha256_file
from serving.api.http_limits import DeadlineH11Protocol, uvicorn_limits
from serving.model_source import PASS, ModelLocator, ResolvedModel, Task, read_local_release, write_local_release
from workflows.logs import configure_logging

log = logging.getLogger(__name__)

GATE_PREFIX = Tag.GATE_PREFIX


#: MLflow's HTTP client retries 7 times with exponential back-off and a 120 s timeout by default: an unreachable
#: registry would hold start-up for minutes before the cache fallback. Serving uses these unless the user set them.
REGISTRY_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@dataclass
class RegistryLocator:
    """Models from the MLflow registry (``NAME@ALIAS`` or ``NAME/VERSION`` per task), with a verified local cache.

    Each process downloads into its own folder, so several workers never write the same file at once. Every
    released model resolved from the registry is copied, checksum verified, into ``cache_dir`` (one folder per
    reference, the :class:`serving.model_source.LocalFolderLocator` format). When the registry cannot be reached,
    the last released model cached for that reference is served instead, and its checksum is verified again as it
    is opened; with no cache the model is refused, saying why. A registry that answers "no such version" is
    obeyed: the cache is never used to serve what the registry no longer releases.
    """

    work_dir: Path
    refs: dict[Task, str]
    download_root: Path
    cache_dir: Path | None = None

    def locate(self, task: Task) -> ResolvedModel:
        from training.tracking import fetch_model_version

        ref = self.refs[task]
        try:
            record = fetch_model_version(ref, self.work_dir, download_root=self.download_root)
        except RegistryUnavailableError as exc:
            return self._from_cache(task, ref, exc)
        gate = {k.removeprefix(GATE_PREFIX): v for k, v in record.tags.items() if k.startswith(GATE_PREFIX)}
        sha = record.tags.get(Tag.ONNX_SHA256) or None
        if sha is None:
            raise ModelArtifactError(
                f"{record.name} version {record.version} has no onnx_sha256 tag: it cannot be "
                "verified, so it is not served"
            )
        resolved = ResolvedModel(
            task,
            record.name,
            record.version,
            record.onnx_path,
            sha,
            gate,
            f"registry models:/{ref.removeprefix('models:/')}",
        )
        self._cache(ref, resolved)
        return resolved

    def _cache_folder(self, ref: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / ref.removeprefix("models:/").replace("@", "@@").replace("/", "@v")

    def _cache(self, ref: str, resolved: ResolvedModel) -> None:
        """Keep a verified copy of a released model (an unreleased one is never cached)."""
        folder = self._cache_folder(ref)
        if folder is None or resolved.release_status != PASS:
            return
        try:
            cached = read_local_release(folder, resolved.name, resolved.task)
            if (cached.version, cached.expected_sha256, cached.release_gate) == (
                resolved.version,
                resolved.expected_sha256,
                resolved.release_gate,
            ) and sha256_file(cached.path) == cached.expected_sha256:
                return
        except ModelArtifactError:
            pass  # no cache yet, or an unreadable one: write it anew
        try:
            if sha256_file(resolved.path) != resolved.expected_sha256:
                return  # the holder refuses this file by its checksum; a bad copy is never cached
            write_local_release(folder, resolved)
            log.info(
                "cached %s version %s in %s (served if the registry becomes unreachable)",
                resolved.name,
                resolved.version,
                folder,
            )
        except OSError as exc:
            log.warning("could not cache %s version %s in %s: %s", resolved.name, resolved.version, folder, exc)

    def _from_cache(self, task: Task, ref: str, exc: RegistryUnavailableError) -> ResolvedModel:
        from training.tracking import parse_model_ref

        folder = self._cache_folder(ref)
        name = parse_model_ref(ref)[0]
        if folder is None or not (folder / f"{name}.release.json").is_file():
            raise RegistryUnavailableError(
                f"{exc}; no verified local cache of {ref} exists, so no {task} model is "
                "served until the registry can be reached"
            ) from exc
        cached = read_local_release(folder, name, task)
        stamp = _cached_utc(folder / f"{name}.release.json")
        log.warning(
            "%s; serving the cached release of %s instead: %s version %s (cached %s; its checksum is "
            "verified as it is opened)",
            exc,
            ref,
            cached.name,
            cached.version,
            stamp,
        )
        return dataclasses.replace(
            cached, origin=f"verified local cache {folder} of {ref} (registry unreachable; cached {stamp})"
        )

    def close(self) -> None:
        """Remove this process's download folder (the open sessions no longer need the files)."""
        shutil.rmtree(self.download_root, ignore_errors=True)


def _cached_utc(record: Path) -> str:
    try:
        return str(json.loads(record.read_text()).get("cached_utc", "unknown"))
    except (OSError, ValueError, AttributeError):
        return "unknown"


def build_locator(settings: Any) -> ModelLocator:
    """The locator the settings ask for: the registry (default, with its local cache) or a local ONNX folder."""
    from serving.api.app import default_locator

    if settings.model_source == "local":
        return default_locator(settings)
    download_root = Path(tempfile.mkdtemp(prefix=f"serve-{os.getpid()}-", dir=_ensure(settings.work_dir / "downloads")))
    return RegistryLocator(
        settings.work_dir.resolve(),
        {"triage": settings.triage_model, "imaging": settings.imaging_model},
        download_root,
        cache_dir=settings.work_dir.resolve() / "model-cache",
    )


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def create_service(settings: Any | None = None) -> Any:
    """The FastAPI app for ``settings`` (default: the environment), models from the registry or a folder."""
    from serving.api.app import create_app
    from serving.settings import get_settings

    settings = settings or get_settings()
    return create_app(settings, locator=build_locator(settings))


def _bound_registry_retries() -> None:
    """Apply :data:`REGISTRY_HTTP_DEFAULTS` where the user has not set them (process entry points only)."""
    for name, value in REGISTRY_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def app_factory() -> Any:
    """Entry point of each uvicorn worker process (``workflows.serve:app_factory``, factory mode)."""
    configure_logging(with_process=True)
    _bound_registry_retries()
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

    from models.triage.onnx import default_threads
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

    from models.triage.onnx import default_threads
    from serving.dicom_node.node import DicomNode
    from serving.dicom_node.settings import load_dicom_settings
    from serving.model_source import ModelHolder
    from serving.settings import get_settings
    from serving.store.audit_chain import open_anchor
    from serving.store.database import Store

    configure_logging(with_process=True)
    _bound_registry_retries()
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
