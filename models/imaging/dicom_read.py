"""The one reader of untrusted DICOM for the chest X-ray pixel path: :func:`read_dicom`, bounded and quiet.

The pixel path (:mod:`models.imaging.pixels`), the imaging runtime and the DICOM node's intake read untrusted DICOM
through :func:`read_dicom`, which refuses what pydicom would read unbounded or echo. Untrusted bytes are refused with an
:class:`~models.errors.ImagingInputError` that names the element, before any buffer is sized from them: a deflated
dataset inflates to at most :data:`MAX_INFLATED_BYTES` (checked 16 MiB at a time: pydicom would inflate all of it
into memory); a file that ends inside an element, an undefined length where PS3.5 allows none, or a value that does
not fit its VR names that element. Every header value is converted at read time with pydicom's value validation off,
so that pydicom never echoes an invalid value (which may be an identifier) into warnings or logs. What the header
must then state is checked by :mod:`models.imaging.header`.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
import zlib
from collections.abc import Sequence
from typing import BinaryIO, Final, cast

import pydicom
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from models.errors import ImageDimensionError, ImagingInputError, NotAnImageError
from models.imaging.header import MAX_SIDE

log = logging.getLogger(__name__)

#: The most a Deflated Explicit VR Little Endian dataset may inflate to: the pixels of the largest accepted image
#: (MAX_SIDE x MAX_SIDE at 16 bits, 128 MiB) plus 16 MiB for everything else in the header.
MAX_INFLATED_BYTES: Final = MAX_SIDE * MAX_SIDE * 2 + 16 * 2**20
_INFLATE_CHUNK: Final = 16 * 2**20
_UNDEFINED_LENGTH: Final = 0xFFFFFFFF
#: VRs that may have an undefined length (PS3.5 7.1.2-7.1.3): sequences, encapsulated pixel data, UN sequences.
_UNDEFINED_LENGTH_VRS: Final = frozenset({"SQ", "UN", "OB", "OW", "OB or OW"})
_READ_LOCK = threading.Lock()


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
