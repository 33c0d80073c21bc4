"""What to audit: :class:`AuditSpec`, the frame's columns and how the audit treats them (documented in context in
:mod:`fairness.audit`).

An :class:`AuditSpec` is validated when it is built (:class:`models.errors.InputValidationError` naming the field);
``to_dict()`` / ``from_dict()`` carry it inside a saved :class:`~fairness.audit_result.AuditResult`. Also here:
how groups are named from the frame's values (:data:`INTERSECTION_SEPARATOR`, :data:`MISSING_GROUP`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.errors import InputValidationError

__all__ = ["INTERSECTION_SEPARATOR", "MISSING_GROUP", "AuditSpec"]

#: Joins column names into an intersection's name ("sex|age_band") and values into its groups ("F|65+").
INTERSECTION_SEPARATOR = "|"
#: The group of rows whose sensitive attribute is missing: reported, never dropped.
MISSING_GROUP = "<missing>"


def _name(value: object, field_name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputValidationError(field_name, f"{field_name} must be a non-empty column name; got {value!r}")
    return value


def _int(value: object, field_name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputValidationError(field_name, f"{field_name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _names(value: object, field_name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InputValidationError(field_name, f"{field_name} must be a list of column names; got {value!r}")
    names = tuple(_name(v, f"{field_name}[{i}]") for i, v in enumerate(value))
    if len(set(names)) != len(names):
        raise InputValidationError(field_name, f"{field_name} must not repeat a column; got {list(names)}")
    return names


@dataclass(frozen=True)
class AuditSpec:
    """Which columns of the frame hold what, and how to audit them.

    Parameters
    ----------
    y_true : str
        Binary outcome (0/1 or bool): "admitted"/"critical" for triage, "abnormal study" for imaging.
    sensitive_attributes : sequence of str
        Columns whose values define the groups, e.g. ``["sex", "age_band", "ethnicity", "payer"]``.
    y_score : str, optional
        Predicted probability of ``y_true`` in [0, 1] (AUROC, ECE, observed/expected).
    y_flag : str, optional
        Binary decision at the operating threshold (sensitivity, FNR, FPR, PPV).
    acuity_true, acuity_pred : str, optional
        True and predicted triage level 1-5, both or neither (under-triage rates).
    cluster : str, optional
        Patient id: the bootstrap resamples whole patients.
    intersections : sequence of sequences of str
        Column combinations audited jointly, e.g. ``[("sex", "age_band")]``; named ``"sex|age_band"``.
    reference_groups : mapping of str to group value
        Reference group per attribute or intersection name (``{"sex|age_band": "F|40-64"}``); otherwise
        the largest group (ties: the first in sorted order).
    pool_adjacent : mapping of str to sequence of group values
        Declared in advance (the release policy's ``small_groups.pool_adjacent``): per attribute, its groups
        in their natural order (age bands from youngest). A group of that list with insufficient evidence is
        merged with its adjacent neighbour that has fewer positives (ties: the earlier one), repeatedly, until
        every merged group has sufficient evidence or one group is left; merged groups are named by joining
        their labels with ``+`` (``"<15+15-24"``) and used in every intersection with the attribute. Only
        sizes and positives decide (never the model's results). Attributes not audited are ignored.
    min_group_n, min_group_positives : int
        Below either, a group has status ``"insufficient evidence"``.
    n_boot : int
        Bootstrap resamples. alpha : float -- ``1 - alpha`` interval coverage. seed : int -- of the resampling.
    """

    y_true: str
    sensitive_attributes: Sequence[str]
    y_score: str | None = None
    y_flag: str | None = None
    acuity_true: str | None = None
    acuity_pred: str | None = None
    cluster: str | None = None
    intersections: Sequence[Sequence[str]] = ()
    reference_groups: Mapping[str, object] = field(default_factory=dict)
    pool_adjacent: Mapping[str, Sequence[str]] = field(default_factory=dict)
    min_group_n: int = 100
    min_group_positives: int = 20
    n_boot: int = 1000
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        _name(self.y_true, "y_true")
        for name in ("y_score", "y_flag", "acuity_true", "acuity_pred", "cluster"):
            if getattr(self, name) is not None:
                _name(getattr(self, name), name)
        if (self.acuity_true is None) != (self.acuity_pred is None):
            missing = "acuity_pred" if self.acuity_pred is None else "acuity_true"
            raise InputValidationError(missing, f"{missing} is required when the other acuity column is given")
        if self.y_score is None and self.y_flag is None and self.acuity_true is None:
            raise InputValidationError(
                "y_score", "give at least one of y_score, y_flag or acuity_true/acuity_pred: nothing to audit"
            )
        attributes = _names(self.sensitive_attributes, "sensitive_attributes")
        if not attributes:
            raise InputValidationError("sensitive_attributes", "sensitive_attributes must name at least one column")
        if isinstance(self.intersections, str) or not isinstance(self.intersections, Sequence):
            raise InputValidationError(
                "intersections", f"intersections must be a list of tuples; got {self.intersections!r}"
            )
        crossings = tuple(_names(c, f"intersections[{i}]") for i, c in enumerate(self.intersections))
        for i, columns in enumerate(crossings):
            if len(columns) < 2:
                raise InputValidationError(
                    f"intersections[{i}]", f"intersections[{i}] must combine at least 2 columns; got {list(columns)}"
                )
        if not isinstance(self.reference_groups, Mapping):
            raise InputValidationError(
                "reference_groups",
                f"reference_groups must be a mapping of attribute to group; got {self.reference_groups!r}",
            )
        known = set(attributes) | {INTERSECTION_SEPARATOR.join(c) for c in crossings}
        for key in self.reference_groups:
            if key not in known:
                raise InputValidationError(
                    f"reference_groups.{key}",
                    f"reference_groups.{key}: not an audited attribute or intersection; known {sorted(known)}",
                )
        object.__setattr__(self, "sensitive_attributes", attributes)
        object.__setattr__(self, "intersections", crossings)
        object.__setattr__(self, "reference_groups", {str(k): str(v) for k, v in self.reference_groups.items()})
        if not isinstance(self.pool_adjacent, Mapping):
            raise InputValidationError(
                "pool_adjacent",
                f"pool_adjacent must map an attribute to its ordered groups; got {self.pool_adjacent!r}",
            )
        pooling = {}
        for key, order in self.pool_adjacent.items():
            groups = _names(order, f"pool_adjacent.{key}")
            if len(groups) < 2:
                raise InputValidationError(f"pool_adjacent.{key}", f"pool_adjacent.{key} must list at least 2 groups")
            pooling[str(key)] = groups
        object.__setattr__(self, "pool_adjacent", pooling)
        _int(self.min_group_n, "min_group_n", 1)
        _int(self.min_group_positives, "min_group_positives", 0)
        _int(self.n_boot, "n_boot", 1)
        _int(self.seed, "seed", 0)
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < float(alpha) < 1.0:
            raise InputValidationError("alpha", f"alpha must be in (0, 1); got {alpha!r}")

    @property
    def partitions(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """``(name, columns)`` of every audited attribute, then every intersection."""
        singles = tuple((a, (a,)) for a in self.sensitive_attributes)
        return singles + tuple((INTERSECTION_SEPARATOR.join(c), tuple(c)) for c in self.intersections)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (lists for tuples)."""
        return {
            "y_true": self.y_true,
            "y_score": self.y_score,
            "y_flag": self.y_flag,
            "acuity_true": self.acuity_true,
            "acuity_pred": self.acuity_pred,
            "cluster": self.cluster,
            "sensitive_attributes": list(self.sensitive_attributes),
            "intersections": [list(c) for c in self.intersections],
            "reference_groups": dict(self.reference_groups),
            "pool_adjacent": {k: list(v) for k, v in self.pool_adjacent.items()},
            "min_group_n": self.min_group_n,
            "min_group_positives": self.min_group_positives,
            "n_boot": self.n_boot,
            "alpha": float(self.alpha),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "intersections": [tuple(c) for c in data.get("intersections", ())]})
