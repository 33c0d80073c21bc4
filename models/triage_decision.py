"""From acuity probabilities to a recommended level: an explicit, cost-sensitive decision rule.

Under-triage (a level less urgent than the patient needs) is worse than over-triage. With the cost of
recommending level k when the true level is j set to ``w * (k - j)`` for k > j (under-triage) and ``(j - k)``
for k < j (over-triage), the expected cost is minimised by the smallest level k whose cumulative
probability P(level <= k) reaches ``1 / (1 + w)``. ``w = 1`` gives the median level; larger ``w`` moves
recommendations towards urgency. ``w`` is a stated clinical preference fixed before evaluation (training
config ``under_triage_weight``), recorded in the model card, and never tuned on test data.
"""

from __future__ import annotations

import numpy as np

from models.labels import ACUITY_LEVELS


def recommend_levels(acuity_probs: np.ndarray, under_triage_weight: float) -> np.ndarray:
    """Recommended level (1..5) per row of ``acuity_probs`` [B, 5] (columns are levels 1..5).

    Raises
    ------
    ValueError
        If the probabilities are not [B, 5] or the weight is not positive.
    """
    probs = np.asarray(acuity_probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(ACUITY_LEVELS):
        raise ValueError(f"acuity_probs must have shape [B, {len(ACUITY_LEVELS)}]; got {probs.shape}")
    if not np.isfinite(under_triage_weight) or under_triage_weight <= 0:
        raise ValueError(f"under_triage_weight must be > 0; got {under_triage_weight}")
    cumulative = np.cumsum(probs, axis=1)
    # Guard against float round-off: the last column's cumulative is 1 by construction.
    cumulative[:, -1] = np.inf
    threshold = 1.0 / (1.0 + under_triage_weight)
    return np.argmax(cumulative >= threshold - 1e-12, axis=1).astype(np.int64) + ACUITY_LEVELS[0]
