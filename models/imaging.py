"""The one chest X-ray pixel path, used unchanged by training, evaluation and serving.

DICOM: :func:`read_dicom` -> :func:`check_radiograph` (header only, before any pixel is decoded) ->
:func:`decode_radiograph` (decode, Modality LUT, VOI LUT or window or a 0.5-99.5 % percentile window, photometric
inversion) -> :func:`check_photometric_consistency` -> :func:`prepare_image`. :func:`load_dicom_for_model` runs all
of it. PNG/JPEG: :func:`load_image_file` -> :func:`prepare_image`.

The display image is float32 in [0, 1] with higher = brighter (bone and mediastinum white, lungs dark), whatever
the source. Model input is ``[1, size, size]``: the longest side resized to ``size`` (Pillow bilinear on float
data, antialiased when shrinking), the short side padded symmetrically with black (0), then
``(x - IMAGE_MEAN) / IMAGE_STD``. PNG/JPEG are display images already and are scaled by their full range (8 or
16 bits); only a DICOM without VOI attributes gets the percentile window. On NIH 00000002_000, the 64-px PNG and
the DICOM of the same image agree after ``prepare_image(., 64)`` with correlation 0.9995 and a mean absolute
difference of 0.11 (normalised units; the DICOM's percentile stretch). Lossy JPEG is decoded with pylibjpeg
first (decoders differ by one grey level), so the same file gives the same input everywhere. Any change to these
steps must bump :data:`PIXEL_PATH_VERSION`.

Photometric consistency rule (:func:`photometric_consistency_score`): over rows 30-70 % of the display image,
the median of columns 40-60 % (mediastinum, spine) minus the mean of the medians of columns 15-35 % and 65-85 %
(the lung fields of a frontal view). Below ``-CONSISTENCY_MARGIN`` (0.08) the image is clearly shown inverted and
is refused. Measured with this module (``load_image_file``, then the rule; tuned on these same images, so the
rates are in-sample): NIH ChestX-ray14 1,000 PNGs (64 px): 3 / 1,000 false positives (0.3 %; 00000248_026,
00000168_001, 00000181_002), and 907 / 1,000 of the same images inverted are caught; Kermany paediatric training
JPEGs (224 px): 0 / 5,216 false positives (lowest score -0.002), 5,105 / 5,216 (97.9 %) inverted copies caught.
Every valid chest DICOM fixture passes (scores +0.20 to +0.38) and ``Fake_MONOHR1`` (-0.32) is refused. In the
DICOM path the rule runs on every image that passes :func:`check_radiograph` (chest, or no body part stated)
unless ViewPosition is non-frontal; for PNG/JPEG only on request (``check_consistency=True``). The rule knows
nothing but chest anatomy: a correctly displayed dental panoramic with no BodyPartExamined scores -0.11 and is
refused as a mismatch.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Final, TypedDict

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

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

log = logging.getLogger(__name__)

PIXEL_PATH_VERSION: Final = "cxr-pixels/1"
IMAGE_MEAN: Final = 0.5
IMAGE_STD: Final = 0.25
MODALITIES: Final = ("CR", "DX", "DR")
CHEST_BODY_PARTS: Final = ("CHEST", "THORAX", "LUNG")
MIN_SIDE: Final = 32
MAX_SIDE: Final = 8192
MAX_BITS_STORED: Final = 16
PERCENTILE_WINDOW: Final = (0.5, 99.5)
CONSISTENCY_MARGIN: Final = 0.08
VIEWS: Final = ("PA", "AP", "LL")
#: ViewPosition values for which the consistency rule (which assumes a frontal view) is not applied.
NON_FRONTAL_VIEWS: Final = ("LL", "RL", "LLD", "RLD", "LLO", "RLO", "LATERAL", "LAT")
#: Decoder plugins in order of preference; pydicom's own order puts GDCM first, whose baseline JPEG differs.
DECODER_PREFERENCE: Final = ("pylibjpeg", "gdcm", "pyjpegls", "pillow", "pydicom")
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
def read_dicom(source: Dataset | bytes | str | os.PathLike[str] | BinaryIO) -> Dataset:
    """Read a DICOM dataset from bytes, a path or a binary stream (a Dataset already read is returned as is).

    A file without preamble and file meta (a raw legacy dataset) is read with ``force=True`` and given the
    transfer syntax its encoding was detected as (Implicit VR Little Endian for the legacy files seen). Every header
    value is converted at once with pydicom's value validation off, so that pydicom never echoes an invalid value
    (which may be an identifier) into warnings or logs; because that setting is process-wide, reads are serialised
    by a module lock and the caller's setting is restored afterwards.

    Raises
    ------
    NotAnImageError
        ``field="file"``: empty input, or bytes that are not a DICOM dataset.
    OSError
        A path that cannot be opened.
    """
    if isinstance(source, Dataset):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        stream: BinaryIO = io.BytesIO(bytes(source))
        return _read_stream(stream)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return _read_stream(handle)
    return _read_stream(source)


def _read_stream(stream: BinaryIO) -> Dataset:
    start = stream.tell()
    if not stream.read(1):
        raise NotAnImageError("file", "file must be a DICOM dataset; got empty input")
    with _READ_LOCK:
        saved = pydicom_config.settings.reading_validation_mode
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
        try:
            return _parse(stream, start)
        finally:
            pydicom_config.settings.reading_validation_mode = saved


def _parse(stream: BinaryIO, start: int) -> Dataset:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            stream.seek(start)
            try:
                ds = pydicom.dcmread(stream)
            except InvalidDicomError:  # no preamble / no file meta: a raw dataset, or not DICOM at all
                stream.seek(start)
                ds = pydicom.dcmread(stream, force=True)
            for _ in ds.iterall():  # convert every value now, while validation is off
                pass
        except Exception as exc:  # any parser failure on untrusted bytes means "not DICOM"
            raise NotAnImageError("file", f"file must be a DICOM dataset; it could not be parsed "
                                          f"({type(exc).__name__})") from exc
    if caught:
        log.debug("DICOM read: %d parser warning(s) suppressed", len(caught))
    if not any(keyword in ds for keyword in ("SOPClassUID", "PixelData", "Modality", "Rows")):
        raise NotAnImageError("file", "file must be a DICOM dataset; no DICOM image or SOP elements were found")
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:  # a raw dataset: its encoding is what the parser detected
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit or implicit is None
            else ExplicitVRBigEndian if little is False else ExplicitVRLittleEndian
        )
    return ds


# ---------------------------------------------------------------------------------------------- header checks
def check_radiograph(ds: Dataset) -> None:
    """Refuse anything but a single-frame greyscale chest projection radiograph, from the header alone.

    Checked in this order, before any pixel is decoded: PixelData present; Modality in CR/DX/DR (case-insensitive);
    BodyPartExamined absent, empty or chest-like (containing CHEST, THORAX or LUNG, any case); one sample per pixel,
    MONOCHROME1/2 and PresentationLUTShape absent/IDENTITY/INVERSE; one frame; Rows and Columns in [32, 8192];
    BitsAllocated 8 or 16, BitsStored in [1, 16]; PixelRepresentation 0 or 1.

    Raises
    ------
    NotAnImageError, UnsupportedModalityError, NotChestError, UnsupportedPhotometricError, MultiFrameError,
    ImageDimensionError, UndecodablePixelDataError
    """
    _require_pixel_data(ds)
    modality = _text(ds, "Modality")
    if modality not in MODALITIES:
        got = f"{modality[:16]!r}" if modality else "none"
        raise UnsupportedModalityError("Modality", f"Modality must be one of {', '.join(MODALITIES)}; got {got}")
    body_part = _text(ds, "BodyPartExamined")
    if body_part and not any(part in body_part for part in CHEST_BODY_PARTS):
        raise NotChestError("BodyPartExamined", f"BodyPartExamined must be chest-like "
                                                f"({', '.join(CHEST_BODY_PARTS)}) or absent; got {body_part[:16]!r}")
    _check_pixel_module(ds)


def _require_pixel_data(ds: Dataset) -> None:
    if "PixelData" not in ds:
        raise NotAnImageError("PixelData", "PixelData is missing: the DICOM holds no image")


def _check_pixel_module(ds: Dataset) -> tuple[int, int]:
    """Image Pixel module checks shared by check_radiograph and decode_radiograph; returns (rows, columns)."""
    _require_pixel_data(ds)
    if _int(ds, "SamplesPerPixel", UnsupportedPhotometricError) != 1:
        raise UnsupportedPhotometricError("SamplesPerPixel", "SamplesPerPixel must be 1 (greyscale); "
                                                             "got a multi-sample (colour) image")
    photometric = _text(ds, "PhotometricInterpretation")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        got = f"{photometric[:16]!r}" if photometric else "none"
        raise UnsupportedPhotometricError("PhotometricInterpretation", "PhotometricInterpretation must be "
                                                                       f"MONOCHROME1 or MONOCHROME2; got {got}")
    if _text(ds, "PresentationLUTShape") not in ("", "IDENTITY", "INVERSE"):
        raise UnsupportedPhotometricError("PresentationLUTShape", "PresentationLUTShape must be IDENTITY or INVERSE")
    if "NumberOfFrames" in ds and _int(ds, "NumberOfFrames", MultiFrameError) > 1:
        raise MultiFrameError("NumberOfFrames", "NumberOfFrames must be 1; got a multi-frame image")
    rows = _int(ds, "Rows", ImageDimensionError)
    columns = _int(ds, "Columns", ImageDimensionError)
    for keyword, value in (("Rows", rows), ("Columns", columns)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise ImageDimensionError(keyword, f"{keyword} must be in [{MIN_SIDE}, {MAX_SIDE}]; got {value}")
    if _int(ds, "BitsAllocated", ImageDimensionError) not in (8, 16):
        raise ImageDimensionError("BitsAllocated", "BitsAllocated must be 8 or 16")
    bits_stored = _int(ds, "BitsStored", ImageDimensionError)
    if not 1 <= bits_stored <= min(MAX_BITS_STORED, int(ds.BitsAllocated)):
        raise ImageDimensionError("BitsStored", f"BitsStored must be in [1, {MAX_BITS_STORED}] and at most "
                                                "BitsAllocated")
    if _int(ds, "PixelRepresentation", UndecodablePixelDataError) not in (0, 1):
        raise UndecodablePixelDataError("PixelRepresentation", "PixelRepresentation must be 0 or 1")
    return rows, columns


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if not isinstance(value, str):  # a multi-valued CS; the first value decides
        value = value[0] if len(value) else ""
    return str(value).strip().upper()


def _int(ds: Dataset, keyword: str, error: type[ImagingInputError]) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        raise error(keyword, f"{keyword} is missing")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise error(keyword, f"{keyword} must be an integer") from exc


# ---------------------------------------------------------------------------------------------- decoding
def decode_radiograph(ds: Dataset) -> np.ndarray:
    """Decode a greyscale radiograph to a display-ready float32 image in [0, 1], higher = brighter.

    Steps: Image Pixel module checks (as in :func:`check_radiograph`, less Modality and BodyPartExamined);
    decode (pylibjpeg first, see :data:`DECODER_PREFERENCE`) and check the shape against Rows x Columns;
    Modality LUT (Modality LUT Sequence, else rescale slope/intercept); VOI (VOI LUT Sequence, else the first
    WindowCenter/WindowWidth, else a 0.5-99.5 % percentile window) scaled to [0, 1] over the VOI's output range;
    then inversion, exactly once, if PhotometricInterpretation is MONOCHROME1 or PresentationLUTShape is INVERSE
    (PS3.3 C.8.11.6 / C.11.6: INVERSE on MONOCHROME1 restates the same inversion; IDENTITY on MONOCHROME2 is none).
    A Presentation LUT Sequence is ignored. The photometric consistency check is separate
    (:func:`check_photometric_consistency`) so that non-chest images can be decoded.

    Raises
    ------
    UndecodablePixelDataError
        The codestream cannot be decoded, its shape contradicts the header, or a LUT/window is unusable.
    UnsupportedPhotometricError, MultiFrameError, ImageDimensionError, NotAnImageError
        From the header checks.
    """
    rows, columns = _check_pixel_module(ds)
    raw = _decode_pixels(ds)
    if raw.shape != (rows, columns):
        raise UndecodablePixelDataError("PixelData", f"PixelData decoded to shape {raw.shape}, but Rows x Columns "
                                                     f"is {rows} x {columns}")
    try:
        values = apply_modality_lut(raw, ds)
    except Exception as exc:  # malformed LUT descriptor/data in an untrusted header
        raise UndecodablePixelDataError("ModalityLUTSequence", "the Modality LUT could not be applied "
                                                               f"({type(exc).__name__})") from exc
    image = _apply_voi(np.asarray(values), ds)
    if _text(ds, "PhotometricInterpretation") == "MONOCHROME1" or _text(ds, "PresentationLUTShape") == "INVERSE":
        image = 1.0 - image
    return image.astype(np.float32)


def _decode_pixels(ds: Dataset) -> np.ndarray:
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not transfer_syntax:
        raise UndecodablePixelDataError("TransferSyntaxUID", "TransferSyntaxUID is missing from the file meta")
    try:
        decoder = get_decoder(transfer_syntax)
    except (NotImplementedError, ValueError, TypeError) as exc:
        raise UndecodablePixelDataError("TransferSyntaxUID", f"TransferSyntaxUID {transfer_syntax!s:.64} is not "
                                                             "supported") from exc
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
    raise UndecodablePixelDataError("PixelData", f"PixelData ({transfer_syntax!s:.64}) could not be decoded "
                                                 f"({'; '.join(failures)})") from last


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
            first_width = ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth
            if float(first_width) <= 0:
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
        raise UndecodablePixelDataError("VOILUTSequence" if has_lut else "WindowWidth",
                                        f"the VOI LUT/window could not be applied ({type(exc).__name__})") from exc
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
    band = image[int(0.3 * rows): max(int(0.7 * rows), int(0.3 * rows) + 1)]

    def median(lo: float, hi: float) -> float:
        return float(np.median(band[:, int(lo * columns): max(int(hi * columns), int(lo * columns) + 1)]))

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
    canvas[top: top + new_rows, left: left + new_columns] = image
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


def load_dicom_for_model(source: Dataset | bytes | str | os.PathLike[str] | BinaryIO,
                         size: int) -> tuple[np.ndarray, DicomImageInfo]:
    """Read, check, decode, check consistency and prepare a chest radiograph: ``([1, size, size], metadata)``.

    The photometric consistency rule assumes a frontal view: it is skipped when ViewPosition is lateral,
    decubitus or oblique (:data:`NON_FRONTAL_VIEWS`), and applied when ViewPosition is PA, AP, absent or other.
    """
    ds = read_dicom(source)
    check_radiograph(ds)
    image = decode_radiograph(ds)
    meta = dicom_metadata(ds)
    log.debug("decoded %s %s %dx%d (%s)", meta["modality"], meta["photometric"], meta["rows"], meta["columns"],
              meta["transfer_syntax"])
    if _text(ds, "ViewPosition") not in NON_FRONTAL_VIEWS:
        check_photometric_consistency(image)
    else:
        log.debug("photometric consistency rule skipped for a non-frontal view")
    return prepare_image(image, size), meta


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
        raise UndecodablePixelDataError("file", f"file could not be decoded as PNG or JPEG "
                                                f"({type(exc).__name__})") from exc
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
        raise UnsupportedPhotometricError("file", "file must be a greyscale image; got a colour image (channels "
                                                  f"differ on {coloured:.1%} of the pixels)")
    return (rgb.mean(axis=2) / 255.0).astype(np.float32)
