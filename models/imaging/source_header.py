"""The source image's header as a derived instance (the second-read SR, the heat-map SC) copies it: made valid.

A derived instance copies the patient and study attributes of the radiograph it was made from, so that a PACS files
it in the same study and patient. highdicom refuses (with a bare ValueError) or warns on some values that modalities
write, and some are invalid in the copy; each is handled here, logged by keyword, never by value:

- :func:`blank_invalid_dates`: a PatientBirthDate, StudyDate or StudyTime that is not a valid DA or TM is written
  empty (Type 2);
- :func:`blank_overlong_identifiers`: an AccessionNumber or StudyID longer than the 16 characters of their VR (SH),
  or a PatientID longer than LO's 64 (:data:`COPIED_IDENTIFIERS`), is written empty, with a warning;
- :func:`evidence_header`: the pixel-free copy of the source that :func:`models.imaging.sr.build_second_read_sr`
  gives highdicom as evidence: Type 2 attributes the source lacks added empty, a PatientSex outside M/F/O blanked,
  an invalid PatientAge left out, both of the above, and a SpecificCharacterSet that DICOM does not define replaced
  by UTF-8 (ISO_IR 192).
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Final

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, TM

logger = logging.getLogger(__name__)

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
#: Type 2 identifiers that a derived instance copies from its source, with the most characters their VR allows
#: (PS3.5 6.2: SH 16, LO 64). A longer value is invalid in the copy; it is written empty (Type 2 allows it) rather
#: than invalid or cut to another value.
COPIED_IDENTIFIERS: Final = {"AccessionNumber": ("SH", 16), "StudyID": ("SH", 16), "PatientID": ("LO", 64)}
#: A valid Age String (AS): three digits and a unit, days, weeks, months or years.
_AGE_STRING: Final = re.compile(r"\d{3}[DWMY]")
_PATIENT_SEX_VALUES: Final = frozenset({"M", "F", "O", ""})


def evidence_header(source: Dataset) -> Dataset:
    """A pixel-free copy of the source header that highdicom can take as evidence for the second-read SR.

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
