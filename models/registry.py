"""The names the packages share about the model registry: the registered models, their aliases, the version and run
tags, and the metric keys a training run logs (which the release policy's performance floors name).

One place for them, so that training (which writes them), the release workflow and the policy (which read them)
and serving (which checks them before it loads a model) cannot drift apart. Constants and two small functions; no
MLflow here.

Metric keys (MLflow metric names of a training run):

- triage: ``<split>.<outcome>.<metric>``, e.g. ``test.admitted.auroc`` (splits :data:`TRIAGE_SPLITS`, outcomes
  :data:`models.labels.OUTCOMES`, metrics :data:`TRIAGE_METRICS`);
- imaging: ``<split>.<source>.<finding>.auroc``, e.g. ``test.nih.effusion.auroc`` (``<source>`` the data the
  finding was scored on, :data:`IMAGING_SOURCES`), and ``validation.<finding>.auroc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from models.errors import InputValidationError
from models.labels import IMAGING_FINDINGS, OUTCOMES

__all__ = [
    "CANDIDATE_ALIAS",
    "IMAGING_MODEL",
    "MODEL_NAMES",
    "PRODUCTION_ALIAS",
    "TRIAGE_MODEL",
    "MetricKey",
    "Tag",
    "imaging_metric",
    "parse_metric_key",
    "triage_metric",
]

TRIAGE_MODEL: Final = "vigil-triage"
IMAGING_MODEL: Final = "vigil-cxr"
MODEL_NAMES: Final = (TRIAGE_MODEL, IMAGING_MODEL)
#: Every training run registers its version as @candidate; only the release gate moves @production.
CANDIDATE_ALIAS: Final = "candidate"
PRODUCTION_ALIAS: Final = "production"

#: Splits a triage run scores: its temporal test years and, where configured, an external dataset.
TRIAGE_SPLITS: Final = ("test", "external")
#: What a triage run logs per outcome and split.
TRIAGE_METRICS: Final = ("auroc", "auprc", "ece")
#: The data an imaging finding is scored on (``synthetic`` only when no real data was found).
IMAGING_SOURCES: Final = ("nih", "kermany", "synthetic")


class Tag:
    """Registry tag names: on the run (``GIT_COMMIT``, ``SYNTHETIC_DATA``, ``ONNX_SHA256``) and on the model version
    (``ONNX_SHA256`` again, and the release gate's record under :attr:`GATE_PREFIX`)."""

    GIT_COMMIT: Final = "git_commit"
    SYNTHETIC_DATA: Final = "synthetic_data"
    ONNX_SHA256: Final = "onnx_sha256"
    GATE_PREFIX: Final = "release_gate."
    GATE_STATUS: Final = "release_gate.status"
    GATE_POLICY_VERSION: Final = "release_gate.policy_version"
    GATE_CHECKED_UTC: Final = "release_gate.checked_utc"
    GATE_SUMMARY: Final = "release_gate.summary"
    GATE_INTENDED_USE: Final = "release_gate.intended_use"
    GATE_FINDINGS: Final = "release_gate.findings"


@dataclass(frozen=True)
class MetricKey:
    """A metric key read back into its parts (``source`` None for triage keys)."""

    split: str
    source: str | None
    target: str  # an outcome (triage) or a finding (imaging)
    metric: str

    def __str__(self) -> str:
        return ".".join(p for p in (self.split, self.source, self.target, self.metric) if p is not None)


def triage_metric(split: str, outcome: str, metric: str) -> str:
    """``<split>.<outcome>.<metric>``, checked."""
    return str(parse_metric_key(TRIAGE_MODEL, f"{split}.{outcome}.{metric}"))


def imaging_metric(split: str, source: str, finding: str, metric: str = "auroc") -> str:
    """``<split>.<source>.<finding>.<metric>``, checked."""
    return str(parse_metric_key(IMAGING_MODEL, f"{split}.{source}.{finding}.{metric}"))


def parse_metric_key(model: str, key: str) -> MetricKey:
    """``key`` as a metric of ``model``'s training runs.

    Raises
    ------
    InputValidationError
        The model is not one of :data:`MODEL_NAMES`, or the key is not a metric its runs log (naming the part that
        is unknown and what is known).
    """
    if model not in MODEL_NAMES:
        raise InputValidationError("model", f"unknown model {model!r}; known: {', '.join(MODEL_NAMES)}")
    parts = str(key).split(".")
    if model == TRIAGE_MODEL:
        if len(parts) != 3:
            raise InputValidationError(
                "metric", f"{key!r} is not a {model} metric: expected <split>.<outcome>.<metric>"
            )
        split, outcome, metric = parts
        _known("split", split, TRIAGE_SPLITS, key)
        _known("outcome", outcome, OUTCOMES, key)
        _known("metric", metric, TRIAGE_METRICS, key)
        return MetricKey(split, None, outcome, metric)
    if len(parts) != 4:
        raise InputValidationError("metric", f"{key!r} is not a {model} metric: expected test.<source>.<finding>.auroc")
    split, source, finding, metric = parts
    _known("split", split, ("test",), key)
    _known("source", source, IMAGING_SOURCES, key)
    _known("finding", finding, IMAGING_FINDINGS, key)
    _known("metric", metric, ("auroc",), key)
    return MetricKey(split, source, finding, metric)


def _known(part: str, value: str, known: tuple[str, ...], key: str) -> None:
    if value not in known:
        raise InputValidationError("metric", f"{key!r}: unknown {part} {value!r}; known: {', '.join(known)}")
