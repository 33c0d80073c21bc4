"""Response schemas of the HTTP API (pydantic), documented in the OpenAPI description.

Request bodies are validated by the shared contract (:func:`models.triage.record.validate_record`, the DICOM
checks of :mod:`models.imaging.pixels`); their JSON Schema is generated from the same field specs
(:func:`triage_record_json_schema`), so the documented schema and the validator cannot disagree.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.triage.features import NOT_LEARNT_REASON
from models.triage.record import (
    BOOLEAN_FIELDS,
    CATEGORICAL_FIELDS,
    DATETIME_FIELDS,
    NUMERIC_FIELDS,
    TEXT_FIELDS,
)
from serving.api.errors import PROBLEM_JSON


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# ------------------------------------------------------------------------------------------ shared parts
class ModelRef(_Out):
    """Which model answered: name, registry version, ONNX sha256 and its release status."""

    name: str
    version: str = Field(description="Registry version (or the card's version for a local ONNX folder)")
    sha256: str
    release_status: str = Field(description="The release gate's recorded status: 'pass', or what it was")
    unreleased_override: bool = Field(
        description="True when the model was served without a passing release gate by an explicit override"
    )
    synthetic_data: bool = Field(description="True when the model was trained on synthetic data only")
    intended_use: str | None = Field(
        default=None, description="The intended population declared in the release policy (None: not released)"
    )
    not_validated_for: list[dict[str, str]] = Field(
        default_factory=list,
        description="Populations the model was checked on outside its intended use, each "
        "{name, population, reason}: results there are not validated",
    )
    findings_released: dict[str, str] | None = Field(
        default=None, description="Imaging: each finding the release gate released, with its intended population"
    )
    findings_not_validated: dict[str, str] | None = Field(
        default=None, description="Imaging: each finding the release gate did not release, with why; never flagged"
    )


class AcuityLabel(_Out):
    manchester: str
    ecds: str


class Acuity(_Out):
    level: int = Field(ge=1, le=5, description="Recommended acuity, 1 most urgent ... 5 least (Manchester/ECDS)")
    label: AcuityLabel
    model_level: int = Field(ge=1, le=5, description="The model's level before the safety floor")
    raised_by_news2_floor: bool = Field(
        description="The NEWS2 floor alone would make the model's level more urgent (model_level > "
        "news2.minimum_acuity)"
    )
    raised_by_safety_floor: bool = Field(
        description="The safety floor (see 'floor': any of its rules) made the model's level more urgent"
    )
    probabilities: dict[str, float] = Field(description="P(level) for levels '1'..'5' (the model's estimate)")


class Risk(_Out):
    probability: float = Field(ge=0.0, le=1.0, description="Calibrated probability")
    definition: str


class News2Out(_Out):
    score: int = Field(ge=0, le=20)
    partial: bool = Field(description="Some parameters were missing: the score is a lower bound")
    band: Literal["low", "low-medium", "medium", "high"]
    clinical_response: str = Field(description="RCP 2017 clinical response for this score")
    red_flag: bool = Field(description="A single parameter scored 3")
    components: dict[str, int]
    missing: list[str]
    minimum_acuity: int = Field(
        ge=1,
        le=5,
        description="The NEWS2 band's floor: the least urgent level NEWS2 allows (5 under 16 years, where "
        "the adult NEWS2 is not applied; the floor applied is 'floor')",
    )


class SafetyFloorOut(_Out):
    """The safety floor applied: the least urgent level allowed, the rule that set it and why."""

    level: int = Field(ge=1, le=5, description="The least urgent level allowed (5: no floor)")
    source: Literal["acvpu", "red_flag_complaint", "paediatric", "adult_physiology", "news2", "none"] = Field(
        description="The rule giving that level: ACVPU (P/U -> 1, V/C -> 2), a red-flag complaint, NICE NG51 "
        "paediatric high-risk physiology (under 16), NEWS2 (16 and over); 'none' when no rule applies"
    )
    reasons: list[str] = Field(description="Every rule finding that gives this level, e.g. 'consciousness P'")
    raised_level: bool = Field(description="The floor made the model's level more urgent")


class RedFlagOut(_Out):
    """A time-critical complaint found in the chief complaint (models.triage.complaints.RED_FLAGS)."""

    id: str
    label: str
    floor_level: int = Field(ge=1, le=5, description="The least urgent level this complaint allows")
    source: str = Field(description="Where the level comes from (Manchester Triage System, NICE, ...)")


class Factor(_Out):
    """One reason behind the result, most important first."""

    field: str
    source: Literal["news2", "model"]
    detail: str
    effect: dict[str, float] = Field(
        default_factory=dict,
        description="model factors: change in P(admitted) and P(critical) attributable to this field "
        "(its value vs. the field left missing)",
    )


class TriageFlags(_Out):
    missing_inputs: list[str] = Field(description="Fields the model uses that were not supplied")
    out_of_training_range: list[str] = Field(description="Values outside the central 99% of the training data")
    not_used_by_model: list[str] = Field(
        default_factory=list,
        description=f"Fields supplied that the model ignores ({NOT_LEARNT_REASON}); NEWS2 and the safety floor "
        "still use every field they clinically define",
    )
    news2_floor_raised_level: bool
    safety_floor_raised_level: bool = Field(description="The safety floor (any rule) raised the level")
    news2_partial: bool
    news2_not_validated: bool = Field(description="NEWS2 is not validated under 16 years of age")
    synthetic_model: bool
    unreleased_model: bool


class TriageResult(_Out):
    request_id: str
    audit_id: int = Field(
        ge=1, description="This prediction's row in the audit trail: the id by which its outcome is fed back"
    )
    model: ModelRef
    acuity: Acuity
    risks: dict[str, Risk] = Field(description="Keyed by outcome: 'admitted', 'critical'")
    news2: News2Out
    floor: SafetyFloorOut
    red_flags: list[RedFlagOut] = Field(description="Red flags found in the chief complaint, most urgent first")
    contributing_factors: list[Factor]
    flags: TriageFlags
    decision_support_statement: str


class TriageBatchItem(_Out):
    index: int = Field(ge=0, description="Position of the record in the request")
    result: TriageResult | None = None
    error: dict[str, Any] | None = Field(default=None, description="problem+json of a record that failed validation")


class TriageBatchResult(_Out):
    request_id: str
    n: int
    n_failed: int
    items: list[TriageBatchItem]


class FindingOut(_Out):
    finding: str
    code: dict[str, str] = Field(description="Coding of the finding (scheme, value, meaning)")
    status: Literal["evaluated", "not validated", "outside intended use"] = Field(
        description="'evaluated': released by the gate and the image is inside the finding's intended population; "
        "'not validated': the release gate did not release this finding; 'outside intended use': "
        "released for another population (e.g. age), or the image does not say. Only evaluated "
        "findings carry a probability and can be flagged."
    )
    status_reason: str = Field(description="Why this status, naming the attribute that decided (e.g. PatientAge)")
    probability: float | None = Field(
        default=None, ge=0.0, le=1.0, description="None unless the finding was evaluated on this image"
    )
    operating_threshold: float
    flagged: bool


class SecondReadResult(_Out):
    request_id: str
    audit_id: int = Field(
        ge=1,
        description="This second read's row in the audit trail: the id by which the radiologist's read is fed back",
    )
    model: ModelRef
    flagged: bool = Field(description="Any finding at or above its operating threshold")
    findings: list[FindingOut]
    heatmap_png_base64: str = Field(
        description="PNG: the prepared image with the heat map of the top evaluated "
        "finding (no map when no finding was evaluated)"
    )
    heatmap_finding: str | None = Field(
        description="The finding whose heat map is drawn; None when no finding was evaluated on this image"
    )
    source: dict[str, Any] = Field(description="UIDs and technical attributes of the instance (no patient data)")
    timings_ms: dict[str, float]
    decision_support_statement: str


class ModelInfo(_Out):
    task: Literal["triage", "imaging"]
    loaded: bool
    model: ModelRef | None = None
    card: dict[str, Any] | None = None
    release_gate: dict[str, str] = Field(default_factory=dict, description="The registry's release_gate.* tags")
    origin: str | None = Field(
        default=None,
        description="Where the model file came from: the registry alias, a "
        "local folder, or the verified local cache while the registry is unreachable",
    )
    error: str | None = Field(default=None, description="Why no model is loaded, when none is")


class ModelsOut(_Out):
    models: list[ModelInfo]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="Each validation error: field and message")


#: Where :data:`Problem` is in the document (``serving.api.app`` adds it to ``components.schemas``).
PROBLEM_REF = "#/components/schemas/Problem"


def _problem(description: str) -> dict[str, Any]:
    # Not ``{"model": Problem}``: FastAPI documents a model under the route's own media type (application/json),
    # but every error goes out as application/problem+json (serving/api/errors.py).
    return {"description": description, "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}}


# ------------------------------------------------------------------------------------------------ outcomes
class TriageOutcomeOut(_Out):
    admitted: bool | None = None
    critical_care: bool | None = None
    died_in_ed: bool | None = None
    final_acuity: int | None = Field(default=None, ge=1, le=5)


class ImagingOutcomeOut(_Out):
    findings: dict[str, int] = Field(description="The reporting radiologist's read: 0 or 1 per labelled finding")


class StoredOutcomeOut(_Out):
    outcome_id: int = Field(ge=1)
    audit_id: int = Field(ge=1, description="The prediction's audit row")
    request_id: str = Field(description="The prediction's request id")
    task: Literal["triage", "imaging"]
    observed_utc: str
    received_utc: str
    client: str = Field(description="The key id that fed the outcome back")
    triage: TriageOutcomeOut | None = None
    imaging: ImagingOutcomeOut | None = None


class OutcomeBatchItem(_Out):
    index: int = Field(ge=0, description="Position of the outcome in the request")
    outcome: StoredOutcomeOut | None = None
    error: dict[str, Any] | None = Field(default=None, description="problem+json of an outcome that was not stored")


class OutcomeBatchResult(_Out):
    request_id: str
    n: int
    n_stored: int
    n_failed: int
    items: list[OutcomeBatchItem]


def problem_responses(scope: str | None, **more: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a protected route: 401 and 403 for ``scope``, plus ``more`` (``_413="..."``), each
    an ``application/problem+json`` :class:`Problem`."""
    out: dict[int | str, dict[str, Any]] = {
        401: _problem("No API key, or an unknown or revoked one"),
        403: _problem(f"The key lacks the '{scope}' scope" if scope else "The key lacks the route's scope"),
    }
    for code, description in more.items():
        out[int(code.lstrip("_"))] = _problem(description)
    return out


NO_MODEL_OR_AUDIT = "No released model loaded, or the audit store is unavailable"


# ------------------------------------------------------------------------------------------ request schema
def triage_record_json_schema() -> dict[str, Any]:
    """JSON Schema of one triage record, generated from the field specs of :mod:`models.triage.record`."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in NUMERIC_FIELDS:
        props[f.name] = {
            "type": "integer" if f.integer else "number",
            "minimum": f.low,
            "maximum": f.high,
            "description": f"{f.description} ({f.unit})",
        }
        if f.required:
            required.append(f.name)
        else:
            props[f.name]["type"] = [props[f.name]["type"], "null"]
    for c in CATEGORICAL_FIELDS:
        props[c.name] = {"type": "string", "enum": list(c.values), "description": c.description}
        if c.required:
            required.append(c.name)
        else:
            props[c.name] = {**props[c.name], "type": ["string", "null"], "enum": [*c.values, None]}
    for name in BOOLEAN_FIELDS:
        props[name] = {"type": ["boolean", "null"]}
    for name, length in TEXT_FIELDS.items():
        props[name] = {"type": ["string", "null"], "maxLength": length}
    for name in DATETIME_FIELDS:
        props[name] = {"type": ["string", "null"], "format": "date-time"}
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": props,
        "required": required,
        "title": "TriageRecord",
        "description": "A patient's triage record: only what is known at triage. Unknown keys are refused; "
        "missing values may be omitted or null.",
    }
