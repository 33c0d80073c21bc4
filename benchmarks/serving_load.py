"""Load benchmark of the serving API on loopback: ``vigil serve`` against ``mlflow models serve`` of the same model.

For each ``--workers`` configuration (1 and 2 by default) the script starts, one after the other and each on a
free loopback port, ``vigil serve`` (with the unreleased @candidate models, see below) and
``mlflow models serve`` of the same triage ONNX model, and drives each with a closed-loop load generator:
``C`` clients on persistent HTTP/1.1 keep-alive connections, each sending its next request as soon as the
previous one is answered, for ``--warmup`` seconds (not recorded) and then ``--duration`` seconds (recorded),
at each concurrency of ``--concurrency``. Every latency is kept; any status other than 200, and any broken
connection, is an error and is reported.

* Triage: ``POST /v1/triage`` with real records (``--records`` visits drawn from the KTAS data, each validated
  by :func:`models.triage.record.validate_record`); the peer gets the SAME records, pre-encoded by the model's
  own :class:`models.triage.features.FeatureEncoder` into the four input tensors (``{"inputs": {name: lists}}``).
  Vigil validates, computes NEWS2 and its floor, explains (occlusion: one more batched ONNX run), audits each
  prediction in SQLite and returns the full result; the peer runs the graph and returns its outputs.
* Imaging: ``POST /v1/imaging/second-read`` with a small and a large real DICOM fixture, compared with the
  in-process time of :meth:`models.imaging.onnx.ImagingOnnxModel.second_read_dicom` (decode + prepare +
  inference, median of ``--ref-repeats`` runs) at the thread count each server worker uses.
* Where the time of one request goes: the triage and imaging request paths timed step by step in this
  process (median per step), set against the server's CPU time per request measured under load.

The load generator runs in its own process (this script with ``--loadgen``; standard library only): raw
asyncio streams cost 0.1-0.3 ms of CPU per request here, ``httpx.AsyncClient`` 1.2-2.0 ms, and on a 2-core
machine every client CPU cycle is taken from the server being measured. Client and server CPU time per request
are reported so that this cost is visible.

Run from the repository root, after ``vigil run`` has registered ``vigil-triage`` and ``vigil-cxr``
@candidate in the work folder::

    .venv/bin/python benchmarks/serving_load.py --work-dir /tmp/bench-work [--quick]

Writes ``--out`` (Markdown, default docs/serving_benchmark.md) and the same numbers as JSON next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import platform
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("serving_load")

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
TRIAGE_REF = "vigil-triage@candidate"
IMAGING_REF = "vigil-cxr@candidate"
FIXTURES = REPO.parent / "shared" / "data" / "imaging" / "dicom_fixtures" / "chest"
#: A small (440x440, uncompressed) and a large (1024x1024, 1 MB uncompressed) chest radiograph of the fixtures.
IMAGING_FIXTURES = ("CR-MONO1-10-chest", "1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm")
REQUEST_TIMEOUT_S = 60.0
START_TIMEOUT_S = 180.0
THROUGHPUT_GOAL = 3.0
IMAGING_GOAL = 1.3


# ----------------------------------------------------------------------------------------------- load generator
# Standard library only: this part runs in its own process (``--loadgen SPEC``) so that it shares nothing with
# the servers or with the heavy imports of the orchestrating process.


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response; returns (status, the server will close the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, rest = head.partition(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length, chunked, close = -1, False, False
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length >= 0:
        await reader.readexactly(length)
    else:
        await reader.read()
        close = True
    return status, close


async def _client(
    port: int, requests: list[bytes], first: int, step: int, t_warm: float, t_end: float, out: dict[str, Any]
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    index = first
    try:
        while time.perf_counter() < t_end:
            payload = requests[index % len(requests)]
            index += step
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
                assert reader is not None
                writer.write(payload)
                await writer.drain()
                status, close = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT_S)
            except (
                OSError,
                EOFError,
                ValueError,
                IndexError,
                TimeoutError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
            ) as exc:
                t1 = time.perf_counter()
                if t_warm <= t1 < t_end:
                    out["errors"][type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.01)  # a refused connection must not spin
                continue
            t1 = time.perf_counter()
            out["completed_total"] += 1
            if t_warm <= t1 < t_end:  # completed inside the recorded window
                out["latencies_ms"].append(1000.0 * (t1 - t0))
                out["statuses"][status] += 1
            if close:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    requests = [Path(p).read_bytes() for p in spec["request_files"]]
    c = int(spec["concurrency"])
    out: dict[str, Any] = {
        "latencies_ms": [],
        "statuses": collections.Counter(),
        "errors": collections.Counter(),
        "completed_total": 0,
    }
    start = time.perf_counter()
    t_warm = start + float(spec["warmup_s"])
    t_end = t_warm + float(spec["duration_s"])
    # Client k sends records k, k+C, k+2C, ...: at any time the C in flight are C different records.
    await asyncio.gather(*(_client(int(spec["port"]), requests, k, c, t_warm, t_end, out) for k in range(c)))
    out["wall_s"] = time.perf_counter() - start
    return out


def loadgen_main(spec_path: Path) -> None:
    """Entry point of the load-generator process: run the spec, write its result JSON, exit."""
    spec = json.loads(spec_path.read_text())
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    out = asyncio.run(_load(spec))
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    out["client_cpu_s"] = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    out["statuses"] = {str(k): v for k, v in out["statuses"].items()}
    out["errors"] = dict(out["errors"])
    Path(spec["result_file"]).write_text(json.dumps(out))


# ----------------------------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def group_processes(pgid: int) -> list[tuple[Path, list[str]]]:
    """Every live process in process group ``pgid``: its /proc folder and the fields of its ``stat`` after
    "pid (comm)" (state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            found.append((entry, fields))
    return found


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid`` (from /proc)."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _entry, fields in group_processes(pgid))
    return ticks / os.sysconf("SC_CLK_TCK")


class Server:
    """A server subprocess in its own process group (so that every worker it forks is stopped with it)."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path, port: int, ready_path: str, workers: int
    ) -> None:
        self.name, self.argv, self.port, self.ready_path, self.workers = name, argv, port, ready_path, workers
        self.log_path = log_path
        self._log = open(log_path, "wb")  # closed in stop()
        logger.info("starting %s: %s", name, shlex.join(argv))
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> float:
        """Wait until the readiness URL answers 200 and every worker has logged its start-up.

        Returns the seconds from launch to ready.
        """
        while time.monotonic() - self.started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.proc.returncode} during start-up; see {self.log_path}"
                )
            started = self.log_path.read_bytes().count(b"Application startup complete")
            if started >= self.workers:
                try:
                    with urllib.request.urlopen(f"http://{HOST}:{self.port}{self.ready_path}", timeout=5) as resp:
                        if resp.status == 200:
                            return time.monotonic() - self.started
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log_path}")

    def cpu_s(self) -> float:
        return group_cpu_s(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM to the process group, then SIGKILL after 20 s."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop after SIGTERM; killing its process group", self.name)
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        # Workers orphaned by a killed parent keep the group id: make sure none is left.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()


def http_request(port: int, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """One request on a fresh connection (for checks, not for load)."""
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def raw_request(port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def run_level(
    server: Server, request_files: list[Path], concurrency: int, args: argparse.Namespace, scratch: Path
) -> dict[str, Any]:
    """One closed-loop run at one concurrency, in a separate load-generator process."""
    import numpy as np

    tag = f"{server.name}-{server.port}-{concurrency}-{time.monotonic_ns()}"
    spec_file, result_file = scratch / f"{tag}.spec.json", scratch / f"{tag}.result.json"
    spec_file.write_text(
        json.dumps(
            {
                "port": server.port,
                "request_files": [str(p) for p in request_files],
                "concurrency": concurrency,
                "warmup_s": args.warmup,
                "duration_s": args.duration,
                "result_file": str(result_file),
            }
        )
    )
    cpu0 = server.cpu_s()
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--loadgen", str(spec_file)],
        check=True,
        timeout=args.warmup + args.duration + REQUEST_TIMEOUT_S + 30,
    )
    cpu1 = server.cpu_s()
    raw = json.loads(result_file.read_text())
    lat = np.asarray(raw["latencies_ms"], dtype=float)
    ok = int(raw["statuses"].get("200", 0))
    errors = {**{f"HTTP {k}": v for k, v in raw["statuses"].items() if k != "200"}, **raw["errors"]}
    done = max(1, raw["completed_total"])
    row = {
        "concurrency": concurrency,
        "requests": int(lat.size),
        "ok": ok,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "rps": ok / args.duration,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "max_ms": float(lat.max()) if lat.size else float("nan"),
        "server_cpu_ms_per_req": 1000.0 * (cpu1 - cpu0) / done,
        "client_cpu_ms_per_req": 1000.0 * raw["client_cpu_s"] / done,
        "loadavg_1m_after": float(loadavg().split()[0]),
    }
    logger.info(
        "%-14s C=%-3d %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d  server CPU %.2f ms/req",
        server.name,
        concurrency,
        row["rps"],
        row["p50_ms"],
        row["p99_ms"],
        row["errors"],
        row["server_cpu_ms_per_req"],
    )
    return row


# ----------------------------------------------------------------------------------------------- inputs
def triage_records(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` real KTAS visits as JSON triage records (missing fields left out), each passing validation."""
    import numpy as np
    import pandas as pd

    from models.triage.record import RECORD_FIELDS, validate_record
    from training.data import load_dataset

    frame = load_dataset("ktas").frame
    rows = np.random.default_rng(seed).permutation(len(frame))
    records: list[dict[str, Any]] = []
    for i in rows:
        raw: dict[str, Any] = {}
        for name in RECORD_FIELDS:
            value = frame.iloc[i][name]
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                continue
            if isinstance(value, pd.Timestamp | datetime):
                value = value.isoformat()
            elif isinstance(value, np.bool_ | bool):
                value = bool(value)
            elif isinstance(value, np.integer):
                value = int(value)
            elif isinstance(value, np.floating):
                value = float(value)
            raw[name] = value
        validate_record(raw)
        records.append(raw)
        if len(records) == n:
            break
    return records


def mlflow_body(runtime: Any, record: dict[str, Any]) -> bytes:
    """The peer's request for one record: the model's own encoding of the validated record, as tensor lists."""
    import pandas as pd

    from models.triage.record import validate_record

    encoded = runtime.encoder.transform(pd.DataFrame([validate_record(record)]))
    return json.dumps({"inputs": {k: v.tolist() for k, v in encoded.items()}}).encode()


# ----------------------------------------------------------------------------------------------- in-process
def _median_ms(samples: list[float]) -> float:
    return 1000.0 * statistics.median(samples)


def imaging_reference(onnx_path: Path, threads: int, fixtures: list[Path], repeats: int) -> dict[str, Any]:
    """Median in-process decode+prepare and inference of ``second_read_dicom`` per fixture."""
    from models.imaging.onnx import ImagingOnnxModel

    model = ImagingOnnxModel(onnx_path, threads=threads)
    out: dict[str, Any] = {}
    for path in fixtures:
        data = path.read_bytes()
        model.second_read_dicom(data)  # warm-up
        reads = [model.second_read_dicom(data) for _ in range(repeats)]
        decode = statistics.median(r.timings_ms["decode_prepare"] for r in reads)
        infer = statistics.median(r.timings_ms["inference"] for r in reads)
        total = statistics.median(r.timings_ms["decode_prepare"] + r.timings_ms["inference"] for r in reads)
        rows, cols = reads[0].source.get("rows"), reads[0].source.get("columns")
        out[path.name] = {
            "decode_prepare_ms": decode,
            "inference_ms": infer,
            "reference_ms": total,
            "bytes": len(data),
            "size": f"{cols}x{rows}" if rows else "?",
        }
    return out


class _Req:
    """The parts of a request that :func:`serving.api.state.audit_record` reads."""

    def __init__(self, request_id: str) -> None:
        self.state = type("S", (), {"request_id": request_id})()


def profile_paths(
    work_dir: Path,
    key: str,
    records: list[dict[str, Any]],
    fixtures: list[Path],
    threads: int,
    iterations: int,
    scratch: Path,
) -> dict[str, Any]:
    """Time each step of the triage and imaging request paths in this process (median ms per step).

    The steps are the public calls the routes make, on the same registry models the server loads, with an audit
    store of the same kind (SQLite, WAL) in a scratch file; FastAPI's response-model validation and JSON
    rendering are approximated by a pydantic TypeAdapter of the response model and ``json.dumps``. Inside
    ``build_results`` the time is split by cProfile (per function, cumulative), so that the breakdown follows the
    code as it is rather than a copy of it.
    """
    import uuid

    from pydantic import TypeAdapter

    from models.triage.record import validate_record
    from serving.api.schemas import SecondReadResult, TriageResult
    from serving.imaging_result import second_read_result
    from serving.model_source import ModelHolder
    from serving.store.database import Store
    from serving.triage_result import build_results
    from workflows.registry_locator import RegistryLocator

    locator = RegistryLocator(
        work_dir.resolve(),
        {"triage": TRIAGE_REF, "imaging": IMAGING_REF},
        Path(tempfile.mkdtemp(prefix="profile-", dir=scratch)),
    )
    holder = ModelHolder(locator, allow_unreleased=True, threads=threads)
    holder.load_all()
    triage, imaging = holder.get("triage"), holder.get("imaging")
    auth_store = Store(f"sqlite:///{(work_dir / 'serving.db').resolve()}")
    audit_store = Store(f"sqlite:///{scratch / 'profile-audit.db'}")
    audit_store.create_schema()
    triage_out, imaging_out = TypeAdapter(TriageResult), TypeAdapter(SecondReadResult)

    steps: dict[str, list[float]] = collections.defaultdict(list)

    def timed(name: str, fn: Any, *a: Any) -> Any:
        t0 = time.perf_counter()
        value = fn(*a)
        steps[name].append(time.perf_counter() - t0)
        return value

    bodies = [json.dumps(r).encode() for r in records]
    for i in range(iterations + 5):
        body = bodies[i % len(bodies)]
        timed("auth: key lookup (SQLite)", auth_store.authenticate, key)
        raw = timed("JSON parse", json.loads, body)
        record = timed("validate_record", validate_record, raw)
        results = timed("build_results: NEWS2, encode, ONNX, explain, package", build_results, triage, [record])
        request = _Req(uuid.uuid4().hex)
        result = {**results[0], "request_id": request.state.request_id}
        audit = timed("audit: record + input sha256", _audit_of, request, "/v1/triage", triage, raw, result)
        timed("audit: write (SQLite, hash chain)", audit_store.write_audits, [audit])
        timed("response model validation + JSON", _render, triage_out, result)
    triage_steps = {k: _median_ms(v[5:]) for k, v in steps.items()}
    inside = _profile_build_results(triage, [validate_record(r) for r in records], iterations, build_results)

    imaging_steps: dict[str, dict[str, float]] = {}
    model = imaging.runtime
    for fixture in fixtures:
        steps.clear()
        data = fixture.read_bytes()
        for _ in range(max(10, iterations // 10) + 2):
            timed("auth: key lookup (SQLite)", auth_store.authenticate, key)
            read = timed("second_read_dicom (total)", model.second_read_dicom, data)
            steps["  decode + prepare"].append(read.timings_ms["decode_prepare"] / 1000)
            steps["  ONNX inference"].append(read.timings_ms["inference"] / 1000)
            png = timed("heat map PNG", read.heatmap_png)
            b64 = timed("base64 of the PNG", _b64, png)
            request = _Req(uuid.uuid4().hex)
            result = second_read_result(read, imaging, request.state.request_id)
            audit = timed(
                "audit: record + input sha256 (of the DICOM bytes)",
                _audit_of,
                request,
                "/v1/imaging/second-read",
                imaging,
                data,
                result,
            )
            timed("audit: write (SQLite, hash chain)", audit_store.write_audits, [audit])
            full = {**result, "heatmap_png_base64": b64}
            timed("response model validation + JSON", _render, imaging_out, full)
        imaging_steps[fixture.name] = {k: _median_ms(v[2:]) for k, v in steps.items()}
    holder_threads = holder.threads
    auth_store.dispose()
    audit_store.dispose()
    return {
        "threads": holder_threads,
        "iterations": iterations,
        "triage_steps_ms": triage_steps,
        "build_results_profile": inside,
        "imaging_steps_ms": imaging_steps,
    }


def _profile_build_results(
    model: Any, records: list[dict[str, Any]], iterations: int, build_results: Any
) -> dict[str, Any]:
    """cProfile of ``build_results`` one record at a time: per request, the cumulative ms of each Vigil
    function, of onnxruntime's ``run``, and the own time spent inside pandas and numpy."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    for i in range(iterations):
        build_results(model, [records[i % len(records)]])
    profiler.disable()
    profiled_ms = 1000 * (time.perf_counter() - t0) / iterations
    raw = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    repo = str(REPO) + os.sep
    functions: list[dict[str, Any]] = []
    libraries: dict[str, float] = collections.defaultdict(float)
    onnx_ms = 0.0
    for (path, line, name), (_cc, calls, own, cum, _callers) in raw.items():
        library = "site-packages" in path
        if path.startswith(repo) and not library and "benchmarks" not in path:
            functions.append(
                {
                    "function": f"{Path(path).relative_to(REPO)}:{line}({name})",
                    "calls_per_request": calls / iterations,
                    "cum_ms": 1000 * cum / iterations,
                }
            )
        elif path == "~" and "onnxruntime" in name and name.endswith(".run>"):  # the C++ session run
            onnx_ms += 1000 * own / iterations
        else:
            for lib in ("pandas", "numpy", "pydantic", "sqlalchemy"):
                if f"{os.sep}{lib}{os.sep}" in path:
                    libraries[lib] += 1000 * own / iterations
    functions.sort(key=lambda f: -f["cum_ms"])
    return {
        "profiled_ms_per_request": profiled_ms,
        "functions": functions[:16],
        "onnxruntime_run_ms": onnx_ms,
        "library_own_ms": dict(libraries),
    }


def _audit_of(request: _Req, route: str, model: Any, payload: Any, result: dict[str, Any]) -> Any:
    from serving.api.state import audit_record, input_digest

    return audit_record(request, _key_info(), route, model, input_digest(payload), result)  # type: ignore[arg-type]


def _render(adapter: Any, result: dict[str, Any]) -> bytes:
    return json.dumps(adapter.dump_python(adapter.validate_python(result), mode="json")).encode()


def _b64(png: bytes) -> str:
    import base64

    return base64.b64encode(png).decode("ascii")


def _key_info() -> Any:
    from serving.store.records import ApiKeyInfo

    return ApiKeyInfo("benchprofile", "bench", ("triage", "imaging"), "2026-01-01T00:00:00Z", None)


# ----------------------------------------------------------------------------------------------- orchestration
def machine() -> dict[str, Any]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "nproc": nproc,
        "cpu_model": model,
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        p: version(p)
        for p in (
            "fastapi",
            "uvicorn",
            "starlette",
            "pydantic",
            "onnxruntime",
            "mlflow",
            "pandas",
            "numpy",
            "SQLAlchemy",
        )
    }


def git_state() -> dict[str, Any]:
    """HEAD and the tracked files that differ from it (the code measured is HEAD plus those changes)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    diff = subprocess.run(["git", "diff", "--name-only", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    return {"commit": head.stdout.strip(), "modified": diff.stdout.split()}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def vigil_server(args: argparse.Namespace, workers: int, scratch: Path) -> Server:
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "vigil"),
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--allow-unreleased",
        "--triage-model",
        TRIAGE_REF,
        "--imaging-model",
        IMAGING_REF,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_") and k != "MLFLOW_TRACKING_URI"}
    env["VIGIL_WORK_DIR"] = str(args.work_dir)
    return Server(f"vigil-w{workers}", argv, env, scratch / f"vigil-w{workers}.log", port, "/readyz", workers)


def mlflow_server(args: argparse.Namespace, workers: int, version: str, scratch: Path) -> Server:
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/vigil-triage/{version}",
        "--env-manager",
        "local",
        "--host",
        HOST,
        "-p",
        str(port),
        "--workers",
        str(workers),
    ]
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{args.work_dir.resolve() / 'mlflow.db'}"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # it execs `uvicorn`
    return Server(f"mlflow-w{workers}", argv, env, scratch / f"mlflow-w{workers}.log", port, "/ping", workers)


def check_vigil(server: Server, key: str, record: dict[str, Any], dicom: bytes) -> dict[str, Any]:
    """One triage and one imaging request must answer 200 with the unreleased override flagged."""
    auth = {"Authorization": f"Bearer {key}"}
    status, body = http_request(
        server.port, "POST", "/v1/triage", json.dumps(record).encode(), {**auth, "Content-Type": "application/json"}
    )
    if status != 200:
        raise RuntimeError(f"{server.name}: POST /v1/triage answered {status}: {body[:300]!r}")
    result = json.loads(body)
    if not result["flags"]["unreleased_model"]:
        raise RuntimeError(f"{server.name}: the unreleased override is not flagged in the response")
    status, body = http_request(
        server.port, "POST", "/v1/imaging/second-read", dicom, {**auth, "Content-Type": "application/dicom"}
    )
    if status != 200:
        raise RuntimeError(f"{server.name}: POST /v1/imaging/second-read answered {status}: {body[:300]!r}")
    return result


def check_mlflow(server: Server, body: bytes, expected_outcomes: Any, vigil_result: dict[str, Any] | None) -> float:
    """The peer must answer 200 with the outcome probabilities onnxruntime gives locally; returns max |diff|."""
    import numpy as np

    status, answer = http_request(server.port, "POST", "/invocations", body, {"Content-Type": "application/json"})
    if status != 200:
        raise RuntimeError(f"{server.name}: POST /invocations answered {status}: {answer[:300]!r}")
    got = np.asarray(json.loads(answer)["predictions"]["outcome_probs"], dtype=float)
    diff = float(np.abs(got - expected_outcomes).max())
    if diff > 1e-5:
        raise RuntimeError(f"{server.name}: outcome probabilities differ from local onnxruntime by {diff:.2e}")
    if vigil_result is not None:
        served = np.array(
            [vigil_result["risks"]["admitted"]["probability"], vigil_result["risks"]["critical"]["probability"]]
        )
        if float(np.abs(served - got[0]).max()) > 2e-6:  # Vigil rounds to 6 decimals
            raise RuntimeError(f"{server.name}: its probabilities differ from Vigil's for the same record")
    return diff


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark. Its scratch folder (request files carry the API key) is removed on success and kept,
    with the servers' logs, on failure; the API key it creates is revoked either way."""
    import shutil

    from serving.store.database import Store

    scratch = Path(tempfile.mkdtemp(prefix="serving-load-"))
    created: list[str] = []
    try:
        result = _run(args, scratch, created)
    except BaseException:
        logger.error("the benchmark failed; its scratch folder and the servers' logs are kept in %s", scratch)
        raise
    finally:
        if created:
            store = Store(f"sqlite:///{(args.work_dir / 'serving.db').resolve()}")
            for key_id in created:
                store.revoke_key(key_id)
            store.dispose()
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def _run(args: argparse.Namespace, scratch: Path, created: list[str]) -> dict[str, Any]:
    import pandas as pd

    from models.onnx_file import default_threads
    from models.triage.onnx import TriageOnnxModel
    from serving.store.database import Store
    from training.tracking import fetch_model_version

    t_start = time.monotonic()
    load_start = loadavg()
    git_start = git_state()
    cpus = default_threads()
    logger.info("scratch folder %s; %d CPUs; load average %s", scratch, cpus, loadavg())
    triage_mv = fetch_model_version(TRIAGE_REF, args.work_dir.resolve(), download_root=scratch / "models")
    imaging_mv = fetch_model_version(IMAGING_REF, args.work_dir.resolve(), download_root=scratch / "models")
    runtime = TriageOnnxModel(triage_mv.onnx_path, threads=1)

    records = triage_records(args.records, args.seed)
    store = Store(f"sqlite:///{(args.work_dir / 'serving.db').resolve()}")
    store.create_schema()
    info, key = store.create_key("bench", ["triage", "imaging"])
    created.append(info.key_id)
    store.dispose()
    logger.info("API key %s created for client 'bench'", info.key_id)

    req_dir = scratch / "requests"
    req_dir.mkdir()
    auth = {"Authorization": f"Bearer {key}"}

    def write_requests(name: str, port: int, path: str, bodies: list[bytes], headers: dict[str, str]) -> list[Path]:
        files = []
        for i, body in enumerate(bodies):
            f = req_dir / f"{name}-{port}-{i}.http"
            f.write_bytes(raw_request(port, path, body, headers))
            files.append(f)
        return files

    vigil_bodies = [json.dumps(r).encode() for r in records]
    peer_bodies = [mlflow_body(runtime, r) for r in records]
    from models.triage.record import validate_record

    expected = runtime.run_encoded(runtime.encoder.transform(pd.DataFrame([validate_record(records[0])])))[1]
    fixtures = [FIXTURES / name for name in IMAGING_FIXTURES]

    reference = {
        str(max(1, cpus // w)): imaging_reference(imaging_mv.onnx_path, max(1, cpus // w), fixtures, args.ref_repeats)
        for w in args.workers
    }
    logger.info("imaging reference (in-process) %s", json.dumps(reference))

    configs: list[dict[str, Any]] = []
    for workers in args.workers:
        threads = max(1, cpus // workers)
        config: dict[str, Any] = {"workers": workers, "vigil_threads_per_worker": threads}
        vigil = mlflow = None
        try:
            # Both start at once (start-up is not measured); the peer is idle while Vigil is measured.
            vigil = vigil_server(args, workers, scratch)
            mlflow = mlflow_server(args, workers, triage_mv.version, scratch)
            config["vigil_start_s"] = vigil.wait_ready()
            config["mlflow_start_s"] = mlflow.wait_ready()
            vigil_result = check_vigil(vigil, key, records[0], fixtures[0].read_bytes())
            config["peer_parity_max_abs_diff"] = check_mlflow(mlflow, peer_bodies[0], expected, vigil_result)
            config["mlflow_command"] = shlex.join(mlflow.argv)
            config["vigil_command"] = shlex.join(vigil.argv)

            files = write_requests(
                "triage", vigil.port, "/v1/triage", vigil_bodies, {**auth, "Content-Type": "application/json"}
            )
            config["vigil_triage"] = [run_level(vigil, files, c, args, scratch) for c in args.concurrency]
            config["vigil_imaging"] = {}
            for fixture in fixtures:
                files = write_requests(
                    "imaging",
                    vigil.port,
                    "/v1/imaging/second-read",
                    [fixture.read_bytes()],
                    {**auth, "Content-Type": "application/dicom"},
                )
                config["vigil_imaging"][fixture.name] = [
                    run_level(vigil, files, c, args, scratch) for c in args.imaging_concurrency
                ]
            vigil.stop()
            vigil = None
            files = write_requests(
                "mlflow", mlflow.port, "/invocations", peer_bodies, {"Content-Type": "application/json"}
            )
            config["mlflow_triage"] = [run_level(mlflow, files, c, args, scratch) for c in args.concurrency]
        finally:
            for server in (vigil, mlflow):
                if server is not None:
                    server.stop()
        configs.append(config)

    profile_threads = max(1, cpus // args.workers[0])
    profile = profile_paths(args.work_dir, key, records, fixtures, profile_threads, args.profile_iterations, scratch)
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python benchmarks/serving_load.py " + shlex.join(sys.argv[1:]),
        "git": git_start,
        "git_at_end": git_state(),
        "machine": machine(),
        "versions": versions(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "imaging_concurrency": args.imaging_concurrency,
            "workers": args.workers,
            "records": len(records),
            "ref_repeats": args.ref_repeats,
        },
        "models": {
            "triage": f"{triage_mv.name} version {triage_mv.version} ({TRIAGE_REF})",
            "imaging": f"{imaging_mv.name} version {imaging_mv.version} ({IMAGING_REF})",
        },
        "imaging_reference": reference,
        "configs": configs,
        "profile": profile,
        "elapsed_s": time.monotonic() - t_start,
    }


# ----------------------------------------------------------------------------------------------- report
def _label(name: str) -> str:
    """A fixture's file name short enough for a table."""
    return name if len(name) <= 24 else f"{name[:16]}...{name[-8:]}"


def _step(name: str) -> str:
    depth = (len(name) - len(name.lstrip(" "))) // 2
    return "&nbsp;&nbsp;&nbsp;" * depth + name.strip()


def _f(x: float, digits: int = 1) -> str:
    return "n/a" if x != x else f"{x:,.{digits}f}"


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    """Each goal per configuration, from the numbers."""
    out: dict[str, Any] = {}
    for cfg in result["configs"]:
        w = cfg["workers"]
        rows = []
        for v, m in zip(cfg["vigil_triage"], cfg["mlflow_triage"], strict=True):
            ratio = v["rps"] / m["rps"] if m["rps"] else float("nan")
            p99 = v["p99_ms"] / m["p99_ms"] if m["p99_ms"] else float("nan")
            rows.append(
                {
                    "concurrency": v["concurrency"],
                    "throughput_ratio": ratio,
                    "p99_ratio": p99,
                    "met": ratio >= THROUGHPUT_GOAL and p99 <= 1.0 and v["errors"] == 0,
                }
            )
        imaging = []
        ref = result["imaging_reference"][str(cfg["vigil_threads_per_worker"])]
        for name, levels in cfg["vigil_imaging"].items():
            c1 = (
                next(r for r in levels if r["concurrency"] == 1)
                if any(r["concurrency"] == 1 for r in levels)
                else levels[0]
            )
            ratio = c1["p50_ms"] / ref[name]["reference_ms"]
            imaging.append(
                {
                    "fixture": name,
                    "p50_ms": c1["p50_ms"],
                    "reference_ms": ref[name]["reference_ms"],
                    "ratio": ratio,
                    "met": ratio <= IMAGING_GOAL and c1["errors"] == 0,
                }
            )
        out[str(w)] = {"triage": rows, "imaging": imaging}
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """One bullet per goal and configuration, from the numbers."""
    out = []
    for w, v in result["verdicts"].items():
        cfg = next(c for c in result["configs"] if str(c["workers"]) == w)
        met = [str(r["concurrency"]) for r in v["triage"] if r["met"]]
        ratios = ", ".join(f"{r['throughput_ratio']:.2f}x" for r in v["triage"])
        p99 = ", ".join(f"{r['p99_ratio']:.2f}x" for r in v["triage"])
        levels = ", ".join(str(r["concurrency"]) for r in v["triage"])
        best = max(r["rps"] for r in cfg["vigil_triage"])
        peer = max(r["rps"] for r in cfg["mlflow_triage"])
        out.append(
            f"* {w} worker(s), triage: **goal {'met at C=' + ', '.join(met) if met else 'not met'}**. Vigil's "
            f"throughput is {ratios} the peer's and its p99 {p99} the peer's at C = {levels} (best: Vigil "
            f"{best:,.0f} req/s, peer {peer:,.0f} req/s)."
        )
        peer_c1 = next((r for r in cfg["mlflow_triage"] if r["concurrency"] == 1), None)
        if met and peer_c1 is not None and peer_c1["p50_ms"] > 30:
            out.append(
                f"  Not a fair win: at C=1 the peer's p50 is {peer_c1['p50_ms']:.0f} ms, the ~40 ms delayed-ACK "
                "stall of uvicorn's multi-worker socket (no TCP_NODELAY). Vigil sets TCP_NODELAY itself; "
                "the peer does not. Compare the 1-worker rows."
            )
        for r in v["imaging"]:
            out.append(
                f"* {w} worker(s), imaging, {_label(r['fixture'])}: p50 {r['p50_ms']:.1f} ms at C=1 vs "
                f"{r['reference_ms']:.1f} ms decode + inference in-process = {r['ratio']:.2f}x: **goal "
                f"{'met' if r['met'] else 'not met'}**."
            )
    p = result["profile"]
    steps_ms = sum(p["triage_steps_ms"].values())
    for cfg in result["configs"]:
        v1 = next((r for r in cfg["vigil_triage"] if r["concurrency"] == 1), None)
        m1 = next((r for r in cfg["mlflow_triage"] if r["concurrency"] == 1), None)
        if cfg["workers"] == 1 and v1 and m1:
            out.append(
                f"* CPU per triage request at C=1, 1 worker: Vigil {v1['server_cpu_ms_per_req']:.2f} ms "
                f"(in-process steps {steps_ms:.2f} ms, so about "
                f"{v1['server_cpu_ms_per_req'] - steps_ms:.2f} ms in HTTP, framework and thread hand-offs); "
                f"the peer's whole request {m1['server_cpu_ms_per_req']:.2f} ms. 3x the peer's throughput "
                f"on the same CPUs needs about {m1['server_cpu_ms_per_req'] / THROUGHPUT_GOAL:.2f} ms per "
                "request: a third of the peer's whole request on the same FastAPI + uvicorn stack, while "
                "doing more."
            )
    if any(cfg["workers"] > 1 for cfg in result["configs"]):
        out.append(
            "* The peer's rows with several workers carry uvicorn's ~40 ms Nagle / delayed-ACK stall per "
            "keep-alive request (below, Method); `vigil serve` turns Nagle off on its sockets itself."
        )
    top = sorted(p["triage_steps_ms"].items(), key=lambda kv: -kv[1])[:3]
    inner = [f for f in p["build_results_profile"]["functions"] if "build_results" not in f["function"]][:3]
    out.append(
        "* Largest parts of one triage request in-process (last section): "
        + "; ".join(f"{k} {v:.2f} ms" for k, v in top)
        + ". Inside build_results (cProfile, inflated): "
        + "; ".join(f"`{f['function'].rsplit('/', 1)[-1]}` {f['cum_ms']:.2f} ms" for f in inner)
        + "."
    )
    return out


def render(result: dict[str, Any]) -> str:
    ver = result["verdicts"]
    m = result["machine"]
    s = result["settings"]
    lines = [
        "# Serving load benchmark: `vigil serve` vs `mlflow models serve` on loopback",
        "",
        f"Command (repository root): `{result['command']}`  ",
        f"Date: {result['date_utc']}; commit `{result['git']['commit']}`"
        + (
            f" plus uncommitted changes to {', '.join(f'`{m}`' for m in result['git']['modified'])}"
            if result["git"]["modified"]
            else ""
        )
        + f"; took {result['elapsed_s']:.0f} s"
        + (
            ". **The working tree changed during the run** (at the end: "
            f"`{result['git_at_end']['commit']}`, modified {result['git_at_end']['modified']}).  "
            if result["git_at_end"] != result["git"]
            else ".  "
        ),
        f"Machine: {m['nproc']} CPUs (`nproc`), {m['cpu_model']}, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; shared with other work (load average 1/5/15 min at the start: "
        f"{result['loadavg_start']}; at the end: {result['loadavg_end']}; after each level: in the JSON).  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".  ",
        f"Models: {result['models']['triage']}; {result['models']['imaging']}.",
        "",
        "Goals (issue): on the triage route at least 3x the throughput of `mlflow models serve` of the same ONNX",
        "model at no worse p99; imaging p50 within 1.3x of the raw onnxruntime time plus decode.",
        "",
        "## Summary",
        "",
        *summary_lines(result),
        "",
        "## Method",
        "",
        f"* Closed loop: C clients on persistent HTTP/1.1 keep-alive connections, each sending its next request "
        f"when the previous one is answered; {s['warmup_s']:g} s warm-up (not recorded), then {s['duration_s']:g} s "
        f"recorded per level. Every latency of a response completed in the recorded window is kept; req/s counts "
        f"200 answers only; any other status or a broken connection is an error.",
        "* The load generator is this script in a separate process (`--loadgen`), standard library only, on raw "
        "asyncio streams: 0.1-0.3 ms of CPU per request (the last column of the tables). `httpx.AsyncClient` with "
        "the same connection limit, tried once against the same peer while writing the script, cost 1.2-2.0 ms "
        "per request and made the peer look 2.4x slower at C=16 (359 vs 850 req/s): on 2 cores every client "
        "cycle is taken from the server. Client and server still share the machine, so at high concurrency they "
        "compete for the same CPUs.",
        "* Server CPU per request is the user + system time of the server's whole process group (read from "
        "`/proc`) over the run, divided by the requests completed (warm-up included); client CPU per request "
        "likewise for the load-generator process, whose start-up (~0.1 s) weighs on levels with few requests.",
        f"* Triage: {s['records']} real KTAS visits (each passes `validate_record`), sent in turn, so that the C "
        "requests in flight are C different records.",
        "* **Vigil is served with `--allow-unreleased --triage-model vigil-triage@candidate --imaging-model "
        "vigil-cxr@candidate`**: neither model passes the release gate on the real data (docs/fairness_audit.md), "
        "so nothing is at @production. The override is logged at start-up and flagged in every response "
        "(`flags.unreleased_model`) and audit record; the script checks that it is. The speed is the same as for a "
        "released model.",
        "* **The peer does much less work.** `mlflow models serve -m models:/vigil-triage/<v> --env-manager local` "
        "receives the record already encoded into the model's four input tensors (by Vigil's own encoder: "
        '`{"inputs": {"numeric": [[...]], "missing": ..., "categorical": ..., "tokens": ...}}`) and runs '
        "the graph once. It does no validation, no NEWS2 or safety floor, no explanation, no audit and no API-key "
        "check. Vigil, per request: checks the API key (a SQLite read), validates the record, encodes it with one "
        "copy per input field left out, runs the graph once on that batch (the prediction and its occlusion "
        "explanation), computes NEWS2 and applies its floor, writes a hash-chained audit row to SQLite before "
        "answering, and validates and renders the full response. Before the sweep the script checks that the "
        "peer returns 200 with the outcome probabilities onnxruntime gives locally for the same record, and that "
        "Vigil's are the same.",
        "* `vigil serve --workers N` gives each worker `cpus // N` onnxruntime threads. `mlflow models serve` "
        "leaves onnxruntime at its default (one thread per physical core in every worker).",
        "",
    ]
    if any(cfg["workers"] > 1 for cfg in result["configs"]):
        lines += [
            f"**Several workers: Nagle's algorithm is left on (uvicorn {result['versions']['uvicorn']}).** With "
            "`--workers N > 1` uvicorn binds the listening socket itself with `proto=0`; accepted connections "
            "inherit it and asyncio then does not set `TCP_NODELAY` (uvicorn issue #3149, open). Each keep-alive "
            "response is written as two segments (headers, body), the second waits for the client's delayed ACK, "
            "and every request after a connection's first takes about 40 ms more. `mlflow models serve` is hit: it "
            "is why its multi-worker rows show ~45 ms p50 at low concurrency and throughput of about C / 45 ms. "
            "`vigil serve` sets `TCP_NODELAY` on every accepted socket itself (`workflows.serve.NoDelayH11Protocol`), "
            "and with `--workers 1` asyncio binds the socket from getaddrinfo (`proto=6`) anyway.",
            "",
        ]
    for cfg in result["configs"]:
        w = cfg["workers"]
        v = ver[str(w)]
        lines += [
            f"## {w} worker process{'es' if w > 1 else ''} (Vigil: {cfg['vigil_threads_per_worker']} onnxruntime "
            f"thread{'s' if cfg['vigil_threads_per_worker'] > 1 else ''} per worker)",
            "",
            f"Vigil: `{cfg['vigil_command']}` (ready in {cfg['vigil_start_s']:.0f} s)  ",
            f"Peer: `{cfg['mlflow_command']}` (ready in {cfg['mlflow_start_s']:.0f} s; outcome probabilities vs local "
            f"onnxruntime: max abs diff {cfg['peer_parity_max_abs_diff']:.1e})",
            "",
            "### Triage",
            "",
            "| server | C | req/s | p50 ms | p99 ms | max ms | errors | n | server CPU ms/req | client CPU ms/req |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, rows in (
            ("Vigil `/v1/triage`", cfg["vigil_triage"]),
            ("mlflow `/invocations`", cfg["mlflow_triage"]),
        ):
            for r in rows:
                err = f"{r['errors']}" + (
                    f" ({', '.join(f'{k}: {n}' for k, n in r['error_kinds'].items())})" if r["errors"] else ""
                )
                lines.append(
                    f"| {name} | {r['concurrency']} | {_f(r['rps'])} | {_f(r['p50_ms'], 2)} | "
                    f"{_f(r['p99_ms'], 2)} | {_f(r['max_ms'], 1)} | {err} | {r['requests']} | "
                    f"{_f(r['server_cpu_ms_per_req'], 2)} | {_f(r['client_cpu_ms_per_req'], 3)} |"
                )
        lines += [
            "",
            "| C | Vigil / peer throughput | Vigil / peer p99 | goal (>= 3x, p99 <= 1x, no errors) |",
            "|---:|---:|---:|---|",
        ]
        for r in v["triage"]:
            lines.append(
                f"| {r['concurrency']} | {r['throughput_ratio']:.2f}x | {r['p99_ratio']:.2f}x | "
                f"{'met' if r['met'] else '**not met**'} |"
            )
        ref = result["imaging_reference"][str(cfg["vigil_threads_per_worker"])]
        lines += [
            "",
            "### Imaging (`/v1/imaging/second-read`, `application/dicom`, JSON answer with heat map)",
            "",
            "| fixture | size | bytes | C | req/s | p50 ms | p99 ms | errors | n | server CPU ms/req |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, rows in cfg["vigil_imaging"].items():
            for r in rows:
                lines.append(
                    f"| {_label(name)} | {ref[name]['size']} | {ref[name]['bytes']:,} | {r['concurrency']} | "
                    f"{_f(r['rps'])} | {_f(r['p50_ms'], 2)} | {_f(r['p99_ms'], 2)} | {r['errors']} | "
                    f"{r['requests']} | {_f(r['server_cpu_ms_per_req'], 2)} |"
                )
        lines += [
            "",
            f"In-process reference, {cfg['vigil_threads_per_worker']} onnxruntime thread(s), median of "
            f"{s['ref_repeats']} runs of `ImagingOnnxModel.second_read_dicom`:",
            "",
            "| fixture | decode + prepare ms | inference ms | reference ms | server p50 at C=1 ms | "
            "ratio | goal (<= 1.3x) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in v["imaging"]:
            x = ref[r["fixture"]]
            lines.append(
                f"| {_label(r['fixture'])} | {x['decode_prepare_ms']:.2f} | {x['inference_ms']:.2f} | "
                f"{x['reference_ms']:.2f} | {r['p50_ms']:.2f} | {r['ratio']:.2f}x | "
                f"{'met' if r['met'] else '**not met**'} |"
            )
        lines.append("")
    p = result["profile"]
    bp = p["build_results_profile"]
    lines += [
        "## Where the time of one request goes (in-process, median per step)",
        "",
        f"The public calls the routes make, on the same models ({p['threads']} onnxruntime thread(s)), "
        f"{p['iterations']} triage records in turn; the audit store is SQLite (WAL) in a scratch file. The server "
        "CPU per request at C=1 (tables above) minus the sum of these steps is what uvicorn (h11), Starlette, "
        "FastAPI (dependencies, response model), the middleware, the access log, the metrics and the two thread-pool "
        "hops per request (key lookup, scoring) cost.",
        "",
        "| triage step | ms |",
        "|---|---:|",
    ]
    for name, ms in p["triage_steps_ms"].items():
        lines.append(f"| {name} | {ms:.3f} |")
    lines += [
        f"| **sum** | **{sum(p['triage_steps_ms'].values()):.3f}** |",
        "",
        f"Inside `build_results`, by cProfile ({p['iterations']} calls, one record each; "
        f"{bp['profiled_ms_per_request']:.2f} ms per call under the profiler, so every number here is "
        "inflated by about the same factor against the median above). Cumulative ms per request of each "
        "Vigil function (a function's time includes its callees):",
        "",
        "| function | calls per request | cumulative ms per request |",
        "|---|---:|---:|",
    ]
    for f in bp["functions"]:
        lines.append(f"| `{f['function']}` | {f['calls_per_request']:g} | {f['cum_ms']:.3f} |")
    lines += [
        "",
        "Own time per request (under the profiler) inside libraries: onnxruntime session run "
        f"{bp['onnxruntime_run_ms']:.3f} ms; "
        + "; ".join(f"{k} {v:.3f} ms" for k, v in sorted(bp["library_own_ms"].items()))
        + ".",
        "",
    ]
    for name, imaging_steps in p["imaging_steps_ms"].items():
        lines += [f"| imaging step ({_label(name)}) | ms |", "|---|---:|"]
        for step, ms in imaging_steps.items():
            lines.append(f"| {_step(step)} | {ms:.3f} |")
        total = sum(ms for step, ms in imaging_steps.items() if not step.startswith(" "))
        lines += [f"| **sum of top-level steps** | **{total:.3f}** |", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("vigil-work"),
        help="VIGIL_WORK_DIR holding mlflow.db with vigil-triage and vigil-cxr @candidate",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 s per level, concurrency 1 and 16, imaging at 1, one worker configuration",
    )
    parser.add_argument("--duration", type=float, help="recorded seconds per level (default 10; 3 with --quick)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds before each level")
    parser.add_argument("--concurrency", type=int, nargs="+", help="triage levels (default 1 4 16 64)")
    parser.add_argument("--imaging-concurrency", type=int, nargs="+", help="imaging levels (default 1 4)")
    parser.add_argument("--workers", type=int, nargs="+", help="worker configurations (default 1 2)")
    parser.add_argument("--records", type=int, default=64, help="distinct triage records sent in turn")
    parser.add_argument("--ref-repeats", type=int, default=30, help="in-process imaging reference runs")
    parser.add_argument("--profile-iterations", type=int, default=300, help="requests timed step by step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "serving_benchmark.md")
    parser.add_argument("--loadgen", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.concurrency = args.concurrency or ([1, 16] if args.quick else [1, 4, 16, 64])
    args.imaging_concurrency = args.imaging_concurrency or ([1] if args.quick else [1, 4])
    args.workers = args.workers or ([1] if args.quick else [1, 2])
    if args.quick:
        args.ref_repeats = min(args.ref_repeats, 10)
        args.profile_iterations = min(args.profile_iterations, 50)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.loadgen is not None:
        loadgen_main(args.loadgen)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(args)
    result["verdicts"] = verdicts(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(result))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    for w, v in result["verdicts"].items():
        for r in v["triage"]:
            print(
                f"workers={w} triage C={r['concurrency']}: throughput {r['throughput_ratio']:.2f}x peer, "
                f"p99 {r['p99_ratio']:.2f}x peer -> {'met' if r['met'] else 'NOT met'}"
            )
        for r in v["imaging"]:
            print(
                f"workers={w} imaging {_label(r['fixture'])}: p50 {r['p50_ms']:.1f} ms / reference "
                f"{r['reference_ms']:.1f} ms = {r['ratio']:.2f}x -> {'met' if r['met'] else 'NOT met'}"
            )
    print(f"wrote {args.out} and {args.out.with_suffix('.json')} in {result['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
