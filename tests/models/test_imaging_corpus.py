"""The malformed-DICOM corpus (tests/dicom_corpus.py) through the one pixel path: a typed error naming the attribute.

Each item runs in a forked child with a wall-clock limit and an address-space cap, so that an item that makes the
pixel path hang or allocate without bound fails here instead of stalling or exhausting the machine (before the
fixes of issue #7 the deflate bomb took 19 s and 3.1 GB, and three codestream items never finished). The child
records every log line (DEBUG and up, pydicom's logger included) and every warning; none may contain a header
value of the source (the planted PatientName, PatientID, ... of the synthetic radiograph, or a fixture's own),
and no warning may escape the pixel path at all.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import resource
import select
import signal
import threading
import time
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
import pytest

from models import errors as errors_module
from models.errors import ImagingInputError
from models.imaging.dicom_read import MAX_INFLATED_BYTES, read_dicom
from models.imaging.header import MAX_SIDE
from models.imaging.pixels import load_dicom_for_model
from tests.dicom_corpus import MUTATIONS, NAMES, SEED, Corpus, CorpusItem, deflate_zeros, deflated_parts, meta_end

#: Seconds an item may take: synthetic items take milliseconds (the deflate bomb ~0.8 s); the real J2K negative
#: 966.dcm, a 2128 x 2000 codestream that every one of three decoders tries and fails, ~5 s on these machines.
TIME_LIMIT_S = 5.0
FIXTURE_TIME_LIMIT_S = 30.0
#: Address space a child may add to what it inherits: the largest refusal needs ~70 MB, 966.dcm ~150 MB.
MEMORY_BUDGET = 1536 * 2**20
SIZE = 64

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the isolation of each item needs os.fork")


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(SEED)


@dataclass(frozen=True)
class Outcome:
    """What the pixel path did with one item, as reported by the child."""

    read_error: tuple[str, str, str] | None  # (class name, field, message) from read_dicom, or None
    error: tuple[str, str, str] | None  # the same from load_dicom_for_model; None when accepted
    shape: tuple[int, ...] | None
    finite: bool
    meta: dict[str, Any] | None
    logs: str
    warnings: list[str]
    untyped: str | None  # an exception that is not an ImagingInputError (never allowed)
    seconds: float


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.levelname} {record.getMessage()}")


def _described(exc: ImagingInputError) -> tuple[str, str, str]:
    return type(exc).__name__, exc.field, str(exc)


def _run(data: bytes) -> Outcome:
    """read_dicom and load_dicom_for_model on ``data``, recording logs and warnings (runs in the child)."""
    handler = _Records()
    root, pydicom_logger = logging.getLogger(), logging.getLogger("pydicom")
    levels = root.level, pydicom_logger.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    pydicom_logger.setLevel(logging.DEBUG)
    read_error = error = untyped = None
    shape, finite, meta = None, False, None
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                read_dicom(data)
            except ImagingInputError as exc:
                read_error = _described(exc)
            try:
                x, info = load_dicom_for_model(data, SIZE)
                shape, finite, meta = x.shape, bool(np.isfinite(x).all()) and x.dtype == np.float32, dict(info)
            except ImagingInputError as exc:
                error = _described(exc)
    except Exception as exc:  # recorded and asserted against: the pixel path must raise nothing untyped
        untyped = f"{type(exc).__name__}: {exc}"
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        pydicom_logger.setLevel(levels[1])
    return Outcome(
        read_error,
        error,
        shape,
        finite,
        meta,
        "\n".join(handler.lines),
        [f"{w.category.__name__}: {w.message}" for w in caught],
        untyped,
        time.perf_counter() - start,
    )


def _address_space() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def run_isolated(data: bytes, limit_s: float) -> Outcome:
    """:func:`_run` in a forked child under ``limit_s`` seconds and :data:`MEMORY_BUDGET` more address space.

    Where forking is unsafe (another thread alive in this process) it runs here, and only the time is checked.
    """
    if threading.active_count() > 1 or not os.path.exists("/proc/self/statm"):
        return _run(data)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            cap = _address_space() + MEMORY_BUDGET
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            with os.fdopen(write_end, "wb") as out:
                pickle.dump(_run(data), out)
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + limit_s
    chunks = []
    with os.fdopen(read_end, "rb", buffering=0) as answer:
        while True:
            ready, _, _ = select.select([answer], [], [], max(deadline - time.monotonic(), 0.0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the pixel path took more than {limit_s} s (killed)")
            chunk = answer.read(2**20)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        pytest.fail(
            f"the child died without an answer (wait status {status}): a crash, or over the memory cap "
            f"of {MEMORY_BUDGET // 2**20} MiB more address space"
        )
    outcome: Outcome = pickle.loads(b"".join(chunks))
    return outcome


def _item(corpus: Corpus, name: str) -> CorpusItem:
    if MUTATIONS[name].needs_fixtures and not corpus.has_fixtures:
        pytest.skip(f"DICOM fixtures not found at {corpus.fixtures} (set VIGIL_DATA_DIR)")
    return corpus.item(name)


# ---------------------------------------------------------------------------------------------- every item
@needs_fork
@pytest.mark.parametrize("name", NAMES)
def test_corpus_item_gives_its_typed_error_within_bounds(name: str, corpus: Corpus) -> None:
    item = _item(corpus, name)
    limit = FIXTURE_TIME_LIMIT_S if MUTATIONS[name].needs_fixtures else TIME_LIMIT_S
    outcome = run_isolated(item.data, limit)
    assert outcome.untyped is None, f"an untyped exception escaped the pixel path: {outcome.untyped}"
    assert outcome.seconds < limit
    assert outcome.warnings == [], "pydicom warnings escaped the pixel path"
    shown = "\n".join([outcome.logs, *(" ".join(e) for e in (outcome.error, outcome.read_error) if e)])
    leaked = [secret for secret in item.secrets if secret in shown]
    assert not leaked, f"header values echoed in an error or a log line: {leaked}"
    if item.accepted:
        assert outcome.error is None, f"refused, but it is valid by design: {outcome.error}"
        assert outcome.read_error is None
        assert outcome.shape == (1, SIZE, SIZE) and outcome.finite
        assert outcome.meta is not None and outcome.meta["modality"] == "DX"
        return
    assert outcome.error is not None, "accepted, but it must be refused"
    kind, field, message = outcome.error
    assert item.error is not None and kind == item.error.__name__, message
    assert issubclass(getattr(errors_module, kind), ImagingInputError)
    if item.field is not None:
        assert field == item.field, message
    assert field in message, "the message does not name the attribute at fault"
    assert re.search(item.message, message), message
    if outcome.read_error is not None:  # refused while reading: load_dicom_for_model says the same
        assert outcome.read_error == outcome.error


# ---------------------------------------------------------------------------------------------- the corpus itself
def test_corpus_is_deterministic_for_a_seed_and_varies_with_it() -> None:
    names = ["valid/explicit-vr-little-endian", "truncated/inside-pixel-data", "codestream/jpeg2000-garbage-tiles"]
    first, again, other = Corpus(SEED), Corpus(SEED), Corpus(SEED + 1)
    for name in names:
        assert first.item(name).data == again.item(name).data
        assert first.item(name).data != other.item(name).data
    assert set(first.secrets).isdisjoint(other.secrets)


def test_corpus_covers_every_kind_of_mutation_the_issue_names() -> None:
    kinds = {name.split("/")[0] for name in NAMES}
    assert {
        "valid",
        "negative",
        "truncated",
        "vr",
        "huge",
        "pixel-length",
        "syntax",
        "codestream",
        "deflate",
        "header",
    } <= kinds
    accepted = [n for n in NAMES if MUTATIONS[n].error is None]
    assert len(accepted) >= 8 and len(NAMES) - len(accepted) >= 60


@pytest.mark.realdata
def test_every_negative_fixture_is_in_the_corpus(corpus: Corpus) -> None:
    if not corpus.has_fixtures:
        pytest.skip(f"DICOM fixtures not found at {corpus.fixtures} (set VIGIL_DATA_DIR)")
    on_disk = {p.stem for p in (corpus.fixtures / "negative").iterdir()}
    assert on_disk <= {n.removeprefix("negative/") for n in NAMES if n.startswith("negative/")}


def test_deflate_bomb_is_what_it_claims(corpus: Corpus) -> None:
    """About 1 MiB whose PixelData declares 2**30 bytes and which inflates past the bound (checked 16 MiB a time)."""
    data = corpus.item("deflate/bomb").data
    assert len(data) < 2 * 2**20
    inflater, pending, size = zlib.decompressobj(-zlib.MAX_WBITS), data[meta_end(data) :], 0
    head = inflater.decompress(pending, 2**16)
    assert head[head.index(b"\xe0\x7f\x10\x00OW") + 8 :][:4] == (2**30).to_bytes(4, "little")
    size, pending = len(head), inflater.unconsumed_tail
    while not inflater.eof and size <= MAX_INFLATED_BYTES:
        size += len(inflater.decompress(pending, 16 * 2**20))
        pending = inflater.unconsumed_tail
    assert size > MAX_INFLATED_BYTES


def test_largest_deflated_radiograph_fits_the_inflation_bound(corpus: Corpus) -> None:
    """An 8192 x 8192 16-bit image deflated is read (the bound refuses only what no accepted image needs)."""
    meta, dataset = deflated_parts(corpus, Rows=MAX_SIDE, Columns=MAX_SIDE)
    start = dataset.index(b"\xe0\x7f\x10\x00OW")
    pixel_bytes = MAX_SIDE * MAX_SIDE * 2
    head = dataset[:start] + b"\xe0\x7f\x10\x00OW\x00\x00" + pixel_bytes.to_bytes(4, "little")
    read = read_dicom(meta + deflate_zeros(head, pixel_bytes))
    assert (read.Rows, read.Columns) == (MAX_SIDE, MAX_SIDE) and len(read.PixelData) == pixel_bytes
    assert read.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    assert str(read.PatientID) == corpus.planted["PatientID"]


def test_header_only_read_of_a_deflated_file(corpus: Corpus) -> None:
    """stop_before_pixels / specific_tags (the DICOM node's header read) work on a deflated dataset too."""
    data = corpus.item("valid/deflated").data
    header = read_dicom(data, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "StudyInstanceUID"])
    assert "PixelData" not in header and "PatientName" not in header
    assert header.SOPInstanceUID == pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
