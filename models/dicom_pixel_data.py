"""Checks of a DICOM PixelData element against its transfer syntax and header, before any decoder sees it.

Part of the one pixel path (:mod:`models.imaging` calls :func:`check_pixel_data` from ``check_radiograph``). A
decoder given untrusted bytes sizes its buffers from the codestream, not from the header: a JPEG frame header
claiming 65000 x 65000 pixels hung a decoder for more than 20 s, and a zero-length JP2 box looped forever in
pydicom 3.0.2. So native data must be exactly Rows x Columns x BitsAllocated / 8 bytes, and an encapsulated frame
must be the codestream its transfer syntax allows (SOF marker, JPEG 2000 SIZ) of Rows x Columns and one component,
ending with its end marker. Every refusal is an :class:`UndecodablePixelDataError` naming the attribute.
"""

from __future__ import annotations

import re
import struct
from typing import Final

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import UID, JPEG2000TransferSyntaxes

from models.errors import UndecodablePixelDataError

_UID_PATTERN: Final = re.compile(r"[0-9]+(\.[0-9]+)*")
_JP2_SIGNATURE: Final = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
#: JPEG frame header (SOFn) markers and their coding process (ITU-T T.81 Table B.1; SOF55 is JPEG-LS, T.87).
_JPEG_PROCESSES: Final = {
    0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive", 0xC3: "lossless",
    0xC5: "differential sequential", 0xC6: "differential progressive", 0xC7: "differential lossless",
    0xC9: "arithmetic-coded sequential", 0xCA: "arithmetic-coded progressive", 0xCB: "arithmetic-coded lossless",
    0xCD: "differential arithmetic-coded sequential", 0xCE: "differential arithmetic-coded progressive",
    0xCF: "differential arithmetic-coded lossless", 0xF7: "JPEG-LS",
}
#: The SOF markers each JPEG-family transfer syntax allows (PS3.5 8.2.1, 8.2.3, A.4.1, A.4.3).
_ALLOWED_SOF: Final = {
    "1.2.840.10008.1.2.4.50": frozenset({0xC0}),  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": frozenset({0xC0, 0xC1}),  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57": frozenset({0xC3}),  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70": frozenset({0xC3}),  # JPEG Lossless, Process 14, Selection Value 1
    "1.2.840.10008.1.2.4.80": frozenset({0xF7}),  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": frozenset({0xF7}),  # JPEG-LS Near-Lossless
}
_J2K_SYNTAXES: Final = frozenset({*JPEG2000TransferSyntaxes, "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                                  "1.2.840.10008.1.2.4.203"})


def transfer_syntax_of(ds: Dataset) -> UID:
    """The dataset's TransferSyntaxUID, which must be present and a valid UID (it is echoed in messages)."""
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not transfer_syntax:
        raise UndecodablePixelDataError("TransferSyntaxUID", "TransferSyntaxUID is missing from the file meta")
    text = str(transfer_syntax).rstrip("\x00 ")
    if len(text) > 64 or not _UID_PATTERN.fullmatch(text):
        raise UndecodablePixelDataError("TransferSyntaxUID", "TransferSyntaxUID is not a valid UID (digits and "
                                                             "dots, at most 64 characters)")
    return UID(text)


def decoder_for(transfer_syntax: UID) -> Decoder:
    try:
        return get_decoder(transfer_syntax)
    except (NotImplementedError, ValueError, TypeError) as exc:
        raise UndecodablePixelDataError("TransferSyntaxUID", f"TransferSyntaxUID {transfer_syntax} is not "
                                                             "supported") from exc


def check_pixel_data(ds: Dataset, rows: int, columns: int, bits_allocated: int) -> None:
    """The PixelData element against the transfer syntax and Rows x Columns, before any decoder sees it."""
    syntax = transfer_syntax_of(ds)
    decoder_for(syntax)
    element = ds["PixelData"]
    value = b"" if element.value in (None, "") else element.value
    if not isinstance(value, (bytes, bytearray)):
        raise UndecodablePixelDataError("PixelData", f"PixelData must be bytes (VR OB or OW); got a value of VR "
                                                     f"{element.VR}")
    cannot = f"PixelData ({syntax}) could not be decoded"
    if not syntax.is_encapsulated:
        if element.is_undefined_length:
            raise UndecodablePixelDataError("PixelData", "PixelData has an undefined length, which only encapsulated "
                                                         f"(compressed) pixel data may have; TransferSyntaxUID "
                                                         f"{syntax} is native")
        expected = rows * columns * bits_allocated // 8
        if len(value) not in (expected, expected + expected % 2):
            raise UndecodablePixelDataError("PixelData", f"{cannot}: it holds {len(value)} bytes, but Rows x "
                                                         f"Columns x BitsAllocated / 8 is {expected}")
        return
    if value[:4] != b"\xfe\xff\x00\xe0":  # an encapsulated value starts with its offset table item (PS3.5 A.4)
        raise UndecodablePixelDataError("PixelData", f"{cannot}: the transfer syntax is encapsulated (compressed), but "
                                                     "PixelData does not begin with an item of encapsulated fragments "
                                                     "(PS3.5 A.4)")
    try:
        frame = next(iter(generate_frames(value, number_of_frames=1)), b"")
    except Exception as exc:  # malformed items in untrusted bytes
        raise UndecodablePixelDataError("PixelData", f"{cannot}: its encapsulated items cannot be read "
                                                     f"({type(exc).__name__})") from exc
    if not frame:
        raise UndecodablePixelDataError("PixelData", f"{cannot}: it holds no encoded frame")
    if syntax in _J2K_SYNTAXES:
        _check_j2k_header(frame, cannot, rows, columns)
    elif syntax in _ALLOWED_SOF:
        _check_jpeg_header(frame, cannot, _ALLOWED_SOF[syntax], rows, columns)


def _check_j2k_header(frame: bytes, cannot: str, rows: int, columns: int) -> None:
    """SOC, then SIZ (ITU-T T.800 A.5.1) stating Rows x Columns and one component; EOC at the end."""
    if frame.startswith(_JP2_SIGNATURE):
        raise UndecodablePixelDataError("PixelData", f"{cannot}: it holds a JP2 file; DICOM allows only a bare JPEG "
                                                     "2000 codestream, without the JP2 header (PS3.5 8.2.4)")
    if frame[:4] != b"\xff\x4f\xff\x51" or len(frame) < 45:
        raise UndecodablePixelDataError("PixelData", f"{cannot}: it is not a JPEG 2000 codestream (no SOC and SIZ "
                                                     "markers)")
    xsiz, ysiz, x_offset, y_offset = struct.unpack_from(">4I", frame, 8)
    (components,) = struct.unpack_from(">H", frame, 40)
    _check_codestream_size(cannot, "JPEG 2000", ysiz - y_offset, xsiz - x_offset, components, rows, columns)
    _check_end_marker(frame, cannot, "JPEG 2000", "EOC")


def _check_jpeg_header(frame: bytes, cannot: str, allowed: frozenset[int], rows: int, columns: int) -> None:
    """SOI, marker segments up to the frame header (SOFn / SOF55) stating Rows x Columns and one component; EOI."""
    if frame[:2] != b"\xff\xd8":
        raise UndecodablePixelDataError("PixelData", f"{cannot}: it is not a JPEG codestream (no SOI marker)")
    offset = 2
    while True:  # each step moves at least 4 bytes on
        while frame[offset: offset + 2] == b"\xff\xff":  # fill bytes before a marker (T.81 B.1.1.2)
            offset += 1
        if offset + 10 > len(frame) or frame[offset] != 0xFF:
            raise UndecodablePixelDataError("PixelData", f"{cannot}: its JPEG marker segments end or break off "
                                                         "before the frame header (SOF)")
        marker = frame[offset + 1]
        (length,) = struct.unpack_from(">H", frame, offset + 2)
        if marker in _JPEG_PROCESSES:
            break
        if length < 2 or marker in (0xD8, 0xD9, 0xDA) or 0xD0 <= marker <= 0xD7:
            raise UndecodablePixelDataError("PixelData", f"{cannot}: its JPEG marker segments end or break off "
                                                         "before the frame header (SOF)")
        offset += 2 + length
    kind = "JPEG-LS" if marker == 0xF7 else "JPEG"
    if marker not in allowed:
        name = "SOF55" if marker == 0xF7 else f"SOF{marker - 0xC0}"
        raise UndecodablePixelDataError("PixelData", f"{cannot}: it holds a {_JPEG_PROCESSES[marker]} {kind} "
                                                     f"codestream ({name}), which this transfer syntax does not allow")
    height, width = struct.unpack_from(">HH", frame, offset + 5)
    _check_codestream_size(cannot, kind, height, width, frame[offset + 9], rows, columns)
    _check_end_marker(frame, cannot, kind, "EOI")


def _check_codestream_size(cannot: str, kind: str, height: int, width: int, components: int, rows: int,
                           columns: int) -> None:
    if (height, width) != (rows, columns):
        raise UndecodablePixelDataError("PixelData", f"{cannot}: it holds a {height} x {width} {kind} codestream, "
                                                     f"but Rows x Columns is {rows} x {columns}")
    if components != 1:
        raise UndecodablePixelDataError("PixelData", f"{cannot}: its {kind} codestream has {components} "
                                                     "components, but SamplesPerPixel is 1")


def _check_end_marker(frame: bytes, cannot: str, kind: str, marker: str) -> None:
    """The codestream ends with FFD9 (EOI / EOC), before any 0x00 or 0xFF padding: otherwise it is truncated."""
    if frame.rstrip(b"\x00\xff")[-2:] != b"\xff\xd9":
        raise UndecodablePixelDataError("PixelData", f"{cannot}: its {kind} codestream does not end with an "
                                                     f"{marker} marker (it is truncated)")
