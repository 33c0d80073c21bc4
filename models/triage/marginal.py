"""A record that leaves blank a categorical field training always recorded is scored as the mixture over its values.

At fitting, :class:`models.triage.features.FeatureEncoder` lists the categorical fields recorded in at least 99 % of
training rows with more than one learnt value, with each value's training share
(:attr:`~models.triage.features.FeatureEncoder.marginalised`): the model never learnt what a blank means for them.
:func:`marginalise` expands each encoded record that leaves one blank into one row per learnt value, weighted by its
share, and :func:`combine_marginal` mixes the model's outputs for those rows back into one per record, so "unknown"
always lies between the known values. The torch model in training and the ONNX runtime both score this way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.triage.features import FeatureEncoder


def marginalise(
    encoder: FeatureEncoder, encoded: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Expand rows that leave one of ``encoder``'s :attr:`~models.triage.features.FeatureEncoder.marginalised` fields
    blank into one row per learnt value.

    Returns (expanded inputs, the source row of each expanded row, its weight); combine the outputs with
    :func:`combine_marginal`. Rows with every such field recorded are passed through with weight 1.
    """
    n = len(encoded["categorical"])
    rows, weights = np.arange(n), np.ones(n)
    out = encoded
    for name, shares in encoder.marginalised.items():
        j = list(encoder.categorical_features).index(name)
        vocab = encoder.categorical_features[name]
        blank = out["categorical"][:, j] == 0
        if not blank.any():
            continue
        keep, idx = np.flatnonzero(~blank), np.flatnonzero(blank)
        parts_idx, parts_code, parts_w = [keep], [out["categorical"][keep, j]], [weights[keep]]
        for value, share in shares.items():
            parts_idx.append(idx)
            parts_code.append(np.full(len(idx), vocab.index(value) + 1, dtype=np.int64))
            parts_w.append(weights[idx] * share)
        order = np.concatenate(parts_idx)
        out = {k: v[order] for k, v in out.items()}
        out["categorical"] = out["categorical"].copy()
        out["categorical"][:, j] = np.concatenate(parts_code)
        weights = np.concatenate(parts_w)
        rows = rows[order]
    return out, rows, weights


def combine_marginal(outputs: np.ndarray, rows: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Share-weighted mixture, per source row, of the outputs of :func:`marginalise`'s rows."""
    out = np.zeros((n, *outputs.shape[1:]), dtype=np.float64)
    np.add.at(out, rows, outputs * weights.reshape(-1, *([1] * (outputs.ndim - 1))))
    return out.astype(outputs.dtype)
