"""Checks of a DICOM PixelData element against its transfer syntax and header, before any decoder sees it.

Part of the one pixel path (:mod:`models.imaging.header` calls :func:`check_pixel_data` from ``check_radiograph``). A
decoder given untrusted bytes sizes its buffers from the codestream, not from the header: a JPEG frame header
claiming 65000 x 65000 pixels hung a decoder for more than 20 s, and a zero-length JP2 box looped forever in
pydicom 3.0.2. So native data must be exactly Rows x Columns x BitsAllocated / 8 bytes, and an encapsulated frame
must be the codestream its transfer syntax allows (SOF marker, JPEG 2000 SIZ) of Rows x Columns and one component,
ending with its end marker. Every refusal is an :class:`UndecodablePixelDataError` naming the attribute.

Before any of that, Rows and Columns must each be at most :data:`MAX_FRAME_SIDE` (:class:`ImageDimensionError` naming
the attribute): every decoder allocates Rows x Columns, and the pixel path makes several float copies of the frame, so
a 2 MB RLE frame of 8192 x 8192 zeros cost 1.2 GB and 5 s a request (issue 14, finding 7). An RLE frame (PS3.5
Annex G) must have a 64-byte header stating one segment per byte of a sample, the first at byte 64 and each after the
one before, inside the frame; and each segment must decode to exactly Rows x Columns bytes: pylibjpeg-rle 2.2.0
panics (a ``BaseException`` no ``except Exception`` catches) on a 16-bit segment that decodes to more, and pydicom's
own RLE decoder, its fallback, keeps all of an overlong segment in memory (up to 64 times its encoded size).

Decoding at the model's resolution was considered and not done: of the decoders installed, only Pillow's JPEG 2000
plugin can skip resolution levels (pylibjpeg-openjpeg 2.6.0 and pydicom 3.0.2 expose no ``reduce``; RLE, JPEG
lossless, JPEG-LS and native data cannot), and a wavelet-level reduction is not the antialiased bilinear resize the
model was trained on: it would be a second pixel path, for one transfer syntax, and a new ``PIXEL_PATH_VERSION``.
"""

from __future__ import annotations

import re
import struct
from typing import Final

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import UID, JPEG2000TransferSyntaxes, RLELossless
from rle.rle import decode_frame as rle_decode_frame

from models.errors import ImageDimensionError, UndecodablePixelDataError

#: The largest Rows and Columns accepted: what a chest radiograph needs, with a margin. The largest chest detectors are
#: 43 x 43 cm flat panels and 35 x 43 cm CR plates; read at 0.1 mm, about the finest pitch used for chest work, 43 cm
#: is 4,300 pixels (most panels read at 0.125-0.2 mm: 2,150-3,440 pixels). 5,000 still holds 43 cm at 86 um. A frame
#: of this size at 16 bits is 50 MB raw; reading one costs the pixel path about 0.7 GB (docs/security_decode.json).
MAX_FRAME_SIDE: Final = 5000
_UID_PATTERN: Final = re.compile(r"[0-9]+(\.[0-9]+)*")
_JP2_SIGNATURE: Final = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
#: JPEG frame header (SOFn) markers and their coding process (ITU-T T.81 Table B.1; SOF55 is JPEG-LS, T.87).
_JPEG_PROCESSES: Final = {
    0xC0: "baseline",
    0xC1: "extended sequential",
    0xC2: "progressive",
    0xC3: "lossless",
    0xC5: "differential sequential",
    0xC6: "differential progressive",
    0xC7: "differential lossless",
    0xC9: "arithmetic-coded sequential",
    0xCA: "arithmetic-coded progressive",
    0xCB: "arithmetic-coded lossless",
    0xCD: "differential arithmetic-coded sequential",
    0xCE: "differential arithmetic-coded progressive",
    0xCF: "differential arithmetic-coded lossless",
    0xF7: "JPEG-LS",
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
_J2K_SYNTAXES: Final = frozenset(
    {*JPEG2000TransferSyntaxes, "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
)


def transfer_syntax_of(ds: Dataset) -> UID:
    """The dataset's TransferSyntaxUID, which must be present and a valid UID (it is echoed in messages)."""
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not transfer_syntax:
        raise UndecodablePixelDataError("TransferSyntaxUID", "TransferSyntaxUID is missing from the file meta")
    text = str(transfer_syntax).rstrip("\x00 ")
    if len(text) > 64 or not _UID_PATTERN.fullmatch(text):
        raise UndecodablePixelDataError(
            "TransferSyntaxUID", "TransferSyntaxUID is not a valid UID (digits and dots, at most 64 characters)"
        )
    return UID(text)


def decoder_for(transfer_syntax: UID) -> Decoder:
    try:
        return get_decoder(transfer_syntax)
    except (NotImplementedError, ValueError, TypeError) as exc:
        raise UndecodablePixelDataError(
            "TransferSyntaxUID", f"TransferSyntaxUID {transfer_syntax} is not supported"
        ) from exc


def check_frame_size(rows: int, columns: int) -> None:
    """Refuse Rows or Columns above :data:`MAX_FRAME_SIDE`, more than a chest radiograph needs.

    Raises
    ------
    ImageDimensionError
        ``field`` is ``"Rows"`` or ``"Columns"``; the message states the limit and the value (a size, not PHI).
    """
    for keyword, value in (("Rows", rows), ("Columns", columns)):
        if value > MAX_FRAME_SIDE:
            raise ImageDimensionError(
                keyword,
                f"{keyword} must be at most {MAX_FRAME_SIDE} for a chest radiograph "
                f"(the largest chest detectors are about 4300 pixels a side); got "
                f"{value}",
            )


def check_pixel_data(ds: Dataset, rows: int, columns: int, bits_allocated: int) -> None:
    """The frame size, then the PixelData element against the transfer syntax and Rows x Columns, before any decoder
    sees it.

    ``rows``, ``columns`` and ``bits_allocated`` are the header's, already checked by :mod:`models.imaging.header` (one
    sample per pixel, one frame, Rows and Columns at least 32, BitsAllocated 8 or 16).

    Raises
    ------
    ImageDimensionError
        Rows or Columns above :data:`MAX_FRAME_SIDE` (:func:`check_frame_size`).
    UndecodablePixelDataError
        Anything else, naming ``TransferSyntaxUID`` or ``PixelData``.
    """
    check_frame_size(rows, columns)
    syntax = transfer_syntax_of(ds)
    decoder_for(syntax)
    element = ds["PixelData"]
    value = b"" if element.value in (None, "") else element.value
    if not isinstance(value, (bytes, bytearray)):
        raise UndecodablePixelDataError(
            "PixelData", f"PixelData must be bytes (VR OB or OW); got a value of VR {element.VR}"
        )
    cannot = f"PixelData ({syntax}) could not be decoded"
    if not syntax.is_encapsulated:
        if element.is_undefined_length:
            raise UndecodablePixelDataError(
                "PixelData",
                "PixelData has an undefined length, which only encapsulated "
                f"(compressed) pixel data may have; TransferSyntaxUID "
                f"{syntax} is native",
            )
        expected = rows * columns * bits_allocated // 8
        if len(value) not in (expected, expected + expected % 2):
            raise UndecodablePixelDataError(
                "PixelData",
                f"{cannot}: it holds {len(value)} bytes, but Rows x Columns x BitsAllocated / 8 is {expected}",
            )
        return
    if value[:4] != b"\xfe\xff\x00\xe0":  # an encapsulated value starts with its offset table item (PS3.5 A.4)
        raise UndecodablePixelDataError(
            "PixelData",
            f"{cannot}: the transfer syntax is encapsulated (compressed), but "
            "PixelData does not begin with an item of encapsulated fragments "
            "(PS3.5 A.4)",
        )
    try:
        frames = generate_frames(value, number_of_frames=1)  # type: ignore[arg-type]  # pydicom: bytearray is fine
        frame = next(iter(frames), b"")
    except Exception as exc:  # malformed items in untrusted bytes
        raise UndecodablePixelDataError(
            "PixelData", f"{cannot}: its encapsulated items cannot be read ({type(exc).__name__})"
        ) from exc
    if not frame:
        raise UndecodablePixelDataError("PixelData", f"{cannot}: it holds no encoded frame")
    if syntax in _J2K_SYNTAXES:
        _check_j2k_header(frame, cannot, rows, columns)
    elif syntax in _ALLOWED_SOF:
        _check_jpeg_header(frame, cannot, _ALLOWED_SOF[syntax], rows, columns)
    elif syntax == RLELossless:
        _check_rle_frame(frame, cannot, rows, columns, bits_allocated)


def _check_rle_frame(frame: bytes, cannot: str, rows: int, columns: int, bits_allocated: int) -> None:
    """PS3.5 G.4-G.5: the RLE header's segment count and offsets, then each segment's decoded length.

    A greyscale frame has one segment per byte of a sample (1 for 8 bits, 2 for 16), the first at byte 64, each
    starting after the one before and inside the frame; the 15 - n unused offsets are 0 (pydicom counts segments
    from the header's count, pylibjpeg-rle from its non-zero offsets: both must agree). Each segment must decode to
    exactly Rows x Columns bytes (:func:`_check_rle_segment`).
    """
    if len(frame) < 64:
        raise UndecodablePixelDataError(
            "PixelData", f"{cannot}: its RLE header is cut short ({len(frame)} of 64 bytes)"
        )
    count, *offsets = struct.unpack_from("<16I", frame)
    needed = bits_allocated // 8
    if count != needed:
        raise UndecodablePixelDataError(
            "PixelData",
            f"{cannot}: its RLE header gives {count} as the number of "
            f"segments, but BitsAllocated {bits_allocated} with one sample "
            f"per pixel needs {needed} (PS3.5 G.2)",
        )
    starts = offsets[:count]
    if starts[0] != 64:
        raise UndecodablePixelDataError(
            "PixelData",
            f"{cannot}: its RLE header puts segment 1 at byte {starts[0]}, not at byte 64, just after the header",
        )
    for number, (start, previous) in enumerate(zip(starts[1:], starts, strict=False), start=2):
        if start >= len(frame):
            raise UndecodablePixelDataError(
                "PixelData",
                f"{cannot}: its RLE header puts segment {number} at byte "
                f"{start}, not inside the {len(frame)}-byte frame",
            )
        if start <= previous:
            raise UndecodablePixelDataError(
                "PixelData",
                f"{cannot}: its RLE header puts segment {number} at byte "
                f"{start}, not after segment {number - 1} (byte "
                f"{previous})",
            )
    extra = [number for number, offset in enumerate(offsets, start=1) if number > count and offset]
    if extra:
        raise UndecodablePixelDataError(
            "PixelData", f"{cannot}: its RLE header states {count} segments but gives an offset for segment {extra[0]}"
        )
    for number, (start, end) in enumerate(zip(starts, [*starts[1:], len(frame)], strict=True), start=1):
        _check_rle_segment(frame[start:end], number, cannot, rows, columns)


#: An RLE frame header of one segment, at byte 64: the frame :func:`_check_rle_segment` gives pylibjpeg-rle.
_ONE_SEGMENT: Final = struct.pack("<16I", 1, 64, *([0] * 14))


def _check_rle_segment(segment: bytes, number: int, cannot: str, rows: int, columns: int) -> None:
    """The segment decodes to exactly Rows x Columns bytes, measured in buffers of at most Rows x Columns + 1.

    pylibjpeg-rle decodes an 8-bit frame into a buffer of the size it is given and stops at its end (2.2.0 truncates
    what is beyond it; earlier versions refuse it), so the segment is decoded alone, as an 8-bit frame of
    ``rows * columns`` and then of ``rows * columns + 1`` pixels: it is exactly that long only if the first decodes
    and the second does not. Both take a few tens of milliseconds for a 5000 x 5000 plane.
    """
    pixels = rows * columns
    source = _ONE_SEGMENT + segment
    size = f"Rows x Columns ({rows} x {columns} = {pixels}) bytes"
    try:
        rle_decode_frame(source, pixels, 8, "<")
    except ValueError as exc:
        raise UndecodablePixelDataError(
            "PixelData", f"{cannot}: its RLE segment {number} does not decode to {size}: it is shorter or malformed"
        ) from exc
    try:
        rle_decode_frame(source, pixels + 1, 8, "<")
    except ValueError:
        return
    raise UndecodablePixelDataError("PixelData", f"{cannot}: its RLE segment {number} decodes to more than {size}")


def _check_j2k_header(frame: bytes, cannot: str, rows: int, columns: int) -> None:
    """SOC, then SIZ (ITU-T T.800 A.5.1) stating Rows x Columns and one component; EOC at the end."""
    if frame.startswith(_JP2_SIGNATURE):
        raise UndecodablePixelDataError(
            "PixelData",
            f"{cannot}: it holds a JP2 file; DICOM allows only a bare JPEG "
            "2000 codestream, without the JP2 header (PS3.5 8.2.4)",
        )
    if frame[:4] != b"\xff\x4f\xff\x51" or len(frame) < 45:
        raise UndecodablePixelDataError(
            "PixelData", f"{cannot}: it is not a JPEG 2000 codestream (no SOC and SIZ markers)"
        )
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
        while frame[offset : offset + 2] == b"\xff\xff":  # fill bytes before a marker (T.81 B.1.1.2)
            offset += 1
        if offset + 10 > len(frame) or frame[offset] != 0xFF:
            raise UndecodablePixelDataError(
                "PixelData", f"{cannot}: its JPEG marker segments end or break off before the frame header (SOF)"
            )
        marker = frame[offset + 1]
        (length,) = struct.unpack_from(">H", frame, offset + 2)
        if marker in _JPEG_PROCESSES:
            break
        if length < 2 or marker in (0xD8, 0xD9, 0xDA) or 0xD0 <= marker <= 0xD7:
            raise UndecodablePixelDataError(
                "PixelData", f"{cannot}: its JPEG marker segments end or break off before the frame header (SOF)"
            )
        offset += 2 + length
    kind = "JPEG-LS" if marker == 0xF7 else "JPEG"
    if marker not in allowed:
        name = "SOF55" if marker == 0xF7 else f"SOF{marker - 0xC0}"
        raise UndecodablePixelDataError(
            "PixelData",
            f"{cannot}: it holds a {_JPEG_PROCESSES[marker]} {kind} "
            f"codestream ({name}), which this transfer syntax does not allow",
        )
    height, width = struct.unpack_from(">HH", frame, offset + 5)
    _check_codestream_size(cannot, kind, height, width, frame[offset + 9], rows, columns)
    _check_end_marker(frame, cannot, kind, "EOI")


def _check_codestream_size(
    cannot: str, kind: str, height: int, width: int, components: int, rows: int, columns: int
) -> None:
    if (height, width) != (rows, columns):
        raise UndecodablePixelDataError(
            "PixelData",
            f"{cannot}: it holds a {height} x {width} {kind} codestream, but Rows x Columns is {rows} x {columns}",
        )
    if components != 1:
        raise UndecodablePixelDataError(
            "PixelData", f"{cannot}: its {kind} codestream has {components} components, but SamplesPerPixel is 1"
        )


def _check_end_marker(frame: bytes, cannot: str, kind: str, marker: str) -> None:
    """The codestream ends with FFD9 (EOI / EOC), before any 0x00 or 0xFF padding: otherwise it is truncated."""
    if frame.rstrip(b"\x00\xff")[-2:] != b"\xff\xd9":
        raise UndecodablePixelDataError(
            "PixelData", f"{cannot}: its {kind} codestream does not end with an {marker} marker (it is truncated)"
        )
