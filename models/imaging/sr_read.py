"""Reading a Vigil second-read SR back: :func:`read_second_read_sr`, the inverse of
:func:`models.imaging.sr.build_second_read_sr`.

The SR is parsed through highdicom's content tree (TID 1500 Measurement Report) and each part is checked against what
:mod:`models.imaging.sr` writes, with the same concepts: one measurement group per finding (probability, operating
threshold, flag), one algorithm identification, one referenced source image, and the report-level "Qualitative
Evaluations" (any finding flagged, the decision-support statement, the findings not evaluated). Anything else is an
:class:`~models.errors.InputValidationError` naming the part that does not match.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TypedDict, TypeVar

import highdicom as hd
import pydicom
from highdicom.sr.utils import find_content_items
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage

from models.errors import InputValidationError
from models.imaging.sr import (
    ANY_FINDING_FLAGGED,
    DECISION_SUPPORT,
    FLAGGED_FOR_SECOND_READ,
    NO,
    NOT_EVALUATED,
    OPERATING_THRESHOLD,
    PROBABILITY,
    QUALITATIVE_EVALUATIONS,
    YES,
)
from models.labels import IMAGING_FINDING_CODES, IMAGING_FINDINGS


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
    """Parse an SR written by :func:`models.imaging.sr.build_second_read_sr` (DICOM Part 10 bytes) back into its values.

    Returns
    -------
    SecondRead
        ``{"findings": {finding: {"probability", "threshold", "flagged"}}, "any_flagged", "algorithm": {"name",
        "version"}, "referenced_sop_instance_uid", "statement", "not_evaluated": {finding: reason}}``.

    Raises
    ------
    InputValidationError
        ``field="file"`` when the bytes are not DICOM or not a Comprehensive 3D SR; otherwise naming the part of the
        content tree that does not match what :mod:`models.imaging.sr` writes.
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
