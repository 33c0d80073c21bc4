"""The DICOM Structured Report of a chest X-ray second read, stored by a workstation next to the image.

:func:`build_second_read_sr` writes a Comprehensive 3D SR (SOP Class 1.2.840.10008.5.1.4.1.1.88.34) in the same study
as the source image and in a new series. Its content is a TID 1500 Measurement Report built with highdicom:

- observation context: a device observer (the algorithm; its UID is derived from name and version);
- procedure reported: (399208008, SCT, "Plain chest X-ray");
- "Imaging Measurements": one TID 1501 measurement group per finding, each with a tracking identifier
  (``"vigil-<finding>"`` and a fresh UID), the source image ("Source of Measurement"), Finding = the finding's code
  from :data:`models.labels.IMAGING_FINDING_CODES`, the algorithm identification (TID 4019), two NUM measurements in
  UCUM ``1`` ("no units"): :data:`PROBABILITY` (with the algorithm identification too) and
  :data:`OPERATING_THRESHOLD`, and the qualitative evaluation :data:`FLAGGED_FOR_SECOND_READ` = SCT Yes/No;
- "Qualitative Evaluations" (C0034375, UMLS; TID 1500 row 12, appended by hand because highdicom's
  ``MeasurementReport`` has no argument for it): :data:`ANY_FINDING_FLAGGED` = Yes/No and the TEXT item
  :data:`DECISION_SUPPORT` holding :data:`models.model_card.IMAGING_DECISION_SUPPORT_STATEMENT`.

The algorithm's name and version are also where viewers and PACS look first: ManufacturerModelName and
SoftwareVersions of the SR (General Equipment) and an item of ContributingEquipmentSequence (Manufacturer,
ManufacturerModelName, SoftwareVersions; purpose of reference (109102, DCM, "Processing Equipment"), the member of
CID 7005 for equipment that made new instances from existing ones), beside the source's acquisition equipment and
highdicom, which highdicom lists there itself.

Private concepts use the scheme ``99VIGIL`` (declared in CodingSchemeIdentificationSequence). Patient and study
attributes come from the source through highdicom's evidence handling, given the copy
:func:`models.imaging.source_header.evidence_header` makes valid: Type 2 attributes the source lacks are written
empty. An AccessionNumber or StudyID longer than the 16 characters of their VR (SH), or a PatientID longer than LO's
64, is written empty too, with a warning naming the attribute (see :func:`build_second_read_sr`). The SR is
PRELIMINARY, COMPLETE and UNVERIFIED: decision support, never a signed report.
:func:`models.imaging.sr_read.read_second_read_sr` parses such an SR back through highdicom's content tree.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from models.errors import InputValidationError
from models.imaging.source_header import evidence_header
from models.labels import IMAGING_FINDING_CODES, IMAGING_FINDINGS
from models.model_card import IMAGING_DECISION_SUPPORT_STATEMENT

SERIES_DESCRIPTION: Final = "Vigil second read (decision support)"
PRIVATE_SCHEME: Final = "99VIGIL"

PROBABILITY: Final = hd.sr.CodedConcept("PROB", PRIVATE_SCHEME, "Probability")
OPERATING_THRESHOLD: Final = hd.sr.CodedConcept("THRESH", PRIVATE_SCHEME, "Operating threshold")
FLAGGED_FOR_SECOND_READ: Final = hd.sr.CodedConcept("FLAG2R", PRIVATE_SCHEME, "Flagged for second read")
ANY_FINDING_FLAGGED: Final = hd.sr.CodedConcept("ANYFLAG", PRIVATE_SCHEME, "Any finding flagged for second read")
DECISION_SUPPORT: Final = hd.sr.CodedConcept("DSSTMT", PRIVATE_SCHEME, "Decision support statement")
NOT_EVALUATED: Final = hd.sr.CodedConcept("NOTEVAL", PRIVATE_SCHEME, "Finding not evaluated")
#: Unit of both probability and operating threshold: dimensionless.
UNITLESS: Final = hd.sr.CodedConcept("1", "UCUM", "no units")
YES: Final = hd.sr.CodedConcept("373066001", "SCT", "Yes")
NO: Final = hd.sr.CodedConcept("373067005", "SCT", "No")
QUALITATIVE_EVALUATIONS: Final = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
PLAIN_CHEST_XRAY: Final = hd.sr.CodedConcept("399208008", "SCT", "Plain chest X-ray")

#: Attributes the SR must reference: without them there is nothing to point at.
_REQUIRED_SOURCE_UIDS: Final = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_LO_MAX: Final = 64


@dataclass(frozen=True)
class FindingResult:
    """One finding of a second read: the model's probability, its operating threshold and the flag.

    Parameters
    ----------
    finding : str
        One of :data:`models.labels.IMAGING_FINDINGS`.
    probability : float
        Model probability in [0, 1].
    threshold : float
        Operating threshold in [0, 1].
    flagged : bool
        Whether the finding is flagged for a second read (usually ``probability >= threshold``; not enforced here,
        so a caller may flag on other grounds).

    Raises
    ------
    InputValidationError
        (a ``ValueError``) naming the field, for an unknown finding, a value outside [0, 1] or of the wrong type.
    """

    finding: str
    probability: float
    threshold: float
    flagged: bool

    def __post_init__(self) -> None:
        if self.finding not in IMAGING_FINDINGS:
            raise InputValidationError(
                "finding", f"The 'finding' field must be one of {IMAGING_FINDINGS}; got {self.finding!r}"
            )
        for name in ("probability", "threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InputValidationError(name, f"The '{name}' field must be a number; got {type(value).__name__}")
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):  # type: ignore[operator]  # typeshed's numbers.Real has no __ge__
                raise InputValidationError(name, f"The '{name}' field must be in [0, 1]; got {value!r}")
            object.__setattr__(self, name, float(value))  # numpy floats and ints become plain floats
        if not isinstance(self.flagged, bool):
            raise InputValidationError(
                "flagged", f"The 'flagged' field must be a bool; got {type(self.flagged).__name__}"
            )


# ---------------------------------------------------------------------------------------------- writing
def _check_long_string(field: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InputValidationError(field, f"{field} must be a non-empty string")
    if len(value) > _LO_MAX or "\\" in value or any(ord(c) < 32 for c in value):
        raise InputValidationError(
            field, f"{field} must be at most {_LO_MAX} characters with no backslash or control character"
        )


def _check_positive_int(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputValidationError(field, f"{field} must be a positive integer; got {value!r}")


def _measurement_group(
    result: FindingResult, source: Dataset, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    value, scheme, meaning = IMAGING_FINDING_CODES[result.finding]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"vigil-{result.finding}"),
        finding_type=hd.sr.CodedConcept(value, scheme, meaning),
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(name=PROBABILITY, value=result.probability, unit=UNITLESS, algorithm_id=algorithm),
            hd.sr.Measurement(name=OPERATING_THRESHOLD, value=result.threshold, unit=UNITLESS),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=FLAGGED_FOR_SECOND_READ, value=YES if result.flagged else NO)
        ],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=source.SOPClassUID, referenced_sop_instance_uid=source.SOPInstanceUID
            )
        ],
    )


def _report_level_evaluations(any_flagged: bool, not_evaluated: Mapping[str, str]) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            *(
                hd.sr.TextContentItem(
                    name=NOT_EVALUATED,
                    value=f"{finding}: {reason}"[:1024],
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
                for finding, reason in not_evaluated.items()
            ),
            hd.sr.CodeContentItem(
                name=ANY_FINDING_FLAGGED,
                value=YES if any_flagged else NO,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            ),
            hd.sr.TextContentItem(
                name=DECISION_SUPPORT,
                value=IMAGING_DECISION_SUPPORT_STATEMENT,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            ),
        ]
    )
    return container


def build_second_read_sr(
    source: Dataset,
    findings: Sequence[FindingResult],
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_number: int = 9901,
    instance_number: int = 1,
    manufacturer: str = "Vigil",
    sr_series_instance_uid: str | None = None,
    not_evaluated: Mapping[str, str] | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the Comprehensive 3D SR of a second read of ``source``.

    Parameters
    ----------
    source : pydicom.Dataset
        The radiograph that was read (header enough; pixel data is not copied). Needs StudyInstanceUID,
        SeriesInstanceUID, SOPInstanceUID and SOPClassUID; patient and study attributes it lacks are written empty.
    findings : sequence of FindingResult
        The findings evaluated on this image: at least one (TID 1500 needs a measurement group), each at most once,
        written in the given order.
    algorithm_name, algorithm_version : str
        Algorithm identification (TID 4019), also ManufacturerModelName and SoftwareVersions of the SR and of its
        ContributingEquipmentSequence item (purpose: Processing Equipment).
    series_number, instance_number : int
        Of the SR instance in its new series.
    manufacturer : str
        Manufacturer of the SR (General Equipment) and of the algorithm.
    sr_series_instance_uid : str or None
        Series of the SR; a new UID when None. Must differ from the source's series.
    not_evaluated : mapping of finding to reason, optional
        Findings the model did not evaluate on this image (not validated by the release gate, or outside their
        intended use), each written as a "Finding not evaluated" text item with its reason; never a measurement.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR

    Raises
    ------
    InputValidationError
        Naming the argument or the source's DICOM keyword at fault.

    Notes
    -----
    The SR copies the source's AccessionNumber (PS3.3 General Study module, Type 2, VR SH: at most 16 characters).
    A source whose AccessionNumber (or StudyID) is longer still gets its SR, with that attribute empty and a
    warning logged naming it (:func:`models.imaging.source_header.blank_overlong_identifiers`): an invalid value
    would be refused by strict readers, and a truncated one could name another order. The SR is in the source's
    study by StudyInstanceUID.
    """
    for keyword in _REQUIRED_SOURCE_UIDS:
        if not str(source.get(keyword, "") or "").strip():
            raise InputValidationError(keyword, f"the source image has no {keyword}; the SR cannot reference it")
    not_evaluated = dict(not_evaluated or {})
    if not findings:
        raise InputValidationError(
            "findings", "findings must hold at least one FindingResult (TID 1500 needs a measurement group)"
        )
    seen: set[str] = set()
    for index, result in enumerate(findings):
        if not isinstance(result, FindingResult):
            raise InputValidationError("findings", f"findings[{index}] must be a FindingResult")
        if result.finding in seen:
            raise InputValidationError("findings", f"finding {result.finding!r} appears more than once")
        seen.add(result.finding)
    for finding in not_evaluated:
        if finding not in IMAGING_FINDINGS or finding in seen:
            raise InputValidationError("not_evaluated", f"finding {finding!r} is unknown or also evaluated")
    _check_long_string("algorithm_name", algorithm_name)
    _check_long_string("algorithm_version", algorithm_version)
    _check_long_string("manufacturer", manufacturer)
    _check_positive_int("series_number", series_number)
    _check_positive_int("instance_number", instance_number)
    series_uid = sr_series_instance_uid or generate_uid()
    if series_uid == source.SeriesInstanceUID:
        raise InputValidationError(
            "sr_series_instance_uid", "sr_series_instance_uid must differ from the source's SeriesInstanceUID"
        )

    algorithm = hd.sr.AlgorithmIdentification(name=algorithm_name, version=algorithm_version, manufacturer=manufacturer)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["vigil-device", manufacturer, algorithm_name, algorithm_version]),
        name=algorithm_name,
        manufacturer_name=manufacturer,
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device, observer_identifying_attributes=device
            )
        ),
        procedure_reported=PLAIN_CHEST_XRAY,
        imaging_measurements=[_measurement_group(result, source, algorithm) for result in findings],
    )
    report[0].ContentSequence.append(
        _report_level_evaluations(any(result.flagged for result in findings), not_evaluated)
    )

    vigil_equipment = hd.ContributingEquipment(
        manufacturer=manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version,
        contribution_description=f"Chest X-ray second read by {algorithm_name} {algorithm_version} (decision support)",
    )
    header = evidence_header(source)
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=[header],
            content=report,
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=instance_number,
            manufacturer=manufacturer,
            is_complete=True,
            is_final=False,
            is_verified=False,
            series_description=SERIES_DESCRIPTION,
            manufacturer_model_name=algorithm_name,
            software_versions=algorithm_version,
            contributing_equipment=[vigil_equipment],
        )
    except KeyError as err:  # highdicom looks the source's IOD up by SOPClassUID to copy patient/study modules
        raise InputValidationError(
            "SOPClassUID", "the source's SOPClassUID is not a standard image storage SOP class"
        ) from err
    sr.PatientName = source.get("PatientName", "") or ""
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "Vigil private codes"
    scheme.CodingSchemeResponsibleOrganization = manufacturer
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def sr_to_bytes(sr: Dataset) -> bytes:
    """Encode an SR as a DICOM Part 10 file (preamble, file meta, the SR's own transfer syntax)."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, sr, enforce_file_format=True)
    return buffer.getvalue()
