"""From acuity probabilities to a recommended level: an explicit, cost-sensitive decision rule.

Under-triage (a level less urgent than the patient needs) is worse than over-triage. With the cost of
recommending level k when the true level is j set to ``w * (k - j)`` for k > j (under-triage) and ``(j - k)``
for k < j (over-triage), the expected cost is minimised by the smallest level k whose cumulative
probability P(level <= k) reaches ``1 / (1 + w)``. ``w = 1`` gives the median level; larger ``w`` moves
recommendations towards urgency. ``w`` is a stated clinical preference fixed before evaluation (training
config ``under_triage_weight``), recorded in the model card, and never tuned on test data.

Operating points by age band, and by age band x sex (mitigation of under-triage gaps, release issue): with a
training target for the share of true level 1-2 patients served a level 3-5 (``high_acuity_under_triage_target``),
each age band, and with ``operating_points_by_sex`` each age band x sex cell, gets the smallest weight ``w_g >= w``
whose served level (model level raised by the safety floor) meets the target on the validation split
(:func:`choose_band_weights`); the card records ``under_triage_weight_by_age_band`` and
``under_triage_weight_by_age_band_sex``, and the runtime applies each visit's group (:func:`weights_by_age`; a sex
not recorded gets the band's more urgent cell). Age and sex are clinical inputs the triage record carries;
ethnicity and payer never choose an operating point. No weight is below ``w``: the rule only ever makes a
recommendation more urgent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np

from models.labels import ACUITY_LEVELS

#: The age bands of the NHAMCS ``AGER`` variable: the fairness audit's groups and the decision rule's.
AGE_BANDS: Final[tuple[str, ...]] = ("<15", "15-24", "25-44", "45-64", "65-74", "75+")
AGE_BAND_EDGES: Final[tuple[float, ...]] = (15, 25, 45, 65, 75)
#: Sexes that get their own operating point with ``operating_points_by_sex`` (an unrecorded sex gets the more urgent).
SEXES: Final[tuple[str, ...]] = ("female", "male")
#: Weights searched when choosing an age band's operating point (geometric, from the stated weight up to 20).
WEIGHT_GRID_SIZE: Final = 60
MAX_WEIGHT: Final = 20.0


def age_band_labels(age_years: np.ndarray) -> np.ndarray:
    """:data:`AGE_BANDS` label per age (object array; None where the age is missing)."""
    ages = np.asarray(age_years, dtype=float)
    index = np.searchsorted(np.asarray(AGE_BAND_EDGES), ages, side="right")
    labels = np.asarray(AGE_BANDS, dtype=object)[np.minimum(index, len(AGE_BANDS) - 1)]
    labels[~np.isfinite(ages)] = None
    return labels


def cell_labels(age_years: np.ndarray, sex: np.ndarray | None) -> np.ndarray:
    """``"<band>|<sex>"`` per row (object array; None where the age or the sex is missing or unknown)."""
    bands = age_band_labels(age_years)
    out = np.full(len(bands), None, dtype=object)
    if sex is None:
        return out
    sexes = np.asarray(sex, dtype=object)
    for i, (band, value) in enumerate(zip(bands, sexes, strict=True)):
        if band is not None and value in SEXES:
            out[i] = f"{band}|{value}"
    return out


def weights_by_age(
    age_years: np.ndarray,
    default: float,
    by_band: Mapping[str, float] | None,
    sex: np.ndarray | None = None,
    by_cell: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The under-triage weight per row.

    With ``by_cell`` (age band x sex): the row's cell's weight; a row whose sex is not recorded gets the larger of
    its band's cell weights (the more urgent). Otherwise its age band's weight (``by_band``); ``default`` where
    the age is missing or no table is given. No weight is ever below ``default``.
    """
    out = np.full(len(np.asarray(age_years)), float(default))
    bands = age_band_labels(age_years)
    if by_band:
        for band, weight in by_band.items():
            out[bands == band] = max(float(weight), float(default))
    if by_cell:
        cells = cell_labels(age_years, sex)
        for band in AGE_BANDS:
            mine = [float(w) for k, w in by_cell.items() if k.split("|")[0] == band]
            if mine:
                out[(bands == band) & (cells == None)] = max([*mine, float(default)])  # noqa: E711
        for cell, weight in by_cell.items():
            out[cells == cell] = max(float(weight), float(default))
    return out


def choose_band_weights(
    acuity_probs: np.ndarray,
    age_years: np.ndarray,
    truth: np.ndarray,
    floor_levels: np.ndarray,
    default: float,
    target: float,
    min_high_acuity: int = 30,
    sex: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Per age band (and, with ``sex``, per age band x sex cell), the smallest weight >= ``default`` whose served
    level leaves at most ``target`` of the group's true level 1-2 patients at level 3-5. Chosen on validation
    data only; the test set is never seen.

    The served level is the model's level raised by the safety floor (``min(model level, floor_levels)``; 5 where
    no floor applies), so the target is met by what the clinician is shown. A group with fewer than
    ``min_high_acuity`` true level 1-2 patients keeps ``default`` (a cell: its band's weight); a group that no
    weight up to :data:`MAX_WEIGHT` brings to the target gets the weight with its lowest under-triage. Returns
    ``{group: {"weight", "n_high_acuity", "under_triage_at_default", "under_triage_at_weight",
    "reached_target"}}``, groups named ``"<band>"`` and ``"<band>|<sex>"``.
    """
    bands = age_band_labels(age_years)
    cells = cell_labels(age_years, sex)
    truth = np.asarray(truth, dtype=float)
    high = np.isfinite(truth) & (truth <= 2)
    floor_levels = np.asarray(floor_levels)
    grid = np.unique(np.concatenate([[default], np.geomspace(default, MAX_WEIGHT, WEIGHT_GRID_SIZE)]))

    def choose(rows: np.ndarray, fallback: float) -> dict[str, float]:
        if len(rows) < min_high_acuity:
            return {
                "weight": float(fallback),
                "n_high_acuity": len(rows),
                "under_triage_at_default": float("nan"),
                "under_triage_at_weight": float("nan"),
                "reached_target": 0.0,
            }
        rates = [
            float((np.minimum(recommend_levels(acuity_probs[rows], w), floor_levels[rows]) > 2).mean()) for w in grid
        ]
        reached = [i for i, r in enumerate(rates) if r <= target]
        pick = reached[0] if reached else int(np.argmin(rates))
        return {
            "weight": float(grid[pick]),
            "n_high_acuity": len(rows),
            "under_triage_at_default": rates[0],
            "under_triage_at_weight": rates[pick],
            "reached_target": float(bool(reached)),
        }

    out: dict[str, dict[str, float]] = {}
    for band in AGE_BANDS:
        out[band] = choose(np.flatnonzero((bands == band) & high), default)
        if sex is not None:
            for value in SEXES:
                cell = f"{band}|{value}"
                out[cell] = choose(np.flatnonzero((cells == cell) & high), out[band]["weight"])
    return out


def recommend_levels(acuity_probs: np.ndarray, under_triage_weight: float | np.ndarray) -> np.ndarray:
    """Recommended level (1..5) per row of ``acuity_probs`` [B, 5] (columns are levels 1..5); the weight may be one
    number or one per row (:func:`weights_by_age`).

    Raises
    ------
    ValueError
        If the probabilities are not [B, 5] or the weight is not positive.
    """
    probs = np.asarray(acuity_probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(ACUITY_LEVELS):
        raise ValueError(f"acuity_probs must have shape [B, {len(ACUITY_LEVELS)}]; got {probs.shape}")
    weight = np.asarray(under_triage_weight, dtype=float)
    if not np.isfinite(weight).all() or (weight <= 0).any():
        raise ValueError(f"under_triage_weight must be > 0; got {under_triage_weight}")
    if weight.ndim and weight.shape != (len(probs),):
        raise ValueError(f"under_triage_weight must be one number or one per row; got shape {weight.shape}")
    cumulative = np.cumsum(probs, axis=1)
    # Guard against float round-off: the last column's cumulative is 1 by construction.
    cumulative[:, -1] = np.inf
    threshold = 1.0 / (1.0 + weight)
    threshold = threshold[:, None] if threshold.ndim else threshold
    return np.argmax(cumulative >= threshold - 1e-12, axis=1).astype(np.int64) + ACUITY_LEVELS[0]
