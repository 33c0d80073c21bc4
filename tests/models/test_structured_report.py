"""The second-read DICOM SR: build from a synthetic CR and a real fixture, write, strictly re-read, parse back.

Expected values come from the inputs (the source dataset, the FindingResults) and from PS3.4/PS3.16 constants
written out here, never from the module's own constants.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from models.errors import InputValidationError
from models.imaging.sr import FindingResult, build_second_read_sr, sr_to_bytes
from models.imaging.sr_read import read_second_read_sr
from models.labels import IMAGING_FINDING_CODES, IMAGING_FINDINGS
from models.model_card import decision_support_statement

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("VIGIL_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
SIIM = DATA_DIR / "imaging" / "dicom_fixtures" / "chest" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
SCT_YES, SCT_NO = ("373066001", "SCT"), ("373067005", "SCT")
ALGORITHM = {"algorithm_name": "vigil-cxr-densenet", "algorithm_version": "2025.06.1"}
#: The imaging statement of the shared contract (models/model_card.py): the SR is an imaging output.
IMAGING_STATEMENT = decision_support_statement("imaging")


def make_cr(**overrides: object) -> Dataset:
    """A small, complete CR image: 16x16 MONOCHROME2, patient and study identification, fresh UIDs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-0042"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyID = "S1"
    ds.AccessionNumber = "ACC-7"
    ds.StudyDate = "20250102"
    ds.StudyTime = "101500"
    ds.ReferringPhysicianName = "Who^Doctor"
    ds.StudyDescription = "XR CHEST PA"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(256, dtype=np.uint16).reshape(16, 16).tobytes()
    for keyword, value in overrides.items():
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    return ds


def all_findings(flags: tuple[bool, ...] | None = None) -> list[FindingResult]:
    """One result per finding with probabilities that DS (16 characters) alone would round."""
    flags = flags or tuple(i % 2 == 0 for i in range(len(IMAGING_FINDINGS)))
    return [
        FindingResult(finding, probability=(i + 1) / 9.0, threshold=0.1 + i / 37.0, flagged=flag)
        for i, (finding, flag) in enumerate(zip(IMAGING_FINDINGS, flags, strict=True))
    ]


def walk(ds: Dataset) -> Iterator[pydicom.DataElement]:
    """Every element, nested ones included, with its value converted (where pydicom validates on reading)."""
    for element in ds.iterall():
        _ = element.value
        yield element


def strict_read(data: bytes) -> Dataset:
    """Read with reading validation set to RAISE and touch every value, restoring the mode afterwards."""
    with config.strict_reading():
        ds = pydicom.dcmread(io.BytesIO(data))
        for _ in walk(ds):
            pass
    return ds


@pytest.fixture
def source() -> Dataset:
    return make_cr()


@pytest.fixture
def built(source: Dataset) -> tuple[Dataset, list[FindingResult], bytes]:
    findings = all_findings()
    return source, findings, sr_to_bytes(build_second_read_sr(source, findings, **ALGORITHM))


# --------------------------------------------------------------------------------------------- FindingResult
@pytest.mark.parametrize("finding", ["Effusion", "edema", ""])
def test_finding_result_refuses_an_unknown_finding(finding: str) -> None:
    with pytest.raises(InputValidationError, match=r"'finding' field must be one of") as info:
        FindingResult(finding, 0.5, 0.5, True)
    assert info.value.field == "finding"


@pytest.mark.parametrize("field", ["probability", "threshold"])
@pytest.mark.parametrize("value", [-0.01, 1.0001, math.nan, math.inf, -math.inf])
def test_finding_result_refuses_values_outside_the_unit_interval(field: str, value: float) -> None:
    kwargs = {"probability": 0.5, "threshold": 0.5, field: value}
    with pytest.raises(ValueError, match=rf"'{field}' field must be in \[0, 1\]") as info:
        FindingResult("effusion", flagged=False, **kwargs)
    assert isinstance(info.value, InputValidationError)
    assert info.value.field == field


@pytest.mark.parametrize("field", ["probability", "threshold"])
@pytest.mark.parametrize("value", [True, "0.5", None])
def test_finding_result_refuses_non_numbers(field: str, value: object) -> None:
    kwargs = {"probability": 0.5, "threshold": 0.5, field: value}
    with pytest.raises(InputValidationError, match=rf"'{field}' field must be a number") as info:
        FindingResult("effusion", flagged=False, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize("flagged", [1, 0, "yes", None])
def test_finding_result_refuses_a_non_bool_flag(flagged: object) -> None:
    with pytest.raises(InputValidationError, match=r"'flagged' field must be a bool") as info:
        FindingResult("effusion", 0.5, 0.5, flagged)  # type: ignore[arg-type]
    assert info.value.field == "flagged"


def test_finding_result_accepts_the_bounds_and_makes_plain_floats() -> None:
    result = FindingResult("pneumothorax", np.float32(0.25), 1, False)  # type: ignore[arg-type]
    assert type(result.probability) is float and result.probability == 0.25
    assert type(result.threshold) is float and result.threshold == 1.0
    assert FindingResult("pneumothorax", 0.0, 0.0, True).probability == 0.0


# --------------------------------------------------------------------------------------------- round trip
def test_round_trip_keeps_every_value_exactly(built: tuple[Dataset, list[FindingResult], bytes]) -> None:
    source, findings, data = built
    parsed = read_second_read_sr(data)
    assert list(parsed["findings"]) == list(IMAGING_FINDINGS)
    for result in findings:
        got = parsed["findings"][result.finding]
        assert got["probability"] == result.probability  # FD carries the full double, not DS's 16 characters
        assert got["threshold"] == result.threshold
        assert got["flagged"] is result.flagged
    assert parsed["algorithm"] == {"name": ALGORITHM["algorithm_name"], "version": ALGORITHM["algorithm_version"]}
    assert parsed["referenced_sop_instance_uid"] == source.SOPInstanceUID
    assert parsed["statement"] == IMAGING_STATEMENT


def test_written_sr_is_a_part10_comprehensive_3d_sr_in_the_source_study(
    built: tuple[Dataset, list[FindingResult], bytes],
) -> None:
    source, _, data = built
    assert data[128:132] == b"DICM"
    sr = strict_read(data)
    assert sr.file_meta.MediaStorageSOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.Modality == "SR"
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.SOPInstanceUID != source.SOPInstanceUID
    assert (sr.SeriesNumber, sr.InstanceNumber) == (9901, 1)
    assert sr.SeriesDescription == "Vigil second read (decision support)"
    assert (sr.Manufacturer, sr.ManufacturerModelName) == ("Vigil", ALGORITHM["algorithm_name"])
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("COMPLETE", "UNVERIFIED", "PRELIMINARY")
    assert "PixelData" not in sr
    for keyword in (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyID",
        "AccessionNumber",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyDescription",
    ):
        assert str(sr[keyword].value) == str(source[keyword].value), keyword
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    reference = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert (reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID) == (
        source.SOPClassUID,
        source.SOPInstanceUID,
    )
    assert [s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence] == ["99VIGIL"]


def test_content_tree_uses_the_finding_codes_and_yes_no(built: tuple[Dataset, list[FindingResult], bytes]) -> None:
    """Read through highdicom's TID 1500/1501 API, independently of read_second_read_sr."""
    source, findings, data = built
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(data)))
    assert isinstance(sr.content, hd.sr.MeasurementReport)
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == len(findings)
    for group, result in zip(groups, findings, strict=True):
        value, scheme, _ = IMAGING_FINDING_CODES[result.finding]
        assert (group.finding_type.value, group.finding_type.scheme_designator) == (value, scheme)
        assert group.tracking_identifier == f"vigil-{result.finding}"
        assert group.tracking_uid is not None
        assert [image.referenced_sop_instance_uid for image in group.source_images] == [source.SOPInstanceUID]
        (flag,) = group.get_qualitative_evaluations()
        assert (flag.value.value, flag.value.scheme_designator) == (SCT_YES if result.flagged else SCT_NO)
        measurements = group.get_measurements()
        assert [m.value for m in measurements] == [result.probability, result.threshold]
        assert {(m.unit.value, m.unit.scheme_designator) for m in measurements} == {("1", "UCUM")}
    assert sr.get_evidence() == [
        (source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID, source.SOPClassUID)
    ]


def test_decision_support_statement_is_a_text_item_of_the_sr(built: tuple[Dataset, list[FindingResult], bytes]) -> None:
    sr = pydicom.dcmread(io.BytesIO(built[2]))
    texts = [e.value for e in walk(sr) if e.keyword == "TextValue"]
    assert IMAGING_STATEMENT in texts
    assert not any("NEWS2" in text for text in texts)  # the triage statement is not an imaging one


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((False, False, False), False),
        ((True, False, False), True),
        ((False, False, True), True),
        ((True, True, True), True),
    ],
)
def test_any_flagged_is_true_exactly_when_some_finding_is_flagged(flags: tuple[bool, ...], expected: bool) -> None:
    findings = [
        FindingResult(f, 0.4, 0.5, flag)
        for f, flag in zip(("effusion", "nodule_mass", "pneumonia"), flags, strict=True)
    ]
    parsed = read_second_read_sr(sr_to_bytes(build_second_read_sr(make_cr(), findings, **ALGORITHM)))
    assert parsed["any_flagged"] is expected
    assert [v["flagged"] for v in parsed["findings"].values()] == list(flags)


def test_build_does_not_change_the_source(source: Dataset) -> None:
    before = copy.deepcopy(source)
    build_second_read_sr(source, all_findings(), **ALGORITHM)
    assert source == before


def test_custom_series_and_numbers_are_used(source: Dataset) -> None:
    series = generate_uid()
    sr = build_second_read_sr(
        source,
        all_findings()[:1],
        series_number=7,
        instance_number=3,
        manufacturer="Acme",
        sr_series_instance_uid=series,
        **ALGORITHM,
    )
    assert (sr.SeriesInstanceUID, sr.SeriesNumber, sr.InstanceNumber, sr.Manufacturer) == (series, 7, 3, "Acme")


# --------------------------------------------------------------------------------------------- awkward sources
MISSING_OPTIONAL = (
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "PatientName",
    "StudyDescription",
    "SpecificCharacterSet",
)


def test_source_without_optional_attributes_gives_empty_type2_values() -> None:
    source = make_cr(**dict.fromkeys(MISSING_OPTIONAL))
    findings = all_findings()
    data = sr_to_bytes(build_second_read_sr(source, findings, **ALGORITHM))
    sr = strict_read(data)
    for keyword in (
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "PatientName",
    ):
        assert keyword in sr and not sr[keyword].value, keyword  # Type 2: present, empty
    assert sr.PatientID == source.PatientID
    assert read_second_read_sr(data)["findings"]["effusion"]["probability"] == findings[0].probability


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"])
def test_source_without_a_referenced_uid_is_refused(keyword: str) -> None:
    with pytest.raises(InputValidationError, match=keyword) as info:
        build_second_read_sr(make_cr(**{keyword: None}), all_findings(), **ALGORITHM)
    assert info.value.field == keyword


def test_single_component_patient_name_is_copied_without_echoing_it(caplog: pytest.LogCaptureFixture) -> None:
    """highdicom warns with the name itself for a name without '^' (an error under filterwarnings=error)."""
    name = "16d7f894-55d7-4d95-8957-d18987f0e981"
    with caplog.at_level(logging.DEBUG):
        sr = build_second_read_sr(make_cr(PatientName=name, PatientSex="MALE"), all_findings(), **ALGORITHM)
    assert str(sr.PatientName) == name
    assert sr.PatientSex == ""  # not M/F/O: written empty rather than refused
    assert name not in caplog.text


def long_identifiers(**values: str) -> Dataset:
    """A CR whose identifiers are longer than their VR allows, set as a modality would write them (pydicom warns on
    setting such a value; the warning is the test's own doing, not the code's under test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_cr(**values)


@pytest.mark.parametrize("keyword", ["AccessionNumber", "StudyID"])
def test_an_identifier_longer_than_sh_allows_is_written_empty_with_a_warning(
    keyword: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SH holds 16 characters (PS3.5 6.2): a 17-character value would make an invalid SR; it is left empty (Type 2),
    logged by keyword and length, never by value, and the rest of the study identification is copied."""
    value = "RIS-" + "7" * 13  # 17 characters
    source = long_identifiers(**{keyword: value})
    before = copy.deepcopy(source)
    with caplog.at_level(logging.WARNING, logger="models.imaging.source_header"):
        data = sr_to_bytes(build_second_read_sr(source, all_findings(), **ALGORITHM))
    sr = strict_read(data)  # pydicom with reading validation RAISE: every value valid
    assert keyword in sr and sr[keyword].value == ""
    other = "StudyID" if keyword == "AccessionNumber" else "AccessionNumber"
    assert sr[other].value == source[other].value and sr.StudyInstanceUID == source.StudyInstanceUID
    assert f"source {keyword} is 17 characters" in caplog.text and value not in caplog.text
    assert source == before  # the source keeps its value
    assert read_second_read_sr(data)["referenced_sop_instance_uid"] == source.SOPInstanceUID


def test_an_identifier_of_exactly_16_characters_is_copied(caplog: pytest.LogCaptureFixture) -> None:
    source = make_cr(AccessionNumber="A" * 16, StudyID="S" * 16)
    with caplog.at_level(logging.WARNING, logger="models.imaging.source_header"):
        sr = strict_read(sr_to_bytes(build_second_read_sr(source, all_findings(), **ALGORITHM)))
    assert (sr.AccessionNumber, sr.StudyID) == ("A" * 16, "S" * 16) and "characters" not in caplog.text


@pytest.mark.parametrize(("age", "kept"), [("062Y", True), ("011M", True), ("62", False), ("62 years", False)])
def test_a_patient_age_that_is_not_a_dicom_age_string_is_left_out_of_the_sr(age: str, kept: bool) -> None:
    """AS is three digits and D/W/M/Y (PS3.5 6.2); sources write '62' (dciodvfy: "Value invalid for this VR").
    PatientAge is Type 3: the SR leaves an invalid one out rather than copy it or guess its unit."""
    source = long_identifiers(PatientAge=age)
    sr = strict_read(sr_to_bytes(build_second_read_sr(source, all_findings(), **ALGORITHM)))
    assert (sr.get("PatientAge") == age) if kept else ("PatientAge" not in sr)
    assert source.PatientAge == age  # the source keeps its value


def test_dcmtk_and_dicom3tools_read_the_sr_of_a_long_accession_number_cleanly(tmp_path: Path) -> None:
    """dsrdump (dcmtk) renders the SR with no warning; dciodvfy (dicom3tools), where installed, finds no error."""
    dsrdump = shutil.which("dsrdump")
    if dsrdump is None:
        pytest.skip("dsrdump is not installed (Debian package 'dcmtk'): the dcmtk check of the SR is not run")
    path = tmp_path / "sr.dcm"
    path.write_bytes(
        sr_to_bytes(build_second_read_sr(long_identifiers(AccessionNumber="X" * 40), all_findings(), **ALGORITHM))
    )
    done = subprocess.run([dsrdump, "-ll", "warn", str(path)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0 and "Comprehensive 3D SR" in done.stdout
    assert not [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(("W:", "E:", "F:"))]
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is not None:
        checked = subprocess.run([dciodvfy, "-new", str(path)], capture_output=True, text=True, timeout=30, check=False)
        assert not [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")]


def test_the_algorithm_is_contributing_equipment_of_the_sr(built: tuple[Dataset, list[FindingResult], bytes]) -> None:
    """Viewers show ContributingEquipmentSequence: the algorithm is there as processing equipment (DCM 109102, a
    member of CID 7005 "Contributing Equipment Purpose of Reference"), with its name and version."""
    sr = strict_read(built[2])
    purposes = {
        (
            item.PurposeOfReferenceCodeSequence[0].CodeValue,
            item.PurposeOfReferenceCodeSequence[0].CodingSchemeDesignator,
            item.Manufacturer,
        ): item
        for item in sr.ContributingEquipmentSequence
    }
    vigil = purposes[("109102", "DCM", "Vigil")]
    assert vigil.PurposeOfReferenceCodeSequence[0].CodeMeaning == "Processing Equipment"
    assert vigil.ManufacturerModelName == ALGORITHM["algorithm_name"]
    assert vigil.SoftwareVersions == ALGORITHM["algorithm_version"]
    assert ALGORITHM["algorithm_version"] in vigil.ContributionDescription
    assert not any(code == "109104" for code, _, _ in purposes)  # nothing here de-identified anything
    assert read_second_read_sr(built[2])["algorithm"]["version"] == ALGORITHM["algorithm_version"]  # TID 4019 too


def test_private_sop_class_source_is_refused_naming_the_field() -> None:
    with pytest.raises(InputValidationError, match="SOPClassUID") as info:
        build_second_read_sr(make_cr(SOPClassUID="1.2.3.4.5.6.7"), all_findings(), **ALGORITHM)
    assert info.value.field == "SOPClassUID"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"findings": []}, "findings"),
        ({"findings": [FindingResult("effusion", 0.1, 0.5, False)] * 2}, "findings"),
        ({"findings": [("effusion", 0.1, 0.5, False)]}, "findings"),
        ({"algorithm_name": ""}, "algorithm_name"),
        ({"algorithm_version": "x" * 65}, "algorithm_version"),
        ({"manufacturer": "a\\b"}, "manufacturer"),
        ({"series_number": 0}, "series_number"),
        ({"instance_number": True}, "instance_number"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"findings": all_findings(), **ALGORITHM, **kwargs}
    with pytest.raises(InputValidationError) as info:
        build_second_read_sr(make_cr(), **arguments)  # type: ignore[arg-type]
    assert info.value.field == field


def test_sr_in_the_source_series_is_refused(source: Dataset) -> None:
    with pytest.raises(InputValidationError, match="must differ") as info:
        build_second_read_sr(source, all_findings(), sr_series_instance_uid=source.SeriesInstanceUID, **ALGORITHM)
    assert info.value.field == "sr_series_instance_uid"


# --------------------------------------------------------------------------------------------- reading and checks
def test_strict_read_catches_an_invalid_value() -> None:
    """The validity check used above is not a no-op: an over-long SH fails it."""
    ds = make_cr()
    ds["StudyID"] = DataElement("StudyID", "SH", "S" * 17, validation_mode=config.IGNORE)  # SH: 16 at most
    buffer = io.BytesIO()
    with config.disable_value_validation():
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    with pytest.raises(ValueError, match="exceeds the maximum length of 16 allowed for VR SH"):
        strict_read(buffer.getvalue())


@pytest.mark.parametrize("what", ["garbage", "image"])
def test_reader_refuses_what_it_did_not_write(what: str) -> None:
    if what == "garbage":
        data = b"not a dicom file at all"
    else:
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, make_cr(), enforce_file_format=True)
        data = buffer.getvalue()
    with pytest.raises(InputValidationError) as info:
        read_second_read_sr(data)
    assert info.value.field == "file"


def test_reader_refuses_an_sr_without_the_vigil_evaluations(built: tuple[Dataset, list[FindingResult], bytes]) -> None:
    ds = pydicom.dcmread(io.BytesIO(built[2]))
    ds.ContentSequence = [
        item for item in ds.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue != "C0034375"
    ]
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    with pytest.raises(InputValidationError, match="not a Vigil second-read SR") as info:
        read_second_read_sr(buffer.getvalue())
    assert info.value.field == "QualitativeEvaluations"


# --------------------------------------------------------------------------------------------- real fixture
@pytest.mark.realdata
@pytest.mark.skipif(not SIIM.is_file(), reason=f"DICOM fixture not found at {SIIM} (set VIGIL_DATA_DIR)")
def test_real_cr_fixture_round_trips() -> None:
    source = pydicom.dcmread(SIIM)
    findings = all_findings(flags=(False,) * len(IMAGING_FINDINGS))
    data = sr_to_bytes(build_second_read_sr(source, findings, **ALGORITHM))
    sr = strict_read(data)
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert (sr.PatientID, str(sr.PatientName), sr.PatientSex) == (
        source.PatientID,
        str(source.PatientName),
        source.PatientSex,
    )
    assert sr.SpecificCharacterSet == source.SpecificCharacterSet
    parsed = read_second_read_sr(data)
    assert parsed["referenced_sop_instance_uid"] == source.SOPInstanceUID
    assert parsed["any_flagged"] is False
    assert {k: v["probability"] for k, v in parsed["findings"].items()} == {r.finding: r.probability for r in findings}
    assert parsed["statement"] == IMAGING_STATEMENT


def test_a_patient_id_longer_than_lo_allows_is_written_empty_and_one_of_64_is_copied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """LO holds 64 characters (PS3.5 6.2): a longer PatientID would make an invalid SR; it is left empty (Type 2),
    never cut to what could be another patient's ID, and logged by keyword and length only."""
    long_id = "MRN-" + "4" * 61  # 65 characters
    with caplog.at_level(logging.WARNING, logger="models.imaging.source_header"):
        sr = strict_read(
            sr_to_bytes(build_second_read_sr(long_identifiers(PatientID=long_id), all_findings(), **ALGORITHM))
        )
    assert sr.PatientID == "" and "source PatientID is 65 characters" in caplog.text and long_id not in caplog.text
    exact = "P" * 64
    sr = strict_read(sr_to_bytes(build_second_read_sr(long_identifiers(PatientID=exact), all_findings(), **ALGORITHM)))
    assert sr.PatientID == exact
