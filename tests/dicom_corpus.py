"""A seeded corpus of malformed DICOM for the one pixel path, the second-read route and STOW-RS (issue #7).

Every item is bytes as a modality, a PACS or an attacker could send them, plus what the pixel path must answer:
the :class:`models.errors.ImagingInputError` subclass, the attribute it names (``field``) and a pattern of its
message, or ``error=None`` when the item is decodable by design (a mutation that leaves a valid radiograph, and
the unmutated sources themselves, so that a refusal of everything cannot pass). Each item also lists header values
of its source that must never appear in an error or a log line (``secrets``): the planted PatientName, PatientID,
birth date, accession number and institution of the synthetic radiograph, or the real header values of a fixture.

Sources: a small synthetic chest radiograph drawn here (DX, MONOCHROME2, 16/12 bits, 96 x 80, a bright mediastinum
between dark lung fields, seeded noise), encoded natively, deflated, RLE, JPEG 2000, JPEG-LS and JPEG baseline; and
the real fixtures of ``<data>/imaging/dicom_fixtures`` (the three files of ``negative/`` and two chest files), found
through ``VIGIL_DATA_DIR`` / :func:`training.data.resolve_data_dir`. Nothing is written to disk.

Use::

    corpus = Corpus(seed=SEED)               # fixtures found through VIGIL_DATA_DIR, or fixtures=Path(...)
    for name in NAMES:
        if MUTATIONS[name].needs_fixtures and not corpus.has_fixtures:
            continue
        item = corpus.item(name)             # built once, cached; deterministic for a given seed
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pydicom
from PIL import Image
from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from models.errors import (
    ImageDimensionError,
    ImagingInputError,
    MultiFrameError,
    NotAnImageError,
    NotChestError,
    PhotometricMismatchError,
    UndecodablePixelDataError,
    UnsupportedModalityError,
    UnsupportedPhotometricError,
)

__all__ = ["MUTATIONS", "NAMES", "SEED", "Corpus", "CorpusItem", "Mutation", "fixtures_dir"]

SEED: Final = 20260714
ROWS: Final = 96
COLUMNS: Final = 80
#: What the deflate bomb inflates to (its PixelData of zeros); about 1 MiB of deflate data. Deflate cannot do
#: better than ~1032:1, so "a few KB that inflates to GBs" does not exist: GBs need MBs.
BOMB_INFLATED_BYTES: Final = 2**30
_PIXEL_DATA: Final = b"\xe0\x7f\x10\x00"
_ITEM: Final = b"\xfe\xff\x00\xe0"
_ITEM_END: Final = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
_SEQUENCE_END: Final = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UNDEFINED: Final = b"\xff\xff\xff\xff"


@dataclass(frozen=True)
class CorpusItem:
    """One input and the answer the pixel path must give (``error is None``: accepted by design)."""

    name: str
    data: bytes
    error: type[ImagingInputError] | None
    field: str | None
    message: str  # a regular expression the error message must contain (re.search); "" when accepted
    secrets: tuple[str, ...]
    note: str

    @property
    def accepted(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Mutation:
    """How to make one item, and what it must give."""

    name: str
    make: Callable[[Corpus, np.random.Generator], tuple[bytes, tuple[str, ...]]]
    error: type[ImagingInputError] | None
    field: str | None
    message: str
    needs_fixtures: bool
    note: str


MUTATIONS: dict[str, Mutation] = {}


def _mutation(
    name: str,
    error: type[ImagingInputError] | None = None,
    field: str | None = None,
    message: str = "",
    *,
    fixtures: bool = False,
) -> Callable[
    [Callable[[Corpus, np.random.Generator], tuple[bytes, tuple[str, ...]]]],
    Callable[[Corpus, np.random.Generator], tuple[bytes, tuple[str, ...]]],
]:
    def register(
        make: Callable[[Corpus, np.random.Generator], tuple[bytes, tuple[str, ...]]],
    ) -> Callable[[Corpus, np.random.Generator], tuple[bytes, tuple[str, ...]]]:
        if name in MUTATIONS:
            raise ValueError(f"mutation {name!r} is defined twice")
        MUTATIONS[name] = Mutation(name, make, error, field, message, fixtures, (make.__doc__ or "").strip())
        return make

    return register


def fixtures_dir() -> Path:
    """``<data>/imaging/dicom_fixtures`` of the shared data folder (``VIGIL_DATA_DIR``); it may not exist."""
    from training.data import resolve_data_dir

    return resolve_data_dir() / "imaging" / "dicom_fixtures"


class Corpus:
    """The corpus for one seed: items are built on first use and cached.

    Parameters
    ----------
    seed : int
        Seeds the synthetic image's noise, the planted identifiers and every random choice of the mutations (each
        mutation draws from its own generator, seeded by ``seed`` and its name, so items do not depend on order).
    fixtures : Path, optional
        The ``dicom_fixtures`` folder; defaults to :func:`fixtures_dir`.
    """

    def __init__(self, seed: int = SEED, fixtures: Path | None = None) -> None:
        self.seed = seed
        self.fixtures = Path(fixtures) if fixtures is not None else fixtures_dir()
        rng = np.random.default_rng([seed, 0])
        tag = rng.bytes(4).hex()
        born = f"19{int(rng.integers(20, 80))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
        #: PHI-like values planted in the synthetic radiograph; never to be echoed.
        self.planted = {
            "PatientName": f"Planted^Secret{tag}",
            "PatientID": f"PID{tag}X",
            "PatientBirthDate": born,
            "AccessionNumber": f"ACC{tag}",
            "InstitutionName": f"Clinic {tag} Planted",
            "ReferringPhysicianName": f"Doctor^Hidden{tag}",
        }
        self._pixels = _draw_chest(rng)
        self._items: dict[str, CorpusItem] = {}
        self._serial = 0  # of the item being built: every item gets its own SOP Instance UID

    @property
    def has_fixtures(self) -> bool:
        return self.fixtures.is_dir()

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(self.planted.values())

    def item(self, name: str) -> CorpusItem:
        """The item ``name`` of :data:`NAMES` (``FileNotFoundError`` if it needs the fixtures and they are absent)."""
        if name not in self._items:
            mutation = MUTATIONS[name]
            if mutation.needs_fixtures and not self.has_fixtures:
                raise FileNotFoundError(f"{name} needs the DICOM fixtures at {self.fixtures}")
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
            self._serial = zlib.crc32(name.encode())
            with warnings.catch_warnings():  # pydicom warns about the invalid values written on purpose
                warnings.simplefilter("ignore")
                data, secrets = mutation.make(self, rng)
            self._items[name] = CorpusItem(
                name, data, mutation.error, mutation.field, mutation.message, secrets, mutation.note
            )
        return self._items[name]

    def items(self) -> list[CorpusItem]:
        """Every item that can be built here (those that need absent fixtures are left out)."""
        return [self.item(n) for n in NAMES if self.has_fixtures or not MUTATIONS[n].needs_fixtures]

    # ------------------------------------------------------------------------------------------ sources
    def synthetic(self, pixels: np.ndarray | None = None, **header: object) -> Dataset:
        """A fresh copy of the synthetic radiograph (explicit VR LE); ``header`` values override (None deletes)."""
        pixels = self._pixels if pixels is None else pixels
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = DigitalXRayImageStorageForPresentation
        ds.SOPInstanceUID = self.instance_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(self.seed, 1), _uid(self.seed, 2)
        ds.AccessionNumber = self.planted["AccessionNumber"]
        ds.Modality = "DX"
        ds.InstitutionName = self.planted["InstitutionName"]
        ds.ReferringPhysicianName = self.planted["ReferringPhysicianName"]
        ds.PatientName = self.planted["PatientName"]
        ds.PatientID = self.planted["PatientID"]
        ds.PatientBirthDate = self.planted["PatientBirthDate"]
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = "PA"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape
        if pixels.dtype == np.uint8:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        else:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelData = pixels.tobytes()
        ds["PixelData"].VR = "OB" if pixels.dtype == np.uint8 else "OW"
        for keyword, value in header.items():
            set_element(ds, keyword, value)
        return ds

    def instance_uid(self) -> str:
        """The SOP Instance UID of the item being built (unique in the corpus, so a queue keeps them apart)."""
        return _uid(self.seed, 1000 + self._serial)

    def pixels(self, dtype: type = np.uint16) -> np.ndarray:
        """The synthetic image's stored values (12 bits), or scaled to 8 bits."""
        if dtype == np.uint8:
            return (self._pixels >> 4).astype(np.uint8)
        return self._pixels.copy()

    def fixture(self, name: str) -> bytes:
        return (self.fixtures / name).read_bytes()

    def compressed(self, syntax: str, **header: object) -> Dataset:
        """The synthetic radiograph compressed with ``syntax`` (RLE, JPEG 2000, JPEG-LS, or JPEG baseline)."""
        if syntax == JPEGBaseline8Bit:  # pydicom has no JPEG encoder: Pillow, then encapsulate
            pixels = self.pixels(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
            ds = self.synthetic(pixels)
            ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
            set_encapsulated(ds, [buffer.getvalue()])
        else:
            ds = self.synthetic()
            ds.compress(syntax, self.pixels(), generate_instance_uid=False)
        for keyword, value in header.items():
            set_element(ds, keyword, value)
        return ds


def fixture_secrets(data: bytes) -> tuple[str, ...]:
    """Identifying header values of a real fixture (what its errors must not echo)."""
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    values = [
        header.get(k)
        for k in (
            "PatientID",
            "PatientName",
            "PatientBirthDate",
            "AccessionNumber",
            "InstitutionName",
            "StudyInstanceUID",
        )
    ]
    return tuple(str(v) for v in values if v not in (None, "") and len(str(v)) >= 4)


# ---------------------------------------------------------------------------------------------- encoding helpers
def _uid(seed: int, n: int) -> str:
    return f"1.2.826.0.1.3680043.10.1000.{seed % 10**9}.{n}"


def _draw_chest(rng: np.random.Generator) -> np.ndarray:
    """A 96 x 80 12-bit frontal chest: dark air at the edges, dark lungs, a bright mediastinum and spine."""
    x = np.linspace(0.0, 1.0, COLUMNS)[None, :]
    y = np.linspace(0.0, 1.0, ROWS)[:, None]
    body = np.where((x > 0.08) & (x < 0.92), 0.3, 0.05)
    mediastinum = 0.55 * np.exp(-(((x - 0.5) / 0.09) ** 2)) * (0.6 + 0.4 * y)
    ribs = 0.06 * (np.sin(y * 40.0) > 0.6) * ((x > 0.12) & (x < 0.88))
    image = body + mediastinum + ribs + rng.normal(0.0, 0.02, (ROWS, COLUMNS))
    return np.clip(np.rint(image * 4095), 0, 4095).astype(np.uint16)


def set_element(ds: Dataset, keyword: str, value: object, vr: str | None = None) -> None:
    """Set ``keyword`` to ``value`` with ``vr`` (default: the dictionary's) and no value validation; None deletes."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    if value is None:
        if tag in ds:
            del ds[tag]
        return
    ds[tag] = DataElement(tag, vr or pydicom.datadict.dictionary_VR(tag), value, validation_mode=pydicom_config.IGNORE)


def set_encapsulated(ds: Dataset, frames: list[bytes]) -> None:
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True


def encode(ds: Dataset, *, implicit: bool = False) -> bytes:
    """Part 10 bytes of ``ds`` in its transfer syntax (``implicit``: Implicit VR Little Endian), no validation."""
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    saved = pydicom_config.settings.writing_validation_mode
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    finally:
        pydicom_config.settings.writing_validation_mode = saved
    return buffer.getvalue()


def meta_end(data: bytes) -> int:
    """The offset of the first dataset byte after the file meta group (from its group length)."""
    (group_length,) = struct.unpack_from("<I", data, 132 + 8)
    return 132 + 12 + group_length


def element_span(data: bytes, tag: int, *, implicit: bool = False) -> tuple[int, int, int]:
    """``(start, value_start, end)`` of the top-level element ``tag`` in Part 10 ``data`` (a defined length)."""
    header = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    start = data.index(header, meta_end(data))
    if implicit:
        (length,) = struct.unpack_from("<I", data, start + 4)
        return start, start + 8, start + 8 + length
    vr = data[start + 4 : start + 6].decode("ascii")
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"):
        (length,) = struct.unpack_from("<I", data, start + 8)
        return start, start + 12, start + 12 + length
    (length,) = struct.unpack_from("<H", data, start + 6)
    return start, start + 8, start + 8 + length


def replace_frame(ds: Dataset, change: Callable[[bytes], bytes]) -> bytes:
    """Part 10 bytes of ``ds`` with its single encapsulated frame replaced by ``change(frame)``."""
    (frame,) = list(generate_frames(ds.PixelData, number_of_frames=1))
    set_encapsulated(ds, [change(frame)])
    return encode(ds)


def jpeg_sof_offset(codestream: bytes) -> int:
    """Offset of the SOFn / SOF55 marker of a JPEG or JPEG-LS codestream (walking the marker segments)."""
    offset = 2
    while codestream[offset + 1] not in (
        *range(0xC0, 0xC4),
        *range(0xC5, 0xC8),
        *range(0xC9, 0xCC),
        *range(0xCD, 0xD0),
        0xF7,
    ):
        (length,) = struct.unpack_from(">H", codestream, offset + 2)
        offset += 2 + length
    return offset


def with_transfer_syntax(data: bytes, syntax: str) -> bytes:
    """Part 10 ``data`` with the meta's TransferSyntaxUID value replaced by ``syntax`` (the group length kept right)."""
    start, _, end = _span_in_meta(data, b"\x02\x00\x10\x00")
    value = syntax.encode("latin-1")
    value += b"\x00" * (len(value) % 2)
    meta = (
        data[132 + 12 : start]
        + b"\x02\x00\x10\x00UI"
        + struct.pack("<H", len(value))
        + value
        + data[end : meta_end(data)]
    )
    return data[: 132 + 8] + struct.pack("<I", len(meta)) + meta + data[meta_end(data) :]


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def deflate_zeros(dataset_head: bytes, zeros: int, block: int = 2**20) -> bytes:
    """A raw deflate stream of ``dataset_head`` followed by ``zeros`` zero bytes, built in milliseconds.

    After a full flush the compressor keeps no history, so every further block of zeros encodes to the same bytes:
    one block is compressed and repeated.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(dataset_head) + compressor.flush(zlib.Z_FULL_FLUSH)
    one = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(zeros, block)
    tail = compressor.compress(bytes(rest)) + compressor.flush()
    return head + one * count + tail


# ---------------------------------------------------------------------------------------------- accepted by design
@_mutation("valid/explicit-vr-little-endian")
def _valid_explicit(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """The synthetic radiograph itself: accepted."""
    return encode(c.synthetic()), c.secrets


@_mutation("valid/implicit-vr-little-endian")
def _valid_implicit(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Implicit VR Little Endian: accepted."""
    return encode(c.synthetic(), implicit=True), c.secrets


@_mutation("valid/deflated")
def _valid_deflated(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Deflated Explicit VR Little Endian, well under the inflation limit: accepted."""
    ds = c.synthetic()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return encode(ds), c.secrets


@_mutation("valid/rle-lossless")
def _valid_rle(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """RLE Lossless: accepted."""
    return encode(c.compressed(RLELossless)), c.secrets


@_mutation("valid/jpeg2000-lossless")
def _valid_j2k(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG 2000 lossless: accepted."""
    return encode(c.compressed(JPEG2000Lossless)), c.secrets


@_mutation("valid/jpeg-ls-lossless")
def _valid_jls(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG-LS lossless: accepted."""
    return encode(c.compressed(JPEGLSLossless)), c.secrets


@_mutation("valid/jpeg-baseline")
def _valid_jpeg(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG baseline, 8 bits, written by Pillow (with a JFIF APP0 segment): accepted."""
    return encode(c.compressed(JPEGBaseline8Bit)), c.secrets


@_mutation("valid/8-bit-odd-length-padded")
def _valid_odd(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """8 bits, 97 x 81 = 7,857 bytes of PixelData padded to an even 7,858 (PS3.5 7.1.1): accepted."""
    pixels = np.zeros((97, 81), dtype=np.uint8)
    pixels[:96, :80] = c.pixels(np.uint8)
    return encode(c.synthetic(pixels)), c.secrets


@_mutation("valid/rows-columns-as-UL")
def _valid_rows_ul(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Rows and Columns written as UL in explicit VR: contradicts the dictionary (US), but an unambiguous integer."""
    ds = c.synthetic()
    set_element(ds, "Rows", ROWS, "UL")
    set_element(ds, "Columns", COLUMNS, "UL")
    return encode(ds), c.secrets


@_mutation("valid/unknown-character-set")
def _valid_charset(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """SpecificCharacterSet 'ISO_IR 999' (unknown) and a PatientName in bytes invalid in it: accepted, silently."""
    ds = c.synthetic(SpecificCharacterSet="ISO_IR 999")
    data = encode(ds)
    name = c.planted["PatientName"].encode()
    return data.replace(name, name[:-2] + b"\xe9\xff"), (*c.secrets[1:], c.planted["PatientName"][:-2])


@_mutation("valid/no-transfer-syntax-in-meta")
def _valid_no_ts(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A file meta group without TransferSyntaxUID: the encoding is detected (Explicit VR LE), as for legacy files."""
    data = encode(c.synthetic())
    start, _, end = _span_in_meta(data, b"\x02\x00\x10\x00")
    meta = data[132 + 12 : start] + data[end : meta_end(data)]
    return data[: 132 + 8] + struct.pack("<I", len(meta)) + meta + data[meta_end(data) :], c.secrets


@_mutation("valid/meta-group-length-wrong")
def _valid_group_length(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """FileMetaInformationGroupLength 0xFFFFFFF0: the meta group ends at the first non-0002 tag anyway."""
    return _patch(encode(c.synthetic()), 132 + 8, struct.pack("<I", 0xFFFFFFF0)), c.secrets


def _span_in_meta(data: bytes, tag: bytes) -> tuple[int, int, int]:
    start = data.index(tag, 132)
    (length,) = struct.unpack_from("<H", data, start + 6)
    return start, start + 8, start + 8 + length


# ---------------------------------------------------------------------------------------------- fixtures' negatives
@_mutation(
    "negative/966",
    UndecodablePixelDataError,
    "PixelData",
    r"^PixelData \(1\.2\.840\.10008\.1\.2\.4\.90\) could not be decoded",
    fixtures=True,
)
def _negative_966(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """The fixtures' 966.dcm: a DX chest whose JPEG 2000 codestream is broken."""
    data = c.fixture("negative/966.dcm")
    return data, fixture_secrets(data)


@_mutation(
    "negative/RG2_JPLY", NotChestError, "BodyPartExamined", r"^BodyPartExamined must be chest-like", fixtures=True
)
def _negative_jply(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """The fixtures' RG2_JPLY.dcm (a hip, misplaced JPEG marker): refused by body part before any decoding."""
    data = c.fixture("negative/RG2_JPLY.dcm")
    return data, fixture_secrets(data)


@_mutation(
    "negative/RG2_JPLY-said-chest",
    UndecodablePixelDataError,
    "PixelData",
    r"^PixelData \(1\.2\.840\.10008\.1\.2\.4\.51\) could not be decoded",
    fixtures=True,
)
def _negative_jply_chest(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """RG2_JPLY.dcm with BodyPartExamined rewritten to CHEST, so that its broken codestream is reached."""
    data = c.fixture("negative/RG2_JPLY.dcm")
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.BodyPartExamined = "CHEST"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = c.instance_uid()
    return encode(ds), fixture_secrets(data)


@_mutation(
    "negative/Fake_MONOHR1",
    PhotometricMismatchError,
    "PhotometricInterpretation",
    r"^PhotometricInterpretation contradicts the pixel data",
    fixtures=True,
)
def _negative_fake(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """The fixtures' Fake_MONOHR1.dcm: MONOCHROME1 in the header, MONOCHROME2 pixels."""
    data = c.fixture("negative/Fake_MONOHR1.dcm")
    return data, fixture_secrets(data)


# ---------------------------------------------------------------------------------------------- truncated
_NOT_DICOM = r"^file must be a DICOM dataset"


@_mutation("truncated/empty", NotAnImageError, "file", _NOT_DICOM)
def _trunc_empty(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Zero bytes."""
    return b"", ()


@_mutation("truncated/inside-preamble", NotAnImageError, "file", _NOT_DICOM)
def _trunc_preamble(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Cut inside the 128-byte preamble."""
    return encode(c.synthetic())[: int(rng.integers(1, 128))], c.secrets


@_mutation("truncated/inside-prefix", NotAnImageError, "file", _NOT_DICOM)
def _trunc_prefix(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Cut inside the 'DICM' prefix."""
    return encode(c.synthetic())[:130], c.secrets


@_mutation(
    "truncated/inside-meta-group",
    NotAnImageError,
    "TransferSyntaxUID",
    r"^file is truncated: it ends inside TransferSyntaxUID",
)
def _trunc_meta(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Cut inside the TransferSyntaxUID value of the file meta group."""
    data = encode(c.synthetic())
    _, value, end = _span_in_meta(data, b"\x02\x00\x10\x00")
    return data[: int(rng.integers(value + 1, end))], c.secrets


@_mutation(
    "truncated/inside-header-element", NotAnImageError, "PatientName", r"^file is truncated: it ends inside PatientName"
)
def _trunc_element(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Cut inside the PatientName value (the partial name must not be echoed)."""
    data = encode(c.synthetic())
    _, value, end = element_span(data, 0x00100010)
    return data[: int(rng.integers(value + 4, end))], c.secrets


@_mutation("truncated/inside-element-header", NotAnImageError, "PixelData", r"^PixelData is missing")
def _trunc_element_header(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Cut inside the 8-byte tag/VR/length header of Rows: nothing from Rows on is there."""
    data = encode(c.synthetic())
    start, _, _ = element_span(data, 0x00280010)
    return data[: start + int(rng.integers(1, 8))], c.secrets


@_mutation(
    "truncated/inside-pixel-data",
    NotAnImageError,
    "PixelData",
    r"^file is truncated: it ends inside PixelData \(\d+ of its \d+ bytes are there\)",
)
def _trunc_pixels(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Cut inside the native PixelData value."""
    data = encode(c.synthetic())
    _, value, end = element_span(data, 0x7FE00010)
    return data[: int(rng.integers(value + 1, end - 1))], c.secrets


@_mutation("truncated/inside-pixel-data-header", NotAnImageError, "PixelData", r"^PixelData is missing")
def _trunc_pixel_header(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Cut inside the 12-byte header of PixelData."""
    data = encode(c.synthetic())
    start, _, _ = element_span(data, 0x7FE00010)
    return data[: start + int(rng.integers(1, 12))], c.secrets


_UNDEFINED_END = r"^file is truncated: it ends inside an element of undefined length"


@_mutation("truncated/inside-encapsulated-fragment", NotAnImageError, "file", _UNDEFINED_END)
def _trunc_fragment(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A JPEG 2000 file cut inside its (undefined-length) encapsulated PixelData: no sequence delimiter."""
    data = encode(c.compressed(JPEG2000Lossless))
    start = data.index(_PIXEL_DATA, meta_end(data))
    return data[: int(rng.integers(start + 40, len(data) - 20))], c.secrets


@_mutation("truncated/real-jpeg-inside-pixel-data", NotAnImageError, "file", _UNDEFINED_END, fixtures=True)
def _trunc_real_jpeg(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """The real SIIM JPEG baseline chest cut at 40-80 % of its length."""
    data = c.fixture("chest/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
    return data[: int(len(data) * rng.uniform(0.4, 0.8))], fixture_secrets(data)


@_mutation(
    "truncated/real-headerless-inside-header",
    NotAnImageError,
    None,
    r"^file is truncated: it ends inside \w+ ",
    fixtures=True,
)
def _trunc_real_headerless(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """The real headerless CR-MONO1-10-chest (no preamble, no meta) cut inside its header (field: where it ends)."""
    data = c.fixture("chest/CR-MONO1-10-chest")
    return data[: int(rng.integers(200, 700))], fixture_secrets(data)


# ---------------------------------------------------------------------------------------------- wrong VRs
@_mutation("vr/rows-as-DS", ImageDimensionError, "Rows", r"^Rows must be an integer \(VR US\); got a value of VR DS$")
def _vr_rows_ds(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Rows written as a decimal string '96.5' (explicit VR DS): never silently truncated to 96."""
    ds = c.synthetic()
    set_element(ds, "Rows", "96.5", "DS")
    return encode(ds), c.secrets


@_mutation("vr/rows-as-text", ImageDimensionError, "Rows", r"^Rows must be an integer \(VR US\); got a value of VR LO$")
def _vr_rows_lo(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Rows written as the text '96' (explicit VR LO)."""
    ds = c.synthetic()
    set_element(ds, "Rows", "96", "LO")
    return encode(ds), c.secrets


@_mutation("vr/rows-as-FD", ImageDimensionError, "Rows", r"^Rows must be an integer \(VR US\); got a value of VR FD$")
def _vr_rows_fd(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Rows written as a 64-bit float (explicit VR FD)."""
    ds = c.synthetic()
    set_element(ds, "Rows", 96.0, "FD")
    return encode(ds), c.secrets


@_mutation("vr/rows-text-in-implicit-vr", ImageDimensionError, "Rows", r"^Rows must be in \[32, 8192\]; got 13881$")
def _vr_rows_implicit(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Implicit VR: the two bytes '96' where Rows (US) belongs read as 0x3639 = 13881."""
    data = encode(c.synthetic(), implicit=True)
    _, value, _ = element_span(data, 0x00280010, implicit=True)
    return _patch(data, value, b"96"), c.secrets


@_mutation(
    "vr/rows-odd-length-US",
    NotAnImageError,
    "Rows",
    r"^Rows could not be read: its value does not fit its VR \(BytesLengthException\)$",
)
def _vr_rows_odd(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Rows as US with a 3-byte value (a US value is 2 bytes)."""
    data = encode(c.synthetic())
    start, _, end = element_span(data, 0x00280010)
    return data[:start] + b"\x28\x00\x10\x00US\x03\x00" + struct.pack("<H", ROWS) + b"\x00" + data[end:], c.secrets


@_mutation(
    "vr/bits-allocated-as-SQ",
    ImageDimensionError,
    "BitsAllocated",
    r"^BitsAllocated must be an integer \(VR US\); got a value of VR SQ$",
)
def _vr_bits_sq(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """BitsAllocated written as a sequence."""
    ds = c.synthetic()
    item = Dataset()
    item.BitsAllocated = 16
    set_element(ds, "BitsAllocated", Sequence([item]), "SQ")
    return encode(ds), c.secrets


@_mutation(
    "vr/photometric-as-US",
    UnsupportedPhotometricError,
    "PhotometricInterpretation",
    r"^PhotometricInterpretation must be text \(VR CS\); got a value of VR US$",
)
def _vr_photometric_us(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """PhotometricInterpretation written as an unsigned short."""
    ds = c.synthetic()
    set_element(ds, "PhotometricInterpretation", 2, "US")
    return encode(ds), c.secrets


@_mutation(
    "vr/modality-as-US",
    UnsupportedModalityError,
    "Modality",
    r"^Modality must be text \(VR CS\); got a value of VR US$",
)
def _vr_modality_us(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Modality written as an unsigned short."""
    ds = c.synthetic()
    set_element(ds, "Modality", 7, "US")
    return encode(ds), c.secrets


@_mutation(
    "vr/pixel-data-as-US",
    UndecodablePixelDataError,
    "PixelData",
    r"^PixelData must be bytes \(VR OB or OW\); got a value of VR US$",
)
def _vr_pixels_us(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """PixelData written as a list of US values (explicit VR US, 2-byte length)."""
    ds = c.synthetic()
    set_element(ds, "PixelData", [int(v) for v in c.pixels().ravel()], "US")
    return encode(ds), c.secrets


@_mutation(
    "vr/pixel-data-as-SQ",
    NotAnImageError,
    "PixelData",
    r"^PixelData( > item \d+ > \S+)? (could not be read|declares \d+ bytes|has an undefined length)",
)
def _vr_pixels_sq(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """PixelData's VR bytes changed from OW to SQ: its pixel values parsed as sequence items."""
    data = encode(c.synthetic())
    start, _, _ = element_span(data, 0x7FE00010)
    return _patch(data, start + 4, b"SQ"), c.secrets


@_mutation(
    "vr/undefined-length-native-pixel-data",
    UndecodablePixelDataError,
    "PixelData",
    r"^PixelData has an undefined length, which only encapsulated \(compressed\) pixel data may have",
)
def _vr_pixels_undefined(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Native (Explicit VR LE) PixelData with an undefined length, closed by a sequence delimiter."""
    data = encode(c.synthetic())
    _, value, end = element_span(data, 0x7FE00010)
    return data[: value - 4] + _UNDEFINED + data[value:end] + _SEQUENCE_END, c.secrets


@_mutation("vr/undefined-length-rows-implicit-vr", NotAnImageError, "Rows", r"^Rows has an undefined length")
def _vr_rows_undefined(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Implicit VR: Rows (US) with an undefined length, its value closed by a sequence delimiter."""
    data = encode(c.synthetic(), implicit=True)
    start, value, end = element_span(data, 0x00280010, implicit=True)
    return data[: start + 4] + _UNDEFINED + data[value:end] + _SEQUENCE_END + data[end:], c.secrets


@_mutation("vr/undefined-length-text", NotAnImageError, "ImageComments", r"^ImageComments has an undefined length")
def _vr_text_undefined(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Explicit VR: ImageComments written as UT with an undefined length, closed by a sequence delimiter."""
    ds = c.synthetic()
    set_element(ds, "ImageComments", "comment " * 4, "UT")
    data = encode(ds)
    _, value, end = element_span(data, 0x00204000)
    return data[: value - 4] + _UNDEFINED + data[value:end] + _SEQUENCE_END + data[end:], c.secrets


# ---------------------------------------------------------------------------------------------- huge dimensions
def _tiny(c: Corpus, **header: object) -> bytes:
    ds = c.synthetic(**header)
    ds.PixelData = bytes(64)
    return encode(ds)


@_mutation("huge/rows-65535", ImageDimensionError, "Rows", r"^Rows must be in \[32, 8192\]; got 65535$")
def _huge_rows(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Rows 65535 with 64 bytes of PixelData."""
    return _tiny(c, Rows=65535), c.secrets


@_mutation("huge/columns-65535", ImageDimensionError, "Columns", r"^Columns must be in \[32, 8192\]; got 65535$")
def _huge_columns(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Columns 65535 with 64 bytes of PixelData."""
    return _tiny(c, Columns=65535), c.secrets


@_mutation("huge/rows-and-columns-65535", ImageDimensionError, "Rows", r"^Rows must be in \[32, 8192\]; got 65535$")
def _huge_both(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Rows and Columns 65535 (8 GiB at 16 bits) with 64 bytes of PixelData."""
    return _tiny(c, Rows=65535, Columns=65535), c.secrets


@_mutation("huge/rows-zero", ImageDimensionError, "Rows", r"^Rows must be in \[32, 8192\]; got 0$")
def _huge_zero(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Rows 0."""
    return _tiny(c, Rows=0), c.secrets


@_mutation("huge/bits-allocated-64", ImageDimensionError, "BitsAllocated", r"^BitsAllocated must be 8 or 16")
def _huge_bits(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """BitsAllocated 64, BitsStored 64, HighBit 63."""
    return _tiny(c, BitsAllocated=64, BitsStored=64, HighBit=63), c.secrets


@_mutation("huge/samples-per-pixel-3", UnsupportedPhotometricError, "SamplesPerPixel", r"^SamplesPerPixel must be 1")
def _huge_samples(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """SamplesPerPixel 3 (RGB) with 64 bytes of PixelData."""
    return _tiny(c, SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0), c.secrets


@_mutation(
    "huge/samples-per-pixel-65535", UnsupportedPhotometricError, "SamplesPerPixel", r"^SamplesPerPixel must be 1"
)
def _huge_samples_max(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """SamplesPerPixel 65535 with 64 bytes of PixelData."""
    return _tiny(c, SamplesPerPixel=65535), c.secrets


@_mutation(
    "huge/number-of-frames-2147483647", MultiFrameError, "NumberOfFrames", r"^NumberOfFrames must be 1; got 2147483647$"
)
def _huge_frames(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """NumberOfFrames 2**31 - 1 with one frame of PixelData."""
    return encode(c.synthetic(NumberOfFrames="2147483647")), c.secrets


@_mutation(
    "huge/number-of-frames-20-digits",
    MultiFrameError,
    "NumberOfFrames",
    r"^NumberOfFrames must be an integer \(VR IS\); got a value that is not a valid integer$",
)
def _huge_frames_digits(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """NumberOfFrames '99999999999999999999' (over the IS range)."""
    return encode(c.synthetic(NumberOfFrames="99999999999999999999")), c.secrets


@_mutation("huge/number-of-frames-zero", MultiFrameError, "NumberOfFrames", r"^NumberOfFrames must be 1; got 0$")
def _huge_frames_zero(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """NumberOfFrames 0."""
    return encode(c.synthetic(NumberOfFrames="0")), c.secrets


@_mutation("huge/number-of-frames-negative", MultiFrameError, "NumberOfFrames", r"^NumberOfFrames must be 1; got -1$")
def _huge_frames_negative(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """NumberOfFrames -1."""
    return encode(c.synthetic(NumberOfFrames="-1")), c.secrets


_CODESTREAM_SIZE = (
    r"^PixelData \(1\.2\.840\.10008\.1\.2\.4\.\d+\) could not be decoded: it holds a "
    r"(60000 x 60000|65000 x 65000) (JPEG|JPEG-LS|JPEG 2000) codestream, but Rows x Columns is "
    r"96 x 80$"
)


@_mutation("huge/jpeg2000-codestream-60000", UndecodablePixelDataError, "PixelData", _CODESTREAM_SIZE)
def _huge_j2k(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A 96 x 80 header over a JPEG 2000 codestream whose SIZ says 60000 x 60000 (one tile): the decoder's buffer."""

    def grow(frame: bytes) -> bytes:
        for offset in (8, 12, 24, 28):  # Xsiz, Ysiz, XTsiz, YTsiz after SOC + SIZ marker and length (15444-1 A.5.1)
            frame = _patch(frame, offset, struct.pack(">I", 60000))
        return frame

    return replace_frame(c.compressed(JPEG2000Lossless), grow), c.secrets


@_mutation("huge/jpeg-ls-codestream-65000", UndecodablePixelDataError, "PixelData", _CODESTREAM_SIZE)
def _huge_jls(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A 96 x 80 header over a JPEG-LS codestream whose SOF55 says 65000 x 65000."""

    def grow(frame: bytes) -> bytes:
        return _patch(frame, jpeg_sof_offset(frame) + 5, struct.pack(">HH", 65000, 65000))

    return replace_frame(c.compressed(JPEGLSLossless), grow), c.secrets


@_mutation("huge/jpeg-codestream-65000", UndecodablePixelDataError, "PixelData", _CODESTREAM_SIZE)
def _huge_jpeg(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A 96 x 80 header over a JPEG baseline codestream whose SOF0 says 65000 x 65000."""

    def grow(frame: bytes) -> bytes:
        return _patch(frame, jpeg_sof_offset(frame) + 5, struct.pack(">HH", 65000, 65000))

    return replace_frame(c.compressed(JPEGBaseline8Bit), grow), c.secrets


@_mutation(
    "huge/jp2-box-of-length-zero",
    UndecodablePixelDataError,
    "PixelData",
    r"^PixelData \(1\.2\.840\.10008\.1\.2\.4\.90\) could not be decoded: it holds a JP2 file",
)
def _huge_jp2_box(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A JPEG 2000 frame wrapped in a JP2 header whose second box has length 0 (pydicom's box walk never ends)."""

    def wrap(frame: bytes) -> bytes:
        return b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x00ftypjp2 " + frame

    return replace_frame(c.compressed(JPEG2000Lossless), wrap), c.secrets


# ---------------------------------------------------------------------------------------------- PixelData length
_LENGTH = (
    r"^PixelData \(1\.2\.840\.10008\.1\.2\.1\) could not be decoded: it holds \d+ bytes, but Rows x Columns x "
    r"BitsAllocated / 8 is 15360$"
)


@_mutation("pixel-length/half", UndecodablePixelDataError, "PixelData", _LENGTH)
def _length_half(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A complete file whose PixelData holds half of Rows x Columns x 2 bytes."""
    ds = c.synthetic()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    return encode(ds), c.secrets


@_mutation("pixel-length/double", UndecodablePixelDataError, "PixelData", _LENGTH)
def _length_double(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A complete file whose PixelData holds twice Rows x Columns x 2 bytes."""
    ds = c.synthetic()
    ds.PixelData = ds.PixelData * 2
    return encode(ds), c.secrets


@_mutation("pixel-length/two-extra-bytes", UndecodablePixelDataError, "PixelData", _LENGTH)
def _length_plus_two(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """PixelData two bytes longer than Rows x Columns x 2 (more than the one padding byte of an odd length)."""
    ds = c.synthetic()
    ds.PixelData = ds.PixelData + b"\x00\x00"
    return encode(ds), c.secrets


@_mutation("pixel-length/empty", UndecodablePixelDataError, "PixelData", _LENGTH)
def _length_empty(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """PixelData present with length 0."""
    ds = c.synthetic()
    ds.PixelData = b""
    return encode(ds), c.secrets


# ---------------------------------------------------------------------------------------------- transfer syntaxes
_UNSUPPORTED = r"^TransferSyntaxUID {} is not supported"


def _declared(c: Corpus, syntax: str) -> bytes:
    """The JPEG baseline radiograph with the meta's TransferSyntaxUID replaced by ``syntax``."""
    return with_transfer_syntax(encode(c.compressed(JPEGBaseline8Bit)), syntax)


@_mutation(
    "syntax/private-unknown",
    UndecodablePixelDataError,
    "TransferSyntaxUID",
    _UNSUPPORTED.format(r"1\.2\.826\.0\.1\.3680043\.10\.1000\.77\.1"),
)
def _ts_private(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A private transfer syntax UID no decoder knows, over encapsulated JPEG data."""
    return _declared(c, "1.2.826.0.1.3680043.10.1000.77.1"), c.secrets


@_mutation(
    "syntax/jpeg-xl",
    UndecodablePixelDataError,
    "TransferSyntaxUID",
    _UNSUPPORTED.format(r"1\.2\.840\.10008\.1\.2\.4\.110"),
)
def _ts_jxl(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG XL Lossless (a standard syntax; pydicom 3.0.2 has no decoder for it)."""
    return _declared(c, "1.2.840.10008.1.2.4.110"), c.secrets


@_mutation(
    "syntax/mpeg2",
    UndecodablePixelDataError,
    "TransferSyntaxUID",
    _UNSUPPORTED.format(r"1\.2\.840\.10008\.1\.2\.4\.100"),
)
def _ts_mpeg2(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """MPEG2 Main Profile / Main Level (video; no decoder)."""
    return _declared(c, "1.2.840.10008.1.2.4.100"), c.secrets


@_mutation(
    "syntax/deflated-image-frame-compression",
    UndecodablePixelDataError,
    "TransferSyntaxUID",
    _UNSUPPORTED.format(r"1\.2\.840\.10008\.1\.2\.8\.1"),
)
def _ts_deflated_frames(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Deflated Image Frame Compression (2023; no decoder in pydicom 3.0.2)."""
    return _declared(c, "1.2.840.10008.1.2.8.1"), c.secrets


@_mutation("syntax/not-a-uid", UndecodablePixelDataError, "TransferSyntaxUID", r"^TransferSyntaxUID is not a valid UID")
def _ts_not_uid(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """TransferSyntaxUID holding the planted PatientName (an identifier must not be echoed from any attribute)."""
    return _declared(c, c.planted["PatientName"]), c.secrets


@_mutation("syntax/big-endian-declared", NotAnImageError, "file", _NOT_DICOM)
def _ts_big_endian(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Explicit VR Big Endian declared over an Explicit VR Little Endian dataset."""
    return with_transfer_syntax(encode(c.synthetic()), ExplicitVRBigEndian), c.secrets


@_mutation(
    "syntax/compressed-declared-native-data",
    UndecodablePixelDataError,
    "PixelData",
    r"^PixelData \(1\.2\.840\.10008\.1\.2\.4\.90\) could not be decoded: the transfer syntax is encapsulated "
    r"\(compressed\), but PixelData does not begin with an item",
)
def _ts_compressed_native(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG 2000 Lossless declared over native (defined-length) pixel data."""
    return with_transfer_syntax(encode(c.synthetic()), JPEG2000Lossless), c.secrets


@_mutation(
    "syntax/native-declared-encapsulated-data",
    UndecodablePixelDataError,
    "PixelData",
    r"^PixelData has an undefined length, which only encapsulated",
)
def _ts_native_encapsulated(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Explicit VR Little Endian declared over encapsulated JPEG 2000 data."""
    return with_transfer_syntax(encode(c.compressed(JPEG2000Lossless)), ExplicitVRLittleEndian), c.secrets


# ---------------------------------------------------------------------------------------------- broken codestreams
_CANNOT = r"^PixelData \(1\.2\.840\.10008\.1\.2\.4\.\d+\) could not be decoded"
_DECODERS_FAILED = _CANNOT + r" \((pylibjpeg|gdcm|pillow|pyjpegls|pydicom): "
_NO_END = _CANNOT + (
    r": its (JPEG|JPEG-LS|JPEG 2000) codestream does not end with an (EOI|EOC) marker "
    r"\(it is truncated\)$"
)


def _garbage_after(frame: bytes, keep: int, rng: np.random.Generator, *, end: bytes = b"") -> bytes:
    return frame[:keep] + rng.bytes(len(frame) - keep - len(end)) + end


@_mutation("codestream/jpeg2000-garbage-tiles", UndecodablePixelDataError, "PixelData", _DECODERS_FAILED)
def _cs_j2k_garbage(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG 2000: main header and the first SOT segment kept, random tile data, EOC at the end: every decoder fails.

    (Random entropy-coded data in a JPEG or JPEG-LS codestream with intact headers is often decoded, as noise, by
    the lenient JPEG decoders; there is no such item for them here.)
    """

    def scramble(frame: bytes) -> bytes:
        return _garbage_after(frame, frame.index(b"\xff\x90") + 12, rng, end=b"\xff\xd9")

    return replace_frame(c.compressed(JPEG2000Lossless), scramble), c.secrets


@_mutation("codestream/jpeg2000-garbage-to-end", UndecodablePixelDataError, "PixelData", _NO_END)
def _cs_j2k_garbage_end(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG 2000: a valid SIZ (96 x 80), then random bytes to the end (no EOC)."""
    return replace_frame(c.compressed(JPEG2000Lossless), lambda f: _garbage_after(f, 51, rng)), c.secrets


@_mutation("codestream/jpeg2000-truncated", UndecodablePixelDataError, "PixelData", _NO_END)
def _cs_j2k_truncated(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG 2000 codestream cut inside its main header (after SIZ, before the first tile)."""
    return replace_frame(c.compressed(JPEG2000Lossless), lambda f: f[:60]), c.secrets


@_mutation("codestream/jpeg2000-half", UndecodablePixelDataError, "PixelData", _NO_END)
def _cs_j2k_half(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG 2000 codestream cut in half: OpenJPEG would decode what is there, a blurred or partial image."""
    return replace_frame(c.compressed(JPEG2000Lossless), lambda f: f[: len(f) // 2]), c.secrets


@_mutation("codestream/jpeg-ls-garbage-to-end", UndecodablePixelDataError, "PixelData", _NO_END)
def _cs_jls_garbage(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG-LS: SOI and SOF55 (96 x 80) kept, random bytes after them (a decoder returned an image for this)."""
    ds = c.compressed(JPEGLSLossless)
    return replace_frame(ds, lambda f: _garbage_after(f, jpeg_sof_offset(f) + 13, rng)), c.secrets


@_mutation("codestream/jpeg-ls-truncated", UndecodablePixelDataError, "PixelData", _NO_END)
def _cs_jls_truncated(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG-LS codestream cut right after its SOF55 segment (a decoder returned an image for this)."""
    return replace_frame(c.compressed(JPEGLSLossless), lambda f: f[: jpeg_sof_offset(f) + 13]), c.secrets


@_mutation("codestream/jpeg-garbage-to-end", UndecodablePixelDataError, "PixelData", _NO_END)
def _cs_jpeg_garbage(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG baseline: SOI .. SOF0 kept, random bytes instead of the tables and scan."""
    ds = c.compressed(JPEGBaseline8Bit)
    return replace_frame(ds, lambda f: _garbage_after(f, jpeg_sof_offset(f) + 11, rng)), c.secrets


@_mutation("codestream/jpeg-truncated", UndecodablePixelDataError, "PixelData", _NO_END)
def _cs_jpeg_truncated(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG baseline codestream cut in its scan: libjpeg would fill the rest grey and warn."""
    return replace_frame(c.compressed(JPEGBaseline8Bit), lambda f: f[: (len(f) + jpeg_sof_offset(f)) // 2]), c.secrets


@_mutation(
    "codestream/jpeg-no-start-of-image",
    UndecodablePixelDataError,
    "PixelData",
    _CANNOT + r": it is not a JPEG codestream \(no SOI marker\)$",
)
def _cs_jpeg_random(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """JPEG baseline declared, the frame random bytes (no SOI marker)."""
    return replace_frame(c.compressed(JPEGBaseline8Bit), lambda f: b"\x00" + rng.bytes(len(f) - 1)), c.secrets


@_mutation(
    "codestream/jpeg-progressive-in-baseline",
    UndecodablePixelDataError,
    "PixelData",
    _CANNOT + r": it holds a progressive JPEG codestream \(SOF2\), which this transfer syntax does not allow$",
)
def _cs_jpeg_progressive(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A progressive JPEG (SOF2) under JPEG Baseline: not a DICOM syntax, and many scans cost decode time."""
    buffer = io.BytesIO()
    Image.fromarray(c.pixels(np.uint8)).save(buffer, format="JPEG", quality=95, progressive=True)
    return replace_frame(c.compressed(JPEGBaseline8Bit), lambda f: buffer.getvalue()), c.secrets


_RLE_HEADER = r"^PixelData \(1\.2\.840\.10008\.1\.2\.5\) could not be decoded: its RLE header "


@_mutation("codestream/rle-fifteen-segments", UndecodablePixelDataError, "PixelData", _RLE_HEADER)
def _cs_rle_segments(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """RLE: the 64-byte header says 15 segments (16-bit greyscale has 2), all at offset 64."""
    header = struct.pack("<16I", 15, *([64] * 15))
    return replace_frame(c.compressed(RLELossless), lambda f: header + f[64:]), c.secrets


@_mutation("codestream/rle-offset-beyond-end", UndecodablePixelDataError, "PixelData", _RLE_HEADER)
def _cs_rle_offsets(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """RLE: the second segment's offset points 2 GiB past the end of the frame."""
    return replace_frame(c.compressed(RLELossless), lambda f: _patch(f, 8, struct.pack("<I", 0x7FFFFFF0))), c.secrets


@_mutation(
    "codestream/encapsulation-without-items",
    UndecodablePixelDataError,
    "PixelData",
    _CANNOT + r": the transfer syntax is encapsulated \(compressed\), but PixelData does not begin with an item",
)
def _cs_no_items(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Encapsulated PixelData (undefined length) whose content is random bytes, not items."""
    data = encode(c.compressed(JPEG2000Lossless))
    start = data.index(_PIXEL_DATA, meta_end(data))
    return data[: start + 12] + rng.bytes(256).replace(b"\xfe\xff", b"\x00\x00") + _SEQUENCE_END, c.secrets


@_mutation(
    "codestream/encapsulation-garbage-after-offset-table",
    UndecodablePixelDataError,
    "PixelData",
    _CANNOT + r": its encapsulated items cannot be read",
)
def _cs_garbage_items(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Encapsulated PixelData: an empty Basic Offset Table item, then random bytes where fragment items belong."""
    data = encode(c.compressed(JPEG2000Lossless))
    start = data.index(_PIXEL_DATA, meta_end(data))
    garbage = rng.bytes(256).replace(b"\xfe\xff", b"\x00\x00")
    return data[: start + 12] + _ITEM + bytes(4) + garbage + _SEQUENCE_END, c.secrets


@_mutation(
    "codestream/encapsulation-item-beyond-end",
    UndecodablePixelDataError,
    "PixelData",
    _CANNOT + r": it is not a JPEG 2000 codestream",
)
def _cs_item_beyond(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Encapsulated PixelData: an empty offset table, then a fragment item whose length runs 2 GiB past the end."""
    data = encode(c.compressed(JPEG2000Lossless))
    start = data.index(_PIXEL_DATA, meta_end(data))
    return (
        data[: start + 12] + _ITEM + bytes(4) + _ITEM + struct.pack("<I", 0x7FFFFFF0) + rng.bytes(64) + _SEQUENCE_END
    ), c.secrets


@_mutation(
    "codestream/encapsulation-without-fragments",
    UndecodablePixelDataError,
    "PixelData",
    _CANNOT + r": it holds no encoded frame$",
)
def _cs_no_fragments(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Encapsulated PixelData holding only an empty offset table."""
    data = encode(c.compressed(JPEG2000Lossless))
    start = data.index(_PIXEL_DATA, meta_end(data))
    return data[: start + 12] + _ITEM + bytes(4) + _SEQUENCE_END, c.secrets


# ---------------------------------------------------------------------------------------------- deflate
def deflated_parts(c: Corpus, **header: object) -> tuple[bytes, bytes]:
    """(preamble + meta of a Deflated file, the explicit VR LE dataset bytes it would deflate) of the synthetic
    radiograph with ``header``."""
    plain = encode(c.synthetic(**header))
    deflated = c.synthetic(**header)
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    file = encode(deflated)
    return file[: meta_end(file)], plain[meta_end(plain) :]


@_mutation(
    "deflate/bomb",
    ImageDimensionError,
    "TransferSyntaxUID",
    r"^TransferSyntaxUID 1\.2\.840\.10008\.1\.2\.1\.99 \(Deflated Explicit VR Little Endian\): the dataset "
    r"inflates to more than \d+ bytes",
)
def _deflate_bomb_item(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """About 1 MiB of deflate data that inflates to 1 GiB: a 96 x 80 header, then PixelData of 2**30 zero bytes."""
    meta, dataset = deflated_parts(c)
    start = dataset.index(_PIXEL_DATA)
    head = dataset[:start] + _PIXEL_DATA + b"OW\x00\x00" + struct.pack("<I", BOMB_INFLATED_BYTES)
    return meta + deflate_zeros(head, BOMB_INFLATED_BYTES), c.secrets


_NOT_INFLATED = r"^TransferSyntaxUID 1\.2\.840\.10008\.1\.2\.1\.99 \(Deflated Explicit VR Little Endian\): the dataset "


@_mutation("deflate/broken-stream", NotAnImageError, "TransferSyntaxUID", _NOT_INFLATED + "could not be inflated")
def _deflate_broken(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Deflated declared; 4 KiB of random bytes instead of a deflate stream."""
    meta, _ = deflated_parts(c)
    return meta + rng.bytes(4096), c.secrets


@_mutation(
    "deflate/truncated-stream",
    NotAnImageError,
    "TransferSyntaxUID",
    _NOT_INFLATED[:-1] + "'s deflate stream "
    r"ends early \(the file is truncated\)$",
)
def _deflate_truncated(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A valid deflated file cut inside its deflate stream."""
    meta, _ = deflated_parts(c)
    ds = c.synthetic()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    full = encode(ds)
    return full[: int(rng.integers(len(meta) + 100, len(full) - 100))], c.secrets


@_mutation(
    "deflate/declared-not-deflated", NotAnImageError, "TransferSyntaxUID", _NOT_INFLATED + "could not be inflated"
)
def _deflate_plain(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Deflated declared over a plain Explicit VR Little Endian dataset."""
    meta, dataset = deflated_parts(c)
    return meta + dataset, c.secrets


# ---------------------------------------------------------------------------------------------- header structure
@_mutation(
    "header/element-length-beyond-end",
    NotAnImageError,
    "(0019,1000)",
    r"^file is truncated: it ends inside \(0019,1000\)",
)
def _header_long(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A private OB element before PixelData declaring 0x7FFFFFF0 bytes: everything after it is swallowed."""
    data = encode(c.synthetic())
    start = data.index(_PIXEL_DATA, meta_end(data))
    return data[:start] + b"\x19\x00\x00\x10OB\x00\x00" + struct.pack("<I", 0x7FFFFFF0) + data[start:], c.secrets


@_mutation("header/deep-sequence-nesting", NotAnImageError, "file", r"could not be parsed \(RecursionError\)")
def _header_nesting(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """5,000 nested undefined-length sequences (ContentSequence in an item in a ContentSequence ...)."""
    data = encode(c.synthetic())
    start = data.index(_PIXEL_DATA, meta_end(data))
    depth = 5000
    opening = (b"\x40\x00\x30\xa7SQ\x00\x00" + _UNDEFINED + _ITEM + _UNDEFINED) * depth
    closing = (_ITEM_END + _SEQUENCE_END) * depth
    return data[:start] + opening + closing + data[start:], c.secrets


@_mutation(
    "header/modality-holds-a-name",
    UnsupportedModalityError,
    "Modality",
    r"^Modality must be one of CR, DX, DR; got a value that is not a code string$",
)
def _header_modality_name(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """Modality holding the planted PatientName: refused without echoing it."""
    return encode(c.synthetic(Modality=c.planted["PatientName"])), c.secrets


@_mutation(
    "header/body-part-holds-a-name",
    NotChestError,
    "BodyPartExamined",
    r"^BodyPartExamined must be chest-like .* got a value that is not a code string$",
)
def _header_body_part_name(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """BodyPartExamined holding the planted PatientName: refused without echoing it."""
    return encode(c.synthetic(BodyPartExamined=c.planted["PatientName"])), c.secrets


@_mutation(
    "header/modality-lut-too-short",
    UndecodablePixelDataError,
    "ModalityLUTSequence",
    r"^ModalityLUTSequence \(or the rescale\) could not be applied",
)
def _header_modality_lut(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A Modality LUT whose descriptor says 4096 entries and whose data holds 3."""
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "US"
    set_element(item, "LUTData", struct.pack("<3H", 0, 1, 2), "OW")
    return encode(c.synthetic(ModalityLUTSequence=Sequence([item]))), c.secrets


@_mutation(
    "header/voi-lut-too-short", UndecodablePixelDataError, "VOILUTSequence", r"^VOILUTSequence could not be applied"
)
def _header_voi_lut(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """A VOI LUT whose descriptor says 4096 entries and whose data holds 3."""
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    set_element(item, "LUTData", struct.pack("<3H", 0, 1, 2), "OW")
    return encode(c.synthetic(VOILUTSequence=Sequence([item]))), c.secrets


@_mutation("header/window-width-zero", UndecodablePixelDataError, "WindowWidth", r"^WindowWidth must be positive")
def _header_window(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """WindowCenter 2048, WindowWidth 0."""
    return encode(c.synthetic(WindowCenter="2048", WindowWidth="0")), c.secrets


@_mutation("header/window-center-text", UndecodablePixelDataError, "WindowCenter", r"^WindowCenter must be a number")
def _header_window_text(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """WindowCenter holding the text 'centre' (DS must be a decimal string)."""
    data = encode(c.synthetic(WindowCenter="123456", WindowWidth="4000"))
    return data.replace(b"123456", b"centre", 1), c.secrets


@_mutation(
    "header/rescale-slope-nan", UndecodablePixelDataError, "RescaleSlope", r"^RescaleSlope must be a finite number"
)
def _header_slope_nan(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """RescaleSlope 'NaN'."""
    return encode(c.synthetic(RescaleSlope="NaN", RescaleIntercept="0")), c.secrets


@_mutation(
    "header/rescale-slope-overflow",
    UndecodablePixelDataError,
    "RescaleSlope",
    r"^RescaleSlope and RescaleIntercept map the stored values outside",
)
def _header_slope_huge(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """RescaleSlope 1e308: the rescaled values overflow to infinity."""
    return encode(c.synthetic(RescaleSlope="1e308", RescaleIntercept="0")), c.secrets


@_mutation("header/bits-stored-zero", ImageDimensionError, "BitsStored", r"^BitsStored must be in \[1, 16\]")
def _header_bits_stored(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """BitsStored 0."""
    return encode(c.synthetic(BitsStored=0)), c.secrets


@_mutation(
    "header/pixel-representation-2",
    UndecodablePixelDataError,
    "PixelRepresentation",
    r"^PixelRepresentation must be 0 or 1",
)
def _header_representation(c: Corpus, rng: np.random.Generator) -> tuple[bytes, tuple[str, ...]]:
    """PixelRepresentation 2."""
    return encode(c.synthetic(PixelRepresentation=2)), c.secrets


NAMES: Final[tuple[str, ...]] = tuple(MUTATIONS)
