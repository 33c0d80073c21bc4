"""The heat-map Secondary Capture: built from a synthetic CR and an RGB array (and from a second read), written,
strictly re-read, checked attribute by attribute and, where dicom3tools is installed, by dciodvfy.

Expected values come from the inputs (the source dataset, the pixel array) and from PS3 constants written out here,
never from the module's own constants.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid

from models.errors import InputValidationError
from models.imaging.heatmap_sc import build_heatmap_sc, heatmap_secondary_capture
from models.imaging.onnx import SecondRead
from models.imaging.pixels import IMAGE_MEAN, IMAGE_STD
from models.labels import IMAGING_FINDINGS

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
SERIES_DESCRIPTION = "Vigil heat map (decision support, not for diagnosis)"
DERIVATION_DESCRIPTION = "Class-activation heat map overlaid on the model input; decision support only"
#: Patient and study attributes copied from the source, so that a PACS files the SC in the source's study.
COPIED = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def make_cr(**overrides: object) -> Dataset:
    """A small CR image header with patient and study identification and fresh UIDs (``None`` deletes)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.Manufacturer = "Acme Radiography"
    ds.BodyPartExamined = "CHEST"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-0042"
    ds.IssuerOfPatientID = "HOSPITAL-A"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyID = "S1"
    ds.AccessionNumber = "ACC-7"
    ds.StudyDate = "20250102"
    ds.StudyTime = "101500"
    ds.ReferringPhysicianName = "Who^Doctor"
    ds.StudyDescription = "XR CHEST PA"
    for keyword, value in overrides.items():
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    return ds


def long_values(**values: str | None) -> Dataset:
    """A CR with values longer than their VR allows, or otherwise invalid for it, as a modality writes them (pydicom
    warns on setting such a value; that warning is the test's own doing, not the code's under test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_cr(**values)


def heat_map(rows: int = 6, columns: int = 10) -> np.ndarray:
    """A non-square RGB image, so that rows and columns cannot be swapped unseen."""
    return np.random.default_rng(7).integers(0, 256, size=(rows, columns, 3), dtype=np.uint8)


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def strict_read(data: bytes) -> Dataset:
    """Read with reading validation set to RAISE and touch every value."""
    with config.strict_reading():
        ds = pydicom.dcmread(io.BytesIO(data))
        for element in ds.iterall():
            _ = element.value
    return ds


@pytest.fixture
def source() -> Dataset:
    return make_cr()


def test_the_sc_is_a_derived_secondary_capture_in_the_source_study(source: Dataset) -> None:
    sc = strict_read(part10(build_heatmap_sc(source, heat_map())))
    assert sc.SOPClassUID == SECONDARY_CAPTURE and sc.Modality == "OT"
    assert (sc.SeriesNumber, sc.SeriesDescription, sc.InstanceNumber) == (9902, SERIES_DESCRIPTION, 1)
    assert sc.DerivationDescription == DERIVATION_DESCRIPTION
    assert list(sc.ImageType) == ["DERIVED", "SECONDARY"]
    assert (sc.BurnedInAnnotation, sc.ConversionType, sc.Manufacturer) == ("NO", "WSD", "Vigil")
    assert sc.PatientOrientation == "" and sc.BodyPartExamined == "CHEST"
    (reference,) = sc.SourceImageSequence
    assert (reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID) == (
        CR_IMAGE_STORAGE,
        source.SOPInstanceUID,
    )
    for keyword in COPIED:
        assert sc[keyword].value == source[keyword].value, keyword
    assert sc.SeriesInstanceUID != source.SeriesInstanceUID and sc.SOPInstanceUID != source.SOPInstanceUID


def test_every_date_and_time_of_the_sc_is_the_same_utc_moment(source: Dataset, monkeypatch) -> None:
    """highdicom writes the capture and creation times in the host's local time; Vigil writes UTC everywhere."""
    monkeypatch.setenv("TZ", "America/New_York")
    import time

    time.tzset()
    try:
        sc = build_heatmap_sc(source, heat_map())
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    for date_keyword, time_keyword in (
        ("DateOfSecondaryCapture", "TimeOfSecondaryCapture"),
        ("InstanceCreationDate", "InstanceCreationTime"),
    ):
        if date_keyword in sc:
            written = (str(sc[date_keyword].value), str(sc[time_keyword].value)[:6])
            assert written == (str(sc.ContentDate), str(sc.ContentTime)), date_keyword


def test_the_file_is_explicit_vr_little_endian_with_consistent_file_meta(source: Dataset) -> None:
    data = part10(build_heatmap_sc(source, heat_map()))
    assert data[128:132] == b"DICM"
    sc = strict_read(data)
    assert sc.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    assert sc.file_meta.MediaStorageSOPClassUID == SECONDARY_CAPTURE
    assert sc.file_meta.MediaStorageSOPInstanceUID == sc.SOPInstanceUID


def test_the_pixels_are_the_rgb_heat_map_as_given(source: Dataset) -> None:
    rgb = heat_map(rows=6, columns=10)
    sc = strict_read(part10(build_heatmap_sc(source, rgb)))
    assert (sc.Rows, sc.Columns, sc.SamplesPerPixel, sc.PhotometricInterpretation) == (6, 10, 3, "RGB")
    assert (sc.BitsAllocated, sc.BitsStored, sc.HighBit, sc.PixelRepresentation, sc.PlanarConfiguration) == (
        8,
        8,
        7,
        0,
        0,
    )
    assert sc.pixel_array.shape == (6, 10, 3) and sc.pixel_array.dtype == np.uint8
    np.testing.assert_array_equal(sc.pixel_array, rgb)


def test_each_sc_gets_new_uids_in_the_same_study(source: Dataset) -> None:
    first, second = (build_heatmap_sc(source, heat_map()) for _ in range(2))
    assert first.StudyInstanceUID == second.StudyInstanceUID == source.StudyInstanceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID and first.SeriesInstanceUID != second.SeriesInstanceUID


@pytest.mark.parametrize(("keyword", "most"), [("AccessionNumber", 16), ("StudyID", 16), ("PatientID", 64)])
def test_an_identifier_longer_than_its_vr_allows_is_written_empty_with_a_warning(
    keyword: str, most: int, caplog: pytest.LogCaptureFixture
) -> None:
    value = "Q" * (most + 1)
    source = long_values(**{keyword: value})
    with caplog.at_level(logging.WARNING):
        sc = strict_read(part10(build_heatmap_sc(source, heat_map())))
    assert sc[keyword].value == "" and source[keyword].value == value  # the source keeps its value
    assert f"source {keyword} is {most + 1} characters" in caplog.text and "heat-map SC" in caplog.text
    assert value not in caplog.text


def test_identifiers_as_long_as_their_vr_allows_are_copied(caplog: pytest.LogCaptureFixture) -> None:
    source = make_cr(AccessionNumber="A" * 16, StudyID="S" * 16, PatientID="P" * 64)
    with caplog.at_level(logging.WARNING):
        sc = strict_read(part10(build_heatmap_sc(source, heat_map())))
    assert (sc.AccessionNumber, sc.StudyID, sc.PatientID) == ("A" * 16, "S" * 16, "P" * 64)
    assert "characters" not in caplog.text


def test_type2_attributes_the_source_lacks_are_written_empty() -> None:
    source = make_cr(**dict.fromkeys(TYPE2))
    sc = strict_read(part10(build_heatmap_sc(source, heat_map())))
    for keyword in TYPE2:
        assert keyword in sc and sc[keyword].value in ("", None), keyword


def test_values_highdicom_would_refuse_are_written_empty_without_echoing_them(caplog: pytest.LogCaptureFixture) -> None:
    """A hash as a birth date (pylibjpeg-data's 966), a date and a time that are not DA/TM, a sex outside M/F/O."""
    birth_date = "d14a028c2a3a2bc9476102bb288234c4"
    source = long_values(PatientBirthDate=birth_date, StudyDate="2025-13-45", StudyTime="25:61", PatientSex="X")
    caplog.clear()  # pydicom logs the values as the test sets them
    with caplog.at_level(logging.INFO):
        sc = strict_read(part10(build_heatmap_sc(source, heat_map())))
    assert (sc.PatientBirthDate, sc.StudyDate, sc.StudyTime, sc.PatientSex) == ("", "", "", "")
    assert source.PatientBirthDate == birth_date and source.PatientSex == "X"
    for keyword in ("PatientBirthDate", "StudyDate", "StudyTime", "PatientSex"):
        assert f"source {keyword}" in caplog.text
    assert birth_date not in caplog.text and "2025-13-45" not in caplog.text


def test_names_without_a_caret_are_copied_as_they_are_and_not_echoed_in_a_warning() -> None:
    """highdicom warns, quoting the name, on a name without '^'; the SC copies such names without a warning."""
    source = make_cr(PatientName="Anonymized", ReferringPhysicianName="ward")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sc = build_heatmap_sc(source, heat_map())
    assert (str(sc.PatientName), str(sc.ReferringPhysicianName)) == ("Anonymized", "ward")


@pytest.mark.parametrize(
    ("character_set", "written"),
    [
        ("ISO_IR 100", "ISO_IR 100"),
        ("ISO_IR 192", "ISO_IR 192"),
        ("ISO_IR 6", "ISO_IR 6"),  # the default repertoire: highdicom refuses the term, the SC keeps it
        (["ISO 2022 IR 6", "ISO 2022 IR 87"], ["ISO 2022 IR 6", "ISO 2022 IR 87"]),
        ("ISO_IR 999", "ISO_IR 192"),  # not a defined term: UTF-8, as in the SR
    ],
)
def test_the_character_set_is_the_sources_when_dicom_defines_it(
    character_set: str | list[str], written: str | list[str]
) -> None:
    source = make_cr(SpecificCharacterSet=character_set, PatientName="Müller^Jürgen")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when it decodes with an unknown term; not the code's doing
        sc = pydicom.dcmread(io.BytesIO(part10(build_heatmap_sc(source, heat_map()))))
        assert sc.SpecificCharacterSet == written
        if written != "ISO_IR 6":  # the default repertoire has no ü
            assert str(sc.PatientName) == "Müller^Jürgen"


@pytest.mark.parametrize(("body_part", "written"), [("CHEST", "CHEST"), ("Chest PA", None), (None, None)])
def test_body_part_examined_is_copied_only_when_it_is_a_valid_code_string(
    body_part: str | None, written: str | None
) -> None:
    sc = build_heatmap_sc(long_values(BodyPartExamined=body_part), heat_map())
    assert sc.get("BodyPartExamined") == written


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SOPClassUID", "SOPInstanceUID"])
def test_a_source_without_the_uids_to_reference_is_refused(keyword: str) -> None:
    with pytest.raises(InputValidationError, match=f"the source image has no {keyword}") as raised:
        build_heatmap_sc(make_cr(**{keyword: None}), heat_map())
    assert raised.value.field == keyword


@pytest.mark.parametrize(
    "rgb",
    [
        np.zeros((4, 4), dtype=np.uint8),
        np.zeros((4, 4, 4), dtype=np.uint8),
        np.zeros((4, 4, 3), dtype=np.uint16),
        np.zeros((0, 4, 3), dtype=np.uint8),
        [[[0, 0, 0]]],
    ],
)
def test_pixels_other_than_uint8_rgb_are_refused(source: Dataset, rgb: object) -> None:
    with pytest.raises(InputValidationError, match="rgb must") as raised:
        build_heatmap_sc(source, rgb)  # type: ignore[arg-type]
    assert raised.value.field == "rgb"


@pytest.mark.parametrize("manufacturer", ["", "x" * 65, "a\\b"])
def test_a_manufacturer_that_is_not_a_long_string_is_refused(source: Dataset, manufacturer: str) -> None:
    with pytest.raises(InputValidationError, match="manufacturer must"):
        build_heatmap_sc(source, heat_map(), manufacturer=manufacturer)


def test_dciodvfy_finds_no_error_in_the_sc(tmp_path: Path) -> None:
    """dicom3tools' IOD check of the Secondary Capture Image IOD, where it is installed."""
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy is not installed (Debian package 'dicom3tools'): the IOD check of the SC is not run")
    path = tmp_path / "sc.dcm"
    path.write_bytes(part10(build_heatmap_sc(long_values(AccessionNumber="X" * 40), heat_map())))
    checked = subprocess.run([dciodvfy, "-new", str(path)], capture_output=True, text=True, timeout=30, check=False)
    output = checked.stdout + checked.stderr
    assert "SCImage" in output or "Secondary Capture" in output, output[-2000:]  # it did check the SC IOD
    assert not [line for line in output.splitlines() if line.startswith("Error")], output[-2000:]


def second_read(source: Dataset | None, size: int = 12) -> SecondRead:
    """A second read of ``source`` whose first finding has a heat map (a bright square) over a grey gradient."""
    findings = list(IMAGING_FINDINGS)
    grey = np.linspace(0.0, 1.0, size * size, dtype=np.float32).reshape(size, size)
    heatmaps = np.zeros((len(findings), size, size), dtype=np.float32)
    heatmaps[0, 2:6, 3:9] = 1.0
    return SecondRead(
        probabilities={f: (0.9 if i == 0 else 0.1) for i, f in enumerate(findings)},
        thresholds=dict.fromkeys(findings, 0.5),
        flags={f: i == 0 for i, f in enumerate(findings)},
        flagged=True,
        heatmaps=heatmaps,
        image=(grey - IMAGE_MEAN) / IMAGE_STD,
        source={},
        dataset=source,
    )


def test_the_sc_of_a_second_read_holds_its_heat_map_png(source: Dataset) -> None:
    read = second_read(source)
    expected = np.asarray(Image.open(io.BytesIO(read.heatmap_png())).convert("RGB"))
    sc = strict_read(part10(heatmap_secondary_capture(read)))
    assert sc.pixel_array.shape == (12, 12, 3)
    np.testing.assert_array_equal(sc.pixel_array, expected)
    assert sc.pixel_array[3, 4, 0] > sc.pixel_array[3, 4, 1]  # red where the map is
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_a_second_read_without_its_source_dataset_has_no_sc() -> None:
    with pytest.raises(InputValidationError, match="needs the source dataset") as raised:
        heatmap_secondary_capture(second_read(None))
    assert raised.value.field == "dataset"
