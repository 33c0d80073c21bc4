"""The typed model card (Mitchell et al. 2019) shipped with the weights.

The card travels inside the ONNX file's metadata (key ``vigil_model_card``) and is logged to MLflow, so
serving knows the labels, the preprocessing contract, the calibration and the provenance of a model
without trusting anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from models.labels import ACUITY_LABELS_ECDS, ACUITY_LABELS_MANCHESTER, OUTCOME_DEFINITIONS

Task = Literal["triage", "imaging"]

TRIAGE_DECISION_SUPPORT_STATEMENT: Final = (
    "Vigil is clinical decision support. It does not replace the judgement of a clinician, who remains "
    "responsible for every triage and treatment decision. The recommended acuity is never less urgent than "
    "NEWS2 demands (Vigil's safety floor)."
)
IMAGING_DECISION_SUPPORT_STATEMENT: Final = (
    "Vigil's chest X-ray second read is clinical decision support: a second reader. It does not replace the "
    "judgement of a clinician: a radiologist or clinician reads every image and remains responsible for its "
    "interpretation and report. Vigil does not rule findings "
    "out and does not report; it flags only the findings released for the patient's population, and a finding "
    "it did not evaluate is not a negative."
)
#: The statement every output of a task carries (HTTP JSON, FHIR, the SR, the DICOM node, the model card).
DECISION_SUPPORT_STATEMENTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "triage": TRIAGE_DECISION_SUPPORT_STATEMENT,
        "imaging": IMAGING_DECISION_SUPPORT_STATEMENT,
    }
)
#: The triage statement, under the name it has always had (triage outputs are unchanged).
DECISION_SUPPORT_STATEMENT: Final = TRIAGE_DECISION_SUPPORT_STATEMENT


def decision_support_statement(task: Task) -> str:
    """The decision-support statement of ``task`` (``"triage"`` or ``"imaging"``).

    Raises
    ------
    ValueError
        Naming the task when it is neither.
    """
    try:
        return DECISION_SUPPORT_STATEMENTS[task]
    except KeyError:
        raise ValueError(
            f"task must be one of {', '.join(DECISION_SUPPORT_STATEMENTS)}; got {str(task)[:30]!r}"
        ) from None


CARD_METADATA_KEY: Final = "vigil_model_card"


@dataclass
class ModelCard:
    """Everything a user of the model needs to know; JSON round-trips exactly.

    ``decision_support_statement`` defaults to the statement of the card's task (:attr:`kind`). An imaging card
    written before imaging had its own statement carries the triage statement as that old default; it is read as
    the imaging statement (the text was a default, never a choice made for the model).
    """

    name: str
    version: str
    task: str
    created_utc: str
    intended_use: str
    out_of_scope: list[str]
    decision_support_statement: str = ""
    acuity_labels: dict[str, dict[str, str]] = field(
        default_factory=lambda: {
            str(k): {"manchester": ACUITY_LABELS_MANCHESTER[k], "ecds": ACUITY_LABELS_ECDS[k]}
            for k in ACUITY_LABELS_MANCHESTER
        }
    )
    outcomes: dict[str, str] = field(default_factory=lambda: dict(OUTCOME_DEFINITIONS))
    features: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    decision_rule: dict[str, Any] = field(default_factory=lambda: {"under_triage_weight": 1.0})
    safety_floor: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    limitations: list[str] = field(default_factory=list)
    synthetic_data: bool = False
    release_gate: dict[str, Any] = field(default_factory=lambda: {"status": "not run"})

    def __post_init__(self) -> None:
        statement = self.decision_support_statement
        if not statement or (self.kind == "imaging" and statement == TRIAGE_DECISION_SUPPORT_STATEMENT):
            self.decision_support_statement = decision_support_statement(self.kind)

    @property
    def kind(self) -> Task:
        """``"imaging"`` for a chest X-ray card (its features list the findings), else ``"triage"``.

        ``task`` is the card's free-text description of the task; this is the machine-readable one.
        """
        return "imaging" if "findings" in self.features else "triage"

    def to_json(self) -> str:
        """Serialise to JSON (stable key order)."""
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Parse a card written by :meth:`to_json`; unknown keys are refused."""
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model card has unknown keys {unknown}")
        return cls(**data)

    def to_markdown(self) -> str:
        """Render the card for people (README-style Markdown)."""
        lines = [
            f"# Model card: {self.name} {self.version}",
            "",
            f"> {self.decision_support_statement}",
            "",
        ]
        if self.synthetic_data:
            lines += [
                "**TRAINED AND EVALUATED ON SYNTHETIC DATA ONLY: no real data was found. These figures say "
                "nothing about clinical performance and this model must not be used for patients.**",
                "",
            ]
        lines += [
            "## Intended use",
            self.intended_use,
            "",
            "## Out of scope",
            *(f"- {item}" for item in self.out_of_scope),
            "",
            *(
                line
                for title, section in (
                    ("Data", self.data),
                    ("Training", self.training),
                    ("Calibration", self.calibration),
                    ("Decision rule", self.decision_rule),
                    ("Safety floor", self.safety_floor),
                    ("Metrics", self.metrics),
                )
                for line in (
                    f"## {title}",
                    "```json",
                    json.dumps(section, indent=2, sort_keys=True, default=str),
                    "```",
                    "",
                )
            ),
            *self._inputs_markdown(),
            "## Limitations",
            *(f"- {item}" for item in self.limitations),
            "",
            "## Release gate",
            f"Status: {self.release_gate.get('status')}",
            "",
        ]
        return "\n".join(lines)

    def _inputs_markdown(self) -> list[str]:
        """What the model learnt from: training rows per input and per category value (triage cards)."""
        observed = self.features.get("observed")
        if not observed:
            return []
        unused = set(self.features.get("unused_inputs", ()))
        n = self.features.get("n_fitted", 0)
        lines = [
            "## Inputs learnt",
            "",
            f"Training rows in which each input was recorded (of {n}). An input, or a category value, "
            "observed in fewer than min(30, 1% of rows) is masked to missing before encoding and is listed "
            "in every response as not used by this model.",
            "",
            "| input | rows observed | used |",
            "|---|---:|---|",
        ]
        lines += [
            f"| {name} | {count} | {'no: not recorded in its training data' if name in unused else 'yes'} |"
            for name, count in observed.items()
        ]
        for name, counts in self.features.get("category_counts", {}).items():
            if name not in unused:
                values = ", ".join(f"{v} {c}" for v, c in counts.items())
                lines.append(f"\n{name}: {values}")
        masked = self.features.get("unlearnt_values", {})
        if masked:
            lines += [
                "",
                "Category values not used (not recorded in training): "
                + "; ".join(f"{k}: {', '.join(v)}" for k, v in masked.items()),
            ]
        return [*lines, ""]
