"""Label vocabularies and their order: the one place they are defined.

Acuity follows the five-level Manchester Triage System / ECDS order: level 1 is the most urgent. NHAMCS
``IMMEDR`` (ESI-like: immediate ... nonurgent) and KTAS levels are mapped onto the same 1-5 scale.
"""

from __future__ import annotations

from typing import Final

ACUITY_LEVELS: Final[tuple[int, ...]] = (1, 2, 3, 4, 5)

#: Manchester Triage System category names, by level.
ACUITY_LABELS_MANCHESTER: Final[dict[int, str]] = {
    1: "Immediate (red)",
    2: "Very urgent (orange)",
    3: "Urgent (yellow)",
    4: "Standard (green)",
    5: "Non-urgent (blue)",
}

#: ECDS acuity descriptions (SNOMED CT concepts used by the Emergency Care Data Set), by level.
ACUITY_LABELS_ECDS: Final[dict[int, str]] = {
    1: "Immediate resuscitation level emergency care",
    2: "Very urgent level emergency care",
    3: "Urgent level emergency care",
    4: "Standard level emergency care",
    5: "Low acuity level emergency care",
}

#: Binary outcome heads, in output order.
OUTCOMES: Final[tuple[str, ...]] = ("admitted", "critical")

OUTCOME_DEFINITIONS: Final[dict[str, str]] = {
    "admitted": "admitted to hospital from the ED (any ward, critical care included)",
    "critical": "admitted to critical care, or died in the ED",
}

#: Levels counted as high acuity when reporting under-triage "of levels 1-2".
HIGH_ACUITY_MAX_LEVEL: Final[int] = 2


def acuity_label(level: int) -> dict[str, str]:
    """Return the Manchester and ECDS labels of an acuity level.

    Raises
    ------
    ValueError
        If ``level`` is not in 1-5.
    """
    if level not in ACUITY_LABELS_MANCHESTER:
        raise ValueError(f"acuity level must be one of {ACUITY_LEVELS}; got {level!r}")
    return {"manchester": ACUITY_LABELS_MANCHESTER[level], "ecds": ACUITY_LABELS_ECDS[level]}


# ---------------------------------------------------------------------------------------------- imaging
#: Chest X-ray findings the data supports, in model output order. Codes: SNOMED CT where one concept matches
#: the finding exactly; the private scheme ``99VIGIL`` where Vigil merges NIH labels into one finding.
IMAGING_FINDINGS: Final[tuple[str, ...]] = (
    "effusion",
    "cardiomegaly",
    "pneumothorax",
    "atelectasis",
    "nodule_mass",
    "consolidation_infiltration",
    "pneumonia",
)

IMAGING_FINDING_CODES: Final[dict[str, tuple[str, str, str]]] = {
    # finding: (code value, coding scheme designator, code meaning)
    "effusion": ("60046008", "SCT", "Pleural effusion"),
    "cardiomegaly": ("8186001", "SCT", "Cardiomegaly"),
    "pneumothorax": ("36118008", "SCT", "Pneumothorax"),
    "atelectasis": ("46621007", "SCT", "Atelectasis"),
    "nodule_mass": ("NODMASS", "99VIGIL", "Lung nodule or mass"),
    "consolidation_infiltration": ("CONSINF", "99VIGIL", "Consolidation or infiltration"),
    "pneumonia": ("233604007", "SCT", "Pneumonia"),
}

#: NIH ChestX-ray14 labels that make up each finding (pneumonia comes from the Kermany set instead).
NIH_LABELS_BY_FINDING: Final[dict[str, tuple[str, ...]]] = {
    "effusion": ("Effusion",),
    "cardiomegaly": ("Cardiomegaly",),
    "pneumothorax": ("Pneumothorax",),
    "atelectasis": ("Atelectasis",),
    "nodule_mass": ("Nodule", "Mass"),
    "consolidation_infiltration": ("Consolidation", "Infiltration"),
}
