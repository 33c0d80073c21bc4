"""The generated inputs of the imaging safety suite (:mod:`evaluation.safety_imaging`): perturbations and cases.

- perturbations of a display image (:func:`shift_window_centre`, :func:`change_contrast`, :func:`reorient`) and the
  plan of them applied to each film (:func:`perturbation_plan`, :func:`apply_perturbation`);
- the films supplied, read through the one pixel path (:func:`load_films`), and a display image written back as a
  DICOM (:func:`film_to_dicom`);
- the refusal cases, seeded: blank and uniform images, noise, text and graphics (arrays and DICOMs), and every film
  re-sent as a lateral view (:func:`lateral_cases`). Each case is a description and an attempt: a call into the pixel
  path that must raise.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from models.errors import ImagingInputError
from models.imaging import pixels as imaging
from models.imaging.dicom_read import read_dicom
from models.imaging.header import check_radiograph
from models.imaging.image_file import load_image_file

#: Largest window-centre shift and contrast change, as fractions (the first two of each perturbation are these).
WINDOW_CENTRE_SHIFT: Final = 0.10
CONTRAST_CHANGE: Final = 0.20
#: ViewPosition values of the lateral, decubitus and cross-table views the pixel path must refuse.
LATERAL_VIEWS: Final = ("LL", "RL", "LATERAL", "XTABLE", "LLD", "RLD")
ORIENTATIONS: Final = ("vertical_flip", "rotate_90", "rotate_180", "rotate_270")
_DICOM_SUFFIXES: Final = ("", ".dcm", ".dicom")

#: A generated refusal case: its description (plain JSON values) and the pixel-path call that must refuse it.
RefusalCase = tuple[dict[str, Any], Callable[[], object]]


# ---------------------------------------------------------------------------------------------- perturbations
def shift_window_centre(image: np.ndarray, shift: float) -> np.ndarray:
    """Move the display window's centre by ``shift`` (a fraction of the centre, 0.5): ``clip(x - 0.5 shift)``."""
    return np.clip(image - 0.5 * shift, 0.0, 1.0).astype(np.float32)


def change_contrast(image: np.ndarray, change: float) -> np.ndarray:
    """Steepen (``change`` > 0) or flatten the display curve about mid-grey: ``clip(0.5 + (x - 0.5)(1 + c))``."""
    return np.clip(0.5 + (image - 0.5) * (1.0 + change), 0.0, 1.0).astype(np.float32)


def reorient(image: np.ndarray, orientation: str) -> np.ndarray:
    """One of :data:`ORIENTATIONS` or ``"horizontal_flip"``."""
    ops: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "horizontal_flip": lambda x: x[:, ::-1],
        "vertical_flip": lambda x: x[::-1],
        "rotate_90": lambda x: np.rot90(x, 1),
        "rotate_180": lambda x: np.rot90(x, 2),
        "rotate_270": lambda x: np.rot90(x, 3),
    }
    return np.ascontiguousarray(ops[orientation](image))


def perturbation_plan(rng: np.random.Generator, n: int) -> list[tuple[str, str, float | None]]:
    """``(family, label, amount)`` per perturbation of one film."""

    def amounts(limit: float) -> list[float]:
        drawn = list(rng.uniform(-limit, limit, max(0, n - 2)))
        return ([limit, -limit] + [float(v) for v in drawn])[:n]

    plan: list[tuple[str, str, float | None]] = []
    plan += [("window_centre", f"window centre {v:+.1%}", v) for v in amounts(WINDOW_CENTRE_SHIFT)]
    plan += [("contrast", f"contrast {v:+.1%}", v) for v in amounts(CONTRAST_CHANGE)]
    plan += [("horizontal_flip", "horizontal flip", None)]
    plan += [("orientation", o.replace("_", " "), None) for o in ORIENTATIONS]
    return plan


def apply_perturbation(image: np.ndarray, family: str, label: str, amount: float | None) -> np.ndarray:
    """``image`` perturbed as one ``(family, label, amount)`` entry of :func:`perturbation_plan` says."""
    if family == "window_centre":
        return shift_window_centre(image, float(amount or 0.0))
    if family == "contrast":
        return change_contrast(image, float(amount or 0.0))
    if family == "horizontal_flip":
        return reorient(image, "horizontal_flip")
    return reorient(image, label.replace(" ", "_"))


# ---------------------------------------------------------------------------------------------- inputs
def load_films(images: Sequence[np.ndarray | str | Path]) -> list[tuple[str, np.ndarray | None, str | None]]:
    """``(name, display image or None, refusal or None)`` per film; a film the pixel path refuses keeps its reason.

    Paths with no suffix, ``.dcm`` or ``.dicom`` are read as DICOM (header checks, decoding), others as PNG/JPEG.
    """
    films: list[tuple[str, np.ndarray | None, str | None]] = []
    for i, item in enumerate(images):
        name = Path(item).name if isinstance(item, (str, Path)) else f"array-{i}"
        try:
            is_dicom = isinstance(item, (str, Path)) and Path(item).suffix.lower() in _DICOM_SUFFIXES
            if is_dicom and isinstance(item, (str, Path)):
                ds = read_dicom(item)
                check_radiograph(ds)
                display = imaging.decode_radiograph(ds)
            elif isinstance(item, (str, Path)):
                display = load_image_file(item)
            else:
                display = np.asarray(item, dtype=np.float32)
            imaging.model_input(display, 8, check_consistency=is_dicom)  # the gate (size is irrelevant here)
            films.append((name, display, None))
        except ImagingInputError as exc:
            films.append((name, None, f"{type(exc).__name__} ({exc.field})"))
    return films


def film_to_dicom(image: np.ndarray, **header: str) -> bytes:
    """A display image as a DX For Presentation DICOM (16-bit MONOCHROME2, CHEST, PA), ``header`` overriding."""
    pixels = np.rint(np.clip(image, 0.0, 1.0) * 4095).astype("<u2")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- generated refusals
def blank_cases(rng: np.random.Generator, n: int) -> list[RefusalCase]:
    """``n`` uniform arrays (black, white and mid-grey first) and a quarter as many all-zero DICOMs (at least one)."""
    cases: list[RefusalCase] = []
    for i in range(n):
        size = int(rng.integers(64, 513))
        level = (0.0, 1.0, 0.5)[i] if i < 3 else float(rng.random())
        array = np.full((size, size), level, dtype=np.float32)
        cases.append(
            ({"kind": "uniform array", "level": round(level, 3), "side": size}, partial(imaging.model_input, array, 64))
        )
        if i < max(1, n // 4):  # all-zero DICOMs: the safety review's case, as stored values
            data = film_to_dicom(np.zeros((size, size), dtype=np.float32))
            cases.append(({"kind": "all-zero DICOM", "side": size}, partial(imaging.load_dicom_for_model, data, 64)))
    return cases


def noise_cases(rng: np.random.Generator, n: int) -> list[RefusalCase]:
    """``n`` uniform, Gaussian and salt-and-pepper noise arrays in turn, the first quarter also as DICOMs."""
    cases: list[RefusalCase] = []
    for i in range(n):
        size = int(rng.integers(64, 513))
        kind = ("uniform", "gaussian", "salt and pepper")[i % 3]
        if kind == "uniform":
            array = rng.random((size, size))
        elif kind == "gaussian":
            array = np.clip(0.5 + 0.15 * rng.standard_normal((size, size)), 0, 1)
        else:
            array = (rng.random((size, size)) < 0.5).astype(np.float64)
        array = array.astype(np.float32)
        cases.append(({"kind": f"{kind} noise array", "side": size}, partial(imaging.model_input, array, 64)))
        if i < max(1, n // 4):
            data = film_to_dicom(array)
            cases.append(
                ({"kind": f"{kind} noise DICOM", "side": size}, partial(imaging.load_dicom_for_model, data, 64))
            )
    return cases


def _text_image(rng: np.random.Generator, size: int, dark_on_light: bool) -> np.ndarray:
    background, ink = (255, 0) if dark_on_light else (0, 255)
    picture = Image.new("L", (size, size), background)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(10, size // 16))
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz0123456789"))
    for row in range(size // max(12, size // 12)):
        line = "".join(rng.choice(letters, 40))
        draw.text((4, 4 + row * max(12, size // 12)), line, fill=ink, font=font)
    return np.asarray(picture, dtype=np.float32) / 255.0


def _chart_image(rng: np.random.Generator, size: int) -> np.ndarray:
    picture = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(picture)
    bars = int(rng.integers(3, 10))
    width = size // (bars + 1)
    for b in range(bars):
        height = int(rng.integers(size // 10, size - 10))
        draw.rectangle((b * width + 5, size - height, (b + 1) * width - 5, size - 5), fill=int(rng.integers(0, 60)))
    draw.line((2, 2, 2, size - 2), fill=0, width=2)
    draw.line((2, size - 3, size - 2, size - 3), fill=0, width=2)
    return np.asarray(picture, dtype=np.float32) / 255.0


def graphics_cases(rng: np.random.Generator, n: int) -> list[RefusalCase]:
    """``n`` text, bar-chart and checkerboard images in turn, the first quarter also as DICOMs."""
    cases: list[RefusalCase] = []
    for i in range(n):
        size = int(rng.integers(128, 513))
        kind = ("black text on white", "white text on black", "bar chart", "checkerboard")[i % 4]
        if kind == "bar chart":
            array = _chart_image(rng, size)
        elif kind == "checkerboard":
            square = int(rng.integers(2, 33))
            array = ((np.indices((size, size)) // square).sum(axis=0) % 2).astype(np.float32)
        else:
            array = _text_image(rng, size, dark_on_light=kind.startswith("black"))
        cases.append(({"kind": kind, "side": size}, partial(imaging.model_input, array, 64)))
        if i < max(1, n // 4):
            data = film_to_dicom(array)
            cases.append(({"kind": f"{kind} DICOM", "side": size}, partial(imaging.load_dicom_for_model, data, 64)))
    return cases


def lateral_cases(films: Sequence[tuple[str, np.ndarray]], size: int) -> list[RefusalCase]:
    """Every ``(name, display image)`` film re-encoded as a DICOM with each of :data:`LATERAL_VIEWS`."""
    lateral: list[RefusalCase] = []
    for name, display in films:
        for view in LATERAL_VIEWS:
            data = film_to_dicom(display, ViewPosition=view)
            lateral.append(({"film": name, "ViewPosition": view}, partial(imaging.load_dicom_for_model, data, size)))
    return lateral
