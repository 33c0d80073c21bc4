"""Throughput benchmark of the DICOM node on loopback: instances received and analysed per second, and the time
from C-STORE to the SR delivered.

One process (this one) runs a :class:`serving.dicom_node.node.DicomNode` exactly as the tests build it: a
:class:`serving.model_source.ModelHolder` over a local model folder, a SQLite audit
:class:`serving.store.database.Store`, and a queue (SQLite in a scratch folder; Redis too when 127.0.0.1:6379
answers). Two more processes, both this script with a hidden flag and importing only pydicom and pynetdicom, stand
around it:

* the destination (``--destination LOG``): a pynetdicom Storage SCP, the workstation's PACS, that appends one
  line per SR it receives: the source SOP Instance UID the SR references, the SR's SOP Instance UID and the
  arrival time (``time.time()`` when its C-STORE handler runs);
* the modality (``--scu SPEC``): C-STOREs prepared copies of the chest fixtures, each with fresh Study, Series
  and SOP Instance UIDs (pixel data and transfer syntax as stored), over one association or several in parallel
  (one forked process per association, pulling the next instance from a shared counter; see :func:`scu_main` for
  why not threads), and records when each C-STORE was sent and answered.

Both are separate processes so that their CPU time is their own and their pynetdicom threads do not take the
node's GIL; on a 2-core machine they still take CPU from the node, and each reports its CPU time so that it is
visible. All times are ``time.time()`` (one clock for the three processes and the queue's own time stamps).

Runs, for each queue back-end:

* receive only (``workers=0``): how fast the SCP takes instances (durable write + queue) with nothing analysing;
* unloaded: one instance at a time, the next sent only once the previous one's SR has arrived (``workers=1``):
  the C-STORE-to-SR time without any backlog;
* burst: N instances (60; 18 with ``--quick``) sent as fast as the SCP answers, with ``workers`` 1 and 2 and over
  1 and 4 associations (Redis: 4 only, unless ``--redis-single``, to keep the run near 4 minutes):
  receive throughput (first C-STORE sent to last success), end-to-end throughput (first C-STORE sent to last SR
  received) and the C-STORE-to-SR time of every instance.

Run from the repository root (about 4 minutes on 2 cores; ``--quick`` about 1 minute)::

    nice .venv/bin/python benchmarks/dicom_node_throughput.py [--quick]

Writes ``--out`` (Markdown, default docs/dicom_node_benchmark.md) and the same numbers as JSON next to it.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("dicom_node_throughput")

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
FIXTURES = REPO.parent / "shared" / "data" / "imaging" / "dicom_fixtures" / "chest"
MODEL = Path("/tmp/bench-work/runs/imaging-20261123T131443Z/cxr_fp32.onnx")
MODEL_NAME, MODEL_VERSION = "vigil-cxr", "1"
NODE_AET, SCU_AET, DEST_AET = "VIGIL", "BENCHSCU", "BENCHPACS"
REDIS_URL = "redis://127.0.0.1:6379/0"
PARALLEL_ASSOCIATIONS = 4
START_TIMEOUT_S = 30.0


# ----------------------------------------------------------------------------------------------- destination
# Runs in its own process (``--destination LOG``): pydicom and pynetdicom only.


def _referenced_uid(ds: Any) -> str:
    """The source SOP Instance UID an SR references (its evidence sequence), or "" when it names none."""
    try:
        series = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        return str(series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    except (AttributeError, IndexError, KeyError):
        return ""


def destination_main(log_path: Path) -> None:
    """Listen on a free loopback port, print ``READY <port>``, log each SR, exit when stdin closes."""
    from pynetdicom import AE, evt
    from pynetdicom.presentation import AllStoragePresentationContexts

    ae = AE(ae_title=DEST_AET)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax)
    lock = threading.Lock()
    out = open(log_path, "a", buffering=1)

    def on_store(event: Any) -> int:
        arrived = time.time()
        ds = event.dataset
        line = f"{_referenced_uid(ds)}\t{ds.SOPInstanceUID}\t{arrived:.6f}\t{event.assoc.requestor.ae_title}\n"
        with lock:
            out.write(line)
        return 0x0000

    server = ae.start_server((HOST, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        sys.stdin.read()  # the parent closes our stdin to stop us (or dies, which closes it too)
    finally:
        server.shutdown()
        out.close()
        times = os.times()
        print(f"CPU {times.user + times.system:.3f}", flush=True)


# ----------------------------------------------------------------------------------------------- modality (SCU)
# Runs in its own process (``--scu SPEC``): pydicom and pynetdicom only.


def _new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    return data[:end].decode().splitlines(), offset + end


class _Counter(logging.Handler):
    """Counts log records by message (the modality's pynetdicom warnings)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.name}: {record.getMessage()}"[:160]] += 1


def _one_association(spec: dict[str, Any], take: Any, out: dict[str, Any]) -> None:
    """Open one association and C-STORE the instances ``take()`` hands out until it returns None."""
    from pynetdicom import AE

    files: list[dict[str, str]] = spec["files"]
    ae = AE(ae_title=SCU_AET)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for sop_class, syntax in sorted({(f["sop_class"], f["transfer_syntax"]) for f in files}):
        ae.add_requested_context(sop_class, [syntax])
    t0 = time.time()
    assoc = ae.associate(HOST, spec["port"], ae_title=NODE_AET)
    out["associations"].append({"established": assoc.is_established, "setup_s": time.time() - t0})
    if not assoc.is_established:
        out["errors"].append("association not established")
        return
    serial = spec["mode"] == "serial"
    seen: set[str] = set()
    offset = 0
    try:
        while (index := take()) is not None:
            entry = files[index]
            t_sent = time.time()
            status = assoc.send_c_store(Path(entry["path"]))
            t_ack = time.time()
            code = int(status.Status) if status is not None and "Status" in status else None
            record: dict[str, Any] = {"t_sent": t_sent, "t_ack": t_ack, "status": code}
            if serial and code == 0:  # wait for this instance's SR before sending the next one
                deadline = time.time() + spec["serial_timeout_s"]
                while entry["uid"] not in seen and time.time() < deadline:
                    time.sleep(0.002)
                    lines, offset = _new_lines(Path(spec["dest_log"]), offset)
                    seen.update(line.split("\t", 1)[0] for line in lines)
                record["t_sr_seen"] = time.time() if entry["uid"] in seen else None
            out["sent"][str(index)] = record
    except (RuntimeError, ValueError, OSError) as exc:
        out["errors"].append(f"{type(exc).__name__}: {exc}"[:200])
    finally:
        if assoc.is_established:
            assoc.release()


def _association_process(spec: dict[str, Any], counter: Any, part: str) -> None:
    """One association in its own process (forked), pulling the next index from a shared counter."""
    warned = _Counter()
    logging.getLogger("pynetdicom").addHandler(warned)
    n = len(spec["files"])

    def take() -> int | None:
        with counter.get_lock():
            index = int(counter.value)
            counter.value = index + 1
        return index if index < n else None

    out: dict[str, Any] = {"sent": {}, "associations": [], "errors": []}
    _one_association(spec, take, out)
    out["warnings"] = dict(warned.counts)
    Path(part).write_text(json.dumps(out))


def scu_main(spec_path: Path) -> None:
    """Send the instances of ``spec`` and write what happened to ``spec["out"]`` (JSON).

    Several associations are several processes (forked from this one, which has imported only pydicom and
    pynetdicom), not threads: pynetdicom 3.0.4's requestor pauses its reactor thread around ``send_c_store`` with a
    handshake that is not atomic, and with a few requestor threads fighting for one GIL the reactor now and then
    takes the C-STORE response off the queue first ("Received unexpected C-STORE service message"); the
    ``send_c_store`` call then waits until the SCP's network timeout aborts the association, 30 s later.
    """
    import multiprocessing

    spec = json.loads(spec_path.read_text())
    k = int(spec["associations"])
    merged: dict[str, Any] = {"sent": {}, "associations": [], "errors": [], "warnings": {}}
    if k == 1:
        warned = _Counter()
        logging.getLogger("pynetdicom").addHandler(warned)
        indices = iter(range(len(spec["files"])))
        _one_association(spec, lambda: next(indices, None), merged)
        merged["warnings"] = dict(warned.counts)
    else:
        ctx = multiprocessing.get_context("fork")
        counter = ctx.Value("q", 0)
        parts = [f"{spec['out']}.part{i}" for i in range(k)]
        procs = [ctx.Process(target=_association_process, args=(spec, counter, part)) for part in parts]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        for part in parts:
            if not Path(part).exists():
                merged["errors"].append("an association process wrote no result")
                continue
            got = json.loads(Path(part).read_text())
            merged["sent"].update(got["sent"])
            merged["associations"] += got["associations"]
            merged["errors"] += got["errors"]
            for message, n in got["warnings"].items():
                merged["warnings"][message] = merged["warnings"].get(message, 0) + n
    times = os.times()
    sent = [merged["sent"].get(str(i)) for i in range(len(spec["files"]))]
    Path(spec["out"]).write_text(
        json.dumps(
            {
                "sent": sent,
                "associations": merged["associations"],
                "errors": merged["errors"],
                "warnings": merged["warnings"],
                "cpu_s": times.user + times.system + times.children_user + times.children_system,
            }
        )
    )


# ----------------------------------------------------------------------------------------------- orchestration
@dataclass(frozen=True)
class Instance:
    """One prepared copy of a fixture: where it is, its fixture, UIDs and transfer syntax."""

    path: Path
    fixture: str
    uid: str
    sop_class: str
    transfer_syntax: str
    size_bytes: int


def chest_fixtures() -> list[Path]:
    return sorted(p for p in FIXTURES.iterdir() if p.is_file() and p.suffix != ".py")


def prepare_instances(n: int, folder: Path, seed: int) -> list[Instance]:
    """``n`` copies of the chest fixtures, cycled, each with fresh Study/Series/SOP Instance UIDs.

    UIDs come from :func:`pydicom.uid.generate_uid` with entropy ``(seed, copy number, attribute)``: the same
    seed gives the same UIDs. The pixel data (compressed or not) and the transfer syntax are kept as stored.
    """
    import warnings

    from pydicom.uid import generate_uid

    from models.imaging.dicom_read import read_dicom

    folder.mkdir(parents=True, exist_ok=True)
    sources = [(p.name, read_dicom(p)) for p in chest_fixtures()]
    out = []
    for i in range(n):
        name, ds = sources[i % len(sources)]
        uids = {
            k: generate_uid(entropy_srcs=[str(seed), str(i), k])
            for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        }
        for keyword, uid in uids.items():
            setattr(ds, keyword, uid)
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"{i:04d}.dcm"
        with warnings.catch_warnings():  # 966_fixed's over-long AccessionNumber is written as it came
            warnings.simplefilter("ignore")
            ds.save_as(path, enforce_file_format=True)
        out.append(
            Instance(
                path,
                name,
                uids["SOPInstanceUID"],
                str(ds.SOPClassUID),
                str(ds.file_meta.TransferSyntaxUID),
                path.stat().st_size,
            )
        )
    return out


def build_model_folder(folder: Path) -> Path:
    """A local model folder holding vigil-cxr version 1 with a stand-in passing release record (see the doc)."""
    from models.onnx_file import sha256_file
    from serving.model_source import ResolvedModel, write_local_release

    gate = {
        "status": "pass",
        "policy_version": "benchmark-stand-in",
        "checked_utc": utc_stamp(),
        "summary": "benchmark only: vigil-cxr version 1 is the unreleased @candidate; not for patients",
    }
    write_local_release(
        folder,
        ResolvedModel("imaging", MODEL_NAME, MODEL_VERSION, MODEL, sha256_file(MODEL), gate, f"benchmark {MODEL}"),
    )
    return folder


def load_holder(folder: Path, threads: int, warm_with: list[Instance]) -> Any:
    """A ModelHolder serving the imaging model, warmed by one second read + SR (as the node makes it) per fixture."""
    from models.imaging.sr import sr_to_bytes
    from serving.model_source import LocalFolderLocator, ModelHolder

    holder = ModelHolder(LocalFolderLocator(folder), allow_unreleased=False, threads=threads, tasks=("imaging",))
    holder.load_all()
    runtime = holder.get("imaging").runtime
    for instance in {i.fixture: i for i in warm_with}.values():
        read = runtime.second_read_dicom(instance.path)
        sr_to_bytes(read.structured_report(MODEL_NAME, MODEL_VERSION))
    return holder


def thread_scaling(holder: Any, instances: list[Instance]) -> dict[str, dict[str, float]]:
    """Per fixture: two second reads one after the other vs two at once in two threads (seconds).

    Two workers are two threads of one process: they only overlap where the code releases the GIL.
    """
    runtime = holder.get("imaging").runtime
    out = {}
    for instance in {i.fixture: i for i in instances}.values():
        t0 = time.perf_counter()
        for _ in range(2):
            runtime.second_read_dicom(instance.path)
        sequential = time.perf_counter() - t0
        threads = [threading.Thread(target=runtime.second_read_dicom, args=(instance.path,)) for _ in range(2)]
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        out[instance.fixture] = {"sequential_s": sequential, "two_threads_s": time.perf_counter() - t0}
    return out


def open_timed_queue(url: str, prefix: str) -> Any:
    """The node's queue, with the time of every claim kept (``claims[(stage, uid)]``); nothing else changes."""
    from serving.dicom_node.queue_sqlite import SqliteQueue

    class ClaimClock:
        claims: dict[tuple[str, str], float]

        def claim(self, stage: str, owner: str, lease_s: float, *, now: float | None = None) -> Any:
            item = super().claim(stage, owner, lease_s, now=now)  # type: ignore[misc]
            if item is not None:
                self.claims[(stage, item.sop_instance_uid)] = item.updated_at  # the claim's time stamp
            return item

    if url.startswith("sqlite:///"):

        class TimedSqlite(ClaimClock, SqliteQueue):
            pass

        queue: Any = TimedSqlite(Path(url.removeprefix("sqlite:///")))
    else:
        from serving.dicom_node.queue_redis import RedisQueue

        class TimedRedis(ClaimClock, RedisQueue):
            pass

        queue = TimedRedis(url, prefix=prefix)
    queue.claims = {}
    return queue


def redis_available() -> dict[str, str] | None:
    """Version and persistence settings of the Redis at :data:`REDIS_URL`, or None when it does not answer."""
    try:
        import redis
    except ImportError:
        return None
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2, decode_responses=True)
    try:
        info = client.info("server")
        config = {k: v for k, v in client.config_get("append*").items() if k in ("appendonly", "appendfsync")}
        return {"version": str(info.get("redis_version")), **config}
    except redis.RedisError:
        return None
    finally:
        client.close()


def drop_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class Child:
    """A helper process of this script (destination or modality); always ended by :meth:`stop`."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )

    def stop(self, timeout_s: float = 10.0) -> str:
        """Close its stdin, wait, kill it if it lingers; returns what it printed."""
        out = b""
        try:
            out, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        finally:
            self._log.close()
        return out.decode(errors="replace")


def start_destination(log_path: Path, scratch: Path) -> tuple[Child, int]:
    child = Child(["--destination", str(log_path)], scratch / f"{log_path.stem}.stderr")
    assert child.proc.stdout is not None
    line = child.proc.stdout.readline().decode().strip()  # blocks until READY (or EOF if it died)
    if not line.startswith("READY "):
        child.stop(1)
        raise RuntimeError(f"destination SCP did not start (see {scratch / (log_path.stem + '.stderr')})")
    return child, int(line.split()[1])


def read_dest_log(path: Path) -> list[tuple[str, str, float, str]]:
    lines, _ = _new_lines(path, 0) if path.exists() else ([], 0)
    return [(a, b, float(c), d.strip()) for a, b, c, d in (line.split("\t") for line in lines)]


class LogCounter(logging.Handler):
    """Counts WARNING and above from the node, pydicom and highdicom (message templates, not their arguments)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", str(record.msg))  # a quoted value may be a header value
        self.counts[f"{record.levelname} {record.name}: {message}"] += 1


@dataclass(frozen=True)
class RunSpec:
    name: str
    queue: str  # "sqlite" or "redis"
    workers: int
    associations: int
    mode: str  # "burst", "serial" or "receive"
    n: int


def run_one(
    spec: RunSpec, instances: list[Instance], holder: Any, scratch: Path, counter: LogCounter, deadline_s: float
) -> dict[str, Any]:
    """One node, one destination, one modality run; returns the measurements (per instance and summarised)."""
    from serving.dicom_node.node import DicomNode
    from serving.dicom_node.settings import DicomNodeSettings
    from serving.store.database import Store

    work = scratch / spec.name
    work.mkdir()
    chosen = instances[: spec.n]
    prefix = f"vigil-bench:{uuid.uuid4().hex[:12]}:"
    url = f"sqlite:///{work / 'dicom_queue.db'}" if spec.queue == "sqlite" else REDIS_URL
    dest_log = work / "destination.log"
    dest_log.touch()
    dest, dest_port = start_destination(dest_log, scratch / spec.name)
    store = Store(f"sqlite:///{work / 'serving.db'}")
    store.create_schema()
    queue = open_timed_queue(url, prefix)
    settings = DicomNodeSettings(
        work_dir=work,
        port=0,
        allowed_calling_aets=SCU_AET,
        ae_title=NODE_AET,
        destination=f"{DEST_AET}@{HOST}:{dest_port}",
        queue_url=url,
        queue_prefix=prefix,
        workers=spec.workers,
    )
    node = DicomNode(settings, holder, store, queue=queue, node_id=f"bench:{spec.name}")
    warnings_before = collections.Counter(counter.counts)
    scu: Child | None = None
    dest_out = ""
    try:
        node.start()
        scu_spec = {
            "port": node.port,
            "associations": spec.associations,
            "mode": spec.mode,
            "dest_log": str(dest_log),
            "serial_timeout_s": 120,
            "out": str(work / "scu.json"),
            "files": [
                {"path": str(i.path), "uid": i.uid, "sop_class": i.sop_class, "transfer_syntax": i.transfer_syntax}
                for i in chosen
            ],
        }
        (work / "scu_spec.json").write_text(json.dumps(scu_spec))
        load_start = loadavg()
        cpu0 = os.times()
        scu = Child(["--scu", str(work / "scu_spec.json")], work / "scu.stderr")
        scu.proc.wait(timeout=deadline_s)
        scu_result = json.loads((work / "scu.json").read_text())
        wanted = 0 if spec.mode == "receive" else sum(1 for s in scu_result["sent"] if s and s["status"] == 0)
        end = time.monotonic() + deadline_s
        polls = 0
        while len(read_dest_log(dest_log)) < wanted and time.monotonic() < end:
            polls += 1
            if polls % 20 == 0:  # the queue once a second only: its lock is the workers' too
                counts = node.queue.counts()
                if counts["received"] + counts["analysing"] + counts["analysed"] + counts["delivering"] == 0:
                    break  # nothing left to do: the rest failed or was not analysed
            time.sleep(0.05)
        cpu1 = os.times()
        while spec.mode != "receive" and time.monotonic() < end:  # the last SR arrives before its item is marked
            counts = node.queue.counts()
            if counts["received"] + counts["analysing"] + counts["analysed"] + counts["delivering"] == 0:
                break
            time.sleep(0.02)
        items = {i.uid: node.queue.get(i.uid) for i in chosen}
        claims = dict(queue.claims)
        counts = node.queue.counts()
    finally:
        try:
            if scu is not None:
                scu.stop(5)
            node.stop(timeout_s=30)
        finally:
            dest_out = dest.stop()
            queue.close()
            store.dispose()
            if spec.queue == "redis":
                drop_redis_prefix(prefix)
    node_settings = {
        k: getattr(settings, k)
        for k in (
            "workers",
            "max_associations",
            "poll_s",
            "network_timeout_s",
            "keep_instances",
            "send_heatmap_sc",
            "max_attempts",
        )
    }
    dest_cpu = next((float(line.split()[1]) for line in dest_out.splitlines() if line.startswith("CPU ")), None)
    new_warnings = dict(collections.Counter(counter.counts) - warnings_before)
    out = summarise(
        spec,
        chosen,
        scu_result,
        read_dest_log(dest_log),
        items,
        claims,
        counts,
        {
            "node_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
            "scu_s": scu_result["cpu_s"],
            "destination_s": dest_cpu,
        },
        {"start": load_start, "end": loadavg()},
        new_warnings,
    )
    out["node_settings"] = node_settings
    return out


# ----------------------------------------------------------------------------------------------- numbers
def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation, as numpy's default), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def dist(values_s: list[float]) -> dict[str, float | int | None]:
    """p50 / p99 / max of durations given in seconds, in milliseconds."""
    ms = [1000 * v for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": pct(ms, 50),
        "p99_ms": pct(ms, 99),
        "max_ms": max(ms) if ms else None,
        "mean_ms": sum(ms) / len(ms) if ms else None,
    }


def summarise(
    spec: RunSpec,
    chosen: list[Instance],
    scu: dict[str, Any],
    dest: list[tuple[str, str, float, str]],
    items: dict[str, Any],
    claims: dict[tuple[str, str], float],
    counts: dict[str, int],
    cpu: dict[str, float | None],
    load: dict[str, str],
    warnings: dict[str, int],
) -> dict[str, Any]:
    sent = scu["sent"]
    ok = [(inst, s) for inst, s in zip(chosen, sent, strict=True) if s and s["status"] == 0]
    arrivals: dict[str, list[float]] = collections.defaultdict(list)
    for source_uid, _sr_uid, t, _calling in dest:
        arrivals[source_uid].append(t)
    first_sent = min(s["t_sent"] for _, s in ok) if ok else 0.0
    last_ack = max(s["t_ack"] for _, s in ok) if ok else 0.0
    out: dict[str, Any] = {
        "spec": spec.__dict__,
        "sent": len(chosen),
        "acknowledged": len(ok),
        "statuses": dict(
            collections.Counter(f"0x{s['status']:04X}" if s and s["status"] is not None else "none" for s in sent)
        ),
        "scu_errors": scu["errors"],
        "scu_warnings": scu.get("warnings", {}),
        "association_setup_ms": [round(1000 * a["setup_s"], 1) for a in scu["associations"]],
        "queue_counts": {k: v for k, v in counts.items() if v},
        "cpu_s": cpu,
        "loadavg": load,
        "node_warnings": warnings,
        "sr_received": len(dest),
        "sr_duplicates": sum(len(v) - 1 for v in arrivals.values() if len(v) > 1),
        "sr_unmatched": sum(1 for uid in arrivals if uid not in items),
        "receive_s": last_ack - first_sent,
        "receive_per_s": len(ok) / (last_ack - first_sent) if ok and last_ack > first_sent else None,
        "cstore_rtt": dist([s["t_ack"] - s["t_sent"] for _, s in ok]),
    }
    unanswered = []
    for index, (inst, s) in enumerate(zip(chosen, sent, strict=True)):
        if s and s["status"] == 0:
            continue
        item = items.get(inst.uid)
        unanswered.append(
            {
                "index": index,
                "fixture": inst.fixture,
                "status": s["status"] if s else None,
                "t_sent_s": s["t_sent"] - first_sent if s else None,
                "t_returned_s": s["t_ack"] - first_sent if s else None,
                "queued_s": item.received_at - first_sent if item else None,
                "state": item.state if item else None,
            }
        )
    out["unanswered"] = unanswered
    if spec.mode == "receive":
        out["sr_expected"] = 0
        return out
    # The SR of each source: the queue says which SR it made; the destination which source the SR references.
    per_instance = []
    for inst, s in ok:
        item = items.get(inst.uid)
        got = arrivals.get(inst.uid)
        row: dict[str, Any] = {
            "fixture": inst.fixture,
            "t_sent": s["t_sent"],
            "t_ack": s["t_ack"],
            "t_sr": min(got) if got else None,
            "state": item.state if item else None,
        }
        if item is not None:
            row.update(
                received=item.received_at,
                claim_analyse=claims.get(("analyse", inst.uid)),
                analysed=item.analysed_at,
                claim_deliver=claims.get(("deliver", inst.uid)),
                delivered=item.delivered_at,
                delivery_attempts=item.delivery_attempts,
                timings_ms=(item.result or {}).get("timings_ms"),
            )
            row["sr_matches_queue"] = bool(got) and item.sr_sop_instance_uid in {
                sr for src, sr, _, _ in dest if src == inst.uid
            }
        per_instance.append(row)
    done = [r for r in per_instance if r["t_sr"] is not None]
    last_sr = max((r["t_sr"] for r in done), default=None)
    out.update(
        {
            "sr_expected": len(ok),
            "sr_delivered_for": len(done),
            "sr_matches_queue": sum(1 for r in per_instance if r.get("sr_matches_queue")),
            "delivery_retries": sum(max(0, (r.get("delivery_attempts") or 1) - 1) for r in per_instance),
            "end_to_end_s": (last_sr - first_sent) if last_sr else None,
            "first_sr_s": min((r["t_sr"] for r in done), default=first_sent) - first_sent if done else None,
            "last_analysed_s": max((r["analysed"] for r in done if r.get("analysed")), default=first_sent) - first_sent,
            "end_to_end_per_s": len(done) / (last_sr - first_sent) if last_sr and last_sr > first_sent else None,
            "cstore_to_sr": dist([r["t_sr"] - r["t_sent"] for r in done]),
            "stages": stages(done),
            "by_fixture": by_fixture(done),
            "per_instance_ms": [compact(r, first_sent) for r in per_instance],
        }
    )
    return out


STAGES = (  # (name, from, to): the C-STORE-to-SR time cut where the node records a time stamp
    ("C-STORE sent -> queued (received_at)", "t_sent", "received"),
    ("queued -> claimed for analysis (wait)", "received", "claim_analyse"),
    ("claimed -> analysed (read, audit, SR)", "claim_analyse", "analysed"),
    ("analysed -> claimed for delivery (wait)", "analysed", "claim_deliver"),
    ("claimed for delivery -> SR at destination", "claim_deliver", "t_sr"),
)


def stages(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for name, a, b in STAGES:
        values = [r[b] - r[a] for r in rows if r.get(a) is not None and r.get(b) is not None]
        out[name] = dist(values)
    timed = [r for r in rows if r.get("timings_ms") and r.get("claim_analyse") and r.get("analysed")]
    for key in ("decode_prepare", "inference"):
        out[f"  of which {key.replace('_', ' + ')} (the model's own timing)"] = dist(
            [r["timings_ms"][key] / 1000 for r in timed]
        )
    out["  of which the rest (header read checks, audit write, SR built and written, queue)"] = dist(
        [r["analysed"] - r["claim_analyse"] - sum(r["timings_ms"].values()) / 1000 for r in timed]
    )
    return out


def by_fixture(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per fixture: median analysis (claim -> analysed), decode + prepare and inference, and C-STORE-to-SR."""
    groups: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in rows:
        groups[r["fixture"]].append(r)
    out = {}
    for fixture, group in sorted(groups.items()):
        analyse = [r["analysed"] - r["claim_analyse"] for r in group if r.get("claim_analyse") and r.get("analysed")]
        decode = [r["timings_ms"]["decode_prepare"] / 1000 for r in group if r.get("timings_ms")]
        infer = [r["timings_ms"]["inference"] / 1000 for r in group if r.get("timings_ms")]
        out[fixture] = {
            "n": len(group),
            "analysis_p50_ms": dist(analyse)["p50_ms"],
            "decode_prepare_p50_ms": dist(decode)["p50_ms"],
            "inference_p50_ms": dist(infer)["p50_ms"],
            "cstore_to_sr_p50_ms": dist([r["t_sr"] - r["t_sent"] for r in group])["p50_ms"],
        }
    return out


def compact(row: dict[str, Any], t0: float) -> dict[str, Any]:
    """One instance's time stamps in ms after the run's first C-STORE (for the JSON)."""
    out: dict[str, Any] = {"fixture": row["fixture"], "state": row.get("state")}
    for key in ("t_sent", "t_ack", "received", "claim_analyse", "analysed", "claim_deliver", "delivered", "t_sr"):
        value = row.get(key)
        out[key] = round(1000 * (value - t0), 1) if value is not None else None
    return out


# ----------------------------------------------------------------------------------------------- environment
def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    disk = subprocess.run(
        ["df", "-h", "--output=source,fstype", tempfile.gettempdir()], capture_output=True, text=True, check=False
    ).stdout.split("\n")[1:2]
    return {
        "nproc": nproc,
        "cpu_model": model,
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "scratch_fs": " ".join(disk).split(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in (
        "pynetdicom",
        "pydicom",
        "highdicom",
        "onnxruntime",
        "numpy",
        "pylibjpeg-openjpeg",
        "pyjpegls",
        "pylibjpeg-libjpeg",
        "redis",
        "SQLAlchemy",
    ):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def git_state() -> dict[str, Any]:
    """HEAD, the paths that differ from it (``git status --porcelain``) and a digest of the tracked changes."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=normal"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=REPO, capture_output=True, check=False).stdout
    return {
        "commit": head.stdout.strip(),
        "changes": [line.strip() for line in status.stdout.splitlines()],
        "diff_sha256": hashlib.sha256(diff).hexdigest(),
    }


# ----------------------------------------------------------------------------------------------- the run
def plan(args: argparse.Namespace, queues: list[str]) -> list[RunSpec]:
    runs = []
    for q in queues:
        for k in (1, PARALLEL_ASSOCIATIONS):
            runs.append(RunSpec(f"{q}-receive-a{k}", q, 0, k, "receive", args.receive_n))
        runs.append(RunSpec(f"{q}-serial-w1", q, 1, 1, "serial", args.serial_n))
        for w in args.workers:
            for k in (1, PARALLEL_ASSOCIATIONS):
                if q == "redis" and k == 1 and not args.redis_single:
                    continue  # see --redis-single: keeps the full run near 4 minutes
                runs.append(RunSpec(f"{q}-burst-w{w}-a{k}", q, w, k, "burst", args.n))
    return runs


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any] = {
        "date_utc": utc_stamp(),
        "git": git_state(),
        "machine": machine(),
        "versions": versions(),
        "loadavg_start": loadavg(),
        "command": " ".join(
            shlex.quote(a) for a in [".venv/bin/python", "benchmarks/dicom_node_throughput.py", *sys.argv[1:]]
        ),
        "niceness": os.nice(0),
    }
    redis_info = redis_available()
    result["redis"] = redis_info
    queues = ["sqlite"] + (["redis"] if redis_info else [])
    counter = LogCounter()
    for name in ("serving", "pydicom", "highdicom", "pynetdicom"):
        logging.getLogger(name).addHandler(counter)
    with tempfile.TemporaryDirectory(prefix="vigil-dicom-bench-") as tmp:
        scratch = Path(tmp)
        need = max(args.n, args.receive_n, args.serial_n)
        result["burst_n"] = args.n
        t0 = time.monotonic()
        instances = prepare_instances(need, scratch / "instances", args.seed)
        result["prepare_s"] = time.monotonic() - t0
        result["fixtures"] = {
            name: {"transfer_syntax": i.transfer_syntax, "sop_class": i.sop_class, "size_bytes": i.size_bytes}
            for name, i in {i.fixture: i for i in instances}.items()
        }
        folder = build_model_folder(scratch / "models")
        cpus = os.cpu_count() or 1
        holders: dict[int, Any] = {}
        result["ort_threads"] = {}
        for w in sorted({1, *args.workers}):
            threads = max(1, cpus // w)
            holders[w] = load_holder(folder, threads, instances)
            result["ort_threads"][w] = threads
        result["thread_scaling"] = thread_scaling(holders[max(args.workers)], instances)
        result["model"] = {
            "name": MODEL_NAME,
            "version": MODEL_VERSION,
            "path": str(MODEL),
            "sha256": holders[1].get("imaging").runtime.sha256,
        }
        result["runs"] = []
        for spec in plan(args, queues):
            logger.info(
                "run %s: %d instance(s), %d worker(s), %d association(s)",
                spec.name,
                spec.n,
                spec.workers,
                spec.associations,
            )
            t1 = time.monotonic()
            holder = holders[max(1, spec.workers)]
            one = run_one(spec, instances, holder, scratch, counter, args.run_timeout)
            one["wall_s"] = time.monotonic() - t1
            result["runs"].append(one)
            logger.info("  %s", headline(one))
    result["loadavg_end"] = loadavg()
    result["elapsed_s"] = time.monotonic() - started
    result["git_at_end"] = git_state()
    return result


def headline(r: dict[str, Any]) -> str:
    parts = [f"receive {_f(r['receive_per_s'], 1)}/s"]
    if r["spec"]["mode"] != "receive":
        c = r["cstore_to_sr"]
        parts += [
            f"end-to-end {_f(r.get('end_to_end_per_s'), 2)}/s",
            f"C-STORE->SR p50 {_f(c['p50_ms'], 0)} p99 {_f(c['p99_ms'], 0)} max {_f(c['max_ms'], 0)} ms",
            f"SRs {r['sr_delivered_for']}/{r['sr_expected']}",
        ]
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------- report
def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _cpu_per(r: dict[str, Any], key: str) -> str:
    value = r["cpu_s"].get(key)
    return "-" if value is None or not r["acknowledged"] else f"{1000 * value / r['acknowledged']:.0f}"


def _fixture_label(name: str) -> str:
    return name if len(name) <= 24 else f"{name[:12]}...{name[-9:]}"


def _syntax(uid: str) -> str:
    from pydicom.uid import UID

    return str(UID(uid).name)


def _ms(d: dict[str, Any] | None, key: str, digits: int = 0, scale: float = 1.0) -> str:
    value = None if d is None else d.get(key)
    return "-" if value is None else f"{value / scale:.{digits}f}"


def _runs(result: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return [r for r in result["runs"] if r["spec"]["mode"] == mode]


def _span(values: list[float | None], digits: int, scale: float = 1.0) -> str:
    """``"a-b"`` (or ``"a"``) of the values that are not None."""
    got = sorted(v / scale for v in values if v is not None)
    if not got:
        return "-"
    low, high = f"{got[0]:.{digits}f}", f"{got[-1]:.{digits}f}"
    return low if low == high else f"{low}-{high}"


def _slowest_fixture(runs: list[dict[str, Any]]) -> str:
    """The fixture of each run's longest C-STORE-to-SR time ("a or b" when the runs disagree)."""
    names = []
    for r in runs:
        rows = [x for x in r["per_instance_ms"] if x["t_sr"] is not None and x["t_sent"] is not None]
        if rows:
            names.append(max(rows, key=lambda x: x["t_sr"] - x["t_sent"])["fixture"])
    return " or ".join(dict.fromkeys(names)) or "-"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The issue's three numbers, as ranges over the configurations run (each run is in the tables)."""
    receive, bursts, serial = _runs(result, "receive"), _runs(result, "burst"), _runs(result, "serial")
    lines = []
    for k in sorted({r["spec"]["associations"] for r in receive}):
        runs = [r for r in receive if r["spec"]["associations"] == k]
        lines.append(
            f"* **Received** with no analysis running, over {k} association(s): "
            f"**{_span([r['receive_per_s'] for r in runs], 0)} instances/s** "
            f"({', '.join(r['spec']['queue'] for r in runs)} queue)."
        )
    for k in sorted({r["spec"]["associations"] for r in bursts}):
        runs = [r for r in bursts if r["spec"]["associations"] == k]
        lines.append(
            f"* Received while the workers analyse a burst, over {k} association(s): "
            f"{_span([r['receive_per_s'] for r in runs], 0)} instances/s."
        )
    if bursts:
        lines.append(
            f"* **Received, analysed and the SR delivered** (first C-STORE to last SR, bursts of "
            f"{result['burst_n']}): **{_span([r['end_to_end_per_s'] for r in bursts], 2)} instances/s** "
            f"over every queue, worker count and association count tried "
            f"({len(bursts)} runs, table below)."
        )
    if serial:
        lines.append(
            f"* **C-STORE to SR delivered, one instance at a time** (no backlog): p50 "
            f"**{_span([r['cstore_to_sr']['p50_ms'] for r in serial], 0)} ms**, p99 "
            f"**{_span([r['cstore_to_sr']['p99_ms'] for r in serial], 0)} ms** "
            f"({serial[0]['sent']} instances per queue; the slowest: "
            f"{_slowest_fixture(serial)})."
        )
    if bursts:
        lines.append(
            f"* **C-STORE to SR delivered in a burst of {result['burst_n']}**: p50 "
            f"**{_span([r['cstore_to_sr']['p50_ms'] for r in bursts], 1, 1000)} s**, p99 "
            f"**{_span([r['cstore_to_sr']['p99_ms'] for r in bursts], 1, 1000)} s**, almost all of it "
            "waiting behind the instances received before (below)."
        )
    return lines


def _stage(r: dict[str, Any], prefix: str, key: str) -> float | None:
    found = next((v for k, v in r["stages"].items() if k.strip().startswith(prefix)), None)
    return None if found is None else found.get(key)


def observations(result: dict[str, Any]) -> list[str]:
    """What the numbers say, computed from them (so a re-run that says otherwise does not keep stale words)."""
    out = []
    bursts, serial = _runs(result, "burst"), next(iter(_runs(result, "serial")), None)
    if serial is not None:
        parts = {
            name: _stage(serial, prefix, "mean_ms")
            for name, prefix in (
                ("receive", "C-STORE sent"),
                ("decode", "of which decode"),
                ("inference", "of which inference"),
                ("rest", "of which the rest"),
                ("deliver", "claimed for delivery"),
            )
        }
        total = serial["cstore_to_sr"]["mean_ms"]
        slow = max(serial["by_fixture"], key=lambda f: serial["by_fixture"][f]["decode_prepare_p50_ms"] or 0)
        if total and all(v is not None for v in parts.values()):
            out.append(
                f"* **What one instance costs, without a backlog** (means over the fixture mix, one at a time): "
                f"C-STORE to SR {total:.0f} ms = receive and queue {parts['receive']:.0f} ms + decode and prepare "
                f"the pixels {parts['decode']:.0f} ms + inference {parts['inference']:.1f} ms + the rest of the "
                f"analysis {parts['rest']:.0f} ms (checks, audit record, TID 1500 SR built by highdicom and "
                f"written durably, queue updates) + delivery {parts['deliver']:.0f} ms (a new association per SR, "
                f"C-STORE, release), plus waits of a few ms. Decoding dominates and depends on the transfer syntax "
                f"(per fixture, below: {slow} {_syntax(result['fixtures'][slow]['transfer_syntax'])} takes "
                f"{serial['by_fixture'][slow]['decode_prepare_p50_ms']:.0f} ms); the model itself is a few ms. "
                f"One worker analyses and delivers in turn, so one worker's ceiling is about 1 / (mean analysis + "
                f"mean delivery) = "
                f"{1000 / ((_stage(serial, 'claimed ->', 'mean_ms') or 1) + parts['deliver']):.1f} instances/s on "
                f"this mix (measured in the bursts with one worker: "
                f"{_span([r['end_to_end_per_s'] for r in _runs(result, 'burst') if r['spec']['workers'] == 1], 2)})."
            )
    starved = [r for r in bursts if r["first_sr_s"] is not None and r["first_sr_s"] >= r["last_analysed_s"] - 0.5]
    if bursts:
        detail = "; ".join(
            f"{_run_label(r)} {r['spec']['queue']}: first SR at {_f(r['first_sr_s'])} s, last "
            f"analysis at {_f(r['last_analysed_s'])} s"
            for r in bursts
        )
        if len(starved) == len(bursts):
            out.append(
                "* **In a burst no SR leaves until the whole backlog is analysed.** The workers claim analysis work "
                "before delivery work, so while anything waits to be analysed nothing is delivered: "
                + detail
                + ". The C-STORE-to-SR time of a burst's first instance is therefore the whole burst."
            )
        elif not starved:
            waits = _span([_stage(r, "queued -> claimed", "p50_ms") for r in bursts], 1, 1000)
            first = _span([r["first_sr_s"] for r in bursts], 1)
            last = _span([r["last_analysed_s"] for r in bursts], 0)
            out.append(
                "* **SRs leave as they are made.** The workers deliver a ready SR before reading the next instance "
                f"(`WorkerPool.step`), so the first SR of a burst arrived {first} s after the first C-STORE, while "
                f"the last analysis ended {last} s in. The C-STORE-to-SR time in a burst is then almost all the "
                f"wait to be analysed (the 'queued -> claimed for analysis' row, p50 {waits} s): the k-th instance "
                "waits for the k-1 received before it, so p50 is about half the burst's analysis time and p99 "
                "nearly all of it. Only more analysis throughput, or fewer instances at once, shortens it."
            )
        else:
            out.append(f"* First SR vs last analysis in the bursts: {detail}.")
    for queue in dict.fromkeys(r["spec"]["queue"] for r in bursts):
        for k in dict.fromkeys(r["spec"]["associations"] for r in bursts):
            by_w = {
                r["spec"]["workers"]: r
                for r in bursts
                if r["spec"]["queue"] == queue and r["spec"]["associations"] == k
            }
            if 1 in by_w and 2 in by_w and by_w[1]["end_to_end_per_s"] and by_w[2]["end_to_end_per_s"]:
                ratio = by_w[2]["end_to_end_per_s"] / by_w[1]["end_to_end_per_s"]
                out.append(
                    f"* workers=2 vs workers=1 ({queue}, {k} association(s)): end-to-end "
                    f"{_f(by_w[2]['end_to_end_per_s'], 2)} vs {_f(by_w[1]['end_to_end_per_s'], 2)} "
                    f"instances/s ({ratio:.2f}x)."
                )
    scaling = result.get("thread_scaling") or {}
    if scaling:
        seq = sum(v["sequential_s"] for v in scaling.values())
        two = sum(v["two_threads_s"] for v in scaling.values())
        said = (
            f"* Two workers are two threads of one process. Two second reads of each fixture took {seq:.2f} s in "
            f"sequence and {two:.2f} s in two threads at once (all fixtures together; per fixture below)"
        )
        if two >= 0.8 * seq:
            said += (
                ": no faster, so the pixel decoders (pylibjpeg-openjpeg, pyjpegls, pylibjpeg-libjpeg through "
                "pydicom) hold the GIL, and a second worker overlaps only inference, SQLite/Redis and socket "
                "waits (the other worker's deliveries). Using both cores for decoding needs a second process "
                "(two nodes with their own node ids on one queue, which the queue allows) or decoding in a "
                "process pool."
            )
        else:
            said += f": {seq / two:.2f}x faster, so the decoding threads overlap in part."
        out.append(said)
    for r in bursts:
        if r["spec"]["associations"] != 1:
            continue
        alone = next(
            (
                x
                for x in _runs(result, "receive")
                if x["spec"]["queue"] == r["spec"]["queue"] and x["spec"]["associations"] == 1
            ),
            None,
        )
        if alone is not None:
            out.append(
                f"* Receiving while analysing ({r['spec']['queue']}, workers={r['spec']['workers']}, 1 "
                f"association): C-STORE round trip p50 {_ms(r['cstore_rtt'], 'p50_ms')} ms, p99 "
                f"{_ms(r['cstore_rtt'], 'p99_ms')} ms, against {_ms(alone['cstore_rtt'], 'p50_ms')} / "
                f"{_ms(alone['cstore_rtt'], 'p99_ms')} ms with no worker: the SCP's threads wait for the GIL "
                f"and the CPU while a worker decodes."
            )
    cores = [(r, r["cpu_s"]["node_s"] / r["end_to_end_s"]) for r in bursts if r["end_to_end_s"]]
    if cores:
        others = [
            ((r["cpu_s"]["scu_s"] or 0) + (r["cpu_s"]["destination_s"] or 0)) / r["end_to_end_s"] for r, _ in cores
        ]
        out.append(
            "* The node's CPU time over the bursts' duration: "
            + ", ".join(f"{_run_label(r)} {r['spec']['queue']} {c:.2f}" for r, c in cores)
            + f" cores on average, of {result['machine']['nproc']} (the modality and the destination: "
            f"{_span(others, 2)} cores). With one worker the node cannot use the second core; with two, "
            "little more of it (GIL, above)."
        )
    receive = _runs(result, "receive")
    if receive:
        setups = [x for r in receive if r["spec"]["associations"] == 1 for x in r["association_setup_ms"]]
        parallel = [x for r in receive if r["spec"]["associations"] > 1 for x in r["association_setup_ms"]]
        out.append(
            f"* Association set-up on loopback (pynetdicom to pynetdicom) took {_span(setups, 0)} ms alone "
            f"and {_span(parallel, 0)} ms for "
            f"{PARALLEL_ASSOCIATIONS} at once. The node opens one association per delivered SR, so this is "
            f"a large part of the delivery stage. The SCP admits "
            f"{receive[0]['node_settings']['max_associations']} associations at once (`max_associations`, "
            f"the default); {PARALLEL_ASSOCIATIONS} parallel ones were all accepted."
        )
    long_sh = sum(
        n
        for r in result["runs"]
        for m, n in r["node_warnings"].items()
        if "exceeds the maximum length of 16 allowed for VR SH" in m
    )
    if long_sh:
        out.append(
            f"* pydicom warned {long_sh} times that a value exceeds the 16 characters of VR SH: "
            "the value is 966_fixed.dcm's 56-character AccessionNumber, which the SR made from it carries "
            "unchanged (two warnings per SR). The SRs were accepted here; a strict PACS might refuse or "
            "truncate them."
        )
    return out


def checks_lines(result: dict[str, Any]) -> list[str]:
    out = []
    for r in result["runs"]:
        problems = []
        if r["acknowledged"] != r["sent"]:
            problems.append(
                f"**{r['sent'] - r['acknowledged']} C-STORE(s) not answered with success** "
                f"({r['statuses']}; "
                + "; ".join(
                    f"instance {u['index']} ({_fixture_label(u['fixture'])}) sent at "
                    f"{_f(u['t_sent_s'], 2)} s, queued by the node at {_f(u['queued_s'], 2)} s "
                    f"(state {u['state']}), the modality's send_c_store returned at "
                    f"{_f(u['t_returned_s'], 2)} s with no status"
                    for u in r["unanswered"]
                )
                + ")"
            )
        if r["scu_errors"]:
            problems.append(f"modality errors: {r['scu_errors']}")
        if r.get("scu_warnings"):
            problems.append(
                "modality's pynetdicom logged: " + "; ".join(f"{n}x {m}" for m, n in r["scu_warnings"].items())
            )
        if r.get("delivery_retries"):
            problems.append(f"{r['delivery_retries']} delivery attempt(s) retried")
        if r["spec"]["mode"] != "receive":
            if r["sr_delivered_for"] != r["sr_expected"]:
                problems.append(f"SRs arrived for {r['sr_delivered_for']} of {r['sr_expected']} instances")
            if r["sr_matches_queue"] != r["sr_expected"]:
                problems.append(f"{r['sr_expected'] - r['sr_matches_queue']} SR(s) not the one the queue recorded")
            if r["sr_duplicates"] or r["sr_unmatched"]:
                problems.append(f"{r['sr_duplicates']} duplicate and {r['sr_unmatched']} unmatched SR(s)")
        fine = "every C-STORE 0x0000" + (
            ""
            if r["spec"]["mode"] == "receive"
            else ", one SR per instance, referencing it, the one the queue recorded, "
            "each delivered at the first attempt"
        )
        logged = "; ".join(f"{n}x {m[:110]}" for m, n in r["node_warnings"].items())
        out.append(
            f"* `{r['spec']['name']}`: "
            + ("; ".join(problems) if problems else fine)
            + (f". Logged: {logged}" if logged else ". Nothing logged at WARNING or above.")
        )
    return out


def render(result: dict[str, Any]) -> str:
    m, v, g = result["machine"], result["versions"], result["git"]
    changes = ", ".join(f"`{c}`" for c in g["changes"]) or "none"
    redis = result["redis"]
    lines = [
        "# DICOM node throughput benchmark",
        "",
        'The issue asks for "instances per second received and analysed on this machine, and the time from '
        'C-STORE to SR delivered, p50/p99". Written by `benchmarks/dicom_node_throughput.py`; the numbers are in '
        "`docs/dicom_node_benchmark.json` (every instance's time stamps included).",
        "",
        f"Command (repository root): `nice {result['command']}` (niceness {result['niceness']})  ",
        f"Date: {result['date_utc']}; commit `{g['commit']}` with these paths changed or untracked (the code "
        f"measured is the working tree): {changes}; took {result['elapsed_s']:.0f} s"
        + (".  " if result["git_at_end"] == g else "; **the working tree changed during the run**.  "),
        f"Machine: {m['nproc']} CPUs (`nproc`), {m['cpu_model']}, {m['memory_gib']} GiB, Linux {m['kernel']}, Python "
        f"{m['python']}; scratch on {' '.join(m['scratch_fs'])}; shared with other work (load average at the start "
        f"{result['loadavg_start']}, at the end {result['loadavg_end']}; per run in the JSON).  ",
        "Versions: "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + (
            f"; Redis server {redis['version']} (appendonly {redis.get('appendonly')})"
            if redis
            else "; no Redis at 127.0.0.1:6379 (SQLite queue only)"
        )
        + ".  ",
        f"Model: {result['model']['name']} version {result['model']['version']} "
        f"(`{result['model']['path']}`, sha256 `{result['model']['sha256'][:16]}...`), onnxruntime threads per "
        "session: " + ", ".join(f"{t} with workers={w}" for w, t in result["ort_threads"].items()) + ".",
        "",
        "**The model is the unreleased @candidate.** vigil-cxr version 1 is registered in `/tmp/bench-work/mlflow.db` "
        "at @candidate and does not pass the release gate (docs/fairness_audit.md). The script copies it into a "
        'scratch local model folder with a stand-in release record whose status is "pass" (summary: benchmark '
        "only) so that the node's `ModelHolder` loads it as the tests do; the node serves no patients here, and the "
        "speed does not depend on the record.",
        "",
        "## Summary",
        "",
        *summary_lines(result),
        "",
        "## What stands out",
        "",
        *observations(result),
        "",
        "## Method",
        "",
        "* Three programs on loopback. This script runs the node (`DicomNode`: Storage SCP, queue, workers) "
        "as the tests build it: `ModelHolder` over the local model folder, a SQLite audit `Store`, SQLite queue in "
        "a scratch folder (and Redis under a fresh key prefix when 127.0.0.1:6379 answers), node settings at "
        "their defaults otherwise (SR only, no heat-map SC; received instances deleted after analysis; "
        "`poll_s` 1 s, but the SCP wakes the workers on every instance). The destination SCP and the modality "
        "(SCU) are this script again in child processes importing only pydicom and pynetdicom: their CPU "
        "time is their own and they do not take the node's GIL. On 2 cores they still take CPU from the node; "
        "their CPU per instance is in the tables.",
        "* Instances: the chest fixtures (below) cycled, each copy with fresh Study, Series and SOP Instance UIDs "
        "(deterministic from `--seed`), pixel data and transfer syntax as stored, written once before the runs. "
        "Each run has its own queue, storage folder and audit store, so every instance is a new job. The "
        "modality sends each file as stored (`send_c_store(path)`: no decoding or re-encoding on its side).",
        f"* Receive only: `workers=0`; instances/s acknowledged = instances / (last C-STORE success - first "
        f"C-STORE sent), over 1 and over {PARALLEL_ASSOCIATIONS} parallel associations ({PARALLEL_ASSOCIATIONS} "
        "processes forked by the modality, each with one association, pulling the next instance from one shared "
        "counter). Processes, not threads: with several pynetdicom requestor threads in one process, the "
        "association's reactor thread now and then takes the C-STORE response before `send_c_store` gets it "
        '(pynetdicom 3.0.4 logs "Received unexpected C-STORE service message"; its pause handshake around '
        "`send_c_store` is not atomic), and that association then hangs until the node's network timeout (30 s) "
        "aborts it. The node had stored, queued and answered the instance. Any pynetdicom warning the modality "
        "logs is listed under Checks.",
        "* Burst: all instances sent as fast as the SCP answers, with the workers analysing and delivering at "
        "the same time. Receive throughput as above; end-to-end throughput = instances / (last SR received by "
        "the destination - first C-STORE sent); per instance, the C-STORE-to-SR time = the destination's arrival "
        "time of the SR that references the instance - the time its C-STORE request was sent.",
        "* One at a time: the next C-STORE is sent only when the previous instance's SR has arrived (the modality "
        "watches the destination's log): the C-STORE-to-SR time without any backlog.",
        "* Stage times come from the queue's own time stamps (`received_at`: the item committed, just before the "
        "C-STORE is answered; `analysed_at`; `delivered_at`, after the delivery association is released) and "
        "from the claim time of each stage, recorded by a thin subclass of the queue class that keeps the "
        "`updated_at` of every item `claim()` returns (nothing else differs). Decode + prepare and inference "
        "are the model's own timings, kept in each item's result.",
        *(
            [
                f"* The Redis server here runs with appendonly {redis.get('appendonly')} (the node warns about it at "
                "start): its rows do not include the fsync of an append-only file, while the SQLite queue commits with "
                "`synchronous=FULL`. Both write each received instance to disk with fsync first."
            ]
            if redis and redis.get("appendonly") != "yes"
            else []
        ),
        "* One clock for all: `time.time()` in the three processes and in the queue. Percentiles interpolate "
        f"linearly; the p99 of {result['burst_n']} instances lies between the two largest.",
        "",
        "## Throughput and C-STORE-to-SR time",
        "",
        "| Queue | Workers | Assoc. | N | Received/s | End-to-end/s | C-STORE RTT p50 / p99 ms | C-STORE to SR "
        "p50 / p99 / max s | First SR at s | Node CPU ms/inst. | Modality / destination CPU ms/inst. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in [*_runs(result, "burst"), *_runs(result, "serial")]:
        s, c = r["spec"], r["cstore_to_sr"]
        serial = s["mode"] == "serial"
        lines.append(
            f"| {s['queue']} | {s['workers']} | {s['associations']}{' (one at a time)' if serial else ''} | "
            f"{r['sent']} | {'-' if serial else _f(r['receive_per_s'])} | "
            f"{'-' if serial else _f(r['end_to_end_per_s'], 2)} | "
            f"{_ms(r['cstore_rtt'], 'p50_ms')} / {_ms(r['cstore_rtt'], 'p99_ms')} | "
            f"{_ms(c, 'p50_ms', 2, 1000)} / {_ms(c, 'p99_ms', 2, 1000)} / {_ms(c, 'max_ms', 2, 1000)} | "
            f"{_f(r['first_sr_s'], 2)} | {_cpu_per(r, 'node_s')} | {_cpu_per(r, 'scu_s')} / "
            f"{_cpu_per(r, 'destination_s')} |"
        )
    lines += [
        "",
        "Receive only (no worker running):",
        "",
        "| Queue | Assoc. | N | Received/s | C-STORE RTT p50 / p99 / max ms | Association set-up ms | Node CPU "
        "ms/inst. |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in _runs(result, "receive"):
        s, c = r["spec"], r["cstore_rtt"]
        lines.append(
            f"| {s['queue']} | {s['associations']} | {r['sent']} | {_f(r['receive_per_s'])} | "
            f"{_ms(c, 'p50_ms')} / {_ms(c, 'p99_ms')} / {_ms(c, 'max_ms')} | "
            f"{', '.join(str(round(x)) for x in r['association_setup_ms'])} | {_cpu_per(r, 'node_s')} |"
        )
    staged = [*_runs(result, "serial"), *_runs(result, "burst")]
    lines += [
        "",
        "## Where the C-STORE-to-SR time goes (p50 / p99, ms)",
        "",
        "| Stage | " + " | ".join(f"{r['spec']['queue']} {_run_label(r)}" for r in staged) + " |",
        "|---|" + "---|" * len(staged),
    ]
    for stage in staged[0]["stages"] if staged else []:
        lines.append(
            f"| {stage.strip()} | "
            + " | ".join(f"{_ms(r['stages'][stage], 'p50_ms')} / {_ms(r['stages'][stage], 'p99_ms')}" for r in staged)
            + " |"
        )
    lines.append(
        "| **C-STORE sent -> SR at destination** | "
        + " | ".join(f"**{_ms(r['cstore_to_sr'], 'p50_ms')} / {_ms(r['cstore_to_sr'], 'p99_ms')}**" for r in staged)
        + " |"
    )
    serial = next(iter(_runs(result, "serial")), None)
    scaling = result.get("thread_scaling", {})
    lines += [
        "",
        "## Per fixture" + (f" (one at a time, {serial['spec']['queue']} queue; medians)" if serial else ""),
        "",
        "| Fixture | Transfer syntax | Bytes | Analysis ms (claim -> analysed) | of which decode + prepare | "
        "inference | C-STORE to SR ms | 2 reads in sequence / in 2 threads, s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, info in result["fixtures"].items():
        row = (serial or {}).get("by_fixture", {}).get(name, {})
        sc = scaling.get(name)
        lines.append(
            f"| {_fixture_label(name)} | {_syntax(info['transfer_syntax'])} | {info['size_bytes']:,} | "
            f"{_ms(row, 'analysis_p50_ms')} | {_ms(row, 'decode_prepare_p50_ms')} | "
            f"{_ms(row, 'inference_p50_ms', 1)} | {_ms(row, 'cstore_to_sr_p50_ms')} | "
            + (f"{sc['sequential_s']:.2f} / {sc['two_threads_s']:.2f}" if sc else "-")
            + " |"
        )
    lines += ["", "## Checks", "", *checks_lines(result), ""]
    return "\n".join(lines)


def _run_label(r: dict[str, Any]) -> str:
    s = r["spec"]
    if s["mode"] == "serial":
        return "one at a time"
    return f"burst w{s['workers']} a{s['associations']}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer instances per run and workers=1 only")
    parser.add_argument("--n", type=int, help="instances per burst run (default 60; 18 with --quick)")
    parser.add_argument("--receive-n", type=int, help="instances per receive-only run (default 200; 50 --quick)")
    parser.add_argument("--serial-n", type=int, help="instances of the unloaded run (default 12; 6 --quick)")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts of the burst runs (default 1 2)")
    parser.add_argument(
        "--redis-single", action="store_true", help="also run the Redis burst runs over a single association"
    )
    parser.add_argument("--run-timeout", type=float, default=300.0, help="longest wait of one run (s)")
    parser.add_argument("--seed", type=int, default=0, help="entropy of the fresh UIDs")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dicom_node_benchmark.md")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only write the Markdown again from a JSON this script wrote (no runs)",
    )
    parser.add_argument("--destination", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scu", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.n = args.n or (18 if args.quick else 60)
    args.receive_n = args.receive_n or (50 if args.quick else 200)
    args.serial_n = args.serial_n or (6 if args.quick else 12)
    args.workers = args.workers or ([1] if args.quick else [1, 2])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for quiet in ("pynetdicom",):
        logging.getLogger(quiet).setLevel(logging.WARNING)
    if args.destination is not None:
        destination_main(args.destination)
        return 0
    if args.scu is not None:
        scu_main(args.scu)
        return 0
    if args.render is not None:
        args.out.write_text(render(json.loads(args.render.read_text())))
        print(f"wrote {args.out} from {args.render}")
        return 0
    # SIGTERM unwinds like Ctrl-C: the finally blocks stop the node and the helpers and remove the scratch folder
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)  # the node, highdicom and pynetdicom log an INFO line per instance or more
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(result))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} and {args.out.with_suffix('.json')} in {result['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
