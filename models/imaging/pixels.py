"""The one chest X-ray pixel path, used unchanged by training, evaluation and serving.

DICOM: :func:`read_dicom` -> :func:`check_radiograph` (header only, before any pixel is decoded; a lateral or other
non-frontal ViewPosition is refused here) -> :func:`decode_radiograph` (decode, Modality LUT, VOI LUT or window or a
0.5-99.5 % percentile window, photometric inversion) -> :func:`model_input`: the quality / out-of-distribution gate
(:mod:`models.imaging.quality`: blank, uniform, noise, text/graphics, implausible histograms), then
:func:`check_photometric_consistency`, then mid-rank histogram equalisation, then :func:`prepare_image`.
:func:`load_dicom_for_model` runs all of it. PNG/JPEG: :func:`load_image_for_model` = the dataset's view (if it
states one) checked as ViewPosition is, :func:`load_image_file`, :func:`model_input` (consistency rule off). Training,
evaluation, HTTP serving and the DICOM node all go through these two functions.

The display image is float32 in [0, 1] with higher = brighter (bone and mediastinum white, lungs dark), whatever the
source. Since ``cxr-pixels/2`` it is histogram-equalised before resizing (so a window-centre, window-width or gamma
change barely moves the model input); since ``cxr-pixels/3`` its darkest and brightest tenths are each merged into
one grey level first (:func:`models.imaging.quality.equalise_histogram`), so a window change that saturates less
than a tenth of the film at either end leaves the model input as it was (up to float32 rounding). Model input is
``[1, size, size]``: the longest side resized to ``size`` (Pillow bilinear on float data, antialiased when
shrinking), the short side padded symmetrically with black (0), then ``(x - IMAGE_MEAN) / IMAGE_STD``. PNG/JPEG are
display images already and are scaled by their full range (8 or 16 bits); only a DICOM without VOI attributes gets
the percentile window. On NIH 00000002_000, the 64-px PNG and the DICOM of the same image agree after
``prepare_image(., 64)`` with correlation 0.9995 and a mean absolute difference of 0.11 (normalised units; the
DICOM's percentile stretch). Lossy JPEG is decoded with pylibjpeg first (decoders differ by one grey level), so the
same file gives the same input everywhere. Any change to these steps must bump :data:`PIXEL_PATH_VERSION`.

Untrusted input is refused with an :class:`~models.errors.ImagingInputError` that names the attribute, before any
buffer is sized from it: a deflated dataset inflates to at most :data:`MAX_INFLATED_BYTES` (checked 16 MiB at a
time); a file that ends inside an element, an undefined length where PS3.5 allows none, or a value that does not
fit its VR names that element; integer and text attributes must hold an integer or text whatever VR the file wrote;
native PixelData must hold exactly Rows x Columns x BitsAllocated / 8 bytes; an encapsulated JPEG, JPEG-LS or JPEG
2000 frame must state Rows x Columns and one component in its own header, use a coding process its transfer syntax
allows and end with its end marker, so that no decoder allocates for a 65535 x 65535 codestream behind a 96 x 80
header (nor walks a JP2 box of length 0 for ever, as pydicom 3.0.2 does). Messages echo Modality and
BodyPartExamined only when they are code strings and TransferSyntaxUID only when it is a UID. tests/dicom_corpus.py
holds the corpus of malformed files this is tested on.

Photometric consistency rule (:func:`photometric_consistency_score`): over rows 30-70 % of the display image,
the median of columns 40-60 % (mediastinum, spine) minus the mean of the medians of columns 15-35 % and 65-85 %
(the lung fields of a frontal view). Below ``-CONSISTENCY_MARGIN`` (0.08) the image is clearly shown inverted and
is refused. Measured with this module (``load_image_file``, then the rule; tuned on these same images, so the
rates are in-sample): NIH ChestX-ray14 1,000 PNGs (64 px): 3 / 1,000 false positives (0.3 %; 00000248_026,
00000168_001, 00000181_002), and 907 / 1,000 of the same images inverted are caught; Kermany paediatric training
JPEGs (224 px): 0 / 5,216 false positives (lowest score -0.002), 5,105 / 5,216 (97.9 %) inverted copies caught.
Every valid chest DICOM fixture passes (scores +0.20 to +0.38) and ``Fake_MONOHR1`` (-0.32) is refused. In the
DICOM path the rule runs on every image that passes :func:`check_radiograph` (chest, or no body part stated, and a
frontal or unstated view); for PNG/JPEG only on request (``check_consistency=True``). The rule knows
nothing but chest anatomy: a correctly displayed dental panoramic with no BodyPartExamined scores -0.11 and is
refused as a mismatch.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import threading
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final, TypedDict, cast

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from models.errors import (
    ImageDimensionError,
    ImagingInputError,
    MultiFrameError,
    NonFrontalViewError,
    NotAnImageError,
    NotChestError,
    PhotometricMismatchError,
    UndecodablePixelDataError,
    UnsupportedModalityError,
    UnsupportedPhotometricError,
)
from models.imaging.pixel_data import check_pixel_data, decoder_for, transfer_syntax_of
from models.imaging.quality import check_image_quality, check_view, equalise_histogram

log = logging.getLogger(__name__)

PIXEL_PATH_VERSION: Final = "cxr-pixels/3"
IMAGE_MEAN: Final = 0.5
IMAGE_STD: Final = 0.25
MODALITIES: Final = ("CR", "DX", "DR")
CHEST_BODY_PARTS: Final = ("CHEST", "THORAX", "LUNG")
MIN_SIDE: Final = 32
MAX_SIDE: Final = 8192
MAX_BITS_STORED: Final = 16
PERCENTILE_WINDOW: Final = (0.5, 99.5)
CONSISTENCY_MARGIN: Final = 0.08
VIEWS: Final = ("PA", "AP")
#: Decoder plugins in order of preference; pydicom's own order puts GDCM first, whose baseline JPEG differs.
DECODER_PREFERENCE: Final = ("pylibjpeg", "gdcm", "pyjpegls", "pillow", "pydicom")
#: The most a Deflated Explicit VR Little Endian dataset may inflate to: the pixels of the largest accepted image
#: (MAX_SIDE x MAX_SIDE at 16 bits, 128 MiB) plus 16 MiB for everything else in the header.
MAX_INFLATED_BYTES: Final = MAX_SIDE * MAX_SIDE * 2 + 16 * 2**20
_INFLATE_CHUNK: Final = 16 * 2**20
_UNDEFINED_LENGTH: Final = 0xFFFFFFFF
#: VRs that may have an undefined length (PS3.5 7.1.2-7.1.3): sequences, encapsulated pixel data, UN sequences.
_UNDEFINED_LENGTH_VRS: Final = frozenset({"SQ", "UN", "OB", "OW", "OB or OW"})
_CODE_STRING: Final = re.compile(r"[A-Z0-9 _]{1,16}")
_COLOUR_TOLERANCE: Final = 2  # grey levels out of 255
_COLOUR_FRACTION: Final = 0.01
_READ_LOCK = threading.Lock()


class DicomImageInfo(TypedDict):
    """Technical metadata of a DICOM radiograph; nothing patient-identifying (UIDs reference the source in an SR)."""

    modality: str
    photometric: str
    rows: int
    columns: int
    transfer_syntax: str | None
    view: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    pixel_path_version: str


# ---------------------------------------------------------------------------------------------- reading
def read_dicom(
    source: Dataset | bytes | str | os.PathLike[str] | BinaryIO,
    *,
    stop_before_pixels: bool = False,
    specific_tags: Sequence[str] | None = None,
) -> Dataset:
    """Read a DICOM dataset from bytes, a path or a binary stream (a Dataset already read is returned as is).

    A file without preamble and file meta (a raw legacy dataset) is read with ``force=True`` and given the
    transfer syntax its encoding was detected as (Implicit VR Little Endian for the legacy files seen). Every header
    value is converted at once with pydicom's value validation off, so that pydicom never echoes an invalid value
    (which may be an identifier) into warnings or logs; because that setting is process-wide, reads are serialised
    by a module lock and the caller's setting is restored afterwards. A Deflated Explicit VR Little Endian dataset
    is inflated to at most :data:`MAX_INFLATED_BYTES` (pydicom would inflate all of it into memory).

    ``stop_before_pixels`` and ``specific_tags`` (keywords) are pydicom's, for a header-only read; with
    ``specific_tags`` the dataset is not required to hold any particular element.

    Raises
    ------
    NotAnImageError
        ``field="file"``: empty input, or bytes that are not a DICOM dataset; the element's keyword when the file
        ends inside it, an element has an undefined length it may not have, or a value does not fit its VR;
        ``field="TransferSyntaxUID"`` when a deflated dataset cannot be inflated.
    ImageDimensionError
        ``field="TransferSyntaxUID"``: a deflated dataset that inflates to more than :data:`MAX_INFLATED_BYTES`.
    OSError
        A path that cannot be opened.
    """
    if isinstance(source, Dataset):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        stream: BinaryIO = io.BytesIO(bytes(source))
        return _read_stream(stream, stop_before_pixels, specific_tags)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return _read_stream(handle, stop_before_pixels, specific_tags)
    # A BinaryIO here; mypy keeps Dataset in the union (its __getattr__ makes it match os.PathLike)
    return _read_stream(cast(BinaryIO, source), stop_before_pixels, specific_tags)


def _read_stream(stream: BinaryIO, stop_before_pixels: bool, specific_tags: Sequence[str] | None) -> Dataset:
    start = stream.tell()
    if not stream.read(1):
        raise NotAnImageError("file", "file must be a DICOM dataset; got empty input")
    with _READ_LOCK:
        saved = pydicom_config.settings.reading_validation_mode
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
        try:
            return _parse(stream, start, stop_before_pixels, specific_tags)
        finally:
            pydicom_config.settings.reading_validation_mode = saved


def _parse(stream: BinaryIO, start: int, stop_before_pixels: bool, specific_tags: Sequence[str] | None) -> Dataset:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            stream.seek(start)
            ds = _dcmread_bounded(stream, stop_before_pixels, specific_tags)
            if any(str(w.message).startswith("End of file reached before delimiter") for w in caught):
                # pydicom drops the whole dataset when an undefined-length element (encapsulated PixelData, a
                # sequence) has no delimiter before the end of the file
                raise NotAnImageError(
                    "file",
                    "file is truncated: it ends inside an element of undefined length "
                    "(encapsulated PixelData or a sequence) before its delimiter",
                )
            if specific_tags is None and not any(k in ds for k in ("SOPClassUID", "PixelData", "Modality", "Rows")):
                raise NotAnImageError("file", "file must be a DICOM dataset; no DICOM image or SOP elements were found")
            if hasattr(ds, "file_meta") and ds.file_meta is not None:
                _convert_values(ds.file_meta)
            _convert_values(ds)  # convert every value now, while validation is off
        except ImagingInputError:
            raise
        except Exception as exc:  # any parser failure on untrusted bytes means "not DICOM"
            raise NotAnImageError(
                "file", f"file must be a DICOM dataset; it could not be parsed ({type(exc).__name__})"
            ) from exc
    if caught:
        log.debug("DICOM read: %d parser warning(s) suppressed", len(caught))
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:  # a raw dataset: its encoding is what the parser detected
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit or implicit is None
            else ExplicitVRBigEndian
            if little is False
            else ExplicitVRLittleEndian
        )
    return ds


def _dcmread_bounded(stream: BinaryIO, stop_before_pixels: bool, specific_tags: Sequence[str] | None) -> Dataset:
    """``pydicom.dcmread(stream, force=True, ...)``, except that a deflated dataset is inflated with a bound.

    pydicom reads the rest of a Deflated Explicit VR Little Endian file and inflates all of it at once
    (``zlib.decompress`` in ``filereader.read_partial``): a few MB of deflate data become GBs. The file meta group
    is read here first; a deflated dataset is inflated by :func:`_inflate` and parsed from memory.
    """
    start = stream.tell()
    preamble = stream.read(132)
    tags: list[BaseTag | int] | None = (
        [Tag(keyword) for keyword in specific_tags] if specific_tags is not None else None
    )
    if len(preamble) == 132 and preamble[128:] == b"DICM":
        meta = read_dataset(stream, is_implicit_VR=False, is_little_endian=True, stop_when=_after_file_meta)
        for tag in meta.keys():  # pydicom converts some meta values as it reads them: check them raw, here
            _check_raw(meta.get_item(tag), _element_name(tag), _element_name(tag))
        syntax = meta.get_item(0x00020010) if 0x00020010 in meta else None
        raw_syntax = syntax.value if syntax is not None else None
        if isinstance(raw_syntax, bytes) and raw_syntax.rstrip(b"\x00 ") == DeflatedExplicitVRLittleEndian.encode():
            buffer = DicomBytesIO(_inflate(stream.read()))  # file-like (read_dataset's BinaryIO hint is narrower)
            dataset = read_dataset(
                cast(BinaryIO, buffer),
                is_implicit_VR=False,
                is_little_endian=True,
                stop_when=_at_pixel_data if stop_before_pixels else None,
                specific_tags=tags,
            )
            ds = FileDataset(
                buffer,
                dataset,
                preamble=preamble[:128],
                file_meta=FileMetaDataset(meta),
                is_implicit_VR=False,
                is_little_endian=True,
            )
            ds.set_original_encoding(False, True, dataset.original_character_set)
            return ds
    stream.seek(start)
    return pydicom.dcmread(stream, force=True, stop_before_pixels=stop_before_pixels, specific_tags=tags)


def _after_file_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag >> 16 != 0x0002


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in (0x7FE00010, 0x7FE00009, 0x7FE00008)


_DEFLATED: Final = f"TransferSyntaxUID {DeflatedExplicitVRLittleEndian} (Deflated Explicit VR Little Endian)"


def _inflate(deflated: bytes) -> bytes:
    """Inflate a raw deflate stream (PS3.5 A.5) of at most :data:`MAX_INFLATED_BYTES`, or refuse it.

    A first pass inflates 16 MiB at a time and keeps nothing, so that a deflate bomb is refused holding no more
    than one chunk; only a stream known to fit is inflated into memory, in one buffer of its size.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size, pending = 0, deflated
    try:
        while not inflater.eof:
            chunk = inflater.decompress(pending, _INFLATE_CHUNK)
            size += len(chunk)
            if size > MAX_INFLATED_BYTES:
                raise ImageDimensionError(
                    "TransferSyntaxUID",
                    f"{_DEFLATED}: the dataset inflates to more than "
                    f"{MAX_INFLATED_BYTES} bytes, more than a {MAX_SIDE} x "
                    f"{MAX_SIDE} 16-bit radiograph and its header need",
                )
            pending = inflater.unconsumed_tail
            if not chunk and not pending:  # the input ran out before the end of the stream
                break
        if not inflater.eof:
            raise NotAnImageError(
                "TransferSyntaxUID", f"{_DEFLATED}: the dataset's deflate stream ends early (the file is truncated)"
            )
        return zlib.decompress(deflated, -zlib.MAX_WBITS, bufsize=max(size, 1))
    except zlib.error as exc:
        raise NotAnImageError(
            "TransferSyntaxUID", f"{_DEFLATED}: the dataset could not be inflated (zlib: {str(exc)[:80]})"
        ) from exc


def _convert_values(ds: Dataset, field: str | None = None, path: str = "") -> None:
    """Convert every element of ``ds`` (and of its sequences) from its raw bytes, naming the element that fails.

    Before conversion, each raw element is checked by :func:`_check_raw`. ``field`` is the top-level element a
    nested one belongs to (the attribute an error names); ``path`` locates the nested element in messages.
    """
    for tag in list(ds.keys()):
        name = f"{path}{_element_name(tag)}"
        top = field or name
        _check_raw(ds.get_item(tag), top, name, nested=field is not None)
        try:
            element = ds[tag]
        except Exception as exc:  # a value that does not fit its VR (odd-length US, a broken sequence, ...)
            raise NotAnImageError(
                top, f"{name} could not be read: its value does not fit its VR ({type(exc).__name__})"
            ) from exc
        if element.VR == "SQ":
            for number, item in enumerate(element.value or (), start=1):
                if isinstance(item, Dataset):
                    _convert_values(item, top, f"{name} > item {number} > ")


def _check_raw(raw: object, field: str, name: str, *, nested: bool = False) -> None:
    """Refuse a raw element whose value is shorter than its declared length, or of an undefined length it may not
    have (PS3.5 7.1: only sequences and encapsulated pixel data)."""
    if not isinstance(raw, RawDataElement):
        return
    vr = raw.VR or (dictionary_VR(raw.tag) if dictionary_has_tag(raw.tag) else "UN")
    if raw.length == _UNDEFINED_LENGTH:
        if vr not in _UNDEFINED_LENGTH_VRS:
            raise NotAnImageError(
                field, f"{name} has an undefined length, which only sequences and encapsulated pixel data may have"
            )
    elif raw.value is not None and len(raw.value) < raw.length:
        where = (
            f"{name} declares {raw.length} bytes, but its sequence item holds only {len(raw.value)}"
            if nested
            else f"file is truncated: it ends inside {name} ({len(raw.value)} of its {raw.length} bytes are there)"
        )
        raise NotAnImageError(field, where)


def _element_name(tag: int) -> str:
    """The dictionary keyword of ``tag``, or ``(gggg,eeee)`` for a private or unknown tag."""
    keyword = keyword_for_tag(tag)
    return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# ---------------------------------------------------------------------------------------------- header checks
def check_radiograph(ds: Dataset) -> None:
    """Refuse anything but a single-frame greyscale chest projection radiograph, from the header alone.

    Checked in this order, before any pixel is decoded: PixelData present; Modality in CR/DX/DR (case-insensitive);
    BodyPartExamined absent, empty or chest-like (containing CHEST, THORAX or LUNG, any case); ViewPosition absent or
    frontal (a lateral, decubitus, oblique or cross-table view: :class:`NonFrontalViewError`); one sample per pixel,
    MONOCHROME1/2 and PresentationLUTShape absent/IDENTITY/INVERSE; one frame; Rows and Columns in [32, 8192];
    BitsAllocated 8 or 16, BitsStored in [1, 16]; PixelRepresentation 0 or 1; then the PixelData element against
    the transfer syntax (:func:`models.imaging.pixel_data.check_pixel_data`): a valid, supported TransferSyntaxUID;
    native data of exactly Rows x Columns x BitsAllocated / 8 bytes (plus one padding byte when that is odd) with a
    defined length; encapsulated data with an undefined length whose JPEG / JPEG-LS / JPEG 2000 codestream header
    states Rows x Columns and one component, in a coding process the transfer syntax allows, and ends with its end
    marker. So a decoder never sizes a buffer from a codestream that contradicts the header. Integer attributes
    must hold one integer and text attributes text, whatever VR an explicit-VR file wrote them with.

    Raises
    ------
    NotAnImageError, UnsupportedModalityError, NotChestError, NonFrontalViewError, UnsupportedPhotometricError,
    MultiFrameError, ImageDimensionError, UndecodablePixelDataError
    """
    _require_pixel_data(ds)
    modality = _text(ds, "Modality", UnsupportedModalityError)
    if modality not in MODALITIES:
        got = _shown(modality) if modality else "none"
        raise UnsupportedModalityError("Modality", f"Modality must be one of {', '.join(MODALITIES)}; got {got}")
    body_part = _text(ds, "BodyPartExamined", NotChestError)
    if body_part and not any(part in body_part for part in CHEST_BODY_PARTS):
        raise NotChestError(
            "BodyPartExamined",
            f"BodyPartExamined must be chest-like ({', '.join(CHEST_BODY_PARTS)}) or absent; got {_shown(body_part)}",
        )
    check_view(_text(ds, "ViewPosition", NonFrontalViewError))
    _check_pixel_module(ds)


def _require_pixel_data(ds: Dataset) -> None:
    if "PixelData" not in ds:
        raise NotAnImageError("PixelData", "PixelData is missing: the DICOM holds no image")


def _check_pixel_module(ds: Dataset) -> tuple[int, int]:
    """Image Pixel module checks shared by check_radiograph and decode_radiograph; returns (rows, columns)."""
    _require_pixel_data(ds)
    if _int(ds, "SamplesPerPixel", UnsupportedPhotometricError) != 1:
        raise UnsupportedPhotometricError(
            "SamplesPerPixel", "SamplesPerPixel must be 1 (greyscale); got a multi-sample (colour) image"
        )
    photometric = _text(ds, "PhotometricInterpretation", UnsupportedPhotometricError)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        got = _shown(photometric) if photometric else "none"
        raise UnsupportedPhotometricError(
            "PhotometricInterpretation", f"PhotometricInterpretation must be MONOCHROME1 or MONOCHROME2; got {got}"
        )
    if _text(ds, "PresentationLUTShape", UnsupportedPhotometricError) not in ("", "IDENTITY", "INVERSE"):
        raise UnsupportedPhotometricError("PresentationLUTShape", "PresentationLUTShape must be IDENTITY or INVERSE")
    if "NumberOfFrames" in ds:
        frames = _int(ds, "NumberOfFrames", MultiFrameError)
        if frames != 1:
            raise MultiFrameError("NumberOfFrames", f"NumberOfFrames must be 1; got {frames}")
    rows = _int(ds, "Rows", ImageDimensionError)
    columns = _int(ds, "Columns", ImageDimensionError)
    for keyword, value in (("Rows", rows), ("Columns", columns)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise ImageDimensionError(keyword, f"{keyword} must be in [{MIN_SIDE}, {MAX_SIDE}]; got {value}")
    bits_allocated = _int(ds, "BitsAllocated", ImageDimensionError)
    if bits_allocated not in (8, 16):
        raise ImageDimensionError("BitsAllocated", "BitsAllocated must be 8 or 16")
    bits_stored = _int(ds, "BitsStored", ImageDimensionError)
    if not 1 <= bits_stored <= min(MAX_BITS_STORED, bits_allocated):
        raise ImageDimensionError(
            "BitsStored", f"BitsStored must be in [1, {MAX_BITS_STORED}] and at most BitsAllocated"
        )
    if _int(ds, "PixelRepresentation", UndecodablePixelDataError) not in (0, 1):
        raise UndecodablePixelDataError("PixelRepresentation", "PixelRepresentation must be 0 or 1")
    check_pixel_data(ds, rows, columns, bits_allocated)
    return rows, columns


def _text(ds: Dataset, keyword: str, error: type[ImagingInputError] = ImagingInputError) -> str:
    """The (first) value of a text attribute, stripped and upper-case; "" when absent or empty."""
    element = ds[keyword] if keyword in ds else None
    value = None if element is None else element.value
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):  # a multi-valued CS; the first value decides
        value = value[0] if len(value) else ""
    if not isinstance(value, str):
        raise error(
            keyword,
            f"{keyword} must be text (VR {dictionary_VR(keyword)}); got a value of VR "
            f"{element.VR if element is not None else '?'}",
        )
    return value.strip().upper()


def _shown(value: str) -> str:
    """``value`` quoted when it is a code string (what a defined term looks like), else a description of it.

    Modality and BodyPartExamined are echoed so a user can act on the error, but a free-text value in them may be
    anything, an identifier included.
    """
    return f"{value!r}" if _CODE_STRING.fullmatch(value) else "a value that is not a code string"


def _int(ds: Dataset, keyword: str, error: type[ImagingInputError]) -> int:
    """The value of an integer attribute: one integer (US, UL, SS, SL, IS), never a float or text parsed leniently."""
    element = ds[keyword] if keyword in ds else None
    value = None if element is None else element.value
    if element is None or value is None or value == "":
        raise error(keyword, f"{keyword} is missing")
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    expected = dictionary_VR(keyword)
    got = (
        f"{len(value)} values"
        if isinstance(value, (MultiValue, list, tuple))
        else f"a value of VR {element.VR}"
        if element.VR != expected
        else "a value that is not a valid integer"
    )
    raise error(keyword, f"{keyword} must be an integer (VR {expected}); got {got}")


def _number(ds: Dataset, keyword: str) -> float:
    """The (first) value of a decimal attribute as a finite float."""
    value = ds[keyword].value
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise UndecodablePixelDataError(keyword, f"{keyword} must be a number") from exc
    if not math.isfinite(number):
        raise UndecodablePixelDataError(keyword, f"{keyword} must be a finite number")
    return number


# ---------------------------------------------------------------------------------------------- decoding
def decode_radiograph(ds: Dataset) -> np.ndarray:
    """Decode a greyscale radiograph to a display-ready float32 image in [0, 1], higher = brighter.

    Steps: Image Pixel module and PixelData checks (as in :func:`check_radiograph`, less Modality and
    BodyPartExamined); decode (pylibjpeg first, see :data:`DECODER_PREFERENCE`) and check the shape against Rows x
    Columns; Modality LUT (Modality LUT Sequence, else rescale slope/intercept, which must be finite and keep the
    values finite); VOI (VOI LUT Sequence, else the first WindowCenter/WindowWidth, else a 0.5-99.5 % percentile
    window) scaled to [0, 1] over the VOI's output range; then inversion, exactly once, if
    PhotometricInterpretation is MONOCHROME1 or PresentationLUTShape is INVERSE (PS3.3 C.8.11.6 / C.11.6: INVERSE
    on MONOCHROME1 restates the same inversion; IDENTITY on MONOCHROME2 is none). A Presentation LUT Sequence is
    ignored. The photometric consistency check is separate (:func:`check_photometric_consistency`) so that
    non-chest images can be decoded.

    Raises
    ------
    UndecodablePixelDataError
        The codestream cannot be decoded, its shape contradicts the header, or a LUT/window/rescale is unusable.
    UnsupportedPhotometricError, MultiFrameError, ImageDimensionError, NotAnImageError
        From the header checks.
    """
    rows, columns = _check_pixel_module(ds)
    raw = _decode_pixels(ds)
    if raw.shape != (rows, columns):
        raise UndecodablePixelDataError(
            "PixelData", f"PixelData decoded to shape {raw.shape}, but Rows x Columns is {rows} x {columns}"
        )
    if "ModalityLUTSequence" not in ds:
        for keyword in ("RescaleSlope", "RescaleIntercept"):
            if keyword in ds and ds[keyword].value not in (None, ""):
                _number(ds, keyword)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            values = np.asarray(apply_modality_lut(raw, ds))
    except Exception as exc:  # malformed LUT descriptor/data in an untrusted header
        raise UndecodablePixelDataError(
            "ModalityLUTSequence", f"ModalityLUTSequence (or the rescale) could not be applied ({type(exc).__name__})"
        ) from exc
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise UndecodablePixelDataError(
            "RescaleSlope",
            "RescaleSlope and RescaleIntercept map the stored values outside the finite floating-point range",
        )
    image = _apply_voi(values, ds)
    if _text(ds, "PhotometricInterpretation") == "MONOCHROME1" or _text(ds, "PresentationLUTShape") == "INVERSE":
        image = 1.0 - image
    return image.astype(np.float32)


def _decode_pixels(ds: Dataset) -> np.ndarray:
    transfer_syntax = transfer_syntax_of(ds)
    decoder = decoder_for(transfer_syntax)
    available = decoder.available_plugins if decoder.is_encapsulated else ()
    plugins = [p for p in DECODER_PREFERENCE if p in available] + sorted(set(available) - set(DECODER_PREFERENCE))
    failures: list[str] = []
    last: Exception | None = None
    for plugin in plugins or [""]:
        try:
            return np.asarray(pixel_array(ds, decoding_plugin=plugin))
        except Exception as exc:  # every decoder failure on untrusted data is "undecodable"
            failures.append(f"{plugin or 'native'}: {type(exc).__name__}")
            last = exc
    raise UndecodablePixelDataError(
        "PixelData", f"PixelData ({transfer_syntax}) could not be decoded ({'; '.join(failures)})"
    ) from last


def _apply_voi(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """VOI LUT, window or percentile window, scaled to [0, 1] over the VOI output range (float64)."""
    sequence = ds.get("VOILUTSequence")
    has_lut = bool(sequence) and all(k in sequence[0] for k in ("LUTDescriptor", "LUTData"))
    has_window = "WindowCenter" in ds and "WindowWidth" in ds and ds.WindowCenter != "" and ds.WindowWidth != ""
    try:
        if has_lut:
            if values.dtype.kind == "f":  # a LUT is indexed by stored (integer) values
                values = np.rint(values).astype(np.int64)
            descriptor = sequence[0].LUTDescriptor
            entries, first = int(descriptor[0]) or 2**16, int(descriptor[1])
            domain = np.arange(first, first + entries, dtype=np.int64)
            table = np.asarray(apply_voi_lut(domain, ds, index=0, prefer_lut=True), dtype=np.float64)
            out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64)
            low, high = float(table.min()), float(table.max())
        elif has_window:
            _number(ds, "WindowCenter")
            if _number(ds, "WindowWidth") <= 0:
                raise UndecodablePixelDataError("WindowWidth", "WindowWidth must be positive")
            with np.errstate(over="ignore"):
                ends = np.asarray(apply_voi_lut(np.array([-1e12, 1e12]), ds, index=0, prefer_lut=False))
            out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=False), dtype=np.float64)
            low, high = float(ends.min()), float(ends.max())
        else:
            return _percentile_window(values)
    except ImagingInputError:
        raise
    except Exception as exc:  # malformed VOI elements in an untrusted header
        field = "VOILUTSequence" if has_lut else "WindowWidth"
        raise UndecodablePixelDataError(field, f"{field} could not be applied ({type(exc).__name__})") from exc
    if not high > low:
        return np.zeros(out.shape, dtype=np.float64)
    return np.clip((out - low) / (high - low), 0.0, 1.0)


def _percentile_window(values: np.ndarray) -> np.ndarray:
    """Window ``values`` to [0, 1] between their 0.5th and 99.5th percentiles (min/max if those coincide).

    The display window of a DICOM that carries no VOI attributes, and of every PNG/JPEG (after scaling by its
    full range), so both kinds of input share one intensity convention. A constant image maps to all zeros.
    """
    out = np.asarray(values, dtype=np.float64)
    low, high = (float(v) for v in np.percentile(out, PERCENTILE_WINDOW))
    if high <= low:
        low, high = float(out.min()), float(out.max())
    if not high > low:
        return np.zeros(out.shape, dtype=np.float64)
    return np.clip((out - low) / (high - low), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------- consistency
def photometric_consistency_score(img: np.ndarray) -> float:
    """Central band minus lateral lung fields at mid height, on a display image in [0, 1] (positive = as expected).

    Over rows 30-70 %: the median of columns 40-60 % (mediastinum and spine) minus the mean of the medians of
    columns 15-35 % and 65-85 % (the lung fields of a frontal view). Inverting the image negates the score.
    """
    image = _as_display_image(img)
    rows, columns = image.shape
    band = image[int(0.3 * rows) : max(int(0.7 * rows), int(0.3 * rows) + 1)]

    def median(lo: float, hi: float) -> float:
        return float(np.median(band[:, int(lo * columns) : max(int(hi * columns), int(lo * columns) + 1)]))

    return median(0.40, 0.60) - (median(0.15, 0.35) + median(0.65, 0.85)) / 2


def check_photometric_consistency(img: np.ndarray) -> None:
    """Refuse a chest display image whose mediastinum is clearly darker than the lung fields.

    Raises
    ------
    PhotometricMismatchError
        ``field="PhotometricInterpretation"``, when :func:`photometric_consistency_score` < -CONSISTENCY_MARGIN.
    """
    score = photometric_consistency_score(img)
    if score < -CONSISTENCY_MARGIN:
        raise PhotometricMismatchError(
            "PhotometricInterpretation",
            "PhotometricInterpretation contradicts the pixel data: the displayed mediastinum is darker than the "
            f"lung fields (score {score:.2f} < -{CONSISTENCY_MARGIN}), so the image would be shown inverted",
        )


# ---------------------------------------------------------------------------------------------- model input
def prepare_image(img: np.ndarray, size: int) -> np.ndarray:
    """Resize (longest side = ``size``, aspect kept), pad symmetrically with black, normalise: float32 [1, S, S].

    Resampling is Pillow bilinear on float32 data (antialiased when shrinking; deterministic). Padding is 0 before
    normalisation, i.e. ``-IMAGE_MEAN / IMAGE_STD`` after.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer; got {size!r}")
    image = _as_display_image(img)
    rows, columns = image.shape
    scale = size / max(rows, columns)
    new_rows, new_columns = max(1, round(rows * scale)), max(1, round(columns * scale))
    if (new_rows, new_columns) != (rows, columns):
        resized = Image.fromarray(image).resize((new_columns, new_rows), resample=Image.Resampling.BILINEAR)
        image = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    canvas = np.zeros((size, size), dtype=np.float32)
    top, left = (size - new_rows) // 2, (size - new_columns) // 2
    canvas[top : top + new_rows, left : left + new_columns] = image
    return ((canvas - IMAGE_MEAN) / IMAGE_STD)[np.newaxis].astype(np.float32)


def _as_display_image(img: np.ndarray) -> np.ndarray:
    image = np.asarray(img)
    if image.ndim != 2 or min(image.shape) < 1:
        raise ImageDimensionError("image", f"image must be a non-empty 2-D array; got shape {image.shape}")
    if image.dtype.kind not in "fiub":
        raise ImagingInputError("image", f"image must be numeric; got dtype {image.dtype}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all() or image.min() < 0.0 or image.max() > 1.0:
        raise ImagingInputError("image", "image values must be finite and in [0, 1]")
    return np.ascontiguousarray(image)


def model_input(img: np.ndarray, size: int, *, field: str = "image", check_consistency: bool = False) -> np.ndarray:
    """The last steps of the pixel path, shared by DICOM, PNG/JPEG and arrays: a display image -> ``[1, size, size]``.

    Quality gate (:func:`models.imaging.quality.check_image_quality`; ``field`` is what its error names), then, with
    ``check_consistency``, the photometric consistency rule, then mid-rank histogram equalisation
    (:func:`models.imaging.quality.equalise_histogram`) and :func:`prepare_image`.

    Raises
    ------
    ImageQualityError
        Blank, uniform, noise, text/graphics or an implausible histogram (a subclass names the check).
    PhotometricMismatchError
        With ``check_consistency``: the image would be shown inverted.
    """
    image = _as_display_image(img)
    check_image_quality(image, field=field)
    if check_consistency:
        check_photometric_consistency(image)
    return prepare_image(equalise_histogram(image), size)


def load_dicom_for_model(
    source: Dataset | bytes | str | os.PathLike[str] | BinaryIO, size: int
) -> tuple[np.ndarray, DicomImageInfo]:
    """Read, check, decode, gate and prepare a frontal chest radiograph: ``([1, size, size], metadata)``.

    :func:`check_radiograph` (header, including ViewPosition: a non-frontal view is refused before decoding),
    :func:`decode_radiograph`, then :func:`model_input` with the photometric consistency rule on.
    """
    ds = read_dicom(source)
    check_radiograph(ds)
    image = decode_radiograph(ds)
    meta = dicom_metadata(ds)
    log.debug(
        "decoded %s %s %dx%d (%s)",
        meta["modality"],
        meta["photometric"],
        meta["rows"],
        meta["columns"],
        meta["transfer_syntax"],
    )
    return model_input(image, size, field="PixelData", check_consistency=True), meta


def load_image_for_model(
    source: bytes | str | os.PathLike[str], size: int, *, view: str | None = None, check_consistency: bool = False
) -> np.ndarray:
    """A PNG/JPEG radiograph as model input ``[1, size, size]``: the PNG/JPEG twin of :func:`load_dicom_for_model`.

    ``view`` is the view position from the dataset's own metadata (e.g. NIH's "View Position"), checked as
    ViewPosition is (:func:`models.imaging.quality.check_view`, naming ``"view"``); then :func:`load_image_file`
    and :func:`model_input` (gate naming ``"file"``). The consistency rule is off by default for PNG/JPEG, as in
    :func:`load_image_file` (it refuses 0.3 % of the NIH PNGs).
    """
    check_view(view, field="view")
    return model_input(load_image_file(source), size, field="file", check_consistency=check_consistency)


def dicom_metadata(ds: Dataset) -> DicomImageInfo:
    """Technical metadata of a checked dataset (no names, dates or patient identifiers)."""

    def uid(keyword: str) -> str | None:
        value = ds.get(keyword)
        return str(value) if value else None

    view = _text(ds, "ViewPosition")
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return DicomImageInfo(
        modality=_text(ds, "Modality"),
        photometric=_text(ds, "PhotometricInterpretation"),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        transfer_syntax=str(transfer_syntax) if transfer_syntax else None,
        view=view if view in VIEWS else None,
        sop_instance_uid=uid("SOPInstanceUID"),
        study_instance_uid=uid("StudyInstanceUID"),
        series_instance_uid=uid("SeriesInstanceUID"),
        pixel_path_version=PIXEL_PATH_VERSION,
    )


# ---------------------------------------------------------------------------------------------- PNG / JPEG
def load_image_file(source: bytes | str | os.PathLike[str], *, check_consistency: bool = False) -> np.ndarray:
    """Read a PNG or JPEG radiograph as a display image: float32 2-D in [0, 1], higher = brighter.

    8-bit and 16-bit greyscale are scaled by their full range; RGB(A) with R = G = B (within 2/255 on 99 % of the
    pixels) becomes the channel mean; alpha is dropped; EXIF orientation is applied; then the percentile window
    of an unwindowed DICOM (0.5-99.5 %) is applied, as in the DICOM path. Feed the result to
    :func:`prepare_image`. ``check_consistency`` applies :func:`check_photometric_consistency` (chest images only).

    Raises
    ------
    UndecodablePixelDataError
        ``field="file"``: not a PNG/JPEG, or it cannot be decoded.
    UnsupportedPhotometricError
        A genuinely colour image.
    ImageDimensionError
        Width or height outside [32, 8192] (checked before decoding).
    """
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.format not in ("PNG", "JPEG"):
                raise UndecodablePixelDataError("file", "file must be a PNG or JPEG image")
            for name, value in (("height", opened.height), ("width", opened.width)):
                if not MIN_SIDE <= value <= MAX_SIDE:
                    raise ImageDimensionError("file", f"image {name} must be in [{MIN_SIDE}, {MAX_SIDE}]; got {value}")
            opened.load()
            image = _greyscale(ImageOps.exif_transpose(opened))
    except Image.DecompressionBombError as exc:
        raise ImageDimensionError("file", f"image must be at most {MAX_SIDE} x {MAX_SIDE} pixels") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as exc:
        raise UndecodablePixelDataError(
            "file", f"file could not be decoded as PNG or JPEG ({type(exc).__name__})"
        ) from exc
    # The same percentile window as an unwindowed DICOM, so dataset images and DICOMs at serving time share one
    # intensity convention (the NIH PNG and DICOM of one image: mean |diff| 0.11 -> 0.02 normalised units).
    image = _percentile_window(image).astype(np.float32)
    if check_consistency:
        check_photometric_consistency(image)
    return image


def _greyscale(picture: Image.Image) -> np.ndarray:
    mode = picture.mode
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
    if mode.startswith("I"):  # 16-bit (I;16*) or 32-bit integer greyscale PNG
        values = np.asarray(picture, dtype=np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise UnsupportedPhotometricError("file", "integer greyscale values must be in [0, 65535]")
        return (values / 65535.0).astype(np.float32)
    if mode not in ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr"):
        raise UnsupportedPhotometricError("file", f"file must be a greyscale image; got image mode {mode!r}")
    rgb = np.asarray(picture.convert("RGB"), dtype=np.int16)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    coloured = float(np.mean(spread > _COLOUR_TOLERANCE))
    if coloured > _COLOUR_FRACTION:
        raise UnsupportedPhotometricError(
            "file",
            f"file must be a greyscale image; got a colour image (channels differ on {coloured:.1%} of the pixels)",
        )
    return (rgb.mean(axis=2) / 255.0).astype(np.float32)
