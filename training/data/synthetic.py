"""A seeded generator of clinically plausible synthetic triage records, for tests, demos and fairness drills.

Each visit has a latent severity drawn from its complaint, its age and noise. Severity drives the vital
signs, ACVPU, arrival by ambulance, the triage level and the outcomes, so a model can learn something real
(a logistic regression on the record reaches an AUROC near 0.8 for admission) while nothing is a copy of
any patient. About 10% of each vital sign is missing. The same ``n`` and ``seed`` give the same frame
(and digest) on every machine.

``disparity`` injects a known measurement bias, so fairness audits can be checked against a planted
effect. One kind exists:

``{"spo2_overread": {"group": "nh_black", "points": 3}}``
    Pulse oximeters over-read in people with darker skin (Sjoding et al., NEJM 2020). The measured SpO2 of
    the group is raised by ``points`` (capped at 100) while outcomes still follow the true saturation.
    Every random draw is the same with or without the disparity: only the group's SpO2 changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import pandas as pd

from models.errors import InputValidationError
from models.triage.record import CONSCIOUSNESS_LEVELS
from training.data.dataset import PAYERS, TriageDataset, build_dataset

#: Complaint text, relative frequency, severity shift, and whether it is usually painful.
COMPLAINTS: Final[tuple[tuple[str, float, float, bool], ...]] = (
    ("chest pain", 0.10, 0.7, True),
    ("shortness of breath", 0.08, 0.9, False),
    ("abdominal pain", 0.13, 0.1, True),
    ("fall", 0.08, 0.0, True),
    ("headache", 0.06, -0.3, True),
    ("fever", 0.07, 0.1, False),
    ("laceration", 0.07, -1.0, True),
    ("back pain", 0.06, -0.7, True),
    ("vomiting", 0.05, -0.1, False),
    ("dizziness", 0.05, 0.0, False),
    ("altered mental status", 0.03, 1.4, False),
    ("syncope", 0.03, 0.5, False),
    ("ankle injury", 0.06, -1.1, True),
    ("sore throat", 0.05, -1.3, False),
    ("rash", 0.04, -1.3, False),
    ("cough", 0.04, -0.4, False),
)
RESPIRATORY: Final[frozenset[str]] = frozenset({"shortness of breath", "cough"})
ETHNICITIES: Final[tuple[str, ...]] = ("nh_white", "nh_black", "hispanic", "nh_other")
ETHNICITY_SHARES: Final[tuple[float, ...]] = (0.55, 0.22, 0.16, 0.07)
SITES: Final[tuple[str, ...]] = ("synthetic_site1", "synthetic_site2", "synthetic_site3")
#: Triage level cut points on the noisy acuity score (level 1 above the first); with seed 0 and n=20,000
#: they give levels 1-5 to 3% / 15% / 40% / 30% / 11% of visits, 17% admitted, 2.2% critical.
ACUITY_CUTS: Final[tuple[float, ...]] = (3.0, 1.3, -0.45, -2.0)
MISSING_RATE: Final = 0.10
MAX_N: Final = 5_000_000
DISPARITY_KINDS: Final[tuple[str, ...]] = ("spo2_overread",)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _check_disparity(disparity: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate the disparity spec; return {} or {"group": str, "points": float}."""
    if not disparity:
        return {}
    unknown = sorted(set(disparity) - set(DISPARITY_KINDS))
    if unknown:
        raise InputValidationError("disparity", f"disparity kinds must be among {list(DISPARITY_KINDS)}; got {unknown}")
    spec = disparity["spo2_overread"]
    if not isinstance(spec, Mapping) or set(spec) != {"group", "points"}:
        raise InputValidationError(
            "disparity",
            "'spo2_overread' needs exactly the keys 'group' and 'points', e.g. {'group': 'nh_black', 'points': 3}",
        )
    group, points = spec["group"], spec["points"]
    if group not in ETHNICITIES:
        raise InputValidationError(
            "disparity", f"'spo2_overread.group' must be one of {list(ETHNICITIES)}; got {str(group)[:32]!r}"
        )
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not 0 < points <= 20:
        raise InputValidationError("disparity", f"'spo2_overread.points' must be a number in (0, 20]; got {points!r}")
    return {"group": group, "points": float(points)}


def generate_synthetic(n: int, seed: int, *, disparity: Mapping[str, Any] | None = None) -> TriageDataset:
    """Generate ``n`` synthetic ED visits from ``seed``.

    Parameters
    ----------
    n : int
        Number of visits, 1 to 5,000,000.
    seed : int
        Seed of the ``numpy.random.Generator``; the same ``n`` and ``seed`` give an identical frame.
    disparity : dict, optional
        A planted measurement bias (see the module docstring); only ``spo2_overread`` exists.

    Returns
    -------
    TriageDataset
        Named ``"synthetic:n=<n>,seed=<seed>"`` (plus the disparity), validated strictly; every label is
        present, ``nurse_acuity`` is missing, ``year`` 2024, ``weight`` 1.0.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_N:
        raise InputValidationError("n", f"'n' must be an integer in [1, {MAX_N}]; got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputValidationError("seed", f"'seed' must be a non-negative integer; got {seed!r}")
    bias = _check_disparity(disparity)
    n, seed = int(n), int(seed)
    rng = np.random.default_rng(seed)

    # Who arrives, with what.
    child = rng.random(n) < 0.12
    age = np.where(child, rng.integers(0, 15, n), np.clip(np.round(rng.normal(50, 20, n)), 15, 100)).astype(float)
    sex = rng.choice(np.array(["female", "male", "unknown"], dtype=object), n, p=[0.52, 0.475, 0.005])
    ethnicity = rng.choice(np.array(ETHNICITIES, dtype=object), n, p=ETHNICITY_SHARES)
    site = rng.choice(np.array(SITES, dtype=object), n, p=[0.5, 0.3, 0.2])
    shares = np.array([c[1] for c in COMPLAINTS])
    which = rng.choice(len(COMPLAINTS), n, p=shares / shares.sum())
    complaint = np.array([c[0] for c in COMPLAINTS], dtype=object)[which]
    shift = np.array([c[2] for c in COMPLAINTS])[which]
    painful = np.array([c[3] for c in COMPLAINTS])[which]
    respiratory = np.isin(complaint, list(RESPIRATORY))
    fever_complaint = complaint == "fever"

    # Latent severity, then the true physiology it drives.
    severity = shift + 0.02 * (age - 45) + rng.normal(0, 1, n)
    sick = np.maximum(severity, 0)
    febrile = fever_complaint | (rng.random(n) < 0.05 + 0.05 * sick)
    heart_rate = 78 + 9 * severity + 12 * febrile + rng.normal(0, 11, n) + np.where(age < 5, 35, 0)
    resp_rate = 16 + 1.2 * severity + 1.8 * sick + 2 * respiratory + rng.normal(0, 2, n) + np.where(age < 5, 10, 0)
    spo2_true = 97.8 - 1.8 * sick**1.2 - 2.0 * respiratory * sick + rng.normal(0, 1.1, n)
    sbp = 118 + 0.45 * (np.maximum(age, 15) - 40) - 9 * np.maximum(severity - 1.2, 0) + rng.normal(0, 16, n)
    temperature = 36.8 + febrile * rng.normal(1.6, 0.5, n) + rng.normal(0, 0.3, n)
    dbp = 0.58 * sbp + rng.normal(8, 7, n)
    unresponsive_odds = -5.0 + 1.4 * severity + 2.5 * (complaint == "altered mental status")
    not_alert = rng.random(n) < _sigmoid(unresponsive_odds)
    level = np.clip(np.floor(1 + rng.random(n) * 2 + 0.6 * sick), 1, 4).astype(int)
    consciousness = np.where(not_alert, np.array(CONSCIOUSNESS_LEVELS, dtype=object)[level], "A").astype(object)
    gcs_by_level = {"A": 15.0, "C": 14.0, "V": 12.0, "P": 7.0, "U": 3.0}
    gcs = np.array([gcs_by_level[c] for c in consciousness])
    pain = np.where(painful, rng.normal(5.5, 2.2, n), rng.normal(1.2, 1.8, n))
    ambulance = rng.random(n) < _sigmoid(-1.9 + 0.9 * severity + 0.02 * (age - 50) + 1.5 * not_alert)
    other_arrival = rng.random(n) < 0.03
    arrival_mode = np.where(ambulance, "ambulance", np.where(other_arrival, "other", "walk_in")).astype(object)
    on_oxygen = ((spo2_true < 92) & (rng.random(n) < 0.6)) | (rng.random(n) < 0.02 * (1 + sick))
    arrival_minutes = rng.integers(0, 366 * 24 * 60, n)
    payer_draw = rng.choice(np.array(PAYERS, dtype=object), n, p=[0.32, 0.12, 0.34, 0.01, 0.13, 0.02, 0.06])
    payer = np.where((age >= 65) & (rng.random(n) < 0.8), "medicare", payer_draw).astype(object)

    # Labels follow the true severity and physiology, never the (possibly biased) measurements.
    acuity_score = severity + 0.9 * not_alert + 0.25 * (spo2_true < 92) + rng.normal(0, 0.8, n)
    acuity = 5 - np.searchsorted(np.sort(ACUITY_CUTS), acuity_score, side="left")
    admitted = rng.random(n) < _sigmoid(-2.2 + 1.1 * severity + 0.012 * (age - 50) + 0.8 * not_alert)
    critical = rng.random(n) < _sigmoid(-5.6 + 1.6 * severity + 1.2 * not_alert)
    admitted |= critical & (rng.random(n) < 0.9)  # most critical care patients are admitted

    # Measurement: rounding, the planted bias, then missingness (about 10% per vital sign).
    spo2 = np.clip(np.round(spo2_true), 70, 100)
    if bias:
        in_group = ethnicity == bias["group"]
        spo2 = np.where(in_group, np.minimum(spo2 + bias["points"], 100.0), spo2)

    def measured(values: np.ndarray, rate: float = MISSING_RATE) -> np.ndarray:
        return np.where(rng.random(n) < rate, np.nan, values)

    bp_missing = rng.random(n) < MISSING_RATE
    frame = pd.DataFrame(
        {
            "age_years": age,
            "heart_rate": measured(np.clip(np.round(heart_rate), 30, 220)),
            "resp_rate": measured(np.clip(np.round(resp_rate), 6, 60)),
            "sbp": np.where(bp_missing, np.nan, np.clip(np.round(sbp), 60, 250)),
            "dbp": np.where(bp_missing, np.nan, np.clip(np.round(dbp), 25, np.clip(np.round(sbp), 60, 250) - 10)),
            "spo2": measured(spo2),
            "temperature_c": measured(np.clip(np.round(temperature, 1), 33.0, 42.5)),
            "gcs": measured(gcs, 0.7),
            "pain_score": measured(np.clip(np.round(pain), 0, 10) + 0.0, 0.15),  # + 0.0: no negative zero
            "sex": sex,
            "arrival_mode": arrival_mode,
            "consciousness": np.where(rng.random(n) < 0.05, np.array(None), consciousness),  # as np.where converts None
            "on_supplemental_oxygen": np.where(rng.random(n) < 0.2, np.array(None), on_oxygen.astype(object)),
            "spo2_scale_2": None,
            "chief_complaint": complaint,
            "chief_complaint_code": None,
            "ethnicity": ethnicity,
            "site": site,
            "arrival_time": pd.Timestamp("2024-01-01") + pd.to_timedelta(arrival_minutes, unit="min"),
            "acuity": acuity,
            "admitted": admitted.astype(int),
            "critical": critical.astype(int),
            "visit_id": [f"syn{seed}-{i}" for i in range(n)],
            "year": 2024,
            "payer": payer,
            "weight": 1.0,
        }
    )
    name = f"synthetic:n={n},seed={seed}"
    notes = ["synthetic visits from a latent-severity generator: for tests and demos, never clinical conclusions"]
    if bias:
        points = bias["points"]
        name += f",spo2_overread={bias['group']}+{points:g}"
        notes.append(
            f"planted disparity: measured SpO2 of ethnicity {bias['group']} raised by {points:g} points (cap 100); "
            "labels follow the true saturation"
        )
    return build_dataset(frame, name=name, dataset="synthetic", mode="strict", notes=notes)
