"""The triage safety invariants on the chief complaint: unknown words, benign padding and red flags.

e. made-up words never lower a risk; f. benign words around a time-critical complaint never dilute it; g. every
red-flag complaint (and ACVPU P or U) gives at most its floor level. Each check takes the model, a generator and its
target number of perturbed records, and returns its :class:`~evaluation.safety.InvariantResult` and the number of
records it predicted on; the suite (:mod:`evaluation.safety_triage`) runs them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluation.safety import InvariantResult, invariant
from evaluation.safety_triage_cases import (
    BENIGN_PHRASES,
    COMMON_COMPLAINTS,
    CRITICAL_COMPLAINTS,
    base_records,
    concat,
    describe,
    made_up_words,
    red_flag_texts,
    repeat,
)
from evaluation.safety_triage_outputs import (
    P_TOL_EXACT,
    P_TOL_MONOTONE,
    LazyExamples,
    n_base_records,
    predict_outputs,
    worsening,
)
from models.triage.columns import n_rows


def _known_words(model: Any) -> frozenset[str]:
    vocabulary = getattr(getattr(model, "encoder", None), "vocabulary", ())
    words = {w for text in (*COMMON_COMPLAINTS, *CRITICAL_COMPLAINTS) for w in text.split()}
    return frozenset(map(str, vocabulary)) | words


def unknown_words(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """e. Made-up words never lower a risk: replacing the complaint (vs none) or appended (vs the complaint)."""
    n_made_up = 2
    base = base_records(rng, n_base_records(target, 2 + 2 * n_made_up))
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
    out = predict_outputs(model, cols)
    ref = np.concatenate(refs)
    new = 2 * nb + np.arange(len(ref))
    magnitude = worsening(out, ref, new)

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
        LazyExamples(len(new), example),
        tolerance=P_TOL_EXACT,
        tolerance_text="probability drop <= 1e-6; level never less urgent",
    )
    return result, n_rows(cols)


def benign_dilution(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """f. Benign words before or after a time-critical complaint never lower its risk or urgency."""
    texts: list[tuple[str, str | None]] = [(c, None) for c in CRITICAL_COMPLAINTS]
    texts += [(c, f"{c} {p}") for c in CRITICAL_COMPLAINTS for p in BENIGN_PHRASES]
    texts += [(c, f"{p} {c}") for c in CRITICAL_COMPLAINTS for p in BENIGN_PHRASES]
    base = base_records(rng, n_base_records(target, len(texts)))
    nb = n_rows(base)
    cols = repeat(base, np.tile(np.arange(nb), len(texts)))
    cols["chief_complaint"] = np.repeat(np.array([t or c for c, t in texts], dtype=object), nb)
    out = predict_outputs(model, cols)
    alone = {c: k for k, (c, t) in enumerate(texts) if t is None}
    pairs = [(alone[c] * nb + b, k * nb + b) for k, (c, t) in enumerate(texts) if t is not None for b in range(nb)]
    ref, new = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    magnitude = worsening(out, ref, new)

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
        LazyExamples(len(new), example),
        tolerance=P_TOL_MONOTONE,
        tolerance_text="probability drop <= 1e-4; level never less urgent",
    )
    return result, n_rows(cols)


def red_flags(model: Any, rng: np.random.Generator, target: float) -> tuple[InvariantResult, int]:
    """g. Every red-flag complaint gives at most its floor level; ACVPU P or U gives level 1."""
    texts, error = red_flag_texts()
    variants = [(f"complaint {fid}", {"chief_complaint": t}, floor) for fid, t, floor in texts]
    variants += [(f"ACVPU {c}", {"consciousness": c}, 1) for c in ("P", "U")]
    base = base_records(rng, n_base_records(target, len(variants)))
    nb = n_rows(base)
    cols = repeat(base, np.tile(np.arange(nb), len(variants)))
    for k, (_, change, _) in enumerate(variants):
        for name, value in change.items():
            cols[name][k * nb : (k + 1) * nb] = value
    floors = np.repeat(np.array([v[2] for v in variants]), nb)
    out = predict_outputs(model, cols)
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
        LazyExamples(n, example),
        tolerance=0.0,
        tolerance_text="none (whole levels)",
    )
    return result, n_rows(cols)
