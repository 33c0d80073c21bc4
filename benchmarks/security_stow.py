"""Issue 14, findings 5 and 6 replayed against STOW-RS: the service's memory and event loop under multipart attacks,
before and after the streaming parser.

Each case starts the service in a fresh process (``uvicorn`` on 127.0.0.1, the app of :func:`serving.api.app.create_app`
with a SQLite store, one ``imaging`` key and no models: STOW-RS queues instances, it needs none) from one source
tree: "after" is the working tree, "before" the same with the STOW-RS route file (``serving/api/dicomweb.py``) of
a git revision (default: the last commit before the fix). This process then sends the attack over raw sockets while
another thread asks ``GET /healthz`` over a keep-alive connection, one request every 5 ms, and measures:

* the server's peak RSS growth: its high-water mark (VmHWM, reset through ``/proc/PID/clear_refs`` just before the
  attack, read after it) minus its RSS before the attack;
* the event loop's stall: the longest ``/healthz`` latency during the attack (and the median), and the longest
  gap between two ``/healthz`` answers;
* each upload's HTTP status and the attack's wall time.

Cases (the body limit, ``VIGIL_MAX_DICOM_BYTES``, is its default 64 MiB in both trees):

* the review's attack: a 60 MB body with the two-byte boundary ``ab``, six million empty parts;
* the same with the shortest boundary the fix admits (8 characters): 3.75 million empty parts in 60 MB;
* six concurrent uploads of one 58 MB instance each (a DX image of 5385 x 5385 16-bit zeros, uncompressed): the
  review's finding 6 over STOW-RS.

Run from the repository root (about two minutes on 2 cores)::

    nice .venv/bin/python benchmarks/security_stow.py [--before REV] [--out docs/security_stow.json]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: The last commit before the streaming STOW-RS parser (issue 14 findings 5 and 6).
BEFORE = "14aece6a36c79f79dd7b88c994117df7f6780f5f"
MB = 1_000_000
POLL_S = 0.005

SERVER = r"""
import sys
from pathlib import Path

import uvicorn

from serving.api.app import create_app
from serving.settings import ServingSettings
from serving.store.database import Store

work, port = Path(sys.argv[1]), int(sys.argv[2])
models = work / "no-models"
models.mkdir(exist_ok=True)
cfg = ServingSettings(work_dir=work, model_source="local", model_dir=models, threads=1)
store = Store(cfg.store_url())
store.create_schema()
(work / "key").write_text(store.create_key("benchmark", ["imaging"])[1])
try:
    from serving.api.http_limits import DeadlineH11Protocol as protocol
except ImportError:  # the tree before the fix
    protocol = "h11"
uvicorn.run(create_app(cfg, store=store), host="127.0.0.1", port=port, http=protocol, log_level="warning",
            access_log=False)
"""


# ---------------------------------------------------------------------------------------------- attack bodies
def empty_parts_body(boundary: bytes, size: int) -> tuple[bytes, int]:
    """``size`` bytes of empty parts (no headers, no content) and a closing delimiter; and how many parts."""
    part = b"--" + boundary + b"\r\n\r\n\r\n"
    closing = b"--" + boundary + b"--\r\n"
    count = (size - len(closing)) // len(part)
    return part * count + closing, count


def one_instance_body(boundary: bytes, size: int) -> bytes:
    """One part: a DX instance (Explicit VR Little Endian, 16-bit zeros) of about ``size`` bytes."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    side = max(8, int((size / 2) ** 0.5))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(side * side * 2)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    head = b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n"
    return head + buffer.getvalue() + b"\r\n--" + boundary + b"--\r\n"


CASES: list[dict[str, Any]] = [
    {
        "name": "review's attack: 60 MB, 2-byte boundary, ~6 million empty parts",
        "kind": "parts",
        "boundary": "ab",
        "size": 60 * MB,
        "uploads": 1,
    },
    {
        "name": "shortest admitted boundary: 60 MB, 8-byte boundary, ~3.75 million empty parts",
        "kind": "parts",
        "boundary": "abcdefgh",
        "size": 60 * MB,
        "uploads": 1,
    },
    {
        "name": "six concurrent uploads of one 58 MB instance each",
        "kind": "instance",
        "boundary": "vigil-benchmark-boundary",
        "size": 58 * MB,
        "uploads": 6,
    },
]


# ---------------------------------------------------------------------------------------------- the server
def _before_tree(rev: str, into: Path) -> Path:
    """The working tree's ``models`` and ``serving`` with the STOW-RS route (``serving/api/dicomweb.py``) as it was
    at ``rev``: the route before the fix, beside everything else as it is now (the rest of the service has moved on
    since, and the whole tree of ``rev`` is not what the fix changed)."""
    tree = into / "tree"
    for package in ("models", "serving"):
        shutil.copytree(REPO / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    old = subprocess.run(
        ["git", "show", f"{rev}:serving/api/dicomweb.py"], cwd=REPO, capture_output=True, check=True
    ).stdout
    (tree / "serving" / "routes_dicomweb.py").write_bytes(old)
    return tree


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


class Server:
    """The service from ``tree`` in a child process, on a free port."""

    def __init__(self, tree: Path, work: Path) -> None:
        self.port = _free_port()
        work.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        env["PYTHONPATH"] = str(tree)
        self.log = (work / "server.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(work), str(self.port)],
            cwd=tree,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if _get(self.port, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {(work / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)
        self.key = (work / "key").read_text().strip()

    def rss_kb(self) -> int:
        return _status_kb(self.proc.pid, "VmRSS")

    def high_water_kb(self) -> int:
        return _status_kb(self.proc.pid, "VmHWM")

    def reset_high_water(self) -> bool:
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- measuring
def upload(port: int, key: str, boundary: str, body: bytes) -> dict[str, Any]:
    """POST ``body`` to /dicomweb/studies over a raw socket; the status the server answered (None if none)."""
    head = (
        f"POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f'Content-Type: multipart/related; type="application/dicom"; boundary={boundary}\r\n'
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.monotonic()
    sent_all = True
    with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
        try:
            sock.sendall(head)
            sock.sendall(body)
        except OSError:  # the server answered and closed before the whole body was sent
            sent_all = False
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    line = answer.split(b"\r\n", 1)[0].split()
    status = int(line[1]) if len(line) > 1 and line[1].isdigit() else None
    return {"status": status, "seconds": round(time.monotonic() - started, 3), "whole_body_sent": sent_all}


class HealthPoller(threading.Thread):
    """``GET /healthz`` every POLL_S over one keep-alive connection; each latency and answer time."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (answered at, latency), seconds
        self.failures = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                now = time.monotonic()
                self.samples.append((now, now - started))
            except (OSError, http.client.HTTPException):
                self.failures += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            time.sleep(POLL_S)
        conn.close()


def run_case(tree: Path, work: Path, case: dict[str, Any]) -> dict[str, Any]:
    boundary = case["boundary"].encode()
    if case["kind"] == "parts":
        body, parts = empty_parts_body(boundary, case["size"])
    else:
        body, parts = one_instance_body(boundary, case["size"]), 1
    server = Server(tree, work)
    try:
        # One small instance first: imports and the queue are made before anything is measured.
        warm = upload(
            server.port, server.key, "vigil-benchmark-boundary", one_instance_body(b"vigil-benchmark-boundary", 100_000)
        )
        time.sleep(0.5)
        rss_before = server.rss_kb()
        high_water_reset = server.reset_high_water()
        poller = HealthPoller(server.port)
        poller.start()
        time.sleep(0.2)  # a baseline of /healthz answers before the attack
        attack_started = time.monotonic()
        results: list[dict[str, Any]] = [{}] * case["uploads"]

        def one(index: int) -> None:
            results[index] = upload(server.port, server.key, case["boundary"], body)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(case["uploads"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        attack_s = time.monotonic() - attack_started
        time.sleep(0.3)
        poller.stop.set()
        poller.join()
        peak_kb = server.high_water_kb()
    finally:
        server.stop()
    during = [lat for at, lat in poller.samples if attack_started <= at <= attack_started + attack_s + 0.3]
    stamps = [at for at, _ in poller.samples if at >= attack_started]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return {
        "case": case["name"],
        "body_bytes": len(body),
        "parts": parts,
        "uploads": case["uploads"],
        "warm_up_status": warm["status"],
        "statuses": sorted(str(r["status"]) for r in results),
        "attack_s": round(attack_s, 2),
        "rss_before_mb": round(rss_before / 1024, 1),
        "peak_rss_growth_mb": round((peak_kb - rss_before) / 1024, 1),
        "high_water_reset": high_water_reset,
        "healthz_during_attack": {
            "answers": len(during),
            "failures": poller.failures,
            "median_ms": round(statistics.median(during) * 1000, 1) if during else None,
            "max_ms": round(max(during) * 1000, 1) if during else None,
            "longest_gap_between_answers_ms": round(max(gaps) * 1000, 1) if gaps else None,
        },
    }


def _git() -> dict[str, Any]:
    def out(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    return {
        "commit": out("rev-parse", "HEAD"),
        "modified": sorted(line.split(maxsplit=1)[1] for line in out("status", "--porcelain").splitlines() if line),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="git revision of the 'before' tree (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "security_stow.json")
    args = parser.parse_args(argv)
    command = "nice .venv/bin/python benchmarks/security_stow.py" + "".join(
        f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="vigil-security-stow-") as scratch:
        trees = {"before": _before_tree(args.before, Path(scratch)), "after": REPO}
        for index, case in enumerate(CASES):
            for label, tree in trees.items():
                row = run_case(tree, Path(scratch) / f"work-{index}-{label}", case)
                row["tree"] = label if label == "after" else f"before ({args.before[:12]})"
                rows.append(row)
                print(json.dumps(row), flush=True)
    report = {
        "command": command,
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "method": "each case in a fresh server process per tree; peak RSS growth = VmHWM after the attack minus VmRSS "
        "before it (VmHWM reset just before); /healthz asked every 5 ms on a keep-alive connection during "
        "the attack",
        "cases": rows,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
