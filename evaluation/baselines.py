"""Baselines evaluated in the same run and on the same rows as the model.

- NEWS2: the score as a risk ranking; a logistic map score -> probability fitted on the training rows
  (for calibration and decision curves); acuity from score cut points matched to the training level mix.
- Logistic regression and gradient boosting on the same encoded features as the network
  (:meth:`models.triage.features.FeatureEncoder.dense`): same information, different learner.
- The nurse's triage, where the data holds one (KTAS_RN): an acuity baseline only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from models.labels import ACUITY_LEVELS, OUTCOMES
from models.triage.features import FeatureEncoder
from models.triage.news2_arrays import news2_frame

#: The nurse's own triage level, scored as a baseline (never an input).
NURSE_BASELINE: Final = "nurse triage"


@dataclass
class BaselinePredictions:
    """Per-row predictions of one baseline; fields it cannot produce are None."""

    name: str
    risk: dict[str, np.ndarray | None]  # outcome -> probability (or score for ranking-only)
    acuity: np.ndarray | None


def _levels(frame: pd.DataFrame) -> np.ndarray:
    return frame["acuity"].astype("float").to_numpy()


class News2Baseline:
    """NEWS2 as a risk score and as an acuity rule, calibrated on training rows only."""

    name = "NEWS2"

    def fit(self, train: pd.DataFrame) -> News2Baseline:
        score = news2_frame(train)["score"].to_numpy(dtype=float).reshape(-1, 1)
        self.risk_models = {o: LogisticRegression(max_iter=1000).fit(score, train[o].to_numpy()) for o in OUTCOMES}
        # Cut points on the score so that the level mix matches training: the most urgent share of
        # training gets level 1, and so on (ties at a score value go to the more urgent level).
        levels = _levels(train)
        known = ~np.isnan(levels)
        shares = np.array([(levels[known] == lv).mean() for lv in ACUITY_LEVELS])
        scores_known = np.sort(score[known, 0])[::-1]
        cumulative = np.cumsum(shares)[:-1]
        self.cut_scores = [
            float(scores_known[min(len(scores_known) - 1, int(c * len(scores_known)))]) for c in cumulative
        ]
        return self

    def acuity(self, score: np.ndarray) -> np.ndarray:
        level = np.full(len(score), ACUITY_LEVELS[-1], dtype=np.int64)
        for i, cut in reversed(list(enumerate(self.cut_scores))):
            level[score >= cut] = ACUITY_LEVELS[i]
        return level

    def predict(self, frame: pd.DataFrame) -> BaselinePredictions:
        news = news2_frame(frame)
        score = news["score"].to_numpy(dtype=float)
        risk = {o: m.predict_proba(score.reshape(-1, 1))[:, 1] for o, m in self.risk_models.items()}
        # Like the model, the NEWS2 baseline is never below the NEWS2 floor itself.
        level = np.minimum(self.acuity(score), news["minimum_acuity"].to_numpy())
        return BaselinePredictions(self.name, risk, level)


class TabularBaseline:
    """Logistic regression or gradient boosting on the network's encoded features."""

    def __init__(self, kind: str, encoder: FeatureEncoder, seed: int) -> None:
        if kind not in ("logistic", "gbm"):
            raise ValueError(f"kind must be 'logistic' or 'gbm'; got {kind!r}")
        self.kind, self.encoder, self.seed = kind, encoder, seed
        self.name = "logistic regression" if kind == "logistic" else "gradient boosting"

    def _model(self) -> LogisticRegression | HistGradientBoostingClassifier:
        if self.kind == "logistic":
            return LogisticRegression(max_iter=2000, C=0.5)
        return HistGradientBoostingClassifier(
            max_iter=300, learning_rate=0.05, early_stopping=True, validation_fraction=0.15, random_state=self.seed
        )

    def fit(self, train: pd.DataFrame) -> TabularBaseline:
        x, _ = self.encoder.dense(train)
        self.risk_models = {o: self._model().fit(x, train[o].to_numpy()) for o in OUTCOMES}
        levels = _levels(train)
        known = ~np.isnan(levels)
        self.acuity_model = self._model().fit(x[known], levels[known].astype(int))
        return self

    def predict(self, frame: pd.DataFrame) -> BaselinePredictions:
        x, _ = self.encoder.dense(frame)
        risk = {o: m.predict_proba(x)[:, 1] for o, m in self.risk_models.items()}
        return BaselinePredictions(self.name, risk, self.acuity_model.predict(x).astype(np.int64))


def nurse_baseline(frame: pd.DataFrame) -> BaselinePredictions | None:
    """The nurse's recorded triage level as an acuity baseline, when the data has one for every row."""
    if "nurse_acuity" not in frame or frame["nurse_acuity"].isna().all():
        return None
    return BaselinePredictions(
        NURSE_BASELINE, {o: None for o in OUTCOMES}, frame["nurse_acuity"].astype("float").to_numpy()
    )


def fit_baselines(train: pd.DataFrame, encoder: FeatureEncoder, seed: int) -> list[News2Baseline | TabularBaseline]:
    """Fit every learned baseline on the model's own training rows."""
    return [
        News2Baseline().fit(train),
        TabularBaseline("logistic", encoder, seed).fit(train),
        TabularBaseline("gbm", encoder, seed).fit(train),
    ]
