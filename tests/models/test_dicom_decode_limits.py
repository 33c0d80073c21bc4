"""Issue 14, finding 7: no decoder allocates for a frame a chest radiograph does not need, or for an RLE frame whose
header or segments contradict Rows x Columns.

The attack: a 2 MB RLE image of 8192 x 8192 zeros cost 1.18 GB and 5 s a request. It is refused from the header
(Rows above :data:`models.imaging.pixel_data.MAX_FRAME_SIDE`) before any decoder runs, by the HTTP route with a 422 and
by the DICOM node as ``not_analysed``, both naming Rows. An RLE segment that decodes to more than Rows x Columns bytes
made pylibjpeg-rle 2.2.0 panic (a ``BaseException``, which no ``except Exception`` catches: a 500 or a dead worker);
it is refused before decoding too. RLE frames here are built run by run (:func:`literal_segment`,
:func:`zero_segment`), not with the encoders under test.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

from models.errors import ImageDimensionError, UndecodablePixelDataError
from models.imaging import pixel_data as dicom_pixel_data
from models.imaging import pixels as imaging
from models.imaging.header import check_radiograph
from models.imaging.pixel_data import MAX_FRAME_SIDE
from models.imaging.pixels import decode_radiograph, load_dicom_for_model
from tests.dicom_corpus import SEED, Corpus, encode, set_encapsulated

CANNOT = r"^PixelData \(1\.2\.840\.10008\.1\.2\.5\) could not be decoded: "


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(SEED)


# ---------------------------------------------------------------------------------------------- RLE by hand
def zero_segment(length: int) -> bytes:
    """An RLE segment of ``length`` zero bytes: replicate runs of 128 (two bytes each), then the rest (PS3.5 G.3.1)."""
    full, rest = divmod(length, 128)
    return b"\x81\x00" * full + (bytes([257 - rest, 0]) if rest > 1 else b"\x00\x00" if rest else b"")


def literal_segment(plane: bytes) -> bytes:
    """An RLE segment holding ``plane`` as literal runs of at most 128 bytes."""
    return b"".join(bytes([len(plane[i : i + 128]) - 1]) + plane[i : i + 128] for i in range(0, len(plane), 128))


def rle_frame(segments: list[bytes]) -> bytes:
    """The 64-byte RLE header (segment count, 15 offsets) followed by ``segments``."""
    offsets, position = [], 64
    for segment in segments:
        offsets.append(position)
        position += len(segment)
    return struct.pack("<16I", len(segments), *offsets, *([0] * (15 - len(segments)))) + b"".join(segments)


def planes(pixels: np.ndarray) -> list[bytes]:
    """The byte planes of ``pixels`` in RLE segment order: most significant byte first (PS3.5 G.2)."""
    if pixels.dtype == np.uint8:
        return [pixels.tobytes()]
    return [(pixels >> 8).astype(np.uint8).tobytes(), (pixels & 0xFF).astype(np.uint8).tobytes()]


def rle_dataset(corpus: Corpus, rows: int, columns: int, frame: bytes, bits: int = 16) -> Dataset:
    """The corpus's synthetic chest header (DX, CHEST, PA), as RLE Lossless of ``rows`` x ``columns`` over ``frame``."""
    ds = corpus.synthetic(np.zeros((32, 32), dtype=np.uint8 if bits == 8 else np.uint16))
    ds.Rows, ds.Columns = rows, columns
    ds.file_meta.TransferSyntaxUID = RLELossless
    set_encapsulated(ds, [frame])
    return ds


def attack(corpus: Corpus, side: int = 8192) -> bytes:
    """Finding 7: a 16-bit RLE image of ``side`` x ``side`` zeros (2 MB at 8192)."""
    segment = zero_segment(side * side)
    return encode(rle_dataset(corpus, side, side, rle_frame([segment, segment])))


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fails any decoding of pixel data (the pixel path's decoder call and the RLE segment measurement)."""
    calls: list[str] = []

    def spy(name: str) -> Callable[..., object]:
        def called(*args: object, **kwargs: object) -> object:
            calls.append(name)
            raise AssertionError(f"{name} ran: the frame was not refused from the header")

        return called

    monkeypatch.setattr(imaging, "pixel_array", spy("pixel_array"))
    monkeypatch.setattr(dicom_pixel_data, "rle_decode_frame", spy("rle_decode_frame"))
    yield calls
    assert not calls, calls


# ---------------------------------------------------------------------------------------------- the frame size
def test_the_attack_of_finding_7_is_refused_from_the_header_before_any_decoder_runs(corpus, no_decoding) -> None:
    data = attack(corpus)
    assert 2 * 2**20 <= len(data) < 2.2 * 2**20  # the 2 MB of the finding
    started = time.perf_counter()
    with pytest.raises(
        ImageDimensionError,
        match=r"^Rows must be at most 5000 for a chest radiograph \(the largest "
        r"chest detectors are about 4300 pixels a side\); got 8192$",
    ) as info:
        load_dicom_for_model(data, 64)
    assert info.value.field == "Rows"
    assert time.perf_counter() - started < 1.0  # was 5 s and 1.18 GB


@pytest.mark.parametrize(("rows", "columns", "field"), [(5001, 32, "Rows"), (32, 5001, "Columns")])
def test_rows_or_columns_above_the_chest_limit_are_refused_naming_the_attribute(
    corpus, no_decoding, rows, columns, field
) -> None:
    ds = corpus.synthetic(np.zeros((rows, columns), dtype=np.uint8))  # native: no codestream to contradict it
    got = rows if field == "Rows" else columns
    with pytest.raises(ImageDimensionError, match=rf"^{field} must be at most {MAX_FRAME_SIDE} .*; got {got}$") as info:
        check_radiograph(ds)
    assert info.value.field == field


def test_the_largest_chest_frame_passes_the_header_checks(corpus) -> None:
    """5000 x 5000 at 16 bits, native and RLE: the limit refuses nothing a chest detector produces."""
    side = MAX_FRAME_SIDE
    check_radiograph(rle_dataset(corpus, side, side, rle_frame([zero_segment(side * side)] * 2)))
    check_radiograph(corpus.synthetic(np.zeros((side, 64), dtype=np.uint16)))
    assert MAX_FRAME_SIDE >= 4300  # 43 cm at 0.1 mm


# ---------------------------------------------------------------------------------------------- RLE frames
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("shape", [None, (33, 35)])  # the corpus's 96 x 80 chest; an odd Rows x Columns
def test_valid_rle_frames_pass_and_decode_to_their_native_twin(corpus, bits, shape) -> None:
    dtype = np.uint8 if bits == 8 else np.uint16
    pixels = (
        corpus.pixels(dtype)
        if shape is None
        else np.random.default_rng(0).integers(0, 4096 if bits == 16 else 256, shape).astype(dtype)
    )
    # segments padded to an even length, as encoders do
    segments = [s + b"\x00" * (len(s) % 2) for s in map(literal_segment, planes(pixels))]
    rows, columns = pixels.shape
    ds = rle_dataset(corpus, rows, columns, rle_frame(segments), bits)
    check_radiograph(ds)
    native = corpus.synthetic(pixels)
    np.testing.assert_array_equal(decode_radiograph(ds), decode_radiograph(native))


def _frame_16(corpus: Corpus) -> tuple[bytes, bytes]:
    """The two literal-run segments of the corpus's 16-bit 96 x 80 chest."""
    first, second = planes(corpus.pixels())
    return literal_segment(first), literal_segment(second)


def _header(frame: bytes, index: int, value: int) -> bytes:
    """``frame`` with the header's ``index``-th 32-bit word (0: the count, 1-15: the offsets) set to ``value``."""
    return frame[: 4 * index] + struct.pack("<I", value) + frame[4 * index + 4 :]


_BROKEN: dict[str, tuple[Callable[[bytes, bytes], bytes], str]] = {
    "header-cut-short": (lambda a, b: rle_frame([a, b])[:40], r"its RLE header is cut short \(40 of 64 bytes\)$"),
    "three-segments": (
        lambda a, b: _header(rle_frame([a, b]), 0, 3),
        r"its RLE header gives 3 as the number of segments, but BitsAllocated 16 with one sample per "
        r"pixel needs 2 \(PS3\.5 G\.2\)$",
    ),
    "one-segment": (lambda a, b: rle_frame([a + b]), r"its RLE header gives 1 as the number of segments, but "),
    "first-segment-not-at-64": (
        lambda a, b: _header(rle_frame([a, b]), 1, 60),
        r"its RLE header puts segment 1 at byte 60, not at byte 64, just after the header$",
    ),
    "second-segment-on-the-first": (
        lambda a, b: _header(rle_frame([a, b]), 2, 64),
        r"its RLE header puts segment 2 at byte 64, not after segment 1 \(byte 64\)$",
    ),
    "second-segment-beyond-the-end": (
        lambda a, b: _header(rle_frame([a, b]), 2, 0x7FFFFFF0),
        r"its RLE header puts segment 2 at byte 2147483632, not inside the "
        r"\d+-byte frame$",
    ),
    "stray-third-offset": (
        lambda a, b: _header(rle_frame([a, b]), 3, 64 + len(a) + 2),
        r"its RLE header states 2 segments but gives an offset for segment 3$",
    ),
    # pylibjpeg-rle 2.2.0 panicked on these two (pyo3 PanicException, a BaseException): a 500, or a dead DICOM worker
    "segment-1-overruns": (
        lambda a, b: rle_frame([a + b"\x81\x00", b]),
        r"its RLE segment 1 decodes to more than Rows x Columns \(96 x 80 = 7680\) bytes$",
    ),
    "segment-2-overruns": (
        lambda a, b: rle_frame([a, b + b"\x00\x07"]),
        r"its RLE segment 2 decodes to more than Rows x Columns \(96 x 80 = 7680\) bytes$",
    ),
    "segment-2-of-zeros-overruns-64-fold": (
        lambda a, b: rle_frame([a, zero_segment(64 * 7680)]),
        r"its RLE segment 2 decodes to more than ",
    ),
    "segment-1-short": (
        lambda a, b: rle_frame([a[:-129], b]),
        r"its RLE segment 1 does not decode to Rows x Columns \(96 x 80 = 7680\) bytes: it is shorter "
        r"or malformed$",
    ),
    "segment-2-literal-beyond-its-end": (
        lambda a, b: rle_frame([a, b + b"\x05\x01"]),
        r"its RLE segment 2 does not decode to Rows x Columns ",
    ),
    "segment-2-empty": (
        lambda a, b: rle_frame([a, b""]),
        r"its RLE header puts segment 2 at byte (\d+), not inside the \1-byte frame$",
    ),
}


@pytest.mark.parametrize("name", list(_BROKEN))
def test_rle_frames_that_contradict_rows_and_columns_are_refused_before_decoding(corpus, monkeypatch, name) -> None:
    change, message = _BROKEN[name]
    monkeypatch.setattr(imaging, "pixel_array", lambda *a, **k: pytest.fail("the pixel decoder ran"))
    data = encode(rle_dataset(corpus, 96, 80, change(*_frame_16(corpus))))
    with pytest.raises(UndecodablePixelDataError, match=CANNOT + message) as info:
        load_dicom_for_model(data, 64)
    assert info.value.field == "PixelData"


_RUNS = st.lists(st.tuples(st.sampled_from(("literal", "replicate", "no-op")), st.integers(1, 128)), max_size=10)


def _runs(runs: list[tuple[str, int]]) -> tuple[bytes, int]:
    """``runs`` encoded (PS3.5 G.3.1) and the number of bytes they decode to."""
    out, length = b"", 0
    for kind, n in runs:
        if kind == "literal":
            out += bytes([n - 1]) + bytes((37 * i + n) % 256 for i in range(n))
        elif kind == "replicate" and n > 1:
            out += bytes([257 - n, n % 256])
        elif kind == "replicate":
            out += b"\x00\x01"  # a replicate run of one is written as a literal run of one
        else:
            out += b"\x80"  # no operation
            n = 0
        length += n
    return out, length


@settings(max_examples=150, deadline=None)
@given(prefix=_RUNS, suffix=_RUNS, fill=st.booleans(), pad=st.booleans(), which=st.sampled_from((0, 1)))
def test_an_rle_segment_passes_exactly_when_it_decodes_to_rows_x_columns(prefix, suffix, fill, pad, which) -> None:
    """Oracle: the decoded length summed from the runs. Passed frames decode; refused ones never reach a decoder."""
    rows = columns = 32
    pixels = rows * columns
    head, head_length = _runs(prefix)
    missing = max(0, pixels - head_length) if fill else 0
    filler = literal_segment(bytes(i % 251 for i in range(missing)))
    tail, tail_length = _runs(suffix)
    length = head_length + missing + tail_length
    segment = head + filler + tail
    segment += b"\x00" * (pad and len(segment) % 2)  # padded to an even length (the frame's last fragment would be)
    exact = zero_segment(pixels)
    segments = [segment, exact] if which == 0 else [exact, segment]
    ds = rle_dataset(Corpus(SEED), rows, columns, rle_frame(segments))
    if length == pixels and segment:
        image = decode_radiograph(ds)
        assert image.shape == (rows, columns)
    else:
        with pytest.raises(UndecodablePixelDataError, match=CANNOT + r"its RLE (segment|header) "):
            check_radiograph(ds)


# ---------------------------------------------------------------------------------------------- HTTP and DICOM node
@pytest.fixture(scope="module")
def refused(corpus: Corpus) -> dict[str, tuple[bytes, str]]:
    """The attack, and a 16-bit segment that overruns (once a decoder panic): the data and the attribute named."""
    first, second = _frame_16(corpus)
    return {
        "attack": (attack(corpus), "Rows"),
        "overrun": (encode(rle_dataset(corpus, 96, 80, rle_frame([first + b"\x81\x00", second]))), "PixelData"),
    }


@pytest.mark.parametrize("name", ["attack", "overrun"])
def test_the_http_route_refuses_with_422_naming_the_attribute(tmp_path, model_folder, refused, name) -> None:
    from tests.serving.conftest import make_service

    data, field = refused[name]
    with make_service(tmp_path, model_folder) as service:
        res = service.client.post(
            "/v1/imaging/second-read",
            content=data,
            headers=service.headers("imaging", **{"Content-Type": "application/dicom"}),
        )
    assert res.status_code == 422, res.text
    assert res.headers["content-type"] == "application/problem+json"
    assert res.json()["errors"][0]["field"] == field


@pytest.mark.parametrize("name", ["attack", "overrun"])
def test_the_dicom_node_records_not_analysed_naming_the_attribute(tmp_path, model_folder, refused, name) -> None:
    from serving.dicom_node.analysis import analyse_item
    from serving.model_source import LocalFolderLocator, ModelHolder
    from serving.store.database import Store
    from tests.queue_items import received_item

    data, field = refused[name]
    store = Store(f"sqlite:///{tmp_path / 'serving.db'}")
    store.create_schema()
    holder = ModelHolder(LocalFolderLocator(model_folder), allow_unreleased=False, threads=1, tasks=("imaging",))
    holder.load_all()
    path = tmp_path / "in" / "one.dcm"
    path.parent.mkdir()
    path.write_bytes(data)
    item = received_item(path, data, source="c-store", transfer_syntax=str(RLELossless))
    try:
        analysis = analyse_item(
            item, holder.get("imaging"), store, tmp_path, send_heatmap_sc=False, needs_delivery=False
        )
    finally:
        store.dispose()
    assert analysis.state == "not_analysed"
    assert analysis.changes["reason_field"] == field
