"""The triage safety invariants on a record's structured fields: inputs, sex, vital signs and age.

a. inputs the model did not learn do not move its outputs; b. an unknown sex lies between female and male;
c. a vital sign moving into danger never lowers a risk nor the urgency; d. a danger value is never less urgent
than a normal one; h. well children are not raised to level 1-2 by an adult floor. Each check takes the model, a
generator and its target number of perturbed records, and returns its
:class:`~evaluation.safety.InvariantResult` and the number of records it predicted on; the suite
(:mod:`evaluation.safety_triage`) runs them.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

from evaluation.safety import InvariantResult, invariant
from evaluation.safety_triage_cases import (
    DANGER_PATHS,
    DANGER_VALUES,
    DBP_WHILE_SBP_VARIES,
    NORMAL_VALUES,
    base_records,
    child_records,
    concat,
    describe,
    repeat,
    valid_values,
)
from evaluation.safety_triage_outputs import (
    P_TOL_EXACT,
    P_TOL_MONOTONE,
    LazyExamples,
    n_base_records,
    predict_outputs,
    worsening,
)
from models.triage.columns import Columns, n_rows
from models.triage.record import NON_FEATURE_FIELDS

#: The inputs NHAMCS never records: unused by a model whose encoder does not say otherwise.
DEFAULT_UNUSED_INPUTS: Final = ("gcs", "consciousness", "on_supplemental_oxygen")

#: How far outside the female-male range a probability with sex unknown may lie (invariant b).
SEX_TOL: Final = 0.02


def unobserved_inputs(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """a. Inputs the model did not learn (and fields that are never features) do not move its outputs."""
    declared = getattr(getattr(model, "encoder", None), "unused_inputs", None)
    unused = tuple(declared) if declared is not None else DEFAULT_UNUSED_INPUTS
    fields = tuple(dict.fromkeys((*unused, *NON_FEATURE_FIELDS)))
    variants = [(name, value) for name in fields for value in valid_values(name)]
    base = base_records(rng, n_base_records(target, len(variants) + 1))
    nb = n_rows(base)
    parts = [base]
    for name, value in variants:
        part = repeat(base, np.arange(nb))
        part[name] = np.full(nb, value, dtype=part[name].dtype if isinstance(value, float) else object)
        parts.append(part)
    cols = concat(parts)
    out = predict_outputs(model, cols)
    ref = np.tile(np.arange(nb), len(variants))
    new = nb + np.arange(nb * len(variants))
    magnitude = np.max(
        np.stack(
            [
                np.abs(out.p_admitted[new] - out.p_admitted[ref]),
                np.abs(out.p_critical[new] - out.p_critical[ref]),
                np.abs(out.model_level[new] - out.model_level[ref]).astype(float),
            ]
        ),
        axis=0,
    )

    def example(k: int) -> dict[str, Any]:
        name, value = variants[k // nb]
        shown = None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        return {
            "record": describe(cols, int(ref[k])),
            "field": name,
            "set_to": shown,
            "before": out.at(int(ref[k])),
            "after": out.at(int(new[k])),
        }

    origin = "the encoder's unused_inputs" if declared is not None else "not declared: NHAMCS's unrecorded fields"
    result = invariant(
        "triage.unobserved_inputs_do_not_move_outputs",
        f"Setting an input the model did not learn ({', '.join(unused) or 'none'}; {origin}) or a field that is "
        f"never a feature ({', '.join(NON_FEATURE_FIELDS)}) to any valid value changes P(admitted) and "
        "P(critical) by at most 1e-6 and the model's level not at all.",
        "A model must not react to inputs it never saw in training (its response to them is arbitrary) nor to "
        "ethnicity, site or codes; ACVPU still acts through the safety floor, so the model's own outputs are "
        "compared, not the recommended level.",
        len(new),
        magnitude,
        LazyExamples(len(new), example),
        tolerance=P_TOL_EXACT,
        tolerance_text="|change in probability| <= 1e-6; model level unchanged",
    )
    return result, n_rows(cols)


def sex_unknown(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """b. With sex 'unknown', each probability lies between those for female and male (+/- 0.02)."""
    base = base_records(rng, n_base_records(target, 3))
    nb = n_rows(base)
    cols = concat([repeat(base, np.arange(nb)) for _ in range(3)])
    cols["sex"] = np.repeat(np.array(["female", "male", "unknown"], dtype=object), nb)
    out = predict_outputs(model, cols)
    f, m, u = np.arange(nb), nb + np.arange(nb), 2 * nb + np.arange(nb)
    gaps = []
    for p in (out.p_admitted, out.p_critical):
        low, high = np.minimum(p[f], p[m]), np.maximum(p[f], p[m])
        gaps.append(np.maximum(p[u] - high, low - p[u]))
    magnitude = np.max(np.stack(gaps), axis=0)

    def example(k: int) -> dict[str, Any]:
        return {
            "record": describe(cols, k),
            "female": out.at(int(f[k])),
            "male": out.at(int(m[k])),
            "unknown": out.at(int(u[k])),
        }

    result = invariant(
        "triage.sex_unknown_between_known",
        "With sex recorded as unknown, P(admitted) and P(critical) lie within the range of the same record's "
        "probabilities as female and as male (tolerance 0.02).",
        "An unknown sex is one of the two, so the risk must not fall outside both: patients whose sex was not "
        "recorded would otherwise be systematically under- or over-triaged.",
        nb,
        magnitude,
        LazyExamples(nb, example),
        tolerance=SEX_TOL,
        tolerance_text="0.02 outside [min, max] of female and male",
    )
    return result, n_rows(cols)


def _adult_bases(rng: np.random.Generator, n: int) -> Columns:
    return base_records(rng, n, child_share=0.0)


def deterioration(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """c. A vital sign moving step by step further into danger never lowers a risk nor the urgency."""
    per_base = sum(len(values) for _, _, values in DANGER_PATHS)
    base = _adult_bases(rng, n_base_records(target, per_base))
    nb = n_rows(base)
    parts, labels, refs, news = [], [], [], []
    start = 0
    for field, words, values in DANGER_PATHS:
        for b in range(nb):
            part = repeat(base, np.full(len(values), b))
            part[field] = np.array(values, dtype=float)
            if field == "sbp":
                part["dbp"] = np.full(len(values), DBP_WHILE_SBP_VARIES)
            parts.append(part)
            idx = start + np.arange(len(values))
            refs.append(idx[:-1])
            news.append(idx[1:])
            labels += [(field, words)] * (len(values) - 1)
            start += len(values)
    cols = concat(parts)
    out = predict_outputs(model, cols)
    ref, new = np.concatenate(refs), np.concatenate(news)
    magnitude = worsening(out, ref, new)

    def example(k: int) -> dict[str, Any]:
        field, words = labels[k]
        return {
            "path": words,
            "record": describe(cols, int(ref[k])),
            "from": float(cols[field][ref[k]]),
            "to": float(cols[field][new[k]]),
            "before": out.at(int(ref[k])),
            "after": out.at(int(new[k])),
        }

    result = invariant(
        "triage.deterioration_never_lowers_risk",
        "Moving a vital sign one step further into danger (SpO2 92->70%, SBP 90->50 mmHg, RR 25->50/min, HR "
        "130->200 and 40->25/min, temperature 35->30 and 39.5->42 degC; adults, other fields equal) never "
        "lowers P(admitted) or P(critical) by more than 1e-4 and never makes the model's or the recommended "
        "level less urgent.",
        "A sicker patient must never look safer: a risk that falls as physiology worsens (often where training "
        "data are sparse) would send the most unwell patients to the back of the queue.",
        len(new),
        magnitude,
        LazyExamples(len(new), example),
        tolerance=P_TOL_MONOTONE,
        tolerance_text="probability drop <= 1e-4; level never less urgent",
    )
    return result, n_rows(cols)


def danger_vs_normal(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """d. The recommended level at a danger value is never less urgent than at a normal value."""
    per_base = sum(1 + len(v) for v in DANGER_VALUES.values())
    base = _adult_bases(rng, n_base_records(target, per_base))
    nb = n_rows(base)
    parts, refs, news, labels = [], [], [], []
    start = 0
    for field, dangers in DANGER_VALUES.items():
        values = (NORMAL_VALUES[field], *dangers)
        for b in range(nb):
            part = repeat(base, np.full(len(values), b))
            part[field] = np.array(values, dtype=float)
            if field == "sbp":
                part["dbp"] = np.full(len(values), DBP_WHILE_SBP_VARIES)
            parts.append(part)
            refs += [start] * len(dangers)
            news += list(range(start + 1, start + len(values)))
            labels += [field] * len(dangers)
            start += len(values)
    cols = concat(parts)
    out = predict_outputs(model, cols)
    ref, new = np.array(refs), np.array(news)
    magnitude = worsening(out, ref, new, levels=("recommended_level",))
    # Only the level is judged here (probabilities are invariant c's business): keep level rises.
    magnitude = np.where(out.recommended_level[new] > out.recommended_level[ref], magnitude, 0.0)

    def example(k: int) -> dict[str, Any]:
        field = labels[k]
        return {
            "record": describe(cols, int(ref[k])),
            "field": field,
            "normal": float(cols[field][ref[k]]),
            "danger": float(cols[field][new[k]]),
            "at_normal": out.at(int(ref[k])),
            "at_danger": out.at(int(new[k])),
        }

    result = invariant(
        "triage.danger_not_below_normal",
        "For adults, the recommended level with one vital sign at a danger value (SpO2 <= 88%, SBP <= 85 mmHg, "
        "RR >= 28/min, HR >= 140 or <= 38/min, temperature <= 34.5 or >= 39.8 degC) is never less urgent than "
        "with that vital at a normal value, other fields equal.",
        "Abnormal physiology must never be triaged as less urgent than normal physiology; this holds whatever "
        "the model learned, through the safety floor.",
        len(new),
        magnitude,
        LazyExamples(len(new), example),
        tolerance=0.0,
        tolerance_text="none (whole levels)",
    )
    return result, n_rows(cols)


def infants_not_floored(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """h. Well children with age-normal vitals are not raised to level 1-2 by a floor."""
    cols = child_records(rng, n_base_records(target, 1, minimum=20))
    out = predict_outputs(model, cols)
    raised = (out.recommended_level <= 2) & (out.recommended_level < out.model_level)
    magnitude = np.where(raised, (out.model_level - out.recommended_level).astype(float), 0.0)

    def example(k: int) -> dict[str, Any]:
        return {"record": describe(cols, k), "outputs": out.at(k)}

    n = n_rows(cols)
    result = invariant(
        "triage.infants_not_floored_by_adult_news2",
        "A well child under 16 (age-normal HR, RR and SBP for the age band, SpO2 97-100%, temperature "
        "36.4-37.6 degC, alert, on air, a low-acuity complaint) is never raised by a floor to level 1 or 2.",
        "Adult NEWS2 bands score a healthy infant's normal heart and breathing rates as danger; an adult floor "
        "applied to children sends well babies to resuscitation and delays the truly sick.",
        n,
        magnitude,
        LazyExamples(n, example),
        tolerance=0.0,
        tolerance_text="none (whole levels)",
    )
    return result, n
