"""The triage model's physiology path: vital signs enter only through monotone "danger" hinges.

A safety review found the first triage network nearly blind to vital signs when the complaint sounded minor,
and able to lower a risk as a vital sign moved further into danger (SpO2 70% scored lower than 95%;
bradycardia 30 lower than 80). Physiology must not be argued away, so the network cannot learn that shape:

* the five NEWS2 vital signs (respiration rate, SpO2, systolic BP, pulse, temperature) are NOT given to the
  network's free-form trunk; it sees only whether each was recorded;
* each vital enters through hinge features ``max(0, knot - value)`` (low side) or ``max(0, value - knot)``
  (high side), knots at and beyond the edges of NEWS2's zero-point band, scaled to about one unit per
  clinically meaningful step;
* the network multiplies the hinges by weights that are **non-negative by construction** (a softplus), one
  set per output (acuity urgency, P(admission), P(critical)) and per age band, and ADDS the result to the
  logits (for acuity, as a tilt towards the urgent levels: see :class:`models.triage.net.TriageNet`).

So, for any record, moving one vital further from NEWS2's normal band (in either direction where NEWS2
scores both) never lowers P(admission) or P(critical) and never makes the model's level less urgent, and a
value in the danger zone is never scored lower than a value in the normal band. The weights, and so how
steeply risk rises, are learnt from the data, with a separate adjustment per age band so that an infant's
normal pulse of 130 can carry little weight while an adult's carries much.

NEWS2 zero-point bands (RCP 2017): respiration 12-20 /min, SpO2 >= 96%, systolic 111-219 mmHg, pulse
51-90 /min, temperature 36.1-38.0 degC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from models.triage.columns import Columns, float_column, n_rows


@dataclass(frozen=True)
class Hinge:
    """One hinge feature: how far ``field`` lies beyond ``knot`` on ``side``, in units of ``scale``."""

    field: str
    side: str  # "low": max(0, knot - value); "high": max(0, value - knot)
    knot: float
    scale: float

    @property
    def name(self) -> str:
        return f"{self.field}{'<' if self.side == 'low' else '>'}{self.knot:g}"

    def __call__(self, values: np.ndarray) -> np.ndarray:
        excess = (self.knot - values) if self.side == "low" else (values - self.knot)
        return np.where(np.isfinite(values), np.maximum(excess, 0.0) / self.scale, 0.0)


def _hinges(field: str, side: str, knots: tuple[float, ...], scale: float) -> tuple[Hinge, ...]:
    return tuple(Hinge(field, side, k, scale) for k in knots)


#: Vital signs that enter the network only through hinges (the NEWS2 physiological parameters).
VITAL_SIGNS: Final[tuple[str, ...]] = ("resp_rate", "spo2", "sbp", "heart_rate", "temperature_c")

#: Every hinge, in the order of the ``danger`` input. Knots at the NEWS2 band edges and further out.
HINGES: Final[tuple[Hinge, ...]] = (
    *_hinges("resp_rate", "low", (12, 9), 3.0),
    *_hinges("resp_rate", "high", (20, 24, 30, 40, 50), 5.0),
    *_hinges("spo2", "low", (96, 94, 92, 88, 82), 4.0),
    *_hinges("sbp", "low", (111, 100, 90, 75), 10.0),
    *_hinges("sbp", "high", (219,), 20.0),
    *_hinges("heart_rate", "low", (51, 40), 10.0),
    *_hinges("heart_rate", "high", (90, 110, 130, 160, 190), 15.0),
    *_hinges("temperature_c", "low", (36.1, 35.0), 1.0),
    *_hinges("temperature_c", "high", (38.0, 39.0, 40.0), 1.0),
)

#: Age bands that get their own adjustment of the hinge weights (children's normal ranges differ).
AGE_BANDS: Final[tuple[str, ...]] = ("<1", "1-4", "5-11", "12-15", "16-64", "65+")
_AGE_EDGES: Final = np.array([1.0, 5.0, 12.0, 16.0, 65.0])


def age_band_index(age_years: np.ndarray) -> np.ndarray:
    """Index into :data:`AGE_BANDS` plus one (0 = age missing), per row."""
    age = np.asarray(age_years, dtype=float)
    return np.where(np.isfinite(age), np.searchsorted(_AGE_EDGES, age, side="right") + 1, 0).astype(np.int64)


def danger_features(columns: Columns) -> np.ndarray:
    """The hinge features [B, len(HINGES)] (float32, >= 0; 0 where the vital is missing)."""
    n = n_rows(columns)
    out = np.zeros((n, len(HINGES)), dtype=np.float32)
    cache: dict[str, np.ndarray] = {}
    for j, hinge in enumerate(HINGES):
        if hinge.field not in cache:
            cache[hinge.field] = float_column(columns, hinge.field, n)
        out[:, j] = hinge(cache[hinge.field])
    return out
