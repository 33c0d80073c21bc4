"""PNG and JPEG radiographs into the one chest X-ray pixel path: the datasets' images (NIH, Kermany).

:func:`load_image_file` reads a PNG or JPEG as a display image (float32 in [0, 1], higher = brighter), as
:func:`models.imaging.pixels.decode_radiograph` does a DICOM: 8- and 16-bit greyscale scaled by their full range, an
RGB image whose channels agree taken as grey, EXIF orientation applied, width and height checked before decoding,
then the percentile window of an unwindowed DICOM (:func:`models.imaging.pixels.percentile_window`).
:func:`load_image_for_model` is the PNG/JPEG twin of :func:`models.imaging.pixels.load_dicom_for_model`: the dataset's
view (if it states one) checked as ViewPosition is, :func:`load_image_file`, then
:func:`models.imaging.pixels.model_input` (the photometric consistency rule off by default).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import ImageDimensionError, UndecodablePixelDataError, UnsupportedPhotometricError
from models.imaging.header import MAX_SIDE, MIN_SIDE
from models.imaging.pixels import check_photometric_consistency, model_input, percentile_window
from models.imaging.quality import check_view

_COLOUR_TOLERANCE: Final = 2  # grey levels out of 255
_COLOUR_FRACTION: Final = 0.01


def load_image_for_model(
    source: bytes | str | os.PathLike[str], size: int, *, view: str | None = None, check_consistency: bool = False
) -> np.ndarray:
    """A PNG/JPEG radiograph as model input ``[1, size, size]``: the PNG/JPEG twin of
    :func:`~models.imaging.pixels.load_dicom_for_model`.

    ``view`` is the view position from the dataset's own metadata (e.g. NIH's "View Position"), checked as
    ViewPosition is (:func:`models.imaging.quality.check_view`, naming ``"view"``); then :func:`load_image_file`
    and :func:`models.imaging.pixels.model_input` (gate naming ``"file"``). The consistency rule is off by default
    for PNG/JPEG, as in :func:`load_image_file` (it refuses 0.3 % of the NIH PNGs).
    """
    check_view(view, field="view")
    return model_input(load_image_file(source), size, field="file", check_consistency=check_consistency)


def load_image_file(source: bytes | str | os.PathLike[str], *, check_consistency: bool = False) -> np.ndarray:
    """Read a PNG or JPEG radiograph as a display image: float32 2-D in [0, 1], higher = brighter.

    8-bit and 16-bit greyscale are scaled by their full range; RGB(A) with R = G = B (within 2/255 on 99 % of the
    pixels) becomes the channel mean; alpha is dropped; EXIF orientation is applied; then the percentile window
    of an unwindowed DICOM (0.5-99.5 %) is applied, as in the DICOM path. Feed the result to
    :func:`models.imaging.pixels.prepare_image`. ``check_consistency`` applies
    :func:`models.imaging.pixels.check_photometric_consistency` (chest images only).

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
    image = percentile_window(image).astype(np.float32)
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
