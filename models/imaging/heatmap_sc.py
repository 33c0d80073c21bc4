"""The heat-map Secondary Capture of a chest X-ray second read, stored by a workstation next to the SR.

:func:`build_heatmap_sc` makes it with highdicom's :class:`highdicom.sc.SCImage` (``from_ref_dataset``): a Secondary
Capture Image (SOP Class 1.2.840.10008.5.1.4.1.1.7), Modality OT, RGB 8 bit, Explicit VR Little Endian, in the
source's study and a new series (:data:`HEATMAP_SERIES_NUMBER`), with new UIDs each time. highdicom writes the
patient and study attributes of the source (so a PACS files it in the same study), the SOP common and equipment
attributes (Manufacturer; in ContributingEquipmentSequence the source's acquisition equipment and highdicom itself),
the content date and time and the image pixel module. What highdicom has no argument for, or writes otherwise than
Vigil does, is set on the instance afterwards:

- SourceImageSequence (the source image), DerivationDescription and BurnedInAnnotation NO: no argument;
- IssuerOfPatientID and StudyDescription, copied from the source: no argument;
- BodyPartExamined, copied when the source has a valid one: no argument; it also tells a validator that the body
  part is not paired, so that Laterality is not required (dciodvfy reports it missing otherwise);
- ImageType DERIVED\\SECONDARY (highdicom adds OTHER as a third value) and ConversionType WSD, workstation
  (highdicom writes DI, digitized image, which the heat map is not);
- PatientOrientation empty (Type 2: not stated), as before: highdicom requires a value for a patient image;
- PatientName and ReferringPhysicianName as the source has them: highdicom warns, quoting the name, when a name has
  no ``^``, so it is given them empty;
- SpecificCharacterSet when highdicom refuses a term pydicom knows (ISO_IR 6, an empty first value, several
  values): the source's, as it is.

Source values highdicom would refuse are written empty (Type 2), as in the SR: a PatientBirthDate, StudyDate or
StudyTime that is not a valid DA or TM, a PatientSex other than M, F or O. An AccessionNumber, StudyID or PatientID
longer than its VR allows is written empty too (:func:`models.imaging.source_header.blank_overlong_identifiers`),
and a SpecificCharacterSet that DICOM does not define becomes UTF-8 (ISO_IR 192). Each is logged by keyword, never
value.
"""

from __future__ import annotations

import copy
import io
import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import highdicom as hd
import numpy as np
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from models.errors import InputValidationError
from models.imaging.source_header import blank_invalid_dates, blank_overlong_identifiers

if TYPE_CHECKING:
    from models.imaging.onnx import SecondRead

__all__ = [
    "DERIVATION_DESCRIPTION",
    "HEATMAP_SERIES_DESCRIPTION",
    "HEATMAP_SERIES_NUMBER",
    "build_heatmap_sc",
    "heatmap_secondary_capture",
]

logger = logging.getLogger(__name__)

HEATMAP_SERIES_NUMBER: Final = 9902
HEATMAP_SERIES_DESCRIPTION: Final = "Vigil heat map (decision support, not for diagnosis)"
DERIVATION_DESCRIPTION: Final = "Class-activation heat map overlaid on the model input; decision support only"

#: Attributes the SC must reference or file under: without them there is nothing to point at.
_REQUIRED_SOURCE_UIDS: Final = ("StudyInstanceUID", "SOPClassUID", "SOPInstanceUID")
#: What highdicom reads from the reference dataset: patient and study (``from_ref_dataset``) and the source's
#: acquisition equipment (``ContributingEquipment.for_image_acquisition``).
_REFERENCE_KEYWORDS: Final = (
    "SOPClassUID",
    "StudyInstanceUID",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "DeviceSerialNumber",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "InstitutionAddress",
    "StationName",
    "AcquisitionDateTime",
    "AcquisitionDate",
    "AcquisitionTime",
)
#: Copied from the source after construction, when it has them: highdicom has no argument for the last two and
#: warns with the value itself on a name without ``^`` (it is given the names empty).
_COPIED_AS_THEY_ARE: Final = ("PatientName", "ReferringPhysicianName", "IssuerOfPatientID", "StudyDescription")
_PATIENT_SEX_VALUES: Final = frozenset({"M", "F", "O"})
#: Single-valued SpecificCharacterSet terms highdicom accepts (it refuses ISO_IR 6 and a lone ISO 2022 term).
_HIGHDICOM_CHARACTER_SETS: Final = frozenset(
    term.value for term in hd.SpecificCharacterSetValues if not term.value.startswith("ISO 2022")
)
#: A valid Code String (CS, PS3.5 6.2): upper-case letters, digits, space and underscore, at most 16 characters.
_CODE_STRING: Final = re.compile(r"[A-Z0-9 _]{1,16}")
_LO_MAX: Final = 64


def _reference_header(source: Dataset) -> Dataset:
    """A copy of what highdicom reads from the source, with each value it would refuse written empty (Type 2)."""
    header = Dataset()
    for keyword in _REFERENCE_KEYWORDS:
        if keyword in source:
            header[keyword] = copy.deepcopy(source[keyword])  # blanking a value later must not touch the source
    sex = header.get("PatientSex")
    if sex is not None and str(sex) != "" and str(sex) not in _PATIENT_SEX_VALUES:
        header.PatientSex = ""
        logger.info("source PatientSex is not M, F or O; written empty in the heat-map SC")
    blank_invalid_dates(header, "heat-map SC")
    blank_overlong_identifiers(header, "heat-map SC")
    return header


def _character_set(source: Dataset) -> tuple[str | None, bool]:
    """The SpecificCharacterSet to give highdicom, and whether to copy the source's after construction instead.

    The text the SC copies is already decoded, so any character set that represents it will do: the source's when
    pydicom knows each of its terms (given to highdicom where it accepts it), else UTF-8 (ISO_IR 192).
    """
    value = source.get("SpecificCharacterSet")
    if value is None:
        return None, False
    terms = [str(term).strip() for term in ([value] if isinstance(value, str) else value)]
    if len(terms) == 1 and terms[0] in _HIGHDICOM_CHARACTER_SETS:
        return terms[0], False
    if all(term in python_encoding for term in terms):
        return None, True
    logger.info("source SpecificCharacterSet is not a defined term; the heat-map SC is written in UTF-8")
    return "ISO_IR 192", False


def build_heatmap_sc(source: Dataset, rgb: np.ndarray, *, manufacturer: str = "Vigil") -> hd.sc.SCImage:
    """Build the Secondary Capture of a heat map drawn over the model input of ``source``.

    Parameters
    ----------
    source : pydicom.Dataset
        The radiograph that was read (header enough; its pixel data is not used). Needs StudyInstanceUID,
        SOPClassUID and SOPInstanceUID; patient and study attributes it lacks are written empty.
    rgb : numpy.ndarray
        The heat map over the model input: ``uint8`` of shape ``(rows, columns, 3)``, RGB.
    manufacturer : str
        Manufacturer of the SC (General Equipment).

    Returns
    -------
    highdicom.sc.SCImage
        A new instance (new SOP Instance and Series Instance UIDs) in the source's study, series
        :data:`HEATMAP_SERIES_NUMBER`, described by :data:`HEATMAP_SERIES_DESCRIPTION` and
        :data:`DERIVATION_DESCRIPTION`, that references ``source`` in SourceImageSequence.

    Raises
    ------
    InputValidationError
        Naming the argument, or the source's DICOM keyword, at fault.
    """
    for keyword in _REQUIRED_SOURCE_UIDS:
        if not str(source.get(keyword, "") or "").strip():
            raise InputValidationError(
                keyword, f"the source image has no {keyword}; the heat-map SC cannot reference it"
            )
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        shown = f"{rgb.dtype} of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise InputValidationError("rgb", f"rgb must be uint8 of shape (rows, columns, 3); got {shown}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InputValidationError("rgb", f"rgb must have at least one row and one column; got shape {rgb.shape}")
    if (
        not isinstance(manufacturer, str)
        or not manufacturer.strip()
        or len(manufacturer) > _LO_MAX
        or "\\" in manufacturer
        or any(ord(c) < 32 for c in manufacturer)
    ):
        raise InputValidationError(
            "manufacturer", f"manufacturer must be 1 to {_LO_MAX} characters with no backslash or control character"
        )
    character_set, copy_character_set = _character_set(source)
    now = datetime.now(UTC)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=_reference_header(source),
        pixel_array=np.ascontiguousarray(rgb),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=("L", "F"),  # required by highdicom; replaced below by the empty value Vigil writes
        series_instance_uid=generate_uid(),
        series_number=HEATMAP_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=manufacturer,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=HEATMAP_SERIES_DESCRIPTION,
        content_date=f"{now:%Y%m%d}",
        content_time=f"{now:%H%M%S}",
        specific_character_set=character_set,
    )
    # What highdicom has no argument for, or writes otherwise (see the module docstring).
    copied = ("SpecificCharacterSet", *_COPIED_AS_THEY_ARE) if copy_character_set else _COPIED_AS_THEY_ARE
    for keyword in copied:
        if keyword in source:
            sc[keyword] = copy.deepcopy(source[keyword])
    body_part = source.get("BodyPartExamined")
    if isinstance(body_part, str) and _CODE_STRING.fullmatch(body_part):
        sc.BodyPartExamined = body_part
    sc.PatientOrientation = []  # empty (Type 2)
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"
    sc.BurnedInAnnotation = "NO"
    sc.DerivationDescription = DERIVATION_DESCRIPTION
    # highdicom writes these in the host's local time; every other time Vigil writes is UTC.
    for date_keyword, time_keyword in (
        ("DateOfSecondaryCapture", "TimeOfSecondaryCapture"),
        ("InstanceCreationDate", "InstanceCreationTime"),
    ):
        if date_keyword in sc:
            setattr(sc, date_keyword, f"{now:%Y%m%d}")
        if time_keyword in sc:
            setattr(sc, time_keyword, f"{now:%H%M%S}")
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    return sc


def heatmap_secondary_capture(read: SecondRead, *, manufacturer: str = "Vigil") -> hd.sc.SCImage:
    """The Secondary Capture of ``read``'s heat map (:meth:`~models.imaging.onnx.SecondRead.heatmap_png`, RGB 8 bit,
    over the model input) in the source's study: :func:`build_heatmap_sc` of ``read.dataset``.

    Raises
    ------
    InputValidationError
        ``field="dataset"`` when the read kept no source dataset, else as :func:`build_heatmap_sc`.
    """
    from PIL import Image

    if read.dataset is None:
        raise InputValidationError("dataset", "a heat-map SC needs the source dataset")
    with Image.open(io.BytesIO(read.heatmap_png())) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return build_heatmap_sc(read.dataset, rgb, manufacturer=manufacturer)
