"""The header checks of the one chest X-ray pixel path: what a DICOM must state before any pixel is decoded.

:func:`check_radiograph` refuses anything but a single-frame greyscale chest projection radiograph from the header
alone (:mod:`models.imaging.pixels` runs it between :func:`models.imaging.dicom_read.read_dicom` and decoding);
:func:`check_pixel_module`, the Image Pixel module part of it, is run again by
:func:`models.imaging.pixels.decode_radiograph`. The acceptance limits (:data:`MODALITIES`, :data:`CHEST_BODY_PARTS`,
:data:`MIN_SIDE`, :data:`MAX_SIDE`, :data:`MAX_BITS_STORED`) are declared here once.

Untrusted headers are refused with an :class:`~models.errors.ImagingInputError` that names the attribute: integer and
text attributes must hold an integer or text whatever VR the file wrote (:func:`text_attribute`), decimal ones a
finite number (:func:`number_attribute`); native PixelData must hold exactly Rows x Columns x BitsAllocated / 8
bytes; an encapsulated JPEG, JPEG-LS or JPEG 2000 frame must state Rows x Columns and one component in its own
header, use a coding process its transfer syntax allows and end with its end marker
(:func:`models.imaging.pixel_data.check_pixel_data`), so that no decoder allocates for a 65535 x 65535 codestream
behind a 96 x 80 header (nor walks a JP2 box of length 0 for ever, as pydicom 3.0.2 does). Messages echo Modality
and BodyPartExamined only when they are code strings and TransferSyntaxUID only when it is a UID.
"""

from __future__ import annotations

import math
import re
from typing import Final

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from models.errors import (
    ImageDimensionError,
    ImagingInputError,
    MultiFrameError,
    NonFrontalViewError,
    NotAnImageError,
    NotChestError,
    UndecodablePixelDataError,
    UnsupportedModalityError,
    UnsupportedPhotometricError,
)
from models.imaging.pixel_data import check_pixel_data
from models.imaging.quality import check_view

MODALITIES: Final = ("CR", "DX", "DR")
CHEST_BODY_PARTS: Final = ("CHEST", "THORAX", "LUNG")
MIN_SIDE: Final = 32
MAX_SIDE: Final = 8192
MAX_BITS_STORED: Final = 16
_CODE_STRING: Final = re.compile(r"[A-Z0-9 _]{1,16}")


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
    modality = text_attribute(ds, "Modality", UnsupportedModalityError)
    if modality not in MODALITIES:
        got = _shown(modality) if modality else "none"
        raise UnsupportedModalityError("Modality", f"Modality must be one of {', '.join(MODALITIES)}; got {got}")
    body_part = text_attribute(ds, "BodyPartExamined", NotChestError)
    if body_part and not any(part in body_part for part in CHEST_BODY_PARTS):
        raise NotChestError(
            "BodyPartExamined",
            f"BodyPartExamined must be chest-like ({', '.join(CHEST_BODY_PARTS)}) or absent; got {_shown(body_part)}",
        )
    check_view(text_attribute(ds, "ViewPosition", NonFrontalViewError))
    check_pixel_module(ds)


def _require_pixel_data(ds: Dataset) -> None:
    if "PixelData" not in ds:
        raise NotAnImageError("PixelData", "PixelData is missing: the DICOM holds no image")


def check_pixel_module(ds: Dataset) -> tuple[int, int]:
    """Image Pixel module checks shared by :func:`check_radiograph` and
    :func:`models.imaging.pixels.decode_radiograph`; returns (rows, columns)."""
    _require_pixel_data(ds)
    if _int(ds, "SamplesPerPixel", UnsupportedPhotometricError) != 1:
        raise UnsupportedPhotometricError(
            "SamplesPerPixel", "SamplesPerPixel must be 1 (greyscale); got a multi-sample (colour) image"
        )
    photometric = text_attribute(ds, "PhotometricInterpretation", UnsupportedPhotometricError)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        got = _shown(photometric) if photometric else "none"
        raise UnsupportedPhotometricError(
            "PhotometricInterpretation", f"PhotometricInterpretation must be MONOCHROME1 or MONOCHROME2; got {got}"
        )
    if text_attribute(ds, "PresentationLUTShape", UnsupportedPhotometricError) not in ("", "IDENTITY", "INVERSE"):
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


def text_attribute(ds: Dataset, keyword: str, error: type[ImagingInputError] = ImagingInputError) -> str:
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


def number_attribute(ds: Dataset, keyword: str) -> float:
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
