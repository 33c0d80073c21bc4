"""The triage safety-invariant suite: a correct stand-in model passes every invariant, each deliberately broken
stand-in is caught by its invariant, the generated records are valid, and the small trained model's report is
complete."""

from __future__ import annotations

import json
import re
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from evaluation.safety import SAFETY_SUITE_VERSION, SafetyReport
from evaluation.safety_report import safety_tags, write_safety_report
from evaluation.safety_triage import run_triage_safety_suite
from evaluation.safety_triage_cases import concat, red_flag_texts
from models.triage.columns import Columns, float_column, n_rows, object_column
from models.triage.record_frame import validate_frame

IDS = (
    "triage.unobserved_inputs_do_not_move_outputs",
    "triage.sex_unknown_between_known",
    "triage.deterioration_never_lowers_risk",
    "triage.danger_not_below_normal",
    "triage.unknown_words_never_lower_risk",
    "triage.benign_words_never_dilute_red_flags",
    "triage.red_flags_give_their_level",
    "triage.infants_not_floored_by_adult_news2",
)
N_GRID = 1500

#: Known complaint words of the stand-in, each raising risk (never lowering it).
WORD_WEIGHTS = {
    "chest": 0.6,
    "pain": 0.2,
    "breath": 0.8,
    "shortness": 0.4,
    "fever": 0.3,
    "cardiac": 2.0,
    "arrest": 2.0,
    "seizure": 1.5,
    "stroke": 1.5,
    "overdose": 1.2,
    "anaphylaxis": 1.8,
}
#: Benign words the stand-in knows (weight 0: they add nothing).
BENIGN_WORDS = ("since", "this", "morning", "feeling", "tired", "left", "side", "at", "home")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _padded(text: str) -> str:
    return f" {' '.join(re.findall(r'[a-z0-9]+', text.lower()))} "


class SafeModel:
    """A stand-in with the runtime's predict() interface that holds every invariant by construction.

    Adult physiology raises risk monotonically, known complaint words add non-negative weights (unknown words
    are ignored), sex and the unused inputs are ignored; the recommended level is floored by ACVPU P/U (1),
    red-flag complaints (their level) and, for adults only, abnormal vital signs (3). Subclasses break one part.
    """

    unused = ("gcs", "consciousness", "on_supplemental_oxygen")

    def __init__(self) -> None:
        self.encoder = SimpleNamespace(unused_inputs=self.unused, vocabulary=[*WORD_WEIGHTS, *BENIGN_WORDS])
        self.card = SimpleNamespace(name="fake-triage", version="0")
        self.flags = [(_padded(text), floor) for _, text, floor in red_flag_texts()[0]]
        self.seen: list[Columns] = []

    def words(self, text: object) -> float:
        tokens = re.findall(r"[a-z]+", str(text).lower()) if isinstance(text, str) else []
        return float(sum(WORD_WEIGHTS.get(t, 0.0) for t in tokens))

    def physiology(self, cols: Columns, n: int) -> np.ndarray:
        def col(name: str, normal: float) -> np.ndarray:
            values = float_column(cols, name, n)
            return np.where(np.isnan(values), normal, values)

        spo2, sbp, rr = col("spo2", 97), col("sbp", 125), col("resp_rate", 16)
        hr, temp = col("heart_rate", 80), col("temperature_c", 37)
        danger = (
            0.3 * np.maximum(0, 94 - spo2)
            + 0.05 * np.maximum(0, 100 - sbp)
            + 0.2 * np.maximum(0, rr - 22)
            + 0.03 * np.maximum(0, hr - 110)
            + 0.1 * np.maximum(0, 50 - hr)
            + 0.5 * np.maximum(0, 36 - temp)
            + 0.5 * np.maximum(0, temp - 38.5)
        )
        return np.where(col("age_years", 40) >= 16, danger, 0.0)

    def extra(self, cols: Columns, n: int) -> np.ndarray:
        return np.zeros(n)

    def floors(self, cols: Columns, n: int) -> np.ndarray:
        floor = np.full(n, 5)
        acvpu = object_column(cols, "consciousness", n)
        floor[np.isin(acvpu.astype(str), ["P", "U"])] = 1
        for i, text in enumerate(object_column(cols, "chief_complaint", n)):
            if isinstance(text, str):
                padded = _padded(text)
                for phrase, level in self.flags:
                    if phrase in padded:
                        floor[i] = min(floor[i], level)
        return np.minimum(floor, self.adult_floor(cols, n))

    def adult_floor(self, cols: Columns, n: int) -> np.ndarray:
        abnormal = self.physiology(cols, n) > 0.5
        return np.where(abnormal, 3, 5)

    def predict(self, cols: Columns) -> SimpleNamespace:
        self.seen.append(cols)
        n = n_rows(cols)
        words = np.array([self.words(t) for t in object_column(cols, "chief_complaint", n)])
        score = self.physiology(cols, n) + words + self.extra(cols, n)
        p_admitted = _sigmoid(-2.0 + score)
        p_critical = _sigmoid(-4.0 + 1.2 * score)
        model_level = 5 - np.digitize(p_admitted, [0.2, 0.4, 0.6, 0.8])
        recommended = np.minimum(model_level, self.floors(cols, n))
        return SimpleNamespace(
            p_admitted=p_admitted, p_critical=p_critical, model_level=model_level, recommended_level=recommended
        )


class UsesGcs(SafeModel):
    def extra(self, cols: Columns, n: int) -> np.ndarray:
        gcs = float_column(cols, "gcs", n)
        return np.where(np.isnan(gcs), 0.0, 0.2 * (15 - gcs))


class SexUnknownRisky(SafeModel):
    def extra(self, cols: Columns, n: int) -> np.ndarray:
        return np.where(object_column(cols, "sex", n) == "unknown", 0.6, 0.0)


class LowSpo2Reassures(SafeModel):
    """Risk falls as SpO2 drops below 92 (as a model can learn where training data are sparse)."""

    def extra(self, cols: Columns, n: int) -> np.ndarray:
        spo2 = float_column(cols, "spo2", n)
        return np.where(np.isnan(spo2), 0.0, -0.6 * np.maximum(0, 92 - spo2))


class LowBpReassuresNoFloor(SafeModel):
    """Hypotension makes the model less worried (from a higher baseline), and there is no physiological floor."""

    def extra(self, cols: Columns, n: int) -> np.ndarray:
        sbp = float_column(cols, "sbp", n)
        return 1.5 - np.where(np.isnan(sbp), 0.0, 0.2 * np.maximum(0, 95 - sbp))

    def adult_floor(self, cols: Columns, n: int) -> np.ndarray:
        return np.full(n, 5)


class UnknownWordsReassure(SafeModel):
    def words(self, text: object) -> float:
        tokens = re.findall(r"[a-z]+", str(text).lower()) if isinstance(text, str) else []
        return super().words(text) - 0.5 * sum(t not in WORD_WEIGHTS and t not in BENIGN_WORDS for t in tokens)


class AveragesWords(SafeModel):
    """Averages word weights (benign words dilute) and floors red flags only on the exact complaint."""

    def words(self, text: object) -> float:
        tokens = re.findall(r"[a-z]+", str(text).lower()) if isinstance(text, str) else []
        known = [WORD_WEIGHTS.get(t, 0.0) for t in tokens if t in WORD_WEIGHTS or t in BENIGN_WORDS]
        return 2.0 * float(np.mean(known)) if known else 0.0

    def floors(self, cols: Columns, n: int) -> np.ndarray:
        exact = dict(self.flags)
        floor = np.array([exact.get(_padded(str(t)), 5) for t in object_column(cols, "chief_complaint", n)])
        acvpu = object_column(cols, "consciousness", n)
        floor[np.isin(acvpu.astype(str), ["P", "U"])] = 1
        return np.minimum(floor, self.adult_floor(cols, n))


class NoRedFlagFloor(SafeModel):
    def __init__(self) -> None:
        super().__init__()
        self.flags = []


class NoAcvpuFloor(SafeModel):
    def floors(self, cols: Columns, n: int) -> np.ndarray:
        no_acvpu = {**cols, "consciousness": np.full(n, None, dtype=object)}
        return super().floors(no_acvpu, n)


class AdultNews2ForChildren(SafeModel):
    """Adult NEWS2 heart and respiratory rate points floor every age (5 or more points: level 2)."""

    def adult_floor(self, cols: Columns, n: int) -> np.ndarray:
        rr, hr = float_column(cols, "resp_rate", n), float_column(cols, "heart_rate", n)
        points = np.select([rr > 24, rr > 20], [3, 2], 0) + np.select([hr > 130, hr > 110, hr > 90], [3, 2, 1], 0)
        return np.minimum(super().adult_floor(cols, n), np.where(points >= 5, 2, 5))


@pytest.fixture(scope="module")
def safe_report() -> SafetyReport:
    return run_triage_safety_suite(SafeModel(), n_grid=N_GRID, seed=3)


def test_a_model_that_holds_every_invariant_passes(safe_report):
    assert [r.id for r in safe_report.results] == list(IDS)
    assert safe_report.passed, safe_report.summary()
    assert all(r.n_cases > 0 and r.n_violations == 0 and r.worst == 0 for r in safe_report.results)
    assert safe_report.task == "triage" and safe_report.suite_version == SAFETY_SUITE_VERSION
    assert safe_report.model_name == "fake-triage"


@pytest.mark.parametrize(
    ("model", "caught"),
    [
        (UsesGcs, {"unobserved_inputs_do_not_move_outputs"}),
        (SexUnknownRisky, {"sex_unknown_between_known"}),
        (LowSpo2Reassures, {"deterioration_never_lowers_risk"}),
        (LowBpReassuresNoFloor, {"danger_not_below_normal", "deterioration_never_lowers_risk"}),
        (UnknownWordsReassure, {"unknown_words_never_lower_risk"}),
        (AveragesWords, {"benign_words_never_dilute_red_flags"}),
        (NoRedFlagFloor, {"red_flags_give_their_level"}),
        (NoAcvpuFloor, {"red_flags_give_their_level"}),
        (AdultNews2ForChildren, {"infants_not_floored_by_adult_news2"}),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_each_broken_model_is_caught_by_its_invariant_and_only_there(model, caught):
    report = run_triage_safety_suite(model(), n_grid=N_GRID, seed=3)
    assert {r.id.removeprefix("triage.") for r in report.violations} == caught
    assert not report.passed and report.summary().startswith("violated:")
    for r in report.violations:
        assert r.examples and r.worst > 0 and all(ex["violation"] > 0 for ex in r.examples)
        json.dumps(r.to_dict())  # examples are plain JSON


def test_the_break_is_reported_with_a_readable_example():
    report = run_triage_safety_suite(LowSpo2Reassures(), n_grid=N_GRID, seed=3)
    (result,) = report.violations
    example = result.examples[0]
    assert example["path"].startswith("SpO2 falling") and example["to"] < example["from"] <= 92
    assert example["after"]["p_admitted"] < example["before"]["p_admitted"]
    assert "deterioration_never_lowers_risk" in report.to_markdown()


def test_a_model_without_declared_unused_inputs_gets_nhamcs_unrecorded_fields():
    model = UsesGcs()
    del model.encoder.unused_inputs
    result = run_triage_safety_suite(model, n_grid=N_GRID, seed=3).results[0]
    assert not result.passed and "gcs, consciousness, on_supplemental_oxygen" in result.description
    assert "not declared" in result.description
    assert {ex["field"] for ex in result.examples} == {"gcs"}


def test_without_the_red_flag_list_the_invariant_fails_closed(monkeypatch):
    import models.triage

    model = SafeModel()
    monkeypatch.setitem(sys.modules, "models.triage.complaints", None)  # import raises ImportError
    monkeypatch.delattr(models.triage, "complaints", raising=False)
    result = run_triage_safety_suite(model, n_grid=N_GRID, seed=3).results[6]
    assert result.id == "triage.red_flags_give_their_level"
    assert result.n_violations == 1 and "not available" in result.examples[0]["error"]


def test_every_generated_record_is_valid_and_at_least_n_grid_are_generated():
    model = SafeModel()
    report = run_triage_safety_suite(model, n_grid=N_GRID, seed=1)
    total = sum(n_rows(c) for c in model.seen)
    assert total >= N_GRID and f"{total} generated records" in report.notes[0]
    frame = pd.DataFrame(concat(model.seen))
    validate_frame(frame, mode="strict")  # raises on any invalid value
    assert len(model.seen) == len(IDS)  # one batched predict per invariant
    ages = frame["age_years"].to_numpy()
    assert (ages < 1).any() and (ages < 16).mean() > 0.05 and (ages >= 65).any()
    assert set(frame["sex"]) == {"female", "male", "unknown"}


def test_same_seed_same_report_and_a_bad_n_grid_is_refused(safe_report):
    assert run_triage_safety_suite(SafeModel(), n_grid=N_GRID, seed=3).to_dict() == safe_report.to_dict()
    with pytest.raises(ValueError, match="n_grid must be an integer >= 100"):
        run_triage_safety_suite(SafeModel(), n_grid=10)


def test_reports_and_tags(tmp_path):
    report = run_triage_safety_suite(SexUnknownRisky(), n_grid=N_GRID, seed=3)
    json_path, md_path = write_safety_report(report, tmp_path)
    assert SafetyReport.from_dict(json.loads(json_path.read_text())).to_dict() == report.to_dict()
    assert "FAIL" in md_path.read_text() and "triage.sex_unknown_between_known" in md_path.read_text()
    tags = safety_tags(report)
    assert tags["safety_invariants.status"] == "fail"
    assert tags["safety_invariants.violations"].startswith("triage.sex_unknown_between_known (")
    assert tags["safety_invariants.suite_version"] == SAFETY_SUITE_VERSION
    assert safety_tags(None, "no films")["safety_invariants.status"] == "fail"


def test_the_small_trained_model_holds_every_invariant(registered):
    """The small model trained by the suite's fixture holds every invariant (by construction; clinical_safety.md)."""
    from models.triage.onnx import TriageOnnxModel

    model = TriageOnnxModel(registered.triage_onnx, threads=1)
    report = run_triage_safety_suite(model, n_grid=10_000, seed=0)
    assert [r.id for r in report.results] == list(IDS)
    assert all(r.n_cases > 0 for r in report.results) and report.n_cases >= 5_000
    assert all(len(r.examples) == min(r.n_violations, 5) for r in report.results)
    assert report.model_name == model.card.name and report.model_version == model.card.version
    assert report.passed, report.summary()
