"""The triage safety-invariant suite: properties a triage model must hold on every generated record.

:func:`run_triage_safety_suite` generates records (:mod:`evaluation.safety_triage_cases`), perturbs them and
checks each invariant with one batched ``model.predict`` on the perturbed records. It uses only the runtime's
public behaviour (``predict`` -> ``p_admitted``, ``p_critical``, ``model_level``, ``recommended_level``), so it
is an oracle independent of the model's code; any object with that interface can be checked (the tests break
fake models on purpose). Levels run 1 (most urgent) to 5: a *higher* level is *less* urgent.

A case's violation magnitude is how far it went the wrong way: a probability drop (or change) in probability
units, a level change in whole levels (>= 1, so above every probability tolerance). docs/clinical_safety.md
explains each invariant; changing one (its cases, values or tolerance) bumps
:data:`evaluation.safety.SAFETY_SUITE_VERSION`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from evaluation.safety import InvariantResult, SafetyReport, invariant
from evaluation.safety_triage_cases import (
    BENIGN_PHRASES,
    COMMON_COMPLAINTS,
    CRITICAL_COMPLAINTS,
    DANGER_PATHS,
    DANGER_VALUES,
    DBP_WHILE_SBP_VARIES,
    NORMAL_VALUES,
    base_records,
    child_records,
    concat,
    describe,
    made_up_words,
    red_flag_texts,
    repeat,
    valid_values,
)
from models.triage.columns import Columns, n_rows
from models.triage.record import NON_FEATURE_FIELDS

log = logging.getLogger(__name__)

#: The inputs NHAMCS never records: unused by a model whose encoder does not say otherwise.
DEFAULT_UNUSED_INPUTS: Final = ("gcs", "consciousness", "on_supplemental_oxygen")

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

P_TOL_EXACT: Final = 1e-6
P_TOL_MONOTONE: Final = 1e-4
SEX_TOL: Final = 0.02


@dataclass(frozen=True)
class _Outputs:
    p_admitted: np.ndarray
    p_critical: np.ndarray
    model_level: np.ndarray
    recommended_level: np.ndarray

    def at(self, i: int) -> dict[str, Any]:
        return {
            "p_admitted": round(float(self.p_admitted[i]), 6),
            "p_critical": round(float(self.p_critical[i]), 6),
            "model_level": int(self.model_level[i]),
            "recommended_level": int(self.recommended_level[i]),
        }


def _predict(model: Any, cols: Columns) -> _Outputs:
    pred = model.predict(cols)
    return _Outputs(
        np.asarray(pred.p_admitted, dtype=float),
        np.asarray(pred.p_critical, dtype=float),
        np.asarray(pred.model_level, dtype=np.int64),
        np.asarray(pred.recommended_level, dtype=np.int64),
    )


def _worse(
    out: _Outputs, ref: np.ndarray, new: np.ndarray, *, levels: tuple[str, ...] = ("model_level", "recommended_level")
) -> np.ndarray:
    """Per pair (ref[k], new[k]): the largest probability drop or level rise (less urgent) from ref to new."""
    parts = [out.p_admitted[ref] - out.p_admitted[new], out.p_critical[ref] - out.p_critical[new]]
    parts += [(getattr(out, name)[new] - getattr(out, name)[ref]).astype(float) for name in levels]
    return np.max(np.stack(parts), axis=0)


class _Examples(Sequence[dict[str, Any]]):
    """Case descriptions built only for the cases that are kept as examples."""

    def __init__(self, n: int, build: Callable[[int], dict[str, Any]]) -> None:
        self._n, self._build = n, build

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self._build(i) for i in range(*k.indices(self._n))]
        return self._build(int(k))


def _n_base(target: float, per_base: int, minimum: int = 2) -> int:
    return max(minimum, math.ceil(target / max(per_base, 1)))


# ---------------------------------------------------------------------------------------------- invariants
def unobserved_inputs(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """a. Inputs the model did not learn (and fields that are never features) do not move its outputs."""
    declared = getattr(getattr(model, "encoder", None), "unused_inputs", None)
    unused = tuple(declared) if declared is not None else DEFAULT_UNUSED_INPUTS
    fields = tuple(dict.fromkeys((*unused, *NON_FEATURE_FIELDS)))
    variants = [(name, value) for name in fields for value in valid_values(name)]
    base = base_records(rng, _n_base(target, len(variants) + 1))
    nb = n_rows(base)
    parts = [base]
    for name, value in variants:
        part = repeat(base, np.arange(nb))
        part[name] = np.full(nb, value, dtype=part[name].dtype if isinstance(value, float) else object)
        parts.append(part)
    cols = concat(parts)
    out = _predict(model, cols)
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
        _Examples(len(new), example),
        tolerance=P_TOL_EXACT,
        tolerance_text="|change in probability| <= 1e-6; model level unchanged",
    )
    return result, n_rows(cols)


def sex_unknown(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """b. With sex 'unknown', each probability lies between those for female and male (+/- 0.02)."""
    base = base_records(rng, _n_base(target, 3))
    nb = n_rows(base)
    cols = concat([repeat(base, np.arange(nb)) for _ in range(3)])
    cols["sex"] = np.repeat(np.array(["female", "male", "unknown"], dtype=object), nb)
    out = _predict(model, cols)
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
        _Examples(nb, example),
        tolerance=SEX_TOL,
        tolerance_text="0.02 outside [min, max] of female and male",
    )
    return result, n_rows(cols)


def _adult_bases(rng: np.random.Generator, n: int) -> Columns:
    return base_records(rng, n, child_share=0.0)


def deterioration(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """c. A vital sign moving step by step further into danger never lowers a risk nor the urgency."""
    per_base = sum(len(values) for _, _, values in DANGER_PATHS)
    base = _adult_bases(rng, _n_base(target, per_base))
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
    out = _predict(model, cols)
    ref, new = np.concatenate(refs), np.concatenate(news)
    magnitude = _worse(out, ref, new)

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
        _Examples(len(new), example),
        tolerance=P_TOL_MONOTONE,
        tolerance_text="probability drop <= 1e-4; level never less urgent",
    )
    return result, n_rows(cols)


def danger_vs_normal(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """d. The recommended level at a danger value is never less urgent than at a normal value."""
    per_base = sum(1 + len(v) for v in DANGER_VALUES.values())
    base = _adult_bases(rng, _n_base(target, per_base))
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
    out = _predict(model, cols)
    ref, new = np.array(refs), np.array(news)
    magnitude = _worse(out, ref, new, levels=("recommended_level",))
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
        _Examples(len(new), example),
        tolerance=0.0,
        tolerance_text="none (whole levels)",
    )
    return result, n_rows(cols)


def _known_words(model: Any) -> frozenset[str]:
    vocabulary = getattr(getattr(model, "encoder", None), "vocabulary", ())
    words = {w for text in (*COMMON_COMPLAINTS, *CRITICAL_COMPLAINTS) for w in text.split()}
    return frozenset(map(str, vocabulary)) | words


def unknown_words(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """e. Made-up words never lower a risk: replacing the complaint (vs none) or appended (vs the complaint)."""
    n_made_up = 2
    base = base_records(rng, _n_base(target, 2 + 2 * n_made_up))
    nb = n_rows(base)
    known = _known_words(model)
    none = repeat(base, np.arange(nb))
    none["chief_complaint"] = np.full(nb, None, dtype=object)
    alone = repeat(base, np.arange(nb))
    parts, refs, kinds = [none, alone], [], []
    for _ in range(n_made_up):
        words = np.array([made_up_words(rng, int(rng.integers(1, 4)), known) for _ in range(nb)], dtype=object)
        replaced = repeat(base, np.arange(nb))
        replaced["chief_complaint"] = words
        appended = repeat(base, np.arange(nb))
        pairs = zip(alone["chief_complaint"], words, strict=True)
        appended["chief_complaint"] = np.array([f"{c} {w}" for c, w in pairs], dtype=object)
        parts += [replaced, appended]
        refs += [np.arange(nb), nb + np.arange(nb)]
        kinds += ["replaced (vs no complaint)", "appended (vs the complaint alone)"]
    cols = concat(parts)
    out = _predict(model, cols)
    ref = np.concatenate(refs)
    new = 2 * nb + np.arange(len(ref))
    magnitude = _worse(out, ref, new)

    def example(k: int) -> dict[str, Any]:
        return {
            "kind": kinds[k // nb],
            "record": describe(cols, int(new[k])),
            "reference_complaint": cols["chief_complaint"][ref[k]],
            "reference": out.at(int(ref[k])),
            "with_made_up_words": out.at(int(new[k])),
        }

    result = invariant(
        "triage.unknown_words_never_lower_risk",
        "A complaint replaced by made-up words gives no lower P(admitted) or P(critical) than no complaint, and "
        "made-up words appended to a complaint give no lower risk than the complaint alone (tolerance 1e-6); "
        "neither gives a less urgent model or recommended level.",
        "A misspelling, an abbreviation or a word in another language is not evidence of good health: a model "
        "that reads unknown words as reassuring would under-triage exactly the patients it understands least.",
        len(new),
        magnitude,
        _Examples(len(new), example),
        tolerance=P_TOL_EXACT,
        tolerance_text="probability drop <= 1e-6; level never less urgent",
    )
    return result, n_rows(cols)


def benign_dilution(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """f. Benign words before or after a time-critical complaint never lower its risk or urgency."""
    texts: list[tuple[str, str | None]] = [(c, None) for c in CRITICAL_COMPLAINTS]
    texts += [(c, f"{c} {p}") for c in CRITICAL_COMPLAINTS for p in BENIGN_PHRASES]
    texts += [(c, f"{p} {c}") for c in CRITICAL_COMPLAINTS for p in BENIGN_PHRASES]
    base = base_records(rng, _n_base(target, len(texts)))
    nb = n_rows(base)
    cols = repeat(base, np.tile(np.arange(nb), len(texts)))
    cols["chief_complaint"] = np.repeat(np.array([t or c for c, t in texts], dtype=object), nb)
    out = _predict(model, cols)
    alone = {c: k for k, (c, t) in enumerate(texts) if t is None}
    pairs = [(alone[c] * nb + b, k * nb + b) for k, (c, t) in enumerate(texts) if t is not None for b in range(nb)]
    ref, new = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    magnitude = _worse(out, ref, new)

    def example(k: int) -> dict[str, Any]:
        return {
            "record": describe(cols, int(new[k])),
            "complaint_alone": cols["chief_complaint"][ref[k]],
            "alone": out.at(int(ref[k])),
            "with_benign_words": out.at(int(new[k])),
        }

    result = invariant(
        "triage.benign_words_never_dilute_red_flags",
        f"A time-critical complaint ({', '.join(CRITICAL_COMPLAINTS)}) with benign words before or after it "
        f"({'; '.join(repr(p) for p in BENIGN_PHRASES)}) never gives lower P(admitted) or P(critical) (tolerance "
        "1e-4) nor a less urgent model or recommended level than the complaint alone.",
        "Free text is written in full sentences: 'seizure at home' is as urgent as 'seizure'. A model that "
        "averages words lets padding dilute a red flag.",
        len(new),
        magnitude,
        _Examples(len(new), example),
        tolerance=P_TOL_MONOTONE,
        tolerance_text="probability drop <= 1e-4; level never less urgent",
    )
    return result, n_rows(cols)


def red_flags(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """g. Every red-flag complaint gives at most its floor level; ACVPU P or U gives level 1."""
    texts, error = red_flag_texts()
    variants = [(f"complaint {fid}", {"chief_complaint": t}, floor) for fid, t, floor in texts]
    variants += [(f"ACVPU {c}", {"consciousness": c}, 1) for c in ("P", "U")]
    base = base_records(rng, _n_base(target, len(variants)))
    nb = n_rows(base)
    cols = repeat(base, np.tile(np.arange(nb), len(variants)))
    for k, (_, change, _) in enumerate(variants):
        for name, value in change.items():
            cols[name][k * nb : (k + 1) * nb] = value
    floors = np.repeat(np.array([v[2] for v in variants]), nb)
    out = _predict(model, cols)
    magnitude = list((out.recommended_level - floors).astype(float))

    def example(k: int) -> dict[str, Any]:
        if k == len(floors):
            return {"error": error}
        return {
            "case": variants[k // nb][0],
            "record": describe(cols, k),
            "floor_level": int(floors[k]),
            "outputs": out.at(k),
        }

    if error:  # fail closed: a red-flag list that cannot be read is a violation, never a silent pass
        magnitude.append(1.0)
    n = len(magnitude)
    result = invariant(
        "triage.red_flags_give_their_level",
        "Every red-flag complaint of models.triage.complaints (each synonym) gives a recommended level at least as "
        "urgent as its floor level, and ACVPU P or U gives level 1, whatever the rest of the record.",
        "Time-critical presentations (cardiac arrest, stroke, anaphylaxis, an unresponsive patient) must be seen "
        "at once; a statistical model trained on mostly stable patients cannot be trusted to rank them.",
        n,
        magnitude,
        _Examples(n, example),
        tolerance=0.0,
        tolerance_text="none (whole levels)",
    )
    return result, n_rows(cols)


def infants_not_floored(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """h. Well children with age-normal vitals are not raised to level 1-2 by a floor."""
    cols = child_records(rng, _n_base(target, 1, minimum=20))
    out = _predict(model, cols)
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
        _Examples(n, example),
        tolerance=0.0,
        tolerance_text="none (whole levels)",
    )
    return result, n


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
