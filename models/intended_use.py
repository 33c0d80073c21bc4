"""Intended use of a released model, and the finding-level release of the chest X-ray model.

The release gate (``vigil release``) decides, per finding of the chest X-ray model, whether it is released and for
which population (the policy's ``intended_use``, fairness/release_policy.yaml); it records the decision on the
registry version as JSON (``release_gate.findings``), and the triage model's intended use and the populations it is
not validated for (``release_gate.intended_use``). Serving reads both back with :func:`finding_release_from_json`
and :func:`intended_use_from_json`; this module is the one definition both sides share, so serving never imports
the gate.

At serving time every read is checked against what can be checked on it: the patient's age from the DICOM header
(:func:`dicom_age_years`: PatientAge, else PatientBirthDate and the study date) and the view (ViewPosition). A
finding is then, for that image, one of

- ``evaluated``: released, and the image is inside its intended population: probability, threshold and flag shown;
- ``not validated``: the gate did not release it (it failed a floor, a per-group check or a safety invariant), or
  no release decision covers it: never flagged, no probability shown;
- ``outside intended use``: released for another population (e.g. pneumonia for children aged 1-5, read on an
  adult film), or the image does not say whether it belongs there (age not recorded): never flagged, no
  probability shown, and the reason says which attribute decided.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final, Literal

from pydicom import Dataset

from models.errors import ModelArtifactError

FindingStatus = Literal["evaluated", "not validated", "outside intended use"]
EVALUATED: Final = "evaluated"
NOT_VALIDATED: Final = "not validated"
OUTSIDE: Final = "outside intended use"

_AGE = re.compile(r"^(\d{3})([DWMY])$")
_DAYS_PER: Final = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}


@dataclass(frozen=True)
class Population:
    """Whom a released finding (or model) is for: a description and the attributes checkable on each input.

    ``min_age_years`` inclusive, ``max_age_years`` exclusive (``[1, 6)`` = aged 1 to 5 years); ``views`` the frontal
    ViewPosition values allowed (None: any view the pixel path accepts).
    """

    description: str
    min_age_years: float | None = None
    max_age_years: float | None = None
    views: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "min_age_years": self.min_age_years,
            "max_age_years": self.max_age_years,
            "views": list(self.views) if self.views is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Population:
        views = data.get("views")
        return cls(
            str(data["description"]),
            _opt_float(data.get("min_age_years")),
            _opt_float(data.get("max_age_years")),
            tuple(str(v) for v in views) if views is not None else None,
        )

    @property
    def restricts_age(self) -> bool:
        return self.min_age_years is not None or self.max_age_years is not None

    def check(self, age_years: float | None, view: str | None) -> tuple[bool, str]:
        """(inside, reason): whether an image of a patient of ``age_years`` in ``view`` is inside this population.

        The reason names the attribute that decided (PatientAge, ViewPosition) but never echoes the patient's age.
        """
        return self.check_attribute(age_years, view)[:2]

    def check_attribute(self, age_years: float | None, view: str | None) -> tuple[bool, str, str | None]:
        """:meth:`check`, and the DICOM attribute that placed the image outside (None when inside)."""
        if self.restricts_age:
            if age_years is None:
                return (
                    False,
                    (
                        f"the patient's age is not recorded (PatientAge, or PatientBirthDate and StudyDate), so "
                        f"the image cannot be placed in the intended population: {self.description}"
                    ),
                    "PatientAge",
                )
            low, high = self.min_age_years, self.max_age_years
            if (low is not None and age_years < low) or (high is not None and age_years >= high):
                return (
                    False,
                    (f"the patient's age (PatientAge) is outside the intended population: {self.description}"),
                    "PatientAge",
                )
        if self.views is not None and view is not None and view not in self.views:
            return False, f"ViewPosition {view} is outside the intended population: {self.description}", "ViewPosition"
        return True, f"inside the intended population: {self.description}", None


@dataclass(frozen=True)
class FindingRelease:
    """The release gate's decision per finding: released findings with their population; the others with why."""

    released: Mapping[str, Population] = field(default_factory=dict)
    not_validated: Mapping[str, str] = field(default_factory=dict)
    decided_by: str = "release gate"

    def status(self, finding: str, age_years: float | None, view: str | None) -> tuple[FindingStatus, str]:
        """The status of ``finding`` for one image, and the reason shown with it."""
        if finding in self.released:
            inside, reason = self.released[finding].check(age_years, view)
            return (EVALUATED, reason) if inside else (OUTSIDE, reason)
        why = self.not_validated.get(finding, "no release decision covers this finding")
        return NOT_VALIDATED, f"not validated: {why}"

    def deciding_attribute(self, age_years: float | None, view: str | None) -> str:
        """The attribute that kept every released finding off this image ("PatientAge", "ViewPosition"), or
        "findings" when nothing is released."""
        for population in self.released.values():
            attribute = population.check_attribute(age_years, view)[2]
            if attribute is not None:
                return attribute
        return "findings"

    def to_json(self) -> str:
        return json.dumps(
            {
                "released": {f: p.to_dict() for f, p in sorted(self.released.items())},
                "not_validated": dict(sorted(self.not_validated.items())),
                "decided_by": self.decided_by,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def everything(cls, findings: Iterable[str], why: str) -> FindingRelease:
        """Every finding evaluated on every accepted image (no release decision: evaluation runs and the override)."""
        return cls({f: Population(why) for f in findings}, {}, decided_by=why)


@dataclass(frozen=True)
class IntendedUse:
    """A model's intended population and the populations it was checked on outside it ("not validated for")."""

    population: str
    not_validated_for: tuple[Mapping[str, str], ...] = ()  # each {"name", "population", "reason"}

    def to_dict(self) -> dict[str, Any]:
        return {"population": self.population, "not_validated_for": [dict(p) for p in self.not_validated_for]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def finding_release_from_json(text: str | None, findings: Iterable[str]) -> FindingRelease | None:
    """Parse ``release_gate.findings``; None when the record has none (a version released before finding-level
    release, or never released). Unknown findings in the record are refused: the record is for another build.

    Raises
    ------
    ModelArtifactError
        The record is not valid JSON of this shape.
    """
    if not text:
        return None
    names = set(findings)
    try:
        data = json.loads(text)
        released = {str(f): Population.from_dict(p) for f, p in dict(data.get("released", {})).items()}
        not_validated = {str(f): str(r) for f, r in dict(data.get("not_validated", {})).items()}
        decided_by = str(data.get("decided_by", "release gate"))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelArtifactError(
            f"release_gate.findings is not a valid finding-level release record ({type(exc).__name__})"
        ) from exc
    unknown = (set(released) | set(not_validated)) - names
    if unknown:
        raise ModelArtifactError(f"release_gate.findings names findings this model does not have: {sorted(unknown)}")
    return FindingRelease(released, not_validated, decided_by)


def intended_use_from_json(text: str | None) -> IntendedUse | None:
    """Parse ``release_gate.intended_use``; None when the record has none.

    Raises
    ------
    ModelArtifactError
        The record is not valid JSON of this shape.
    """
    if not text:
        return None
    try:
        data = json.loads(text)
        others = tuple(
            {"name": str(p["name"]), "population": str(p["population"]), "reason": str(p["reason"])}
            for p in data.get("not_validated_for", [])
        )
        return IntendedUse(str(data["population"]), others)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelArtifactError(f"release_gate.intended_use is not a valid record ({type(exc).__name__})") from exc


def dicom_age_years(ds: Dataset) -> tuple[float | None, str]:
    """The patient's age in years from a DICOM header, and where it came from (or why it is unknown).

    PatientAge (``nnnD``/``W``/``M``/``Y``) first; else PatientBirthDate against StudyDate, SeriesDate,
    AcquisitionDate or ContentDate (the first present). A malformed value is treated as not recorded (the reason
    names the attribute): it must not stop the read, and it never places the image inside a population.
    """
    with warnings.catch_warnings():  # pydicom warns on a malformed AS/DA; the reason below says so instead
        warnings.simplefilter("ignore")
        raw = str(ds.get("PatientAge", "") or "").strip().upper()
        dates = {
            k: ds.get(k) for k in ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
        }
    if raw:
        match = _AGE.match(raw)
        if match:
            return int(match.group(1)) * _DAYS_PER[match.group(2)] / 365.25, "PatientAge"
        problem = "PatientAge is not of the form nnnD, nnnW, nnnM or nnnY"
    else:
        problem = "PatientAge is not recorded"
    born = _da(dates["PatientBirthDate"])
    if born is None:
        return None, f"{problem}, and PatientBirthDate is missing or not a date"
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        when = _da(dates[keyword])
        if when is not None:
            if when < born:
                return None, f"{problem}, and PatientBirthDate is after {keyword}"
            return (when - born).days / 365.25, f"PatientBirthDate and {keyword}"
    return None, f"{problem}, and no study date to compare PatientBirthDate with"


def _da(value: object) -> date | None:
    text = str(value or "").strip()
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
