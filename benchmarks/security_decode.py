"""Issue 14, finding 7 replayed: decompression to huge frames, one request and six at once.

The attack: a 2 MB RLE Lossless DICOM of 8192 x 8192 zeros (16 bits), a chest DX header. Each request runs what
``POST /v1/imaging/second-read`` runs for it (``ImagingOnnxModel.second_read_dicom``:
:func:`models.imaging.dicom_read.read_dicom`, then :func:`models.imaging.pixels.load_dicom_for_model` at the model's
128 px; this input never reaches inference, before or after the fix) in a thread of its own, all started together by a
barrier; as in the HTTP route, at most two decode at once (``ServiceState.run_model``'s limiter; the others wait,
holding their bodies).

What is left: the same attack at the largest frame still accepted (5000 x 5000 zeros, 0.8 MB), which is decoded
and then refused as blank; and a drawn frontal film of that size (RLE, 33 MB), read once and twice at once: what a
legitimate film of the largest size costs.

Each case runs in a fresh interpreter (``--case``) that imports the pixel path, reads the prepared file, and then
measures: peak RSS growth (the process's high-water mark, VmHWM, reset just before the requests and read after them,
minus its RSS before them; also sampled every millisecond from /proc/self/statm), wall time, and each request's
outcome (the error class and the attribute it names, or "accepted").

Run from the repository root (about a minute on 2 cores)::

    nice .venv/bin/python benchmarks/security_decode.py [--out docs/security_decode.json]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL_SIZE = 128  # training/configs/imaging.yaml image_size
ATTACK_SIDE = 8192
LARGEST_SIDE = 5000  # models.imaging.pixel_data.MAX_FRAME_SIDE, written out so the script runs on older code too
ROUTE_LIMIT = 2  # serving.api.state.ServiceState.run_model: anyio.CapacityLimiter(2)
CASES: dict[str, tuple[str, int]] = {  # name -> (file, concurrent requests)
    "attack, 1 request": ("attack", 1),
    "attack, 6 at once": ("attack", 6),
    "zeros at the limit (5000 x 5000), 1 request": ("limit", 1),
    "zeros at the limit (5000 x 5000), 6 at once": ("limit", 6),
    "largest accepted film, 1 request": ("largest", 1),
    "largest accepted film, 2 at once": ("largest", 2),
}


# ---------------------------------------------------------------------------------------------- inputs
def _zero_segment(length: int) -> bytes:
    """An RLE segment of ``length`` zero bytes: replicate runs of 128, two bytes each (PS3.5 G.3.1)."""
    full, rest = divmod(length, 128)
    return b"\x81\x00" * full + (bytes([257 - rest, 0]) if rest > 1 else b"\x00\x00" if rest else b"")


def _chest_header(rows: int, columns: int) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds


def _part10(ds: Any) -> bytes:
    import pydicom

    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def attack_file(side: int = ATTACK_SIDE) -> bytes:
    """Finding 7's input: 16-bit RLE of ``side`` x ``side`` zeros (two segments of replicate runs; 2 MB at 8192)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    segment = _zero_segment(side * side)
    frame = np.array([2, 64, 64 + len(segment)] + [0] * 13, dtype="<u4").tobytes() + segment + segment
    ds = _chest_header(side, side)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return _part10(ds)


def largest_file(side: int = LARGEST_SIDE) -> bytes:
    """A drawn frontal film (dark lungs, bright mediastinum, 12 bits) of ``side`` x ``side``, RLE Lossless."""
    from pydicom.uid import RLELossless

    axis = np.linspace(0.0, 1.0, side, dtype=np.float32)
    y, x = axis[:, None], axis[None, :]
    image = 0.2 + 0.55 * np.exp(-(((x - 0.5) / 0.1) ** 2)) + 0.3 * y
    image += 0.3 * np.exp(-((x - 0.3) ** 2 + (y - 0.5) ** 2) / 0.01) + 0.03 * np.sin(25 * y)
    image += np.random.default_rng(0).normal(0.0, 0.01, image.shape).astype(np.float32)
    pixels = np.rint(np.clip(image, 0.0, 1.0) * 4095).astype(np.uint16)
    del image
    ds = _chest_header(side, side)
    ds.PixelData = pixels.tobytes()
    ds.compress(RLELossless, pixels, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    return _part10(ds)


# ---------------------------------------------------------------------------------------------- one case
def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def _high_water_bytes() -> int:
    """This process's peak RSS (VmHWM; ``ru_maxrss`` would carry the parent's across ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_high_water() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+: ``echo 5 > /proc/self/clear_refs``); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_case(path: Path, concurrent: int) -> dict[str, Any]:
    """``concurrent`` threads read ``path`` as the HTTP route does, started together, at most :data:`ROUTE_LIMIT`
    decoding at once; RSS and time measured."""
    import gc

    from models.errors import ImagingInputError
    from models.imaging.dicom_read import read_dicom
    from models.imaging.pixels import load_dicom_for_model

    data = path.read_bytes()
    outcomes: list[str] = [""] * concurrent
    seconds: list[float] = [0.0] * concurrent
    barrier = threading.Barrier(concurrent + 1)
    limiter = threading.Semaphore(ROUTE_LIMIT)

    def request(index: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        try:
            with limiter:
                load_dicom_for_model(read_dicom(data), MODEL_SIZE)
            outcomes[index] = "accepted"
        except ImagingInputError as exc:
            outcomes[index] = f"{type(exc).__name__} ({exc.field})"
        except BaseException as exc:  # reported, not raised: a decoder panic is a BaseException
            outcomes[index] = f"unexpected {type(exc).__name__}"
        seconds[index] = time.perf_counter() - started

    threads = [threading.Thread(target=request, args=(i,)) for i in range(concurrent)]
    for thread in threads:
        thread.start()
    gc.collect()
    before = _rss_bytes()
    reset = _reset_high_water()
    sampled = before
    barrier.wait()
    started = time.perf_counter()
    while any(t.is_alive() for t in threads):
        sampled = max(sampled, _rss_bytes())
        time.sleep(0.001)
    wall = time.perf_counter() - started
    high_water = _high_water_bytes()
    mib = 2**20
    return {
        "file_mb": round(len(data) / 1e6, 2),
        "concurrent": concurrent,
        "decoding_at_once": min(concurrent, ROUTE_LIMIT),
        "rss_before_mb": round(before / mib, 1),
        "peak_rss_growth_mb": round(max(high_water, sampled) / mib - before / mib, 1),
        "high_water_reset": reset,
        "sampled_peak_rss_growth_mb": round((sampled - before) / mib, 1),
        "wall_s": round(wall, 3),
        "request_s": [round(s, 3) for s in seconds],
        "outcomes": sorted(set(outcomes)),
    }


# ---------------------------------------------------------------------------------------------- driver
def _git() -> dict[str, Any]:
    def out(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout

    return {
        "commit": out("rev-parse", "HEAD").strip(),
        "modified": [
            line.split(maxsplit=1)[1] for line in out("status", "--porcelain", "--untracked-files=no").splitlines()
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "security_decode.json")
    parser.add_argument("--case", nargs=2, metavar=("FILE", "CONCURRENT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:  # a fresh interpreter per case: its high-water mark is this case's alone
        print(json.dumps(run_case(Path(args.case[0]), int(args.case[1]))))
        return 0

    from models.imaging.pixels import PIXEL_PATH_VERSION

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="security-decode-") as scratch:
        files = {kind: Path(scratch) / f"{kind}.dcm" for kind in ("attack", "limit", "largest")}
        files["attack"].write_bytes(attack_file())
        files["limit"].write_bytes(attack_file(LARGEST_SIDE))
        files["largest"].write_bytes(largest_file())
        for name, (kind, concurrent) in CASES.items():
            done = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--case", str(files[kind]), str(concurrent)],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                results[name] = {"error": f"exit {done.returncode}", "stderr_tail": done.stderr[-2000:]}
            else:
                results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    import pydicom

    report = {
        "command": "nice .venv/bin/python " + shlex.join(["benchmarks/security_decode.py", *(argv or sys.argv[1:])]),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git(),
        "machine": {
            "python": platform.python_version(),
            "cpus": len(__import__("os").sched_getaffinity(0)),
            "pydicom": pydicom.__version__,
        },
        "pixel_path_version": PIXEL_PATH_VERSION,
        "function": (
            "models.imaging.dicom_read.read_dicom + models.imaging.pixels.load_dicom_for_model(size=128), "
            "as second_read_dicom runs it"
        ),
        "attack": f"RLE Lossless, {ATTACK_SIDE} x {ATTACK_SIDE} zeros, 16 bits, DX CHEST PA",
        "zeros_at_the_limit": f"the same, {LARGEST_SIDE} x {LARGEST_SIDE}",
        "largest_accepted": f"RLE Lossless, {LARGEST_SIDE} x {LARGEST_SIDE} drawn frontal film, 12 of 16 bits",
        "cases": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
