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
attributes come from the source through highdicom's evidence handling; Type 2 attributes the source lacks are
written empty. An AccessionNumber or StudyID longer than the 16 characters of their VR (SH), or a PatientID longer
than LO's 64, is written empty too,
with a warning naming the attribute (see :func:`build_second_read_sr`). The SR is PRELIMINARY, COMPLETE and
UNVERIFIED: decision support, never a signed report.
:func:`read_second_read_sr` parses such an SR back through highdicom's content tree.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypedDict, TypeVar

import highdicom as hd
import pydicom
from highdicom.sr.utils import find_content_items
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage, generate_uid
from pydicom.valuerep import DA, TM

from models.errors import InputValidationError
from models.labels import IMAGING_FINDING_CODES, IMAGING_FINDINGS
from models.model_card import IMAGING_DECISION_SUPPORT_STATEMENT

logger = logging.getLogger(__name__)

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
#: Type 2 attributes highdicom reads from the evidence as attributes (it fails on a missing one).
_TYPE2_SOURCE_ATTRIBUTES: Final = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
#: Type 2 identifiers that the SR copies from its source, with the most characters their VR allows (PS3.5 6.2:
#: SH 16, LO 64). A longer value is invalid in the SR; it is written empty (Type 2 allows it) rather than invalid or
#: cut to another value.
COPIED_IDENTIFIERS: Final = {"AccessionNumber": ("SH", 16), "StudyID": ("SH", 16), "PatientID": ("LO", 64)}
#: A valid Age String (AS): three digits and a unit, days, weeks, months or years.
_AGE_STRING: Final = re.compile(r"\d{3}[DWMY]")
_PATIENT_SEX_VALUES: Final = frozenset({"M", "F", "O", ""})
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


class SecondReadFinding(TypedDict):
    probability: float
    threshold: float
    flagged: bool


class SecondReadAlgorithm(TypedDict):
    name: str
    version: str


class SecondRead(TypedDict):
    """What :func:`read_second_read_sr` returns."""

    findings: dict[str, SecondReadFinding]
    any_flagged: bool
    algorithm: SecondReadAlgorithm
    referenced_sop_instance_uid: str
    statement: str
    not_evaluated: dict[str, str]


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


def _evidence_header(source: Dataset) -> Dataset:
    """A pixel-free copy of the source header that highdicom can take as evidence.

    Missing Type 2 attributes are added empty; a PatientSex outside M/F/O is blanked (highdicom refuses it).
    PatientName is blanked because highdicom warns with the name itself when it has no ``^``; the caller restores
    the source's name on the SR afterwards.
    """
    header = Dataset()
    for element in source:
        if element.tag.group < 0x7FE0:  # no Pixel Data, no Float/Double Float Pixel Data
            header.add(copy.deepcopy(element))  # setting a value later must not touch the source
    for keyword in _TYPE2_SOURCE_ATTRIBUTES:
        if keyword not in header or header[keyword].value is None:
            setattr(header, keyword, "")
    if str(header.PatientSex).strip().upper() not in _PATIENT_SEX_VALUES:
        logger.warning("source PatientSex is not M, F or O; written empty in the second-read SR")
        header.PatientSex = ""
    blank_invalid_dates(header, "second-read SR")
    # PatientAge (AS, Type 3) must be nnnD/W/M/Y (PS3.5 6.2); sources write "62" or "62 years". The SR leaves an
    # invalid one out rather than copy it (dciodvfy: "Value invalid for this VR") or guess its unit.
    age = header.get("PatientAge")
    if age is not None and str(age) != "" and not _AGE_STRING.fullmatch(str(age)):
        del header.PatientAge
        logger.info("source PatientAge is not a valid DICOM AS value (nnnD/W/M/Y); left out of the second-read SR")
    blank_overlong_identifiers(header, "second-read SR")
    _known_character_set(header)
    header.PatientName = ""
    return header


def blank_invalid_dates(ds: Dataset, what: str) -> None:
    """Empty PatientBirthDate, StudyDate and StudyTime in ``ds`` where they are not valid DA/TM values.

    highdicom converts these and raises a bare ValueError on a malformed value (pylibjpeg-data's 966 has a hash as
    its birth date): a derived instance (the SR, the heat-map SC) carries them empty (Type 2) rather than the read
    being lost. Each is logged at INFO by keyword, never by value; ``what`` names the instance for the log line.
    """
    for keyword, kind in (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM)):
        value = ds.get(keyword)
        if value is None or str(value) == "":
            continue
        try:
            kind(str(value))
        except ValueError:
            setattr(ds, keyword, "")
            logger.info(
                "source %s is not a valid DICOM %s value; written empty in the %s", keyword, kind.__name__, what
            )


def blank_overlong_identifiers(ds: Dataset, what: str) -> list[str]:
    """Empty each of :data:`COPIED_IDENTIFIERS` in ``ds`` whose value is longer than its VR allows.

    A derived instance (the SR, the heat-map SC) copies the source's AccessionNumber, StudyID and PatientID so that
    it files in the same study and patient; a modality or RIS that writes a longer value makes the copy invalid
    (PS3.5 6.2). Those are Type 2, so the derived instance carries them empty: never an invalid value, and never a
    shortened one (a truncated accession number or patient ID could be another order's or another patient's). The
    study is still identified by StudyInstanceUID. Each blanked attribute is logged at WARNING by keyword and
    length, never by value.

    Parameters
    ----------
    ds : pydicom.Dataset
        Changed in place (the caller's copy, not the source).
    what : str
        What ``ds`` becomes, for the log line.

    Returns
    -------
    list of str
        The keywords blanked.
    """
    blanked = []
    for keyword, (vr, most) in COPIED_IDENTIFIERS.items():
        value = ds.get(keyword)
        length = len(str(value or ""))
        if length > most:
            del ds[keyword]  # a new element: ``ds`` may share the old one with the source
            setattr(ds, keyword, "")
            blanked.append(keyword)
            logger.warning(
                "source %s is %d characters, longer than the %d its VR (%s) allows; the %s carries it empty (Type 2)",
                keyword,
                length,
                most,
                vr,
                what,
            )
    return blanked


def _known_character_set(header: Dataset) -> None:
    """Replace a SpecificCharacterSet that DICOM does not define by UTF-8 (ISO_IR 192).

    pydicom decodes the source's text with a fallback when the defined term is unknown, but highdicom refuses to
    write an SR that carries the unknown term (a bare ValueError). The text the SR copies is already decoded, so
    UTF-8 represents it whatever the source meant.
    """
    from pydicom.charset import python_encoding

    value = header.get("SpecificCharacterSet")
    if value is None:
        return
    terms = [value] if isinstance(value, str) else list(value)
    if all(str(t).strip() in python_encoding for t in terms):
        return
    header.SpecificCharacterSet = "ISO_IR 192"
    logger.info("source SpecificCharacterSet is not a defined term; the second-read SR is written in UTF-8")


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
    warning logged naming it (:func:`blank_overlong_identifiers`): an invalid value would be refused by strict
    readers, and a truncated one could name another order. The SR is in the source's study by StudyInstanceUID.
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
    header = _evidence_header(source)
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


# ---------------------------------------------------------------------------------------------- reading
def _not_ours(field: str, problem: str) -> InputValidationError:
    return InputValidationError(field, f"not a Vigil second-read SR: {problem}")


_ItemT = TypeVar("_ItemT")


def _one(items: Sequence[_ItemT], field: str, what: str) -> _ItemT:
    if len(items) != 1:
        raise _not_ours(field, f"expected one {what}, found {len(items)}")
    return items[0]


def _yes_no(value: hd.sr.CodedConcept, field: str) -> bool:
    if value == YES:
        return True
    if value == NO:
        return False
    raise _not_ours(field, "a yes/no evaluation holds neither SCT Yes nor SCT No")


def read_second_read_sr(data: bytes) -> SecondRead:
    """Parse an SR written by :func:`build_second_read_sr` (DICOM Part 10 bytes) back into its values.

    Returns
    -------
    SecondRead
        ``{"findings": {finding: {"probability", "threshold", "flagged"}}, "any_flagged", "algorithm": {"name",
        "version"}, "referenced_sop_instance_uid", "statement", "not_evaluated": {finding: reason}}``.

    Raises
    ------
    InputValidationError
        ``field="file"`` when the bytes are not DICOM or not a Comprehensive 3D SR; otherwise naming the part of the
        content tree that does not match what this module writes.
    """
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError) as err:
        raise InputValidationError("file", "the bytes are not a readable DICOM file") from err
    if dataset.get("SOPClassUID") != Comprehensive3DSRStorage:
        raise _not_ours("file", "SOPClassUID is not Comprehensive 3D SR Storage")
    sr = hd.sr.Comprehensive3DSR.from_dataset(dataset, copy=False)
    report = sr.content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise _not_ours("ContentTemplateSequence", "the root is not a TID 1500 Measurement Report")

    code_to_finding = {(value, scheme): name for name, (value, scheme, _) in IMAGING_FINDING_CODES.items()}
    findings: dict[str, SecondReadFinding] = {}
    algorithms: set[tuple[str, str]] = set()
    referenced: set[str] = set()
    for group in report.get_image_measurement_groups():
        finding_type = group.finding_type
        if finding_type is None:
            raise _not_ours("Finding", "a measurement group has no finding")
        name = code_to_finding.get((finding_type.value, finding_type.scheme_designator))
        if name is None or name in findings:
            raise _not_ours("Finding", "a measurement group names an unknown or repeated finding")
        probability = _one(group.get_measurements(name=PROBABILITY), "Probability", "probability measurement")
        threshold = _one(group.get_measurements(name=OPERATING_THRESHOLD), "Threshold", "threshold measurement")
        flag = _one(group.get_qualitative_evaluations(name=FLAGGED_FOR_SECOND_READ), "Flagged", "flag evaluation")
        findings[name] = {
            "probability": float(probability.value),
            "threshold": float(threshold.value),
            "flagged": _yes_no(flag.value, "Flagged"),  # type: ignore[arg-type]  # highdicom: it is a CodedConcept
        }
        root = group[0]
        name_item = _one(find_content_items(root, name=codes.DCM.AlgorithmName), "Algorithm", "name")
        version_item = _one(find_content_items(root, name=codes.DCM.AlgorithmVersion), "Algorithm", "version")
        algorithms.add((name_item.value, version_item.value))
        referenced.update(image.referenced_sop_instance_uid for image in group.source_images)
    container = _one(find_content_items(report[0], name=QUALITATIVE_EVALUATIONS), "QualitativeEvaluations", "container")
    any_flagged = _one(find_content_items(container, name=ANY_FINDING_FLAGGED), "AnyFlagged", "item")
    statement = _one(find_content_items(container, name=DECISION_SUPPORT), "Statement", "item")
    not_evaluated: dict[str, str] = {}
    for item in find_content_items(container, name=NOT_EVALUATED):
        name, _, reason = str(item.value).partition(": ")
        if name not in IMAGING_FINDINGS or name in findings or name in not_evaluated:
            raise _not_ours("NotEvaluated", "a 'not evaluated' item names an unknown, evaluated or repeated finding")
        not_evaluated[name] = reason
    if not findings:
        raise _not_ours("Finding", "the report holds no measurement group")
    if len(algorithms) != 1:
        raise _not_ours("Algorithm", f"expected one algorithm identification, found {len(algorithms)}")
    if len(referenced) != 1:
        raise _not_ours("SourceImage", f"expected one referenced source image, found {len(referenced)}")
    ((algorithm_name, version),) = algorithms
    return {
        "findings": findings,
        "any_flagged": _yes_no(any_flagged.value, "AnyFlagged"),
        "algorithm": {"name": str(algorithm_name), "version": str(version)},
        "referenced_sop_instance_uid": str(next(iter(referenced))),
        "statement": str(statement.value),
        "not_evaluated": not_evaluated,
    }
