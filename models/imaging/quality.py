"""The quality / out-of-distribution gate and the intensity normalisation of the one chest X-ray pixel path.

Both act on a display image (float [0, 1], higher = brighter: what :func:`models.imaging.pixels.decode_radiograph` and
:func:`models.imaging.image_file.load_image_file` return), after windowing and before the model input is made.

**Gate** (:func:`check_image_quality`). Statistics (:func:`image_statistics`) are computed on a strided sample of
the image (every ``k``-th pixel so that the longest side has at most :data:`STATS_SIDE` samples; no smoothing, so
noise stays noise at any resolution). Checked in this order, each refusal an
:class:`~models.errors.ImageQualityError` subclass whose ``check`` and ``statistic`` name the rule:

==================== ========================= ========= ================================================
check                statistic                 accepted  real images: NIH 1,000 (64 px) / Kermany 5,216
                                                         (224 px) / the 14 decodable DICOM fixtures
==================== ========================= ========= ================================================
``blank``            ``std``                   >= 0.04   min 0.173 / 0.149 / 0.153
``graphics``         ``mid_grey_fraction``     >= 0.15   min 0.453 / 0.276 / 0.297
``graphics``         ``extreme_fraction``      <= 0.70   max 0.294 / 0.359 / 0.478
``graphics``         ``top_values_fraction``   <= 0.75   max 0.314 / 0.360 / 0.501
``histogram``        ``peak_bin_fraction``     <= 0.60   max 0.278 / 0.348 / 0.478
``histogram``        ``histogram_entropy``     >= 2.0    min 4.167 / 3.385 / 3.235
``noise``            ``neighbour_correlation`` >= 0.50   min 0.774 / 0.924 / 0.951
==================== ========================= ========= ================================================

``std`` is the pixel standard deviation; ``neighbour_correlation`` the smaller lag-1 autocorrelation (along rows,
along columns); ``mid_grey_fraction`` the fraction of pixels in (0.15, 0.85); ``extreme_fraction`` the larger of the
fractions below 0.05 and above 0.95; ``peak_bin_fraction`` and ``histogram_entropy`` (bits) of a 32-bin histogram.
Errors: ``blank`` :class:`~models.errors.BlankImageError`, ``noise`` :class:`~models.errors.NoiseImageError`,
``graphics`` :class:`~models.errors.GraphicsImageError`, ``histogram``
:class:`~models.errors.ImplausibleHistogramError`. Refusal rate on those real sets (2026-12-02): 0 / 1,000 NIH,
0 / 5,216 Kermany, 0 / 6 further NIH PNGs at 128 and 512 px, 0 / 8 valid chest DICOM fixtures (chest/, derived/);
the non-chest fixtures of other_cr/ pass the gate too and are refused, as before, by BodyPartExamined or the
photometric consistency rule.

A blank or constant image (std 0), black text on white or a chart (almost no mid-grey; text also has a low
neighbour correlation, about 0.5, so the graphics checks come first to name it), two-level or one-spike histograms
and uniform or Gaussian noise (neighbour correlation about 0; binary salt-and-pepper noise has no mid-grey and is
refused as graphics) are refused; no image of those real sets is
(above). The limits are set well outside the real
range, not at its edge: the gate is for what is plainly not a radiograph, not for a poor radiograph.

**Views** (:func:`check_view`): lateral, decubitus and oblique views (ViewPosition LL, RL, LLD, RLD, LLO, RLO,
LATERAL, LAT, XTABLE, cross-table, ...) are refused with :class:`~models.errors.NonFrontalViewError`: the model
reads frontal (PA/AP) chest films only, as its card says. An absent or other value is accepted.

**Normalisation** (:func:`equalise_histogram`): mid-rank histogram equalisation. Each pixel becomes the fraction
of the image's (sampled) pixels below it plus half of those equal to it, so any monotone change of the display
curve (window centre, window width, gamma) leaves the model input unchanged except where it clips values together.
Measured effect: see ``evaluation/safety_imaging.py``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Final

import numpy as np

from models.errors import (
    BlankImageError,
    GraphicsImageError,
    ImageQualityError,
    ImplausibleHistogramError,
    NoiseImageError,
    NonFrontalViewError,
)

#: Longest side of the strided sample the statistics and the equalisation's histogram are computed on.
STATS_SIDE: Final = 256
MIN_STD: Final = 0.04
MIN_NEIGHBOUR_CORRELATION: Final = 0.5
MID_GREY: Final = (0.15, 0.85)
MIN_MID_GREY_FRACTION: Final = 0.15
EXTREMES: Final = (0.05, 0.95)
MAX_EXTREME_FRACTION: Final = 0.7
#: The most frequent exact grey values counted, and the largest share of pixels they may cover: a chart or text
#: image is a handful of flat fills (>= 0.84 of pixels in 8 values, 250 generated), a film is not (<= 0.50 over
#: 6,216 NIH and Kermany images and the DICOM fixtures).
TOP_VALUES: Final = 8
MAX_TOP_VALUES_FRACTION: Final = 0.75
HISTOGRAM_BINS: Final = 32
MAX_PEAK_BIN_FRACTION: Final = 0.6
MIN_HISTOGRAM_ENTROPY: Final = 2.0
#: ViewPosition defined terms (PS3.3 C.8.11.5 / C.8.11.7) and common free variants that are not a frontal view.
NON_FRONTAL_VIEWS: Final = (
    "LL",
    "RL",
    "LLD",
    "RLD",
    "LLO",
    "RLO",
    "LAT",
    "LATERAL",
    "XTABLE",
    "X-TABLE",
    "CROSSTABLE",
    "CROSS-TABLE",
    "OBL",
    "OBLIQUE",
    "DECUBITUS",
    "SWIMMERS",
    "LORDOTIC",
)
_NON_FRONTAL_WORD: Final = re.compile(
    r"(^|[^A-Z])(LAT(ERAL)?|X-?TABLE|CROSS-?TABLE|OBL(IQUE)?|DECUB(ITUS)?|"
    r"LLD|RLD|LLO|RLO|LL|RL)([^A-Z]|$)"
)


@dataclass(frozen=True)
class ImageStatistics:
    """What the gate measures on a display image (all in display units or fractions of pixels)."""

    std: float
    neighbour_correlation: float
    mid_grey_fraction: float
    extreme_fraction: float
    peak_bin_fraction: float
    histogram_entropy: float
    top_values_fraction: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}


#: Fraction of a film's darkest and of its brightest pixels merged into one grey level before equalisation.
TAIL_FRACTION: float = 0.10


def _sample(image: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil(max(image.shape) / STATS_SIDE))
    return np.asarray(image[::step, ::step], dtype=np.float64)


def _neighbour_correlation(sample: np.ndarray) -> float:
    """The smaller of the lag-1 autocorrelations along rows and along columns (0 for a constant sample)."""
    centred = sample - sample.mean()
    variance = float((centred * centred).mean())
    if variance <= 0.0 or min(sample.shape) < 2:
        return 0.0
    along_rows = float((centred[:, 1:] * centred[:, :-1]).mean()) / variance
    along_columns = float((centred[1:] * centred[:-1]).mean()) / variance
    return min(along_rows, along_columns)


def image_statistics(image: np.ndarray) -> ImageStatistics:
    """The gate's statistics of a display image (2-D, values in [0, 1]); see the module docstring."""
    sample = _sample(image)
    counts = np.histogram(sample, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0] / sample.size
    nonzero = counts[counts > 0]
    value_counts = np.unique(sample, return_counts=True)[1]
    return ImageStatistics(
        std=float(sample.std()),
        neighbour_correlation=_neighbour_correlation(sample),
        mid_grey_fraction=float(np.mean((sample > MID_GREY[0]) & (sample < MID_GREY[1]))),
        extreme_fraction=max(float(np.mean(sample < EXTREMES[0])), float(np.mean(sample > EXTREMES[1]))),
        peak_bin_fraction=float(counts.max()),
        histogram_entropy=float(-(nonzero * np.log2(nonzero)).sum()),
        top_values_fraction=float(np.sort(value_counts)[::-1][:TOP_VALUES].sum() / sample.size),
    )


def _refuse(
    error: type[ImageQualityError],
    field: str,
    check: str,
    statistic: str,
    value: float,
    limit: float,
    relation: str,
    what: str,
) -> ImageQualityError:
    return error(
        field,
        f"{field} is not a radiograph: {what} (check '{check}': {statistic} {value:.3f} {relation} {limit:g})",
        check=check,
        statistic=statistic,
        value=value,
        limit=limit,
    )


def check_image_quality(image: np.ndarray, *, field: str = "PixelData") -> ImageStatistics:
    """Refuse a display image that is blank, uniform, noise, text or graphics, or has an implausible histogram.

    Returns the statistics of an accepted image. ``field`` is what the error names: ``"PixelData"`` for a DICOM,
    ``"file"`` for a PNG/JPEG, ``"image"`` for an array.

    Raises
    ------
    BlankImageError, NoiseImageError, GraphicsImageError, ImplausibleHistogramError
        Each an :class:`~models.errors.ImageQualityError` with ``check``, ``statistic``, ``value`` and ``limit``.
    """
    stats = image_statistics(image)
    if stats.std < MIN_STD:
        raise _refuse(BlankImageError, field, "blank", "std", stats.std, MIN_STD, "<", "the image is blank or uniform")
    if stats.mid_grey_fraction < MIN_MID_GREY_FRACTION:
        raise _refuse(
            GraphicsImageError,
            field,
            "graphics",
            "mid_grey_fraction",
            stats.mid_grey_fraction,
            MIN_MID_GREY_FRACTION,
            "<",
            "almost no mid-grey, as in text or graphics",
        )
    if stats.extreme_fraction > MAX_EXTREME_FRACTION:
        raise _refuse(
            GraphicsImageError,
            field,
            "graphics",
            "extreme_fraction",
            stats.extreme_fraction,
            MAX_EXTREME_FRACTION,
            ">",
            "most pixels are at one extreme, as in text or graphics",
        )
    if stats.peak_bin_fraction > MAX_PEAK_BIN_FRACTION:
        raise _refuse(
            ImplausibleHistogramError,
            field,
            "histogram",
            "peak_bin_fraction",
            stats.peak_bin_fraction,
            MAX_PEAK_BIN_FRACTION,
            ">",
            "most pixels share one grey level",
        )
    if stats.histogram_entropy < MIN_HISTOGRAM_ENTROPY:
        raise _refuse(
            ImplausibleHistogramError,
            field,
            "histogram",
            "histogram_entropy",
            stats.histogram_entropy,
            MIN_HISTOGRAM_ENTROPY,
            "<",
            "too few grey levels are used",
        )
    if stats.top_values_fraction > MAX_TOP_VALUES_FRACTION:
        raise _refuse(
            GraphicsImageError,
            field,
            "graphics",
            "top_values_fraction",
            stats.top_values_fraction,
            MAX_TOP_VALUES_FRACTION,
            ">",
            f"the {TOP_VALUES} commonest grey values cover most pixels, as in a chart or text",
        )
    if stats.neighbour_correlation < MIN_NEIGHBOUR_CORRELATION:
        raise _refuse(
            NoiseImageError,
            field,
            "noise",
            "neighbour_correlation",
            stats.neighbour_correlation,
            MIN_NEIGHBOUR_CORRELATION,
            "<",
            "neighbouring pixels are unrelated, as in noise",
        )
    return stats


def is_non_frontal_view(view: str) -> bool:
    """Whether a ViewPosition-like value (any case) names a lateral, decubitus, oblique or cross-table view."""
    value = view.strip().upper()
    return value in NON_FRONTAL_VIEWS or bool(_NON_FRONTAL_WORD.search(value))


def check_view(view: str | None, *, field: str = "ViewPosition") -> None:
    """Refuse a non-frontal view (lateral, decubitus, oblique, cross-table); absent, PA, AP and others pass.

    The value is echoed only when it is one of :data:`NON_FRONTAL_VIEWS` (a defined term, never an identifier).

    Raises
    ------
    NonFrontalViewError
        ``field`` (``"ViewPosition"`` by default).
    """
    if not view or not is_non_frontal_view(view):
        return
    value = view.strip().upper()
    shown = f"'{value}'" if value in NON_FRONTAL_VIEWS else "a non-frontal view"
    raise NonFrontalViewError(
        field,
        f"{field} must be a frontal view (PA or AP) or absent; got {shown}: the model "
        "reads frontal chest radiographs only",
    )


def equalise_histogram(image: np.ndarray, tail_fraction: float | None = None) -> np.ndarray:
    """Mid-rank histogram equalisation of a display image, its tails merged first: float32 in [0, 1].

    Tails (since ``cxr-pixels/3``): the image is clipped to the ``tail_fraction`` and ``1 - tail_fraction``
    quantiles of its sample (default :data:`TAIL_FRACTION`), so its darkest and brightest tenth each become one grey
    level. A display-window change (centre or width) that saturates less than that fraction at either end then
    leaves the equalised image as it was, up to float32 rounding: a monotone change keeps every rank, and the
    pixels it saturates were merged already. Measured on the training films, the safety suite's +-10 % window /
    +-20 % contrast saturate a median 7-10 % of pixels at an end (99th percentile 24-31 %); the rest is left to
    training augmentation (``training.train_imaging.saturate``).

    The cumulative distribution is taken over the strided sample of :func:`image_statistics` (at most
    :data:`STATS_SIDE` per side): a value ``v`` of the sample maps to ``(#{s < v} + #{s == v} / 2) / n``; values
    between sample values are interpolated linearly, below the smallest or above the largest clamp to those ends.
    A constant image maps to 0.5 everywhere.
    """
    q = TAIL_FRACTION if tail_fraction is None else tail_fraction
    sample = _sample(image)
    if q > 0:
        low, high = np.quantile(sample, [q, 1.0 - q])
        sample = np.clip(sample, low, high)
        image = np.clip(image, low, high)
    values, counts = np.unique(sample, return_counts=True)
    below = np.cumsum(counts) - counts
    mid_rank = (below + counts / 2.0) / counts.sum()
    if len(values) == 1:
        return np.full(image.shape, 0.5, dtype=np.float32)
    return np.interp(np.asarray(image, dtype=np.float64), values, mid_rank).astype(np.float32)
