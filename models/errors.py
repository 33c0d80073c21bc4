"""One hierarchy for Vigil's domain errors.

Every error raised for bad input names the field and the problem. Values are only echoed where they are
not patient-identifying (a heart rate is, in isolation, not PHI; a name or an identifier would be).
``serving`` maps these to problem+json responses; the command line prints them and exits non-zero.
"""

from __future__ import annotations


class VigilError(Exception):
    """Base class of every error Vigil raises on purpose."""


class InputValidationError(VigilError, ValueError):
    """An input (record, CSV, config, DICOM) failed validation.

    Parameters
    ----------
    field : str
        The field (or column, or config key) at fault.
    message : str
        What is wrong, in words a user can act on.
    row : int or None
        The 1-based data row for tabular inputs, when known.
    """

    def __init__(self, field: str, message: str, row: int | None = None) -> None:
        self.field = field
        self.row = row
        self.message = message
        where = f"row {row}: " if row is not None else ""
        super().__init__(f"{where}{message}")


class RecordValidationErrors(VigilError, ValueError):
    """Several validation problems found at once (a whole record or a whole CSV).

    ``errors`` keeps every problem so a caller can report all of them, not only the first.
    """

    def __init__(self, errors: list[InputValidationError]) -> None:
        if not errors:
            raise ValueError("RecordValidationErrors needs at least one error")
        self.errors = errors
        shown = "; ".join(str(e) for e in errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        super().__init__(f"{len(errors)} validation error(s): {shown}{more}")


class DataSourceError(VigilError):
    """A dataset could not be found or read (missing file, wrong format, checksum mismatch)."""


class ConfigError(VigilError, ValueError):
    """A configuration file or setting is invalid; the message names the key."""


class ModelArtifactError(VigilError):
    """A model artefact is missing, corrupt, or does not match its record (checksum, metadata, parity)."""


class RegistryUnavailableError(ModelArtifactError):
    """The model registry could not be reached or read (server down, network, database error).

    Distinct from "the registry has no such model": only an unreachable registry lets serving fall back to its
    verified local cache of the last model it served; a registry that answers "no such version" is obeyed.
    """


class OutcomeConflictError(InputValidationError):
    """An outcome was fed back for a prediction that already has one (the store keeps the first; HTTP 409)."""

    http_status = 409


class StoreUnavailableError(VigilError):
    """The key or audit store cannot be reached or written; predictions must be refused (503), never served unaudited.

    The message names the store kind and its URL with any password masked, never a secret.
    """


# ---------------------------------------------------------------------------------------------- imaging
class ImagingInputError(InputValidationError):
    """A radiograph (DICOM, PNG or JPEG) was refused before or while turning it into model input.

    ``field`` is the DICOM keyword at fault (``"Modality"``, ``"Rows"``, ...) or ``"file"`` when the problem is
    the file as a whole. Messages echo only technical header values (Modality, PhotometricInterpretation, Rows,
    Columns, TransferSyntaxUID, BodyPartExamined), never identifiers.
    """


class NotAnImageError(ImagingInputError):
    """The input is not DICOM (or not a readable DICOM dataset), or it holds no pixel data."""


class UnsupportedModalityError(ImagingInputError):
    """The DICOM Modality is not a projection radiograph (CR, DX, DR), or it is missing."""


class NotChestError(ImagingInputError):
    """BodyPartExamined names a body part other than the chest."""


class UnsupportedPhotometricError(ImagingInputError):
    """The image is not single-sample greyscale (MONOCHROME1/2): RGB, YBR, PALETTE COLOR, or a colour PNG/JPEG."""


class MultiFrameError(ImagingInputError):
    """The DICOM holds more than one frame; one radiograph per instance is expected."""


class UndecodablePixelDataError(ImagingInputError):
    """The pixel data could not be decoded (broken codestream, no decoder) or does not match the header."""


class PhotometricMismatchError(ImagingInputError):
    """The PhotometricInterpretation contradicts the pixel data (the displayed image looks inverted)."""


class ImageDimensionError(ImagingInputError):
    """Rows, Columns or bit depth are outside the supported range (checked before any pixel is decoded)."""


class OutsideIntendedUseError(ImagingInputError):
    """No finding of the served model is released for this image's population (age, view), or none is released at
    all: there is no result to report as a structured report or heat map. ``field`` names the deciding attribute
    (``PatientAge``, ``ViewPosition``) or ``findings``."""


class NonFrontalViewError(ImagingInputError):
    """ViewPosition (or a view given with a PNG/JPEG) names a lateral, decubitus, oblique or cross-table view: the
    model reads frontal (PA/AP) chest radiographs only."""


class ImageQualityError(ImagingInputError):
    """The pixels are plainly not a radiograph (the quality gate of :mod:`models.imaging.quality`).

    ``field`` is the input at fault (``"PixelData"``, ``"file"`` or ``"image"``); ``check`` the gate's rule
    (``"blank"``, ``"noise"``, ``"graphics"``, ``"histogram"``); ``statistic`` the measured statistic's name,
    ``value`` its value and ``limit`` the limit it broke. No header value is echoed.
    """

    def __init__(self, field: str, message: str, *, check: str, statistic: str, value: float, limit: float) -> None:
        super().__init__(field, message)
        self.check = check
        self.statistic = statistic
        self.value = value
        self.limit = limit


class BlankImageError(ImageQualityError):
    """The image is blank or uniform (every pixel zeroed, one grey level)."""


class NoiseImageError(ImageQualityError):
    """Neighbouring pixels are unrelated: noise, not an image of anatomy."""


class GraphicsImageError(ImageQualityError):
    """Almost no mid-grey, most pixels at one extreme: text, a chart or other graphics."""


class ImplausibleHistogramError(ImageQualityError):
    """The grey-level histogram is implausible for a radiograph (one spike, or too few levels used)."""
