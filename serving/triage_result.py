"""From validated triage records to :class:`serving.api.schemas.TriageResult` dicts (no HTTP here).

The model, the decision rule and the safety floor (:mod:`models.triage.safety_floor`: ACVPU, red-flag complaints,
paediatric physiology under 16, NEWS2 from 16) run in :meth:`models.triage.onnx.TriageOnnxModel.predict`; this
module only explains and packages what they decided, so the served level is exactly the model's level raised to
the floor, and the response names the rule that set the floor and why. The HTTP routes (``/v1/triage``, its batch
and the CDS Hooks service) score and audit through :func:`serving.api.triage_scoring.score_records`.
"""

from __future__ import annotations

import math
from typing import Any, Final

from models.labels import ACUITY_LEVELS, OUTCOME_DEFINITIONS, OUTCOMES, acuity_label
from models.model_card import DECISION_SUPPORT_STATEMENT
from models.triage.columns import columns_from_records
from models.triage.complaints import RED_FLAGS
from models.triage.explain import attributable_fields, predict_and_explain
from models.triage.news2 import PARAMETERS, News2Result, result_at
from models.triage.onnx import TriagePrediction
from models.triage.record import NUMERIC_BY_NAME
from serving.model_source import LoadedModel

#: Model factors smaller than this (in probability) are not listed as reasons.
MIN_EFFECT: Final = 0.01
MAX_MODEL_FACTORS: Final = 5
#: NEWS2 is not validated under this age (RCP 2017).
NEWS2_MIN_AGE: Final = 16


def _value_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    spec = NUMERIC_BY_NAME.get(name)
    if spec is not None:
        return f"{float(value):g} {spec.unit}"
    return str(value)[:60]


def _news2_factors(result: News2Result, record: dict[str, Any]) -> list[dict[str, Any]]:
    scored = sorted(
        ((p, result.components[p]) for p in PARAMETERS if result.components.get(p, 0) > 0), key=lambda item: -item[1]
    )
    return [
        {
            "field": name,
            "source": "news2",
            "effect": {},
            "detail": f"{name} {_value_text(name, record.get(name))} scores {points} NEWS2 "
            f"point{'s' if points > 1 else ''}",
        }
        for name, points in scored
    ]


def _model_factors(effects: list[Any], record: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for eff in effects:
        if eff.magnitude < MIN_EFFECT or len(out) >= MAX_MODEL_FACTORS:
            break
        value = record.get(eff.field)
        changes = ", ".join(
            f"P({o}) {'+' if eff.effect[o] >= 0 else '-'}{abs(eff.effect[o]) * 100:.1f} pts" for o in OUTCOMES
        )
        reference = (
            eff.reference if isinstance(eff.reference, str) else f"a typical {_value_text(eff.field, eff.reference)}"
        )
        out.append(
            {
                "field": eff.field,
                "source": "model",
                "effect": {o: round(eff.effect[o], 4) for o in OUTCOMES},
                "detail": f"{eff.field} {_value_text(eff.field, value)}: {changes} vs. {reference}",
            }
        )
    return out


def build_results(model: LoadedModel, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Score validated records (from :func:`models.triage.record.validate_record`) and explain each result.

    Returns one :class:`serving.api.schemas.TriageResult`-shaped dict per record, without ``request_id``.
    """
    if not records:
        return []
    runtime = model.runtime
    columns = columns_from_records(records)
    pred, effects = predict_and_explain(runtime, columns)
    out_of_range = runtime.encoder.out_of_range(columns)
    ignored = runtime.encoder.ignored_fields(columns)
    used = attributable_fields(runtime)
    ref = model.ref()
    results = []
    for i, record in enumerate(records):
        score = result_at(pred.news2, i)  # the breakdown of the very score the safety floor used
        level = int(pred.recommended_level[i])
        model_level = int(pred.model_level[i])
        news2_floor = int(pred.news2_floor[i])
        age = record.get("age_years")
        results.append(
            {
                "model": ref,
                "acuity": {
                    "level": level,
                    "label": acuity_label(level),
                    "model_level": model_level,
                    "raised_by_news2_floor": model_level > news2_floor,
                    "raised_by_safety_floor": bool(pred.floor_raised[i]),
                    "probabilities": {str(k): _prob(pred.acuity_probs[i, j]) for j, k in enumerate(ACUITY_LEVELS)},
                },
                "risks": {
                    "admitted": {
                        "probability": _prob(pred.p_admitted[i]),
                        "definition": OUTCOME_DEFINITIONS["admitted"],
                    },
                    "critical": {
                        "probability": _prob(pred.p_critical[i]),
                        "definition": OUTCOME_DEFINITIONS["critical"],
                    },
                },
                "news2": {
                    "score": score.score,
                    "partial": score.partial,
                    "band": score.band,
                    "clinical_response": score.response,
                    "red_flag": score.red_flag,
                    "components": {p: int(score.components[p]) for p in PARAMETERS},
                    "missing": list(score.missing),
                    "minimum_acuity": news2_floor,
                },
                "floor": _floor(pred, i),
                "red_flags": [_red_flag(f) for f in pred.red_flags[i]],
                "contributing_factors": _news2_factors(score, record) + _model_factors(effects[i], record),
                "flags": {
                    "missing_inputs": [f for f in used if record.get(f) is None],
                    "out_of_training_range": out_of_range[i],
                    "not_used_by_model": ignored[i],
                    "news2_floor_raised_level": model_level > news2_floor,
                    "safety_floor_raised_level": bool(pred.floor_raised[i]),
                    "news2_partial": score.partial,
                    "news2_not_validated": age is not None and float(age) < NEWS2_MIN_AGE,
                    "synthetic_model": ref["synthetic_data"],
                    "unreleased_model": ref["unreleased_override"],
                },
                "decision_support_statement": DECISION_SUPPORT_STATEMENT,
            }
        )
    return results


def _floor(pred: TriagePrediction, i: int) -> dict[str, Any]:
    assert pred.floor_level is not None and pred.floor_source is not None  # set by TriageOnnxModel.decide
    return {
        "level": int(pred.floor_level[i]),
        "source": str(pred.floor_source[i]),
        "reasons": list(pred.floor_reasons[i]),
        "raised_level": bool(pred.floor_raised[i]),
    }


def _red_flag(flag_id: str) -> dict[str, Any]:
    flag = RED_FLAGS[flag_id]
    return {"id": flag.id, "label": flag.label, "floor_level": flag.floor_level, "source": flag.source}


def _prob(value: float) -> float:
    p = float(value)
    return 0.0 if math.isnan(p) else round(min(1.0, max(0.0, p)), 6)
