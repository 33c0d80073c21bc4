"""The triage safety-invariant suite: properties a triage model must hold on every generated record.

:func:`run_triage_safety_suite` generates records (:mod:`evaluation.safety_triage_cases`), perturbs them and
checks each invariant with one batched ``model.predict`` on the perturbed records. It uses only the runtime's
public behaviour (``predict`` -> ``p_admitted``, ``p_critical``, ``model_level``, ``recommended_level``), so it
is an oracle independent of the model's code; any object with that interface can be checked (the tests break
fake models on purpose). Levels run 1 (most urgent) to 5: a *higher* level is *less* urgent. The checks live in
:mod:`evaluation.safety_triage_fields` (a-d and h: inputs, sex, vital signs, age) and
:mod:`evaluation.safety_triage_complaints` (e-g: the chief complaint and the red-flag floors), both reading the
model through :mod:`evaluation.safety_triage_outputs`.

A case's violation magnitude is how far it went the wrong way: a probability drop (or change) in probability
units, a level change in whole levels (>= 1, so above every probability tolerance). docs/clinical_safety.md
explains each invariant; changing one (its cases, values or tolerance) bumps
:data:`evaluation.safety.SAFETY_SUITE_VERSION`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from evaluation.safety import InvariantResult, SafetyReport
from evaluation.safety_triage_complaints import benign_dilution, red_flags, unknown_words
from evaluation.safety_triage_fields import (
    danger_vs_normal,
    deterioration,
    infants_not_floored,
    sex_unknown,
    unobserved_inputs,
)

log = logging.getLogger(__name__)

#: Each invariant's share of ``n_grid`` perturbed records.
_SHARES: Final = {
    "unobserved": 0.15,
    "sex": 0.08,
    "deterioration": 0.35,
    "danger": 0.08,
    "unknown_words": 0.08,
    "dilution": 0.16,
    "red_flags": 0.06,
    "infants": 0.04,
}


INVARIANTS: Final[tuple[tuple[str, Callable[[Any, np.random.Generator, float], tuple[InvariantResult, int]]], ...]] = (
    ("unobserved", unobserved_inputs),
    ("sex", sex_unknown),
    ("deterioration", deterioration),
    ("danger", danger_vs_normal),
    ("unknown_words", unknown_words),
    ("dilution", benign_dilution),
    ("red_flags", red_flags),
    ("infants", infants_not_floored),
)


def run_triage_safety_suite(model: Any, *, n_grid: int = 10_000, seed: int = 0) -> SafetyReport:
    """Run every triage invariant on ``model`` over at least ``n_grid`` generated, perturbed records.

    Parameters
    ----------
    model : models.triage.onnx.TriageOnnxModel
        Or any object whose ``predict(columns)`` returns ``p_admitted``, ``p_critical``, ``model_level`` and
        ``recommended_level`` arrays; its ``encoder.unused_inputs`` (if present) names the inputs it did not
        learn, and ``card.name`` / ``card.version`` name it in the report.
    n_grid : int
        Least number of perturbed records in total, shared between the invariants (at least 100).
    seed : int
        Seed of the record generator: the same model, ``n_grid`` and seed give the same report.

    Returns
    -------
    SafetyReport
        One :class:`~evaluation.safety.InvariantResult` per invariant (ids ``triage.*``), task ``"triage"``.
    """
    if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 100:
        raise ValueError(f"n_grid must be an integer >= 100; got {n_grid!r}")
    card = getattr(model, "card", None)
    name = str(getattr(card, "name", type(model).__name__))
    version = str(getattr(card, "version", "unversioned"))
    streams = np.random.SeedSequence(seed).spawn(len(INVARIANTS))
    results, total, start = [], 0, time.perf_counter()
    for (key, check), stream in zip(INVARIANTS, streams, strict=True):
        result, n_records = check(model, np.random.default_rng(stream), _SHARES[key] * n_grid)
        results.append(result)
        total += n_records
        log.debug("%s: %d cases, %d violations", result.id, result.n_cases, result.n_violations)
    log.info("triage safety suite: %d records in %.1f s", total, time.perf_counter() - start)
    notes = (f"{total} generated records (n_grid={n_grid}, seed={seed}).",)
    return SafetyReport(model_name=name, model_version=version, task="triage", results=tuple(results), notes=notes)
