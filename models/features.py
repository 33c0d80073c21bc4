"""Feature encoding of the canonical triage record: the one preprocessing path for training and serving.

The encoder is fitted on training rows only (means, standard deviations, training ranges, token
vocabulary) and serialised into the model card, so the exported ONNX model carries its own
preprocessing contract. numpy and pandas only: serving runs it without torch.

Encoded inputs (names match the ONNX graph inputs):

``numeric``      float32 [B, N]   standardised values, 0 where missing
``missing``      float32 [B, N]   1 where the value was missing (never imputed to "normal" silently)
``categorical``  int64   [B, C]   index into each field's vocabulary; 0 = missing/unknown
``tokens``       int64   [B, L]   chief-complaint token ids; 0 = padding
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from models.columns import Columns, as_columns, float_column, is_missing, n_rows, object_column
from models.triage_record import ARRIVAL_MODES, CONSCIOUSNESS_LEVELS, SEX_VALUES

PREPROCESSING_VERSION: Final = "triage-features/1"

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

#: Categorical features and their vocabularies; index 0 is reserved for missing/unknown.
CATEGORICAL_FEATURES: Final[dict[str, tuple[str, ...]]] = {
    "sex": tuple(v for v in SEX_VALUES if v != "unknown"),
    "arrival_mode": ARRIVAL_MODES,
    "consciousness": CONSCIOUSNESS_LEVELS,
    "on_supplemental_oxygen": ("false", "true"),
}

_TOKEN_RE = re.compile(r"[a-z][a-z0-9]+")
#: Words too common in complaint text to carry signal.
_STOPWORDS: Final = frozenset(
    {"and", "or", "of", "the", "with", "in", "on", "to", "for", "at", "from", "not", "other", "nos", "etc",
     "specified", "unspecified", "problems", "problem", "symptoms", "symptom"}
)


def tokenize(text: str | None) -> list[str]:
    """Split chief-complaint text into lower-case word tokens (stopwords dropped, order kept)."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    return [t for t in _TOKEN_RE.findall(str(text).lower()) if t not in _STOPWORDS]


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

    # ------------------------------------------------------------------ fitting and (de)serialisation
    @classmethod
    def fit(cls, frame: pd.DataFrame, *, min_token_count: int = 5, max_vocabulary: int = 2000,
            max_tokens: int = 16) -> FeatureEncoder:
        """Fit on validated training rows (see :func:`models.triage_record.validate_frame`)."""
        means, stds, ranges = {}, {}, {}
        for name in NUMERIC_FEATURES:
            values = frame[name].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            if len(values) == 0:
                means[name], stds[name], ranges[name] = 0.0, 1.0, (float("nan"), float("nan"))
                continue
            means[name] = float(values.mean())
            stds[name] = float(values.std()) or 1.0
            lo, hi = np.quantile(values, [0.005, 0.995])
            ranges[name] = (float(lo), float(hi))
        counts: Counter[str] = Counter()
        for text in frame["chief_complaint"]:
            counts.update(set(tokenize(text)))
        vocabulary = sorted(
            (t for t, c in counts.most_common(max_vocabulary) if c >= min_token_count)
        )
        return cls(means=means, stds=stds, train_ranges=ranges, vocabulary=vocabulary, max_tokens=max_tokens)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable description of the fitted encoder."""
        out = asdict(self)
        out["numeric_features"] = list(self.numeric_features)
        # A list of [name, values] pairs: column order is part of the contract, and JSON writers may sort keys.
        out["categorical_features"] = [[k, list(v)] for k, v in self.categorical_features.items()]
        out["train_ranges"] = {k: list(v) for k, v in self.train_ranges.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureEncoder:
        """Restore an encoder written by :meth:`to_dict`; refuses an unknown preprocessing version."""
        version = data.get("version")
        if version != PREPROCESSING_VERSION:
            raise ValueError(f"preprocessing version must be {PREPROCESSING_VERSION!r}; got {version!r}")
        return cls(
            means={k: float(v) for k, v in data["means"].items()},
            stds={k: float(v) for k, v in data["stds"].items()},
            train_ranges={k: (float(v[0]), float(v[1])) for k, v in data["train_ranges"].items()},
            vocabulary=list(data["vocabulary"]),
            max_tokens=int(data["max_tokens"]),
            numeric_features=tuple(data["numeric_features"]),
            categorical_features={str(k): tuple(v) for k, v in data["categorical_features"]},
            version=version,
        )

    # ------------------------------------------------------------------ encoding
    def _token_index(self) -> dict[str, int]:
        """Token -> id (2 onwards), built once per vocabulary."""
        cached = self.__dict__.get("_index_cache")
        if cached is None or cached[0] is not self.vocabulary:
            cached = (self.vocabulary, {t: i + 2 for i, t in enumerate(self.vocabulary)})
            self.__dict__["_index_cache"] = cached
        return cached[1]

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes per categorical feature (vocabulary + the missing slot)."""
        return [len(v) + 1 for v in self.categorical_features.values()]

    @property
    def vocabulary_size(self) -> int:
        """Token table size (vocabulary + padding id 0 + out-of-vocabulary id 1)."""
        return len(self.vocabulary) + 2

    def _token_ids(self, texts: Iterable[Any]) -> np.ndarray:
        index = self._token_index()
        texts = list(texts)
        out = np.zeros((len(texts), self.max_tokens), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [index.get(t, 1) for t in tokenize(text)][: self.max_tokens]
            out[row, : len(ids)] = ids
        return out

    def transform(self, frame: pd.DataFrame | Columns) -> dict[str, np.ndarray]:
        """Encode validated records (a DataFrame, or :mod:`models.columns` columns) into the model's inputs."""
        cols = as_columns(frame)
        n = n_rows(cols)
        numeric = np.zeros((n, len(self.numeric_features)), dtype=np.float32)
        missing = np.zeros_like(numeric)
        for j, name in enumerate(self.numeric_features):
            values = float_column(cols, name, n)
            absent = ~np.isfinite(values)
            missing[:, j] = absent
            numeric[:, j] = np.where(absent, 0.0, (values - self.means[name]) / self.stds[name])
        categorical = np.zeros((n, len(self.categorical_features)), dtype=np.int64)
        for j, (name, vocab) in enumerate(self.categorical_features.items()):
            lookup = {v: i + 1 for i, v in enumerate(vocab)}
            column = object_column(cols, name, n)
            if name == "on_supplemental_oxygen":
                column = [None if is_missing(v) else ("true" if bool(v) else "false") for v in column]
            categorical[:, j] = [lookup.get(v, 0) if isinstance(v, str) else 0 for v in column]
        tokens = self._token_ids(object_column(cols, "chief_complaint", n))
        return {"numeric": numeric, "missing": missing, "categorical": categorical, "tokens": tokens}

    def dense(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """A dense design matrix of the same information (for the logistic-regression and GBM baselines).

        Numeric (standardised, 0 where missing), missingness indicators, one-hot categoricals and a
        multi-hot bag of complaint tokens.
        """
        enc = self.transform(frame)
        names = [*self.numeric_features, *(f"{n}_missing" for n in self.numeric_features)]
        blocks = [enc["numeric"], enc["missing"]]
        for j, (name, vocab) in enumerate(self.categorical_features.items()):
            onehot = np.zeros((len(frame), len(vocab) + 1), dtype=np.float32)
            onehot[np.arange(len(frame)), enc["categorical"][:, j]] = 1.0
            blocks.append(onehot)
            names += [f"{name}=missing", *(f"{name}={v}" for v in vocab)]
        bag = np.zeros((len(frame), self.vocabulary_size), dtype=np.float32)
        rows = np.repeat(np.arange(len(frame)), self.max_tokens)
        bag[rows, enc["tokens"].ravel()] = 1.0
        blocks.append(bag[:, 1:])  # drop the padding column
        names += ["token=<oov>", *(f"token={t}" for t in self.vocabulary)]
        return np.concatenate(blocks, axis=1), names

    def out_of_range(self, frame: pd.DataFrame | Columns) -> list[list[str]]:
        """Per row, the numeric features present but outside the central 99% training range."""
        cols = as_columns(frame)
        n = n_rows(cols)
        flags: list[list[str]] = [[] for _ in range(n)]
        for name in self.numeric_features:
            lo, hi = self.train_ranges[name]
            if not np.isfinite(lo):
                continue
            values = float_column(cols, name, n)
            for i in np.flatnonzero(np.isfinite(values) & ((values < lo) | (values > hi))):
                flags[i].append(name)
        return flags
