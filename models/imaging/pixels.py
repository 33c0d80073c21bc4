"""The one chest X-ray pixel path, used unchanged by training, evaluation and serving.

DICOM: :func:`~models.imaging.dicom_read.read_dicom` -> :func:`~models.imaging.header.check_radiograph` (header
only, before any pixel is decoded; a lateral or other non-frontal ViewPosition is refused there) ->
:func:`decode_radiograph` (decode, Modality LUT, VOI LUT or window or a 0.5-99.5 % percentile window, photometric
inversion) -> :func:`model_input`: the quality / out-of-distribution gate (:mod:`models.imaging.quality`: blank,
uniform, noise, text/graphics, implausible histograms), then :func:`check_photometric_consistency`, then mid-rank
histogram equalisation, then :func:`prepare_image`. :func:`load_dicom_for_model` runs all of it. PNG/JPEG:
:func:`models.imaging.image_file.load_image_for_model` = the dataset's view (if it states one) checked as
ViewPosition is, :func:`~models.imaging.image_file.load_image_file`, :func:`model_input` (consistency rule off).
Training, evaluation, HTTP serving and the DICOM node all go through these two functions.

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
buffer is sized from it: by the reader (:mod:`models.imaging.dicom_read`: deflate bombs, files that end inside an
element, undefined lengths PS3.5 does not allow, values that do not fit their VR) and by the header checks
(:mod:`models.imaging.header`: attribute types, PixelData and its codestream against Rows x Columns). Messages echo
Modality and BodyPartExamined only when they are code strings and TransferSyntaxUID only when it is a UID.
tests/dicom_corpus.py holds the corpus of malformed files this is tested on.

Photometric consistency rule (:func:`photometric_consistency_score`): over rows 30-70 % of the display image,
the median of columns 40-60 % (mediastinum, spine) minus the mean of the medians of columns 15-35 % and 65-85 %
(the lung fields of a frontal view). Below ``-CONSISTENCY_MARGIN`` (0.08) the image is clearly shown inverted and
is refused. Measured with this module (``load_image_file``, then the rule; tuned on these same images, so the
rates are in-sample): NIH ChestX-ray14 1,000 PNGs (64 px): 3 / 1,000 false positives (0.3 %; 00000248_026,
00000168_001, 00000181_002), and 907 / 1,000 of the same images inverted are caught; Kermany paediatric training
JPEGs (224 px): 0 / 5,216 false positives (lowest score -0.002), 5,105 / 5,216 (97.9 %) inverted copies caught.
Every valid chest DICOM fixture passes (scores +0.20 to +0.38) and ``Fake_MONOHR1`` (-0.32) is refused. In the
DICOM path the rule runs on every image that passes :func:`~models.imaging.header.check_radiograph` (chest, or no
body part stated, and a frontal or unstated view); for PNG/JPEG only on request (``check_consistency=True``). The
rule knows nothing but chest anatomy: a correctly displayed dental panoramic with no BodyPartExamined scores -0.11
and is refused as a mismatch.
"""

from __future__ import annotations

import logging
import os
from typing import BinaryIO, Final, TypedDict

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

from models.errors import ImageDimensionError, ImagingInputError, PhotometricMismatchError, UndecodablePixelDataError
from models.imaging.dicom_read import read_dicom
from models.imaging.header import check_pixel_module, check_radiograph, number_attribute, text_attribute
from models.imaging.pixel_data import decoder_for, transfer_syntax_of
from models.imaging.quality import check_image_quality, equalise_histogram

log = logging.getLogger(__name__)

PIXEL_PATH_VERSION: Final = "cxr-pixels/3"
IMAGE_MEAN: Final = 0.5
IMAGE_STD: Final = 0.25
PERCENTILE_WINDOW: Final = (0.5, 99.5)
CONSISTENCY_MARGIN: Final = 0.08
VIEWS: Final = ("PA", "AP")
#: Decoder plugins in order of preference; pydicom's own order puts GDCM first, whose baseline JPEG differs.
DECODER_PREFERENCE: Final = ("pylibjpeg", "gdcm", "pyjpegls", "pillow", "pydicom")


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


# ---------------------------------------------------------------------------------------------- decoding
def decode_radiograph(ds: Dataset) -> np.ndarray:
    """Decode a greyscale radiograph to a display-ready float32 image in [0, 1], higher = brighter.

    Steps: Image Pixel module and PixelData checks (:func:`models.imaging.header.check_pixel_module`: as in
    :func:`~models.imaging.header.check_radiograph`, less Modality and BodyPartExamined); decode (pylibjpeg first,
    see :data:`DECODER_PREFERENCE`) and check the shape against Rows x Columns; Modality LUT (Modality LUT
    Sequence, else rescale slope/intercept, which must be finite and keep the values finite); VOI (VOI LUT
    Sequence, else the first WindowCenter/WindowWidth, else a 0.5-99.5 % percentile window) scaled to [0, 1] over
    the VOI's output range; then inversion, exactly once, if PhotometricInterpretation is MONOCHROME1 or
    PresentationLUTShape is INVERSE (PS3.3 C.8.11.6 / C.11.6: INVERSE on MONOCHROME1 restates the same inversion;
    IDENTITY on MONOCHROME2 is none). A Presentation LUT Sequence is ignored. The photometric consistency check is
    separate (:func:`check_photometric_consistency`) so that
    non-chest images can be decoded.

    Raises
    ------
    UndecodablePixelDataError
        The codestream cannot be decoded, its shape contradicts the header, or a LUT/window/rescale is unusable.
    UnsupportedPhotometricError, MultiFrameError, ImageDimensionError, NotAnImageError
        From the header checks.
    """
    rows, columns = check_pixel_module(ds)
    raw = _decode_pixels(ds)
    if raw.shape != (rows, columns):
        raise UndecodablePixelDataError(
            "PixelData", f"PixelData decoded to shape {raw.shape}, but Rows x Columns is {rows} x {columns}"
        )
    if "ModalityLUTSequence" not in ds:
        for keyword in ("RescaleSlope", "RescaleIntercept"):
            if keyword in ds and ds[keyword].value not in (None, ""):
                number_attribute(ds, keyword)
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
    if (
        text_attribute(ds, "PhotometricInterpretation") == "MONOCHROME1"
        or text_attribute(ds, "PresentationLUTShape") == "INVERSE"
    ):
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
            number_attribute(ds, "WindowCenter")
            if number_attribute(ds, "WindowWidth") <= 0:
                raise UndecodablePixelDataError("WindowWidth", "WindowWidth must be positive")
            with np.errstate(over="ignore"):
                ends = np.asarray(apply_voi_lut(np.array([-1e12, 1e12]), ds, index=0, prefer_lut=False))
            out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=False), dtype=np.float64)
            low, high = float(ends.min()), float(ends.max())
        else:
            return percentile_window(values)
    except ImagingInputError:
        raise
    except Exception as exc:  # malformed VOI elements in an untrusted header
        field = "VOILUTSequence" if has_lut else "WindowWidth"
        raise UndecodablePixelDataError(field, f"{field} could not be applied ({type(exc).__name__})") from exc
    if not high > low:
        return np.zeros(out.shape, dtype=np.float64)
    return np.clip((out - low) / (high - low), 0.0, 1.0)


def percentile_window(values: np.ndarray) -> np.ndarray:
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

    :func:`~models.imaging.dicom_read.read_dicom`, :func:`~models.imaging.header.check_radiograph` (header, including
    ViewPosition: a non-frontal view is refused before decoding), :func:`decode_radiograph`, then
    :func:`model_input` with the photometric consistency rule on.
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


def dicom_metadata(ds: Dataset) -> DicomImageInfo:
    """Technical metadata of a checked dataset (no names, dates or patient identifiers)."""

    def uid(keyword: str) -> str | None:
        value = ds.get(keyword)
        return str(value) if value else None

    view = text_attribute(ds, "ViewPosition")
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return DicomImageInfo(
        modality=text_attribute(ds, "Modality"),
        photometric=text_attribute(ds, "PhotometricInterpretation"),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        transfer_syntax=str(transfer_syntax) if transfer_syntax else None,
        view=view if view in VIEWS else None,
        sop_instance_uid=uid("SOPInstanceUID"),
        study_instance_uid=uid("StudyInstanceUID"),
        series_instance_uid=uid("SeriesInstanceUID"),
        pixel_path_version=PIXEL_PATH_VERSION,
    )
