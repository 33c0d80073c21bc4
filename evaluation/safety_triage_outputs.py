"""A triage model's outputs on generated records, as every triage safety invariant reads them.

:func:`predict_outputs` runs one batched ``model.predict`` and keeps the four outputs the invariants judge
(``p_admitted``, ``p_critical``, ``model_level``, ``recommended_level``); :func:`worsening` measures how far a
perturbed record went the wrong way from its reference: a probability drop in probability units, a level change
in whole levels (>= 1, so above every probability tolerance, :data:`P_TOL_EXACT` and :data:`P_TOL_MONOTONE`).
:class:`LazyExamples` describes only the cases kept as examples; :func:`n_base_records` sizes a check's base
records from its share of the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from models.triage.columns import Columns

#: Tolerance of a probability that must not move at all (invariants a and e).
P_TOL_EXACT: Final = 1e-6
#: Tolerance of a probability that must not fall (invariants c and f).
P_TOL_MONOTONE: Final = 1e-4


@dataclass(frozen=True)
class TriageOutputs:
    """The four outputs of one batched prediction, one entry per record."""

    p_admitted: np.ndarray
    p_critical: np.ndarray
    model_level: np.ndarray
    recommended_level: np.ndarray

    def at(self, i: int) -> dict[str, Any]:
        """Record ``i``'s outputs as plain JSON values (probabilities rounded to 6 places), for examples."""
        return {
            "p_admitted": round(float(self.p_admitted[i]), 6),
            "p_critical": round(float(self.p_critical[i]), 6),
            "model_level": int(self.model_level[i]),
            "recommended_level": int(self.recommended_level[i]),
        }


def predict_outputs(model: Any, cols: Columns) -> TriageOutputs:
    """One ``model.predict`` over ``cols``, its outputs as float and int64 arrays."""
    pred = model.predict(cols)
    return TriageOutputs(
        np.asarray(pred.p_admitted, dtype=float),
        np.asarray(pred.p_critical, dtype=float),
        np.asarray(pred.model_level, dtype=np.int64),
        np.asarray(pred.recommended_level, dtype=np.int64),
    )


def worsening(
    out: TriageOutputs,
    ref: np.ndarray,
    new: np.ndarray,
    *,
    levels: tuple[str, ...] = ("model_level", "recommended_level"),
) -> np.ndarray:
    """Per pair (ref[k], new[k]): the largest probability drop or level rise (less urgent) from ref to new."""
    parts = [out.p_admitted[ref] - out.p_admitted[new], out.p_critical[ref] - out.p_critical[new]]
    parts += [(getattr(out, name)[new] - getattr(out, name)[ref]).astype(float) for name in levels]
    return np.max(np.stack(parts), axis=0)


class LazyExamples(Sequence[dict[str, Any]]):
    """Case descriptions built only for the cases that are kept as examples."""

    def __init__(self, n: int, build: Callable[[int], dict[str, Any]]) -> None:
        self._n, self._build = n, build

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self._build(i) for i in range(*k.indices(self._n))]
        return self._build(int(k))


def n_base_records(target: float, per_base: int, minimum: int = 2) -> int:
    """Base records needed for ``target`` perturbed records at ``per_base`` per base record (at least ``minimum``)."""
    return max(minimum, math.ceil(target / max(per_base, 1)))
