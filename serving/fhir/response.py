"""CDS Hooks 2.0 and FHIR R4 output for triage: the discovery document, and a result -> cards and RiskAssessment.

Pure functions (no FastAPI, no I/O): the HTTP routes call them. The service's id, hook and prefetch templates are
in :mod:`serving.fhir.codes`; reading the request into a triage record is :mod:`serving.fhir.record`.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from models.labels import ACUITY_LABELS_ECDS, HIGH_ACUITY_MAX_LEVEL, OUTCOMES
from models.triage.safety_floor import NO_FLOOR
from serving.api.schemas import TriageResult
from serving.fhir.codes import (
    ECDS_ACUITY_SNOMED,
    HOOK,
    MODEL_SYSTEM,
    OUTCOME_SYSTEM,
    PREFETCH,
    REQUEST_ID_SYSTEM,
    SERVICE_ID,
    SNOMED,
    TOPIC_SYSTEM,
)
from serving.fhir.shapes import require_aware


def cds_discovery() -> dict[str, Any]:
    """The CDS Hooks discovery document (``GET {base}/cds-services``): one service on ``encounter-start``."""
    return {
        "services": [
            {
                "hook": HOOK,
                "id": SERVICE_ID,
                "title": "Vigil emergency department triage",
                "description": (
                    "Decision support for emergency department triage: a recommended acuity (Manchester / ECDS levels "
                    "1-5), the probability of hospital admission and of critical care, and the NEWS2 score, from the "
                    "patient's age, sex and triage observations. It never replaces the triage clinician's judgement."
                ),
                "usageRequirements": (
                    "Call when triage observations have been recorded for this encounter; prefetch is required "
                    "because Vigil does not query the FHIR server. Observations recorded before the encounter "
                    "started are not used."
                ),
                "prefetch": copy.deepcopy(PREFETCH),
            }
        ]
    }


def card_indicator(level: int, news2_band: str) -> str:
    """CDS card indicator: ``critical`` for levels 1-2 or a high NEWS2, ``warning`` for level 3 or a medium or
    low-medium NEWS2, else ``info``."""
    if level <= HIGH_ACUITY_MAX_LEVEL or news2_band == "high":
        return "critical"
    if level == HIGH_ACUITY_MAX_LEVEL + 1 or news2_band in ("medium", "low-medium"):
        return "warning"
    return "info"


def _pct(p: float) -> str:
    if 0 < p < 0.005:
        return "<1%"
    if 0.995 < p < 1:
        return ">99%"
    return f"{p:.0%}"


def _result(result: Mapping[str, Any] | TriageResult) -> TriageResult:
    return result if isinstance(result, TriageResult) else TriageResult.model_validate(dict(result))


def _model_text(res: TriageResult) -> str:
    return f"Vigil triage model {res.model.name} {res.model.version}"


def _not_released(res: TriageResult) -> list[str]:
    reasons = []
    if res.flags.synthetic_model:
        reasons.append("it was trained on synthetic data only")
    if res.flags.unreleased_model:
        reasons.append("it has not passed its release gate and is served by an explicit override")
    return reasons


def _risk_items(res: TriageResult) -> list[tuple[str, Any]]:
    order = [o for o in OUTCOMES if o in res.risks] + sorted(set(res.risks) - set(OUTCOMES))
    return [(o, res.risks[o]) for o in order]


def _floor_text(res: TriageResult) -> str:
    """'<source>: <reasons>; no level less urgent than <level>' for the floor applied."""
    source = {
        "acvpu": "ACVPU",
        "red_flag_complaint": "red-flag complaint",
        "paediatric": "paediatric physiology",
        "adult_physiology": "adult physiology (NICE NG51)",
        "news2": "NEWS2",
        "none": "none",
    }[res.floor.source]
    return f"{source}: {'; '.join(res.floor.reasons)}; no level less urgent than {res.floor.level}"


def _detail(res: TriageResult) -> str:
    acuity, news, flags = res.acuity, res.news2, res.flags
    lines = [f"**Recommended acuity: level {acuity.level}, {acuity.label.manchester}** (ECDS: {acuity.label.ecds})"]
    if acuity.raised_by_safety_floor:
        lines.append(f"Raised from the model's level {acuity.model_level} by the safety floor ({_floor_text(res)}).")
    if res.red_flags:
        lines.append(
            "Red-flag complaint: "
            + "; ".join(f"{f.label} (level {f.floor_level} at least)" for f in res.red_flags)
            + "."
        )
    lines += ["", *(f"- P({name}) {_pct(risk.probability)}: {risk.definition}" for name, risk in _risk_items(res))]
    partial = f", partial: a lower bound, {', '.join(news.missing)} not recorded" if news.partial else ""
    red = "; a single parameter scored 3" if news.red_flag else ""
    response = news.clinical_response[:1].upper() + news.clinical_response[1:]
    lines += ["", f"**NEWS2 {news.score}** ({news.band} clinical risk{partial}{red}). {response}."]
    if res.contributing_factors:
        lines += ["", "**Contributing factors**", *(f"- {f.detail} ({f.source})" for f in res.contributing_factors)]
    flag_lines = [
        *([f"- Not recorded: {', '.join(flags.missing_inputs)}"] if flags.missing_inputs else []),
        *(
            [f"- Outside the central 99% of the training data: {', '.join(flags.out_of_training_range)}"]
            if flags.out_of_training_range
            else []
        ),
        *([f"- The safety floor raised the level ({res.floor.source})"] if flags.safety_floor_raised_level else []),
        *(["- NEWS2 is not validated under 16 years of age"] if flags.news2_not_validated else []),
        *(f"- Not for clinical use: {reason}" for reason in _not_released(res)),
    ]
    if flag_lines:
        lines += ["", "**Flags**", *flag_lines]
    lines += [
        "",
        f"> {res.decision_support_statement}",
        "",
        f"{_model_text(res)} (sha256 {res.model.sha256[:12]}, release gate: {res.model.release_status})",
    ]
    return "\n".join(lines)


def cds_response(
    result: Mapping[str, Any] | TriageResult,
    *,
    now: datetime,
    patient_reference: str | None = None,
    encounter_reference: str | None = None,
) -> dict[str, Any]:
    """The CDS Hooks response for one triage result.

    Parameters
    ----------
    result : Mapping
        A :class:`serving.api.schemas.TriageResult` as a dict (``model_dump()``); validated against the schema.
    now : datetime
        Time of the assessment (timezone-aware), written to the RiskAssessment.
    patient_reference, encounter_reference : str, optional
        ``Patient/<id>`` and ``Encounter/<id>`` (see :func:`serving.fhir.record.context_references`) for the
        suggested RiskAssessment.

    Returns
    -------
    dict
        ``{"cards": [...]}``: the triage card (summary, indicator from :func:`card_indicator`, markdown detail, a
        suggestion to create the :func:`risk_assessment`), plus a ``warning`` card when the model is not released
        for clinical use.
    """
    require_aware(now)
    res = _result(result)
    acuity = res.acuity
    labels = {"admitted": "admission", "critical": "critical"}
    chances = ", ".join(f"P({labels.get(name, name)}) {_pct(risk.probability)}" for name, risk in _risk_items(res))
    summary = (
        f"Triage level {acuity.level} ({acuity.label.manchester}): {chances}; "
        f"NEWS2 {res.news2.score} ({res.news2.band})"
    )
    source = {
        "label": "Vigil",
        "topic": {"system": TOPIC_SYSTEM, "code": "ed-triage", "display": "Emergency department triage"},
    }
    assessment = risk_assessment(
        res, patient_reference=patient_reference, encounter_reference=encounter_reference, now=now
    )
    cards = [
        {
            "uuid": str(uuid.uuid4()),
            "summary": summary if len(summary) < 140 else summary[:138] + "…",
            "indicator": card_indicator(acuity.level, res.news2.band),
            "detail": _detail(res),
            "source": source,
            "suggestions": [
                {
                    "label": "Record Vigil's triage risk assessment",
                    "uuid": str(uuid.uuid4()),
                    "actions": [
                        {
                            "type": "create",
                            "resource": assessment,
                            "description": "Create a RiskAssessment with Vigil's recommended acuity and risks "
                            "(decision support, to be confirmed by the triage clinician)",
                        }
                    ],
                }
            ],
            "selectionBehavior": "at-most-one",
        }
    ]
    reasons = _not_released(res)
    if reasons:
        cards.append(
            {
                "uuid": str(uuid.uuid4()),
                "summary": "Not for clinical use: this Vigil model is not released",
                "indicator": "warning",
                "detail": f"Do not base care on this result: {'; '.join(reasons)}.",
                "source": source,
            }
        )
    return {"cards": cards}


def _reference(value: str | None, resource_type: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.search(rf"(?:^|/){resource_type}/[A-Za-z0-9\-.]{{1,64}}$", value):
        raise ValueError(f"a {resource_type} reference must look like '{resource_type}/<id>'")
    return {"reference": value}


def risk_assessment(
    result: Mapping[str, Any] | TriageResult,
    *,
    patient_reference: str | None,
    encounter_reference: str | None,
    now: datetime,
) -> dict[str, Any]:
    """A FHIR R4 RiskAssessment of one triage result.

    Parameters
    ----------
    result : Mapping
        A :class:`serving.api.schemas.TriageResult` as a dict; validated against the schema.
    patient_reference : str or None
        ``Patient/<id>``; without it the subject carries only a display (the resource is then for display,
        not for storing).
    encounter_reference : str or None
        ``Encounter/<id>``, omitted when None.
    now : datetime
        ``occurrenceDateTime`` (timezone-aware).

    Returns
    -------
    dict
        ``status`` final; one ``prediction`` per outcome (``probabilityDecimal`` equal to the result's), then one for
        the recommended acuity coded as its ECDS SNOMED CT concept with the model's P(level); ``mitigation`` is
        the NEWS2 clinical response; ``note`` the decision-support statement, any not-for-clinical-use flag, the
        safety floor (level, rule, reasons) when there is one and the red-flag complaints found.
    """
    require_aware(now)
    res = _result(result)
    acuity, news = res.acuity, res.news2
    method = _model_text(res)
    predictions: list[dict[str, Any]] = [
        {
            "outcome": {"coding": [{"system": OUTCOME_SYSTEM, "code": name, "display": name}], "text": risk.definition},
            "probabilityDecimal": risk.probability,
        }
        for name, risk in _risk_items(res)
    ]
    rationale = f"Model's acuity estimate; recommended level {acuity.level}"
    if acuity.raised_by_safety_floor:
        rationale += f", raised from model level {acuity.model_level} by the safety floor ({_floor_text(res)})"
    predictions.append(
        {
            "outcome": {
                "coding": [
                    {
                        "system": SNOMED,
                        "code": ECDS_ACUITY_SNOMED[acuity.level],
                        "display": ACUITY_LABELS_ECDS[acuity.level],
                    }
                ],
                "text": f"Recommended acuity: level {acuity.level}, {acuity.label.manchester}",
            },
            "probabilityDecimal": acuity.probabilities.get(str(acuity.level), 0.0),
            "rationale": rationale,
        }
    )
    notes = [{"text": res.decision_support_statement}]
    notes += [{"text": f"Not for clinical use: {reason}."} for reason in _not_released(res)]
    if res.floor.level < NO_FLOOR:
        notes.append({"text": f"Safety floor: {_floor_text(res)}."})
    if res.red_flags:
        notes.append({"text": "Red-flag complaint: " + "; ".join(f.label for f in res.red_flags) + "."})
    out: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "method": {"coding": [{"system": MODEL_SYSTEM, "code": res.model.name, "display": method}], "text": method},
        "code": {"text": "Emergency department triage risk assessment"},
        "subject": _reference(patient_reference, "Patient") or {"display": "Patient in context (no reference)"},
        "occurrenceDateTime": now.isoformat(timespec="seconds"),
        "performer": {"display": method},
        "prediction": predictions,
        "mitigation": f"NEWS2 {news.score} ({news.band}{', partial' if news.partial else ''}): "
        f"{news.clinical_response}",
        "note": notes,
    }
    if res.request_id:
        out["identifier"] = [{"system": REQUEST_ID_SYSTEM, "value": res.request_id}]
    encounter = _reference(encounter_reference, "Encounter")
    if encounter is not None:
        out["encounter"] = encounter
    return out
