"""Operating points: the one rule for turning a calibrated probability into a flag.

A threshold is chosen on validation data as the highest value that still reaches a stated sensitivity;
it is recorded in the model card and used unchanged by evaluation, the fairness audit and serving.
"""

from __future__ import annotations

import math

import numpy as np


def threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, target_sensitivity: float) -> tuple[float, float]:
    """The highest threshold whose sensitivity on (y, p) reaches the target; returns (threshold, sensitivity).

    With no positives the threshold is 1.0 (never flag on no evidence) and the sensitivity NaN.

    Raises
    ------
    ValueError
        If the target is not in (0, 1] or the arrays differ in length.
    """
    if not 0 < target_sensitivity <= 1:
        raise ValueError(f"target_sensitivity must be in (0, 1]; got {target_sensitivity}")
    y, p = np.asarray(y), np.asarray(p, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"y and p must have the same shape; got {y.shape} and {p.shape}")
    positives = np.sort(p[y == 1])[::-1]
    if len(positives) == 0:
        return 1.0, float("nan")
    # The tolerance guards against float products such as 0.55 * 100 == 55.00000000000001 (ceil would give 56).
    k = max(1, math.ceil(target_sensitivity * len(positives) - 1e-9))
    threshold = float(positives[k - 1])
    return threshold, float((p[y == 1] >= threshold).mean())
