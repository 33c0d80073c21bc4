"""The one pixel path: real CR/DX fixtures (each decoded once), refusals, LUT/window oracles, resizing, PNG/JPEG.

Expected values are written out from PS3.3 C.11 by hand, never derived from the module under test.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from models.errors import (
    ImageDimensionError,
    ImagingInputError,
    InputValidationError,
    MultiFrameError,
    NonFrontalViewError,
    NotAnImageError,
    NotChestError,
    PhotometricMismatchError,
    UndecodablePixelDataError,
    UnsupportedModalityError,
    UnsupportedPhotometricError,
)
from models.imaging import pixels as imaging
from models.imaging.dicom_read import read_dicom
from models.imaging.header import check_radiograph
from models.imaging.image_file import load_image_file
from models.imaging.pixels import (
    CONSISTENCY_MARGIN,
    IMAGE_MEAN,
    IMAGE_STD,
    PIXEL_PATH_VERSION,
    check_photometric_consistency,
    decode_radiograph,
    equalise_histogram,
    load_dicom_for_model,
    photometric_consistency_score,
    prepare_image,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("VIGIL_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
FIXTURES = DATA_DIR / "imaging" / "dicom_fixtures"
NIH_DIR = DATA_DIR / "imaging" / "nih_cxr14_1000_64px" / "NIH1000"
KERMANY_DIR = DATA_DIR / "imaging" / "kermany_pediatric_cxr_224px" / "dataset" / "train"
SIIM = "chest/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
NIH_DX = "chest/1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"
HEADERLESS = "chest/CR-MONO1-10-chest"
CHEST = [SIIM, NIH_DX, "chest/966_fixed.dcm", HEADERLESS, "chest/RG1_J2KI.dcm", "chest/RG1_JLSN.dcm"]
DERIVED = ["derived/CR-MONO1-10-chest_RLE.dcm", "derived/NIH_00000002_000_DX_RLE.dcm"]
# check_radiograph outcome from each header: RG2 says HIP, RG3 says EXTREMITY; the dental file states no body part.
OTHER_CR = {
    "other_cr/RG2_JPLL.dcm": NotChestError,
    "other_cr/RG2_JLSL.dcm": NotChestError,
    "other_cr/RG2_JPLY_fixed.dcm": NotChestError,
    "other_cr/RG3_J2KR.dcm": NotChestError,
    "other_cr/CR-ModalitySequenceLUT.dcm": None,
}
NEGATIVE = {
    "negative/966.dcm": UndecodablePixelDataError,
    "negative/RG2_JPLY.dcm": UndecodablePixelDataError,
    "negative/Fake_MONOHR1.dcm": PhotometricMismatchError,
}
MONOCHROME1_CHEST = ["chest/966_fixed.dcm", HEADERLESS, "chest/RG1_J2KI.dcm", "chest/RG1_JLSN.dcm"]

realdata = pytest.mark.realdata
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"DICOM fixtures not found at {FIXTURES} (set VIGIL_DATA_DIR)"
)
needs_nih = pytest.mark.skipif(not NIH_DIR.is_dir(), reason=f"NIH PNGs not found at {NIH_DIR} (set VIGIL_DATA_DIR)")


class DecodeOnce:
    """Each fixture read and decoded at most once per module (the J2K files take up to a second)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Dataset, np.ndarray]] = {}

    def __call__(self, name: str) -> tuple[Dataset, np.ndarray]:
        if name not in self._cache:
            ds = read_dicom(FIXTURES / name)
            self._cache[name] = (ds, decode_radiograph(ds))
        return self._cache[name]


@pytest.fixture(scope="module")
def decoded() -> DecodeOnce:
    return DecodeOnce()


def centre_minus_lateral(img: np.ndarray) -> float:
    """Independent of the module's rule: mean of the middle fifth minus the mean of two lateral fifths, mid height."""
    h, w = img.shape
    band = img[2 * h // 5 : 3 * h // 5].astype(np.float64)
    return float(
        band[:, 2 * w // 5 : 3 * w // 5].mean()
        - (band[:, w // 5 : 2 * w // 5].mean() + band[:, 3 * w // 5 : 4 * w // 5].mean()) / 2
    )


# ---------------------------------------------------------------------------------------------- real fixtures
@realdata
@needs_fixtures
def test_fixture_folders_hold_exactly_the_files_tested() -> None:
    on_disk = {
        f"{p.parent.name}/{p.name}"
        for d in ("chest", "derived", "other_cr", "negative")
        for p in (FIXTURES / d).iterdir()
        if p.suffix != ".py"
    }
    assert on_disk == set(CHEST) | set(DERIVED) | set(OTHER_CR) | set(NEGATIVE)


@realdata
@needs_fixtures
@pytest.mark.parametrize("name", CHEST + DERIVED)
def test_valid_chest_fixture_through_the_full_path(name: str, decoded: DecodeOnce) -> None:
    ds, img = decoded(name)
    check_radiograph(ds)
    assert img.dtype == np.float32 and img.shape == (int(ds.Rows), int(ds.Columns))
    assert img.min() >= 0.0 and img.max() <= 1.0 and img.std() > 0.1
    check_photometric_consistency(img)
    assert photometric_consistency_score(img) > CONSISTENCY_MARGIN
    assert centre_minus_lateral(img) > 0.05  # bones/mediastinum white, lungs dark
    x = prepare_image(img, 224)
    assert x.shape == (1, 224, 224) and x.dtype == np.float32
    assert x.min() >= -2.0 and x.max() <= 2.0


@realdata
@needs_fixtures
@pytest.mark.parametrize("name", [SIIM, NIH_DX, HEADERLESS, *DERIVED])
def test_load_dicom_for_model_equals_the_steps(name: str, decoded: DecodeOnce) -> None:
    ds, img = decoded(name)  # only the small files: this decodes them a second time
    x, meta = load_dicom_for_model((FIXTURES / name).read_bytes(), 96)
    np.testing.assert_array_equal(x, prepare_image(equalise_histogram(img), 96))
    assert set(meta) == {
        "modality",
        "photometric",
        "rows",
        "columns",
        "transfer_syntax",
        "view",
        "sop_instance_uid",
        "study_instance_uid",
        "series_instance_uid",
        "pixel_path_version",
    }
    assert meta["sop_instance_uid"] == ds.SOPInstanceUID and meta["study_instance_uid"] == ds.StudyInstanceUID
    assert meta["series_instance_uid"] == ds.SeriesInstanceUID and meta["pixel_path_version"] == PIXEL_PATH_VERSION
    assert (meta["rows"], meta["columns"]) == (ds.Rows, ds.Columns)
    assert meta["view"] == ("PA" if ds.get("ViewPosition") == "PA" else None)


@realdata
@needs_fixtures
@pytest.mark.parametrize(("name", "expected"), list(OTHER_CR.items()))
def test_other_cr_decodes_and_is_refused_by_body_part(name: str, expected: type | None, decoded: DecodeOnce) -> None:
    ds, img = decoded(name)
    if expected is None:
        check_radiograph(ds)
    else:
        with pytest.raises(expected, match=r"BodyPartExamined must be chest-like .*got '(HIP|EXTREMITY)'"):
            check_radiograph(ds)
    assert img.shape == (int(ds.Rows), int(ds.Columns)) and img.min() >= 0.0 and img.max() <= 1.0
    assert prepare_image(img, 128).shape == (1, 128, 128)


@realdata
@needs_fixtures
def test_dental_modality_lut_sequence_is_applied_and_rule_refuses_it(decoded: DecodeOnce) -> None:
    name = "other_cr/CR-ModalitySequenceLUT.dcm"
    ds, img = decoded(name)
    item = ds.ModalityLUTSequence[0]
    entries, first, _ = item.LUTDescriptor
    lut = np.frombuffer(item.LUTData, dtype="<u2") if isinstance(item.LUTData, bytes) else np.asarray(item.LUTData)
    raw = pydicom.pixels.pixel_array(ds).astype(np.int64)
    mapped = lut[np.clip(raw - first, 0, entries - 1)].astype(np.float64)
    lo, hi = np.percentile(mapped, [0.5, 99.5])
    expected = 1.0 - np.clip((mapped - lo) / (hi - lo), 0, 1)  # no VOI in the header; MONOCHROME1
    np.testing.assert_allclose(img, expected, atol=1e-6)
    lo_raw, hi_raw = np.percentile(raw, [0.5, 99.5])
    assert np.abs(img - (1.0 - np.clip((raw - lo_raw) / (hi_raw - lo_raw), 0, 1))).max() > 0.05  # LUT matters
    # A panoramic shows the teeth band white, but has no chest anatomy: the chest rule refuses it.
    with pytest.raises(PhotometricMismatchError, match="contradicts the pixel data"):
        load_dicom_for_model(FIXTURES / name, 64)


@realdata
@needs_fixtures
@pytest.mark.parametrize(("copy", "source"), [(DERIVED[0], HEADERLESS), (DERIVED[1], NIH_DX)])
def test_rle_copies_decode_to_the_same_display_image(copy: str, source: str, decoded: DecodeOnce) -> None:
    assert np.abs(decoded(copy)[1] - decoded(source)[1]).max() == 0.0


@realdata
@needs_fixtures
def test_headerless_file_is_read_with_a_transfer_syntax(decoded: DecodeOnce) -> None:
    path = FIXTURES / HEADERLESS
    with pytest.raises(InvalidDicomError):
        pydicom.dcmread(path)  # the quirk is real: no preamble, no file meta
    ds, _ = decoded(HEADERLESS)
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    with path.open("rb") as stream:
        assert read_dicom(stream).SOPInstanceUID == ds.SOPInstanceUID
    assert read_dicom(path.read_bytes()).Rows == 440


@realdata
@needs_fixtures
@pytest.mark.parametrize("name", MONOCHROME1_CHEST)
def test_monochrome1_is_inverted_exactly_once(name: str, decoded: DecodeOnce) -> None:
    ds, img = decoded(name)
    assert ds.PhotometricInterpretation == "MONOCHROME1"  # 966_fixed also says PresentationLUTShape INVERSE
    raw = pydicom.pixels.pixel_array(ds) if name == HEADERLESS else None
    if raw is not None:  # stored values: mediastinum low (MONOCHROME1), so the display must flip it
        assert centre_minus_lateral(raw) < 0
    assert centre_minus_lateral(img) > 0.05


@realdata
@needs_fixtures
@pytest.mark.parametrize(("name", "error"), list(NEGATIVE.items()))
def test_negative_fixture_raises_its_error(name: str, error: type, caplog: pytest.LogCaptureFixture) -> None:
    data = (FIXTURES / name).read_bytes()
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    ds = read_dicom(data)
    with caplog.at_level(logging.DEBUG), pytest.raises(error) as info:
        if error is PhotometricMismatchError:
            check_radiograph(ds)  # the header alone looks fine
            load_dicom_for_model(data, 64)
        else:
            decode_radiograph(ds)  # RG2_JPLY is a hip: load_dicom_for_model would refuse it by body part first
    if error is UndecodablePixelDataError:
        assert info.value.__cause__ is not None and info.value.field == "PixelData"
        assert str(info.value).startswith(f"PixelData ({header.file_meta.TransferSyntaxUID}) could not be decoded")
    else:
        assert info.value.field == "PhotometricInterpretation"
    secrets = [
        str(header.get(k))
        for k in ("PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID")
        if header.get(k)
    ]
    shown = str(info.value) + caplog.text
    assert secrets and not any(s in shown for s in secrets)


@realdata
@needs_fixtures
def test_a_lateral_view_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = pydicom.dcmread(FIXTURES / SIIM)
    ds.ViewPosition = "LL"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    monkeypatch.setattr(imaging, "pixel_array", lambda *a, **k: pytest.fail("decoded a lateral view"))
    with pytest.raises(
        NonFrontalViewError,
        match=r"^ViewPosition must be a frontal view \(PA or AP\) or absent; "
        r"got 'LL'",
    ) as info:
        load_dicom_for_model(buffer.getvalue(), 64)
    assert info.value.field == "ViewPosition"


@realdata
@needs_fixtures
def test_lossy_jpeg_is_decoded_with_pylibjpeg_first(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = imaging.pixel_array

    def spy(ds: Dataset, **kwargs: Any) -> np.ndarray:
        calls.append(kwargs.get("decoding_plugin", ""))
        return original(ds, **kwargs)

    monkeypatch.setattr(imaging, "pixel_array", spy)
    decode_radiograph(read_dicom(FIXTURES / SIIM))
    assert calls == ["pylibjpeg"]


@realdata
@needs_fixtures
def test_invalid_header_values_are_neither_warned_nor_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.RAISE)
    with caplog.at_level(logging.DEBUG):  # filterwarnings = error: any pydicom warning would fail here
        ds = read_dicom(FIXTURES / "other_cr" / "CR-ModalitySequenceLUT.dcm")
        assert imaging.dicom_metadata(ds)["sop_instance_uid"] == "999.999.01.23.45.6789"  # not a valid UID
        with pytest.raises(NotAnImageError):
            read_dicom(b"\x00" * 300)
    assert "999.999" not in caplog.text
    assert pydicom.config.settings.reading_validation_mode == pydicom.config.RAISE  # the caller's setting is back


# ---------------------------------------------------------------------------------------------- synthetic DICOM
def make_ds(pixels: np.ndarray | None = None, **header: Any) -> Dataset:
    """A small valid DX dataset (MONOCHROME2, 16/12 bits, explicit VR LE) with ``header`` overriding."""
    pixels = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 4096 if pixels is None else pixels
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    for keyword, value in header.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:  # without value validation, so that a test can write what a sloppy modality writes ('dx')
            tag = tag_for_keyword(keyword)
            ds[tag] = DataElement(tag, dictionary_VR(tag), value, validation_mode=pydicom.config.IGNORE)
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("header", "error", "message"),
    [
        ({"Modality": "CT"}, UnsupportedModalityError, r"^Modality must be one of CR, DX, DR; got 'CT'$"),
        ({"Modality": None}, UnsupportedModalityError, r"^Modality must be one of CR, DX, DR; got none$"),
        ({"BodyPartExamined": "HEAD"}, NotChestError, r"^BodyPartExamined must be chest-like .* got 'HEAD'$"),
        ({"PixelData": None}, NotAnImageError, r"^PixelData is missing"),
        (
            {"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 0},
            UnsupportedPhotometricError,
            r"^SamplesPerPixel must be 1",
        ),
        (
            {"PhotometricInterpretation": "PALETTE COLOR"},
            UnsupportedPhotometricError,
            r"^PhotometricInterpretation must be MONOCHROME1 or MONOCHROME2; got 'PALETTE COLOR'$",
        ),
        ({"PhotometricInterpretation": "YBR_FULL"}, UnsupportedPhotometricError, r"got 'YBR_FULL'$"),
        ({"NumberOfFrames": 2}, MultiFrameError, r"^NumberOfFrames must be 1"),
        ({"Rows": 60000}, ImageDimensionError, r"^Rows must be in \[32, 8192\]; got 60000$"),
        ({"Columns": 16}, ImageDimensionError, r"^Columns must be in \[32, 8192\]; got 16$"),
        (
            {"BitsAllocated": 32, "BitsStored": 32, "HighBit": 31},
            ImageDimensionError,
            r"^BitsAllocated must be 8 or 16",
        ),
        ({"BitsStored": 17}, ImageDimensionError, r"^BitsStored must be in \[1, 16\]"),
        ({"PresentationLUTShape": "LOG"}, UnsupportedPhotometricError, r"^PresentationLUTShape must be IDENTITY or"),
    ],
)
def test_header_refusals_come_before_any_decoding(
    header: dict[str, Any], error: type, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: Any, **kwargs: Any) -> np.ndarray:
        raise AssertionError("pixel data was decoded before the header was checked")

    monkeypatch.setattr(imaging, "pixel_array", no_decoding)
    ds = make_ds(**header)
    with pytest.raises(error, match=message) as info:
        check_radiograph(ds)
    assert isinstance(info.value, ImagingInputError) and isinstance(info.value, InputValidationError)
    assert isinstance(info.value, ValueError) and info.value.field in {*header, "PixelData"}
    if error not in (UnsupportedModalityError, NotChestError):  # decode checks the pixel module itself
        with pytest.raises(error):
            decode_radiograph(ds)
    with pytest.raises(error):
        load_dicom_for_model(dicom_bytes(ds), 64)


@pytest.mark.parametrize(
    "header",
    [
        {"Modality": "dx"},
        {"Modality": "CR"},
        {"BodyPartExamined": "chest"},
        {"BodyPartExamined": "THORAX"},
        {"BodyPartExamined": "LUNG"},
        {"BodyPartExamined": ""},
    ],
)
def test_accepted_headers(header: dict[str, Any]) -> None:
    check_radiograph(make_ds(**header))


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", np.random.default_rng(7).bytes(4096), b"hello, not DICOM" * 40, b"\x89PNG\r\n\x1a\n" + bytes(200)],
)
def test_not_dicom_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(NotAnImageError, match=r"^file must be a DICOM dataset") as info:
        read_dicom(data)
    assert info.value.field == "file"


def test_synthetic_round_trip_through_bytes_stream_and_path(tmp_path: Path) -> None:
    data = dicom_bytes(make_ds(BodyPartExamined="CHEST"))
    (tmp_path / "x.dcm").write_bytes(data)
    for source in (data, io.BytesIO(data), tmp_path / "x.dcm", str(tmp_path / "x.dcm")):
        np.testing.assert_array_equal(decode_radiograph(read_dicom(source)), decode_radiograph(make_ds()))


def test_decoded_shape_must_match_rows_and_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = make_ds()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    with pytest.raises(UndecodablePixelDataError, match=r"^PixelData \(1.2.840.10008.1.2.1\) could not be decoded"):
        decode_radiograph(ds)
    monkeypatch.setattr(imaging, "pixel_array", lambda ds, **kwargs: np.zeros((32, 16), dtype=np.uint16))
    with pytest.raises(UndecodablePixelDataError, match=r"decoded to shape \(32, 16\), but Rows x Columns is 32 x 32"):
        decode_radiograph(make_ds())


def test_missing_transfer_syntax_is_undecodable() -> None:
    ds = make_ds()
    del ds.file_meta.TransferSyntaxUID
    with pytest.raises(UndecodablePixelDataError, match=r"^TransferSyntaxUID is missing") as info:
        decode_radiograph(ds)
    assert info.value.field == "TransferSyntaxUID"


# Stored values on a 32x32 image (the rest 0) and their display values, worked by hand from PS3.3 C.11.2.1.2.1:
# LINEAR window c, w -> (x - (c - 0.5)) / (w - 1) + 0.5, clipped; output range y_min..y_max mapped to 0..1.
def tiny(values: list[int]) -> np.ndarray:
    pixels = np.zeros((32, 32), dtype=np.uint16)
    pixels[0, : len(values)] = values
    return pixels


def test_window_center_width() -> None:
    img = decode_radiograph(make_ds(tiny([0, 50, 100, 150, 200]), WindowCenter=100, WindowWidth=101))
    np.testing.assert_allclose(img[0, :5], [0.0, 0.005, 0.505, 1.0, 1.0], atol=1e-6)


def test_first_of_several_windows_is_used() -> None:
    img = decode_radiograph(make_ds(tiny([0, 50, 100, 150, 200]), WindowCenter=[100, 2000], WindowWidth=[101, 4000]))
    np.testing.assert_allclose(img[0, :5], [0.0, 0.005, 0.505, 1.0, 1.0], atol=1e-6)


def test_rescale_then_window() -> None:
    # 2 x - 100 gives 0, 50, 100, 150; c 100.5, w 201 -> (v - 100) / 200 + 0.5
    ds = make_ds(tiny([50, 75, 100, 125]), RescaleSlope=2, RescaleIntercept=-100, WindowCenter=100.5, WindowWidth=201)
    np.testing.assert_allclose(decode_radiograph(ds)[0, :4], [0.0, 0.25, 0.5, 0.75], atol=1e-6)


def test_modality_lut_sequence_then_window() -> None:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = [i // 2 for i in range(4096)]
    ds = make_ds(tiny([0, 1000, 2000, 3000]), ModalityLUTSequence=[item], WindowCenter=1024.5, WindowWidth=2049)
    # LUT -> 0, 500, 1000, 1500; window -> (v - 1024) / 2048 + 0.5
    np.testing.assert_allclose(decode_radiograph(ds)[0, :4], [0.0, 0.244140625, 0.48828125, 0.732421875], atol=1e-6)


def test_voi_lut_sequence_scaled_by_its_output_range() -> None:
    item = Dataset()
    item.LUTDescriptor = [128, 0, 8]
    item.LUTData = [2 * i for i in range(128)]  # outputs 0..254
    ds = make_ds(tiny([0, 10, 127, 200]), VOILUTSequence=[item], WindowCenter=5000, WindowWidth=10)
    np.testing.assert_allclose(decode_radiograph(ds)[0, :4], [0.0, 20 / 254, 1.0, 1.0], atol=1e-6)


def test_percentile_window_without_voi() -> None:
    img = decode_radiograph(make_ds(np.arange(1024, dtype=np.uint16).reshape(32, 32)))
    # 0.5th / 99.5th percentiles of 0..1023 (linear interpolation): 5.115 and 1017.885
    np.testing.assert_allclose(img.ravel()[[0, 5, 100, 1023]], [0.0, 0.0, (100 - 5.115) / 1012.77, 1.0], atol=1e-6)


@pytest.mark.parametrize(
    ("photometric", "shape", "inverted"),
    [
        ("MONOCHROME2", None, False),
        ("MONOCHROME2", "IDENTITY", False),
        ("MONOCHROME2", "INVERSE", True),
        ("MONOCHROME1", None, True),
        ("MONOCHROME1", "INVERSE", True),
        ("MONOCHROME1", "IDENTITY", True),
    ],
)
def test_photometric_inversion(photometric: str, shape: str | None, inverted: bool) -> None:
    ds = make_ds(
        tiny([0, 50, 100, 150, 200]),
        WindowCenter=100,
        WindowWidth=101,
        PhotometricInterpretation=photometric,
        PresentationLUTShape=shape,
    )
    expected = np.array([0.0, 0.005, 0.505, 1.0, 1.0])
    np.testing.assert_allclose(decode_radiograph(ds)[0, :5], 1.0 - expected if inverted else expected, atol=1e-6)


def test_consistency_rule_on_a_drawn_chest() -> None:
    xx = np.linspace(0, 1, 200)[None, :].repeat(240, axis=0)
    chest = (0.2 + 0.7 * np.exp(-(((xx - 0.5) / 0.08) ** 2))).astype(np.float32)  # bright mediastinum
    check_photometric_consistency(chest)
    with pytest.raises(PhotometricMismatchError, match=r"^PhotometricInterpretation contradicts the pixel data"):
        check_photometric_consistency(1.0 - chest)


# ---------------------------------------------------------------------------------------------- prepare_image
def test_constants() -> None:
    assert (PIXEL_PATH_VERSION, IMAGE_MEAN, IMAGE_STD) == ("cxr-pixels/3", 0.5, 0.25)


@pytest.mark.parametrize(
    ("shape", "content"), [((100, 50), (slice(0, 224), slice(56, 168))), ((50, 100), (slice(56, 168), slice(0, 224)))]
)
def test_prepare_image_keeps_aspect_and_pads_with_black(shape: tuple[int, int], content: tuple[slice, slice]) -> None:
    x = prepare_image(np.ones(shape, dtype=np.float32), 224)
    assert x.shape == (1, 224, 224) and x.dtype == np.float32
    white, black = (1.0 - 0.5) / 0.25, (0.0 - 0.5) / 0.25
    assert np.all(x[0][content] == white)
    mask = np.ones((224, 224), dtype=bool)
    mask[content] = False
    assert np.all(x[0][mask] == black)


def test_prepare_image_is_deterministic_and_antialiased() -> None:
    rng = np.random.default_rng(3)
    img = rng.random((517, 401), dtype=np.float32)
    np.testing.assert_array_equal(prepare_image(img, 224), prepare_image(img.copy(), 224))
    checker = (np.indices((448, 448)).sum(axis=0) % 2).astype(np.float32)
    assert np.abs(prepare_image(checker, 224)[0] * IMAGE_STD + IMAGE_MEAN - 0.5).max() < 0.05  # no aliasing


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 300), columns=st.integers(1, 300), size=st.integers(8, 64))
def test_prepare_image_content_box(rows: int, columns: int, size: int) -> None:
    x = prepare_image(np.ones((rows, columns), dtype=np.float32), size)[0]
    inside = np.argwhere(x > 0)  # bilinear keeps a constant image constant
    height, width = inside.max(axis=0) - inside.min(axis=0) + 1
    scale = size / max(rows, columns)
    assert (height, width) == (max(1, round(rows * scale)), max(1, round(columns * scale)))
    top, left = inside.min(axis=0)
    assert abs(top - (size - height - top)) <= 1 and abs(left - (size - width - left)) <= 1


@pytest.mark.parametrize(
    ("img", "error"),
    [
        (np.zeros((4, 4, 3)), ImageDimensionError),
        (np.full((4, 4), 1.5), ImagingInputError),
        (np.full((4, 4), np.nan), ImagingInputError),
    ],
)
def test_prepare_image_refuses_bad_arrays(img: np.ndarray, error: type) -> None:
    with pytest.raises(error, match=r"^image"):
        prepare_image(img, 32)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        prepare_image(np.zeros((4, 4)), 0)


# ---------------------------------------------------------------------------------------------- PNG / JPEG
def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _window_oracle(values: np.ndarray) -> np.ndarray:
    """0.5-99.5 percentile window, written out independently of the module."""
    low, high = np.percentile(values.astype(np.float64), [0.5, 99.5])
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def test_greyscale_png_and_grey_rgb_are_read() -> None:
    # PNG/JPEG get the same percentile window as an unwindowed DICOM (one intensity convention).
    grey = (np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)
    np.testing.assert_allclose(load_image_file(png_bytes(grey)), _window_oracle(grey / 255.0), atol=1e-6)
    rgb = np.stack([grey, grey, np.clip(grey.astype(int) + 2, 0, 255).astype(np.uint8)], axis=2)
    np.testing.assert_allclose(load_image_file(png_bytes(rgb)), _window_oracle(rgb.mean(axis=2) / 255.0), atol=1e-6)
    deep = (np.arange(64 * 64, dtype=np.uint16) * 16).reshape(64, 64)
    np.testing.assert_allclose(load_image_file(png_bytes(deep)), _window_oracle(deep / 65535.0), atol=1e-6)
    narrow = np.full((64, 64), 100, dtype=np.uint8)
    narrow[:, 32:] = 140  # two grey levels -> stretched to the full range
    out = load_image_file(png_bytes(narrow))
    assert out.min() == 0.0 and out.max() == 1.0


def test_colour_image_is_refused() -> None:
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    rgb[:, :32, 0] = 200
    with pytest.raises(UnsupportedPhotometricError, match=r"^file must be a greyscale image; got a colour image"):
        load_image_file(png_bytes(rgb))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", UndecodablePixelDataError),
        (np.random.default_rng(1).bytes(999), UndecodablePixelDataError),
        (png_bytes(np.zeros((64, 64), dtype=np.uint8), "GIF"), UndecodablePixelDataError),
        (
            png_bytes(np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8))[:2000],
            UndecodablePixelDataError,
        ),
        (png_bytes(np.zeros((8, 64), dtype=np.uint8)), ImageDimensionError),
    ],
)
def test_bad_image_files_are_refused(data: bytes, error: type) -> None:
    with pytest.raises(error, match=r"^(file|image)") as info:
        load_image_file(data)
    assert info.value.field == "file"


@realdata
@needs_nih
@needs_fixtures
def test_nih_png_matches_the_dicom_path_convention(decoded: DecodeOnce) -> None:
    path = NIH_DIR / "train" / "0_normal" / "00000002_000.png"  # the same NIH image as the DX fixture
    img = load_image_file(path)
    assert img.shape == (64, 64) and img.dtype == np.float32
    np.testing.assert_allclose(img, _window_oracle(np.asarray(Image.open(path).convert("L")) / 255.0), atol=1e-6)
    from_png = prepare_image(img, 64)
    from_dicom = prepare_image(decoded(NIH_DX)[1], 64)
    assert np.corrcoef(from_png.ravel(), from_dicom.ravel())[0, 1] > 0.99  # same polarity and geometry
    # Both paths apply the same percentile window: no training/serving intensity skew (was 0.11 without it).
    assert np.abs(from_png - from_dicom).mean() < 0.05
    inverted = png_bytes((255 - np.asarray(Image.open(path).convert("L"))).astype(np.uint8))
    load_image_file(inverted)  # the rule is off by default for PNG/JPEG
    with pytest.raises(PhotometricMismatchError):
        load_image_file(inverted, check_consistency=True)


@realdata
@pytest.mark.skipif(not KERMANY_DIR.is_dir(), reason=f"Kermany JPEGs not found at {KERMANY_DIR}")
def test_kermany_jpeg_is_read_as_greyscale() -> None:
    path = sorted((KERMANY_DIR / "NORMAL").glob("*.jpeg"))[0]
    img = load_image_file(path, check_consistency=True)
    assert img.shape == (224, 224) and 0.0 <= img.min() and img.max() <= 1.0
