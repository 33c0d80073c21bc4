"""Memory of the DICOM node under the attacks of issue 14, findings 1 and 6, measured on loopback.

The node (the Storage SCP with its intake and a SQLite queue: everything a peer reaches before any model runs) is
started in a child process of this script with default settings (``VIGIL_DICOM_*`` from the environment still
apply) and attacked from this process; its resident memory is sampled every 5 ms from ``/proc/<pid>/status``
(VmRSS) and its kernel peak (VmHWM, reset through ``/proc/<pid>/clear_refs`` before each attack) is read after.

1. **Oversized PDU** (finding 1): ``--sockets`` connections each send a PDU header declaring a ~4 GiB
   A-ASSOCIATE-RQ, then stream zeros until the node closes the connection or ``--pdu-cap-mb`` have been sent.
2. **Large C-STOREs** (finding 6): ``--stores`` associations from an allowed AE title at once, each sending a
   ``--store-mb`` CR instance (zeros) by C-STORE, streamed from one file on disk by the sender (pynetdicom's
   chunked send), so the sender's memory does not matter.
3. **Accepted C-STOREs**: the same with ``--accepted-mb`` instances, under the node's limit: what taking in
   instances it keeps costs (each is spooled to disk as it arrives and renamed into place).

Reported per attack: baseline RSS, peak RSS (sampled and VmHWM), growth, what each sender achieved, and the node's
log lines about it (counts). Goal: growth under 100 MB. ``--repo`` runs the node from another checkout of this
repository (e.g. one at the commit before the fix) to measure the "before" figures the same way.

Run from the repository root::

    .venv/bin/python benchmarks/security_dicom_node.py [--out docs/security_dicom_node.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AE_TITLE, CALLING = "VIGIL", "BENCHSCU"
MB = 1024 * 1024

_NODE = """
import logging, sys, tempfile
from pathlib import Path
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
from serving.dicom_node.intake import Intake
from serving.dicom_node.queue_sqlite import SqliteQueue
from serving.dicom_node.scp import StorageSCP
from serving.dicom_node.settings import load_dicom_settings
work = Path(sys.argv[1])
cfg = load_dicom_settings(work_dir=work, port=0, allowed_calling_aets=sys.argv[2])
queue = SqliteQueue(work / "queue.db")
scp = StorageSCP(cfg, Intake(queue, cfg.resolved_storage_dir(), max_instance_bytes=cfg.max_instance_bytes))
assert scp.start()
print(scp.port, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
scp.stop()
queue.close()
"""


class Node:
    """The node in a child process; :meth:`rss_mb` and :meth:`hwm_mb` read its memory."""

    def __init__(self, repo: Path, work: Path) -> None:
        self.log_path = work / "node.log"
        self._log = open(self.log_path, "w")  # closed in stop()
        env = {**os.environ, "PYTHONPATH": str(repo)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _NODE, str(work), CALLING],
            cwd=repo,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.strip().isdigit():
            raise RuntimeError(f"the node did not start: {self.log_path.read_text()[-2000:]}")
        self.port = int(line)

    def _status(self, key: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        raise KeyError(key)

    def rss_mb(self) -> float:
        return self._status("VmRSS")

    def hwm_mb(self) -> float:
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def measure(node: Node, attack: Any) -> dict[str, Any]:
    """Run ``attack()`` while sampling the node's RSS; growth figures in MB."""
    time.sleep(0.5)
    node.reset_peak()
    baseline = node.rss_mb()
    peak, done = [baseline], threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], node.rss_mb())
            except (OSError, KeyError):
                return
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    outcome = attack()
    seconds = time.monotonic() - started
    time.sleep(1.0)  # let what the node freed show
    done.set()
    sampler.join()
    alive = node.alive()
    hwm = node.hwm_mb() if alive else float("nan")
    return {
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_sampled_mb": round(peak[0], 1),
        "peak_rss_vmhwm_mb": round(hwm, 1),
        "growth_mb": round(max(peak[0], hwm) - baseline, 1),
        "rss_after_mb": round(node.rss_mb(), 1) if alive else None,
        "node_alive": alive,
        "seconds": round(seconds, 2),
        **outcome,
    }


def oversized_pdu(port: int, sockets: int, cap_mb: int) -> dict[str, Any]:
    sent = [0] * sockets

    def one(i: int) -> None:
        chunk = bytes(MB)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFF_FFF0))
                while sent[i] < cap_mb * MB:
                    sock.sendall(chunk)
                    sent[i] += len(chunk)
        except OSError:
            pass  # closed by the node: what we want

    threads = [threading.Thread(target=one, args=(i,)) for i in range(sockets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "sockets": sockets,
        "declared_pdu_bytes": 0xFFFF_FFF0,
        "stream_cap_mb_per_socket": cap_mb,
        "mb_accepted_per_socket": [round(s / MB, 1) for s in sent],
        "sockets_cut_off_by_node": sum(s < cap_mb * MB for s in sent),
    }


def write_instance(path: Path, size_mb: int) -> str:
    """A CR Part 10 file of about ``size_mb`` (zeros), written without holding it twice in memory."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

    side = int((size_mb * MB / 2) ** 0.5)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = ComputedRadiographyImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CR"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(side * side * 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def large_stores(port: int, stores: int, path: Path) -> dict[str, Any]:
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import ComputedRadiographyImageStorage

    _config.STORE_SEND_CHUNKED_DATASET = True  # the sender streams from the file (this process only)
    results: list[str] = [""] * stores

    def one(i: int) -> None:
        ae = AE(ae_title=CALLING)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
        ae.add_requested_context(ComputedRadiographyImageStorage, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
        if not assoc.is_established:
            results[i] = "association refused"
            return
        try:
            status = assoc.send_c_store(path)
            results[i] = f"0x{int(status.Status):04X}" if "Status" in status else "aborted by the node"
        except (RuntimeError, OSError) as exc:
            results[i] = f"aborted by the node ({type(exc).__name__})"
        finally:
            if assoc.is_established:
                assoc.release()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"stores": stores, "instance_mb": round(path.stat().st_size / MB, 1), "results": results}


def _log_counts(text: str) -> dict[str, int]:
    """WARNING lines of each kind in the node's log (repeats within 10 s are folded into the next such line)."""
    keys = {
        "pdu_refused": "maximum PDU size",
        "instance_aborted": "an instance over the",
        "store_slot_refused": "already being received",
        "errors": "ERROR ",
    }
    return {k: text.count(v) for k, v in keys.items()}


def _git(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "serving/dicom_node"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + (" (serving/dicom_node modified)" if dirty else "") if out.returncode == 0 else None
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose node is attacked")
    parser.add_argument("--sockets", type=int, default=10, help="attack 1: connections at once")
    parser.add_argument("--pdu-cap-mb", type=int, default=512, help="attack 1: most zeros sent per connection")
    parser.add_argument("--stores", type=int, default=4, help="attack 2: C-STOREs at once")
    parser.add_argument("--store-mb", type=int, default=200, help="attack 2: instance size")
    parser.add_argument("--accepted-mb", type=int, default=50, help="attack 3: instance size (under the limit)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: print only)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vigil-secbench-"))
    instance, accepted = work / "large.dcm", work / "accepted.dcm"
    write_instance(instance, args.store_mb)
    write_instance(accepted, args.accepted_mb)
    results: dict[str, Any] = {}
    for name, attack in (
        ("oversized_pdu", lambda port: oversized_pdu(port, args.sockets, args.pdu_cap_mb)),
        ("large_c_stores", lambda port: large_stores(port, args.stores, instance)),
        ("accepted_c_stores", lambda port: large_stores(port, args.stores, accepted)),
    ):
        node_dir = work / name
        node_dir.mkdir()
        node = Node(args.repo.resolve(), node_dir)
        try:
            results[name] = measure(node, lambda n=node, a=attack: a(n.port))
        finally:
            node.stop()
        results[name]["node_log"] = _log_counts(node.log_path.read_text())
        print(name, json.dumps(results[name]), flush=True)
    instance.unlink()
    accepted.unlink()
    report = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "repo": str(args.repo),
        "git": _git(args.repo.resolve()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {
            "node": "defaults, except these VIGIL_DICOM_* variables",
            **{k: v for k, v in sorted(os.environ.items()) if k.startswith("VIGIL_DICOM_")},
        },
        "goal": "growth_mb < 100 for each attack",
        "results": results,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
