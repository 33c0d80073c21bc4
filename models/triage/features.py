"""Feature encoding of the canonical triage record: the one preprocessing path for training and serving.

The encoder is fitted on training rows only (means, standard deviations, training ranges, token
vocabulary, what was observed) and serialised into the model card, so the exported ONNX model carries its
own preprocessing contract. numpy and pandas only: serving runs it without torch.

Encoded inputs (names match the ONNX graph inputs):

``numeric``      float32 [B, N]   standardised values, 0 where missing; the NEWS2 vital signs are always 0
                                  here (they enter only through ``danger``, see :mod:`models.triage.physiology`)
``missing``      float32 [B, N]   1 where the value was missing (never imputed to "normal" silently)
``categorical``  int64   [B, C]   index into each field's vocabulary; 0 = missing/unknown; the last column
                                  is the age band derived from ``age_years``
``tokens``       int64   [B, L]   chief-complaint token ids; 0 = padding
``danger``       float32 [B, H]   non-negative hinges of the vital signs beyond NEWS2's normal band

Only what was learnt is used (the safety review found that inputs NHAMCS never records, such as GCS, moved
predictions through weights that had never seen them): at fitting the encoder counts how often each input and
each category value was observed. An input, or a category value, observed in fewer than
``min(30, 1% of rows)`` training rows is masked to missing before encoding, and :meth:`FeatureEncoder.ignored_fields`
names it so that the response and ``vigil evaluate`` can say so. NEWS2 and the safety floor still use every
field they clinically define.

Complaint text is read by :mod:`models.triage.tokens`: :func:`models.triage.complaints.read_complaint` (UK wording,
abbreviations, ECDS codes, red flags) before tokenising; a word outside the training vocabulary is corrected to a
vocabulary word one edit away when it is long enough to make that safe, and otherwise dropped: an unknown word is
read as if it had not been written, so it can never lower a risk below "no complaint".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from models.triage.columns import Columns, as_columns, float_column, is_missing, n_rows, object_column
from models.triage.physiology import AGE_BANDS, HINGES, VITAL_SIGNS, age_band_index, danger_features
from models.triage.record import ARRIVAL_MODES, CONSCIOUSNESS_LEVELS, SEX_VALUES
from models.triage.tokens import TokenVocabulary, model_tokens

PREPROCESSING_VERSION: Final = "triage-features/2"

NUMERIC_FEATURES: Final[tuple[str, ...]] = (
    "age_years",
    "heart_rate",
    "resp_rate",
    "sbp",
    "dbp",
    "spo2",
    "temperature_c",
    "gcs",
    "pain_score",
)

#: The categorical column derived from ``age_years`` (it selects the age band's hinge weights).
AGE_BAND_FEATURE: Final = "age_band"

#: Categorical features and their vocabularies; index 0 is reserved for missing/unknown.
CATEGORICAL_FEATURES: Final[dict[str, tuple[str, ...]]] = {
    "sex": tuple(v for v in SEX_VALUES if v != "unknown"),
    "arrival_mode": ARRIVAL_MODES,
    "consciousness": CONSCIOUSNESS_LEVELS,
    "on_supplemental_oxygen": ("false", "true"),
    AGE_BAND_FEATURE: AGE_BANDS,
}

#: The complaint text, as a field name (for usage counts, explanations and ignored-field lists).
TEXT_FEATURE: Final = "chief_complaint"

#: Why an ignored field is ignored (the response and ``vigil evaluate`` say this).
NOT_LEARNT_REASON: Final = "not used by this model: not recorded in its training data"


def min_observed(n_rows_fitted: int) -> int:
    """Rows in which an input (or category value) must be observed to be used: ``min(30, 1% of rows)``, >= 1."""
    return max(1, min(30, math.ceil(0.01 * n_rows_fitted)))


@dataclass
class FeatureEncoder:
    """Fitted encoder state; JSON-serialisable via :meth:`to_dict`.

    Build with :meth:`fit`; restore with :meth:`from_dict`.
    """

    means: dict[str, float]
    stds: dict[str, float]
    #: Central 99% range seen in training, per numeric feature (for out-of-range flags at serving time).
    train_ranges: dict[str, tuple[float, float]]
    vocabulary: list[str]
    max_tokens: int = 16
    numeric_features: tuple[str, ...] = NUMERIC_FEATURES
    categorical_features: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(CATEGORICAL_FEATURES))
    version: str = PREPROCESSING_VERSION
    #: Training rows in which each record field was observed, and per categorical value (the model card's
    #: record of what the model learnt from).
    observed: dict[str, int] = field(default_factory=dict)
    category_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    n_fitted: int = 0
    #: Record fields never (or almost never) observed in training: masked to missing before encoding.
    unused_inputs: tuple[str, ...] = ()
    #: Per categorical field, the values almost never observed in training: masked to missing.
    unlearnt_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The training population's typical value per numeric field (median): the explanations' reference.
    typical: dict[str, float] = field(default_factory=dict)
    #: Categorical fields almost always recorded in training (missing in < 1% of rows), with their values'
    #: training shares: a record that leaves one blank is scored as the share-weighted mixture of the
    #: predictions for each value (:func:`models.triage.marginal.marginalise`), so "unknown" always lies between the
    #: known values.
    marginalised: dict[str, dict[str, float]] = field(default_factory=dict)

    # ------------------------------------------------------------------ fitting and (de)serialisation
    @classmethod
    def fit(
        cls, frame: pd.DataFrame, *, min_token_count: int = 5, max_vocabulary: int = 2000, max_tokens: int = 16
    ) -> FeatureEncoder:
        """Fit on validated training rows (see :func:`models.triage.record.validate_frame`)."""
        means, stds, ranges, typical, observed = {}, {}, {}, {}, {}
        n = len(frame)
        threshold = min_observed(n)
        for name in NUMERIC_FEATURES:
            values = frame[name].to_numpy(dtype=float) if name in frame else np.full(n, np.nan)
            values = values[np.isfinite(values)]
            observed[name] = len(values)
            if len(values) == 0:
                means[name], stds[name], ranges[name] = 0.0, 1.0, (float("nan"), float("nan"))
                continue
            means[name] = float(values.mean())
            stds[name] = float(values.std()) or 1.0
            lo, hi = np.quantile(values, [0.005, 0.995])
            ranges[name] = (float(lo), float(hi))
            typical[name] = float(np.median(values))
        category_counts: dict[str, dict[str, int]] = {}
        cols = as_columns(frame)
        for name, vocab in CATEGORICAL_FEATURES.items():
            if name == AGE_BAND_FEATURE:
                continue
            column = _categorical_strings(object_column(cols, name, n), name)
            counts: dict[str, int] = Counter(v for v in column if v is not None)
            category_counts[name] = {v: int(counts.get(v, 0)) for v in vocab}
            observed[name] = int(sum(counts.get(v, 0) for v in vocab))
        token_counts: Counter[str] = Counter()
        texts = object_column(cols, TEXT_FEATURE, n)
        observed[TEXT_FEATURE] = 0
        for text in texts:
            words = model_tokens(text)
            observed[TEXT_FEATURE] += bool(words)
            token_counts.update(set(words))
        vocabulary = sorted((t for t, c in token_counts.most_common(max_vocabulary) if c >= min_token_count))
        unused = tuple(name for name, count in observed.items() if count < threshold)
        unlearnt = {
            name: tuple(v for v, c in counts.items() if c < threshold)
            for name, counts in category_counts.items()
            if name not in unused
        }
        marginalised = {}
        for name, counts in category_counts.items():
            learnt = {v: c for v, c in counts.items() if c >= threshold}
            if name not in unused and len(learnt) > 1 and observed[name] >= 0.99 * n:
                total = sum(learnt.values())
                marginalised[name] = {v: c / total for v, c in learnt.items()}
        return cls(
            means=means,
            stds=stds,
            train_ranges=ranges,
            vocabulary=vocabulary,
            max_tokens=max_tokens,
            observed=observed,
            category_counts=category_counts,
            n_fitted=n,
            unused_inputs=unused,
            unlearnt_values={k: v for k, v in unlearnt.items() if v},
            typical=typical,
            marginalised=marginalised,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable description of the fitted encoder."""
        out = asdict(self)
        out["numeric_features"] = list(self.numeric_features)
        # A list of [name, values] pairs: column order is part of the contract, and JSON writers may sort keys.
        out["categorical_features"] = [[k, list(v)] for k, v in self.categorical_features.items()]
        out["train_ranges"] = {k: list(v) for k, v in self.train_ranges.items()}
        out["unused_inputs"] = list(self.unused_inputs)
        out["unlearnt_values"] = {k: list(v) for k, v in self.unlearnt_values.items()}
        out["hinges"] = [h.name for h in HINGES]
        out.pop("_index_cache", None)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureEncoder:
        """Restore an encoder written by :meth:`to_dict`; refuses an unknown preprocessing version."""
        version = data.get("version")
        if version != PREPROCESSING_VERSION:
            raise ValueError(f"preprocessing version must be {PREPROCESSING_VERSION!r}; got {version!r}")
        hinges = data.get("hinges")
        if hinges != [h.name for h in HINGES]:
            raise ValueError("the model's physiology hinges differ from this version of models.triage.physiology")
        return cls(
            means={k: float(v) for k, v in data["means"].items()},
            stds={k: float(v) for k, v in data["stds"].items()},
            train_ranges={k: (float(v[0]), float(v[1])) for k, v in data["train_ranges"].items()},
            vocabulary=list(data["vocabulary"]),
            max_tokens=int(data["max_tokens"]),
            numeric_features=tuple(data["numeric_features"]),
            categorical_features={str(k): tuple(v) for k, v in data["categorical_features"]},
            version=version,
            observed={str(k): int(v) for k, v in data["observed"].items()},
            category_counts={
                str(k): {str(a): int(b) for a, b in v.items()} for k, v in data["category_counts"].items()
            },
            n_fitted=int(data["n_fitted"]),
            unused_inputs=tuple(data["unused_inputs"]),
            unlearnt_values={str(k): tuple(v) for k, v in data["unlearnt_values"].items()},
            typical={str(k): float(v) for k, v in data["typical"].items()},
            marginalised={str(k): {str(a): float(b) for a, b in v.items()} for k, v in data["marginalised"].items()},
        )

    # ------------------------------------------------------------------ what the model uses
    def usage(self) -> dict[str, Any]:
        """Per input, training rows observed and whether the model uses it; per category value, its count.

        The model card's record of "only what was learnt is used".
        """
        return {
            "n_training_rows": self.n_fitted,
            "min_observed": min_observed(self.n_fitted),
            "inputs": {
                name: {"observed_rows": count, "used": name not in self.unused_inputs}
                for name, count in self.observed.items()
            },
            "category_values": self.category_counts,
            "values_not_used": {k: list(v) for k, v in self.unlearnt_values.items()},
            "vital_signs_through_monotone_hinges": list(VITAL_SIGNS),
        }

    def ignored_fields(self, frame: pd.DataFrame | Columns) -> list[list[str]]:
        """Per row, the fields given a value that the model does not use (see :data:`NOT_LEARNT_REASON`)."""
        cols = as_columns(frame)
        n = n_rows(cols)
        out: list[list[str]] = [[] for _ in range(n)]
        for name in self.unused_inputs:
            if name not in cols:
                continue
            column = cols[name]
            for i in range(n):
                if not is_missing(column[i]):
                    out[i].append(name)
        for name, values in self.unlearnt_values.items():
            if name not in cols:
                continue
            strings = _categorical_strings(object_column(cols, name, n), name)
            for i in range(n):
                if strings[i] in values:
                    out[i].append(name)
        return out

    def ignored_summary(self, frame: pd.DataFrame | Columns) -> dict[str, dict[str, Any]]:
        """Per field the model ignores, how many rows of ``frame`` gave it a value, and why (for reports)."""
        counts: Counter[str] = Counter(f for row in self.ignored_fields(frame) for f in row)
        out: dict[str, dict[str, Any]] = {}
        for name, count in sorted(counts.items()):
            values = self.unlearnt_values.get(name)
            reason = (
                NOT_LEARNT_REASON
                if values is None or name in self.unused_inputs
                else f"values {', '.join(values)} not used by this model: not recorded in its training data"
            )
            out[name] = {"rows_with_value": int(count), "reason": reason}
        return out

    # ------------------------------------------------------------------ encoding
    def _tokens(self) -> TokenVocabulary:
        """The vocabulary's token ids and word corrections, built once per vocabulary."""
        cached = self.__dict__.get("_index_cache")
        if cached is None or cached[0] is not self.vocabulary:
            cached = (self.vocabulary, TokenVocabulary(self.vocabulary))
            self.__dict__["_index_cache"] = cached
        return cached[1]

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes per categorical feature (vocabulary + the missing slot)."""
        return [len(v) + 1 for v in self.categorical_features.values()]

    @property
    def vocabulary_size(self) -> int:
        """Token table size (vocabulary + padding id 0 + a reserved id 1, no longer produced)."""
        return len(self.vocabulary) + 2

    @property
    def age_band_column(self) -> int:
        """Position of the derived age band in ``categorical``."""
        return list(self.categorical_features).index(AGE_BAND_FEATURE)

    def complaint_tokens(self, text: Any) -> list[str]:
        """The vocabulary words the model reads from one complaint (unknown words corrected or dropped)."""
        return self._tokens().words(text)[: self.max_tokens]

    def _token_ids(self, texts: Iterable[Any]) -> np.ndarray:
        index = self._tokens().ids
        texts = list(texts)
        out = np.zeros((len(texts), self.max_tokens), dtype=np.int64)
        if TEXT_FEATURE in self.unused_inputs:
            return out
        for row, text in enumerate(texts):
            ids = [index[t] for t in self.complaint_tokens(text)]
            out[row, : len(ids)] = ids
        return out

    def _standardised(self, cols: Columns, n: int) -> tuple[np.ndarray, np.ndarray]:
        numeric = np.zeros((n, len(self.numeric_features)), dtype=np.float32)
        missing = np.zeros_like(numeric)
        for j, name in enumerate(self.numeric_features):
            values = float_column(cols, name, n)
            absent = ~np.isfinite(values) | (name in self.unused_inputs)
            missing[:, j] = absent
            numeric[:, j] = np.where(absent, 0.0, (values - self.means[name]) / self.stds[name])
        return numeric, missing

    def transform(self, frame: pd.DataFrame | Columns) -> dict[str, np.ndarray]:
        """Encode validated records (a DataFrame, or :mod:`models.triage.columns` columns) into the model's inputs."""
        cols = as_columns(frame)
        n = n_rows(cols)
        numeric, missing = self._standardised(cols, n)
        for j, name in enumerate(self.numeric_features):
            if name in VITAL_SIGNS:
                numeric[:, j] = 0.0  # vital signs reach the network only through the monotone hinges
        categorical = np.zeros((n, len(self.categorical_features)), dtype=np.int64)
        for j, (name, vocab) in enumerate(self.categorical_features.items()):
            if name == AGE_BAND_FEATURE:
                categorical[:, j] = age_band_index(float_column(cols, "age_years", n))
                continue
            if name in self.unused_inputs:
                continue
            masked = set(self.unlearnt_values.get(name, ()))
            lookup = {v: i + 1 for i, v in enumerate(vocab) if v not in masked}
            column = _categorical_strings(object_column(cols, name, n), name)
            categorical[:, j] = [lookup.get(v, 0) if v is not None else 0 for v in column]
        tokens = self._token_ids(object_column(cols, TEXT_FEATURE, n))
        danger = danger_features(cols)
        for j, hinge in enumerate(HINGES):
            if hinge.field in self.unused_inputs:
                danger[:, j] = 0.0
        return {"numeric": numeric, "missing": missing, "categorical": categorical, "tokens": tokens, "danger": danger}

    def dense(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """A dense design matrix of the same information (for the logistic-regression and GBM baselines).

        Numeric (standardised, 0 where missing, vital signs included), missingness indicators, the vital-sign
        hinges, one-hot categoricals and a multi-hot bag of complaint tokens.
        """
        enc = self.transform(frame)
        numeric, _ = self._standardised(as_columns(frame), len(frame))
        names = [*self.numeric_features, *(f"{n}_missing" for n in self.numeric_features), *(h.name for h in HINGES)]
        blocks = [numeric, enc["missing"], enc["danger"]]
        for j, (name, vocab) in enumerate(self.categorical_features.items()):
            onehot = np.zeros((len(frame), len(vocab) + 1), dtype=np.float32)
            onehot[np.arange(len(frame)), enc["categorical"][:, j]] = 1.0
            blocks.append(onehot)
            names += [f"{name}=missing", *(f"{name}={v}" for v in vocab)]
        bag = np.zeros((len(frame), self.vocabulary_size), dtype=np.float32)
        rows = np.repeat(np.arange(len(frame)), self.max_tokens)
        bag[rows, enc["tokens"].ravel()] = 1.0
        blocks.append(bag[:, 2:])  # drop the padding and the reserved column
        names += [f"token={t}" for t in self.vocabulary]
        return np.concatenate(blocks, axis=1), names

    def out_of_range(self, frame: pd.DataFrame | Columns) -> list[list[str]]:
        """Per row, the numeric features present but outside the central 99% training range."""
        cols = as_columns(frame)
        n = n_rows(cols)
        flags: list[list[str]] = [[] for _ in range(n)]
        for name in self.numeric_features:
            lo, hi = self.train_ranges[name]
            if not np.isfinite(lo) or name in self.unused_inputs:
                continue
            values = float_column(cols, name, n)
            for i in np.flatnonzero(np.isfinite(values) & ((values < lo) | (values > hi))):
                flags[i].append(name)
        return flags


def _categorical_strings(column: np.ndarray, name: str) -> list[str | None]:
    """A categorical column as strings (booleans of ``on_supplemental_oxygen`` as "true"/"false"), None if missing."""
    if name == "on_supplemental_oxygen":
        return [None if is_missing(v) else ("true" if bool(v) else "false") for v in column]
    return [v if isinstance(v, str) and not is_missing(v) else None for v in column]
