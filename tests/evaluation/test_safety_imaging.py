"""The imaging safety suite: it passes a well-behaved model and catches brightness-, laterality- and
orientation-sensitive ones, and a pixel path without its gate. Fake models in numpy (no ONNX), small films."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from evaluation.safety import SafetyReport
from evaluation.safety_imaging import MIN_RELEASE_CASES, RELEASE_N_PERTURBATIONS, run_imaging_safety_suite
from evaluation.safety_imaging_cases import LATERAL_VIEWS, change_contrast, perturbation_plan, shift_window_centre
from models.imaging import header
from models.imaging import pixels as imaging

FINDINGS = tuple(f"finding{i}" for i in range(7))
FIXTURES = (
    Path(os.environ.get("VIGIL_DATA_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    / "imaging"
    / "dicom_fixtures"
)


class FakeModel:
    """``score(images [N, 1, S, S]) -> [N]`` becomes every finding's probability; thresholds 0.5."""

    def __init__(self, score, image_size: int = 48) -> None:
        self.score = score
        self.image_size = image_size
        self.findings = FINDINGS
        self.card = SimpleNamespace(name="fake-cxr", version="0")
        self.calls = 0

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        p = np.clip(self.score(images), 0.0, 1.0)[:, None].repeat(len(FINDINGS), axis=1)
        return p, np.zeros((len(images), len(FINDINGS), self.image_size, self.image_size))

    def flags(self, probabilities: np.ndarray) -> np.ndarray:
        return probabilities >= 0.5


def well_behaved(x: np.ndarray) -> np.ndarray:
    """Depends on the image only through a statistic that no flip, turn or monotone display change moves much."""
    return 0.3 + 0.2 * np.abs(x).reshape(len(x), -1).mean(axis=1)


def brightness_sensitive(x: np.ndarray) -> np.ndarray:
    """What the safety review found: the probability tracks the brightness of the input (its central quarter).

    On :func:`films` without equalisation that mean is about 0.12, and -0.08 after a +10 % window-centre shift:
    probability 0.72 -> 0.35, a flag removed."""
    s = x.shape[-1]
    return 1.0 / (1.0 + np.exp(-8.0 * x[..., s // 4 : 3 * s // 4, s // 4 : 3 * s // 4].mean(axis=(1, 2, 3))))


def contrast_sensitive(x: np.ndarray) -> np.ndarray:
    """The probability tracks the contrast (standard deviation) of the central quarter: about 0.74 on :func:`films`
    without equalisation, 0.59 and 0.88 at -20 % and +20 % contrast: probability 0.44 -> 0.29 / 0.58."""
    s = x.shape[-1]
    return x[..., s // 4 : 3 * s // 4, s // 4 : 3 * s // 4].std(axis=(1, 2, 3)) - 0.3


def laterality_sensitive(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return 0.5 + 2.0 * (x[..., :half].mean(axis=(1, 2, 3)) - x[..., half:].mean(axis=(1, 2, 3)))


def top_heavy(x: np.ndarray) -> np.ndarray:
    """Left-right symmetric, but reads the top half differently from the bottom (an orientation-sensitive model)."""
    half = x.shape[-2] // 2
    return 0.5 + 2.0 * (x[..., :half, :].mean(axis=(1, 2, 3)) - x[..., half:, :].mean(axis=(1, 2, 3)))


def films(n: int = 4) -> list[np.ndarray]:
    """Drawn frontal 'films', each different: dark lungs, bright mediastinum, an asymmetric opacity, brighter below."""
    rng = np.random.default_rng(11)
    out = []
    for _ in range(n):
        y, x = np.mgrid[0:120, 0:100] / np.array([120, 100])[:, None, None]
        cx, cy = rng.uniform(0.2, 0.35), rng.uniform(0.3, 0.7)
        image = (
            0.2
            + 0.55 * np.exp(-(((x - 0.5) / 0.1) ** 2))
            + 0.3 * y
            + 0.3 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.01)
            + 0.03 * np.sin(25 * y)
        )
        out.append(np.clip(image, 0, 1).astype(np.float32))
    return out


def result(report: SafetyReport, id: str):
    return next(r for r in report.results if r.id == id)


STABILITY = [
    f"imaging.{family}.{kind}"
    for family in ("window_centre", "contrast", "horizontal_flip", "orientation")
    for kind in ("probabilities_stable", "flags_stable")
]
REFUSALS = ["imaging.blank_refused", "imaging.noise_refused", "imaging.graphics_refused", "imaging.lateral_refused"]


def test_a_well_behaved_model_passes_every_invariant() -> None:
    model = FakeModel(well_behaved)
    report = run_imaging_safety_suite(model, films(), n_perturbations=3, n_refusal_cases=4)
    assert report.passed, report.to_markdown()
    assert [r.id for r in report.results] == ["imaging.real_films_accepted", *STABILITY, *REFUSALS]
    assert result(report, "imaging.window_centre.probabilities_stable").n_cases == 4 * 3
    assert result(report, "imaging.orientation.flags_stable").n_cases == 4 * 4
    assert result(report, "imaging.lateral_refused").n_cases == 4 * len(LATERAL_VIEWS)
    assert report.task == "imaging" and report.model_name == "fake-cxr"
    assert "44 perturbed images" in report.notes[0] and "Below the release configuration" in report.notes[-1]
    assert model.calls == 2  # batched: the films once, every perturbed image once
    assert SafetyReport.from_dict(report.to_dict()) == report


@pytest.mark.parametrize(
    ("score", "family"), [(brightness_sensitive, "window_centre"), (contrast_sensitive, "contrast")]
)
def test_the_suite_catches_brightness_and_contrast_sensitivity_without_the_normalisation(
    score, family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imaging, "equalise_histogram", lambda image: np.asarray(image, dtype=np.float32))
    report = run_imaging_safety_suite(FakeModel(score), films(), n_perturbations=3, n_refusal_cases=2)
    broken = result(report, f"imaging.{family}.probabilities_stable")
    assert (
        not broken.passed
        and broken.worst > 0.1
        and broken.examples[0]["perturbation"].startswith(family.replace("_", " "))
    )
    assert not result(report, f"imaging.{family}.flags_stable").passed
    assert not report.passed and f"imaging.{family}.probabilities_stable" in report.summary()
    assert result(report, "imaging.horizontal_flip.probabilities_stable").passed


@pytest.mark.parametrize("score", [brightness_sensitive, contrast_sensitive])
def test_the_normalisation_is_what_protects_the_same_models(score) -> None:
    report = run_imaging_safety_suite(FakeModel(score), films(), n_perturbations=3, n_refusal_cases=2)
    for id in (
        "imaging.window_centre.probabilities_stable",
        "imaging.contrast.probabilities_stable",
        "imaging.window_centre.flags_stable",
        "imaging.contrast.flags_stable",
    ):
        assert result(report, id).passed, id


def test_the_suite_catches_laterality_and_orientation_sensitivity() -> None:
    report = run_imaging_safety_suite(FakeModel(laterality_sensitive), films(), n_perturbations=2, n_refusal_cases=2)
    assert not result(report, "imaging.horizontal_flip.probabilities_stable").passed
    assert result(report, "imaging.window_centre.probabilities_stable").passed
    report = run_imaging_safety_suite(FakeModel(top_heavy), films(), n_perturbations=2, n_refusal_cases=2)
    assert result(report, "imaging.horizontal_flip.probabilities_stable").passed
    assert not result(report, "imaging.orientation.probabilities_stable").passed


def test_the_refusal_invariants_fail_without_the_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imaging, "check_image_quality", lambda image, field="image": None)
    monkeypatch.setattr(header, "check_view", lambda view, field="ViewPosition": None)  # check_radiograph's
    report = run_imaging_safety_suite(FakeModel(well_behaved), films(2), n_perturbations=2, n_refusal_cases=3)
    for id in REFUSALS:
        broken = result(report, id)
        assert not broken.passed and broken.examples[0]["outcome"] == "accepted", id


def test_a_refused_film_and_a_refused_perturbation_are_violations() -> None:
    faint = films(1)[0] * 0.25 + 0.5  # std about 0.05: accepted, but -20 % contrast makes it "blank"
    blank = np.zeros((64, 64), dtype=np.float32)
    report = run_imaging_safety_suite(FakeModel(well_behaved), [faint, blank], n_perturbations=2, n_refusal_cases=1)
    accepted = result(report, "imaging.real_films_accepted")
    assert accepted.n_violations == 1 and accepted.examples[0]["refused"] == "BlankImageError (image)"
    contrast = result(report, "imaging.contrast.probabilities_stable")
    assert contrast.n_violations >= 1 and "BlankImageError" in contrast.examples[0]["refused"]


@pytest.mark.realdata
@pytest.mark.skipif(not FIXTURES.is_dir(), reason="DICOM fixtures not found (set VIGIL_DATA_DIR)")
def test_dicom_paths_are_read_through_the_pixel_path() -> None:
    paths = [FIXTURES / "chest" / "CR-MONO1-10-chest", FIXTURES / "other_cr" / "RG2_JPLL.dcm"]
    report = run_imaging_safety_suite(FakeModel(well_behaved), paths, n_perturbations=2, n_refusal_cases=1)
    accepted = result(report, "imaging.real_films_accepted")
    assert accepted.n_cases == 2 and accepted.n_violations == 1  # the hip is refused by BodyPartExamined
    assert accepted.examples[0] == {
        "film": "RG2_JPLL.dcm",
        "refused": "NotChestError (BodyPartExamined)",
        "violation": 1.0,
    }


def test_perturbations_are_what_they_say() -> None:
    image = np.array([[0.0, 0.04, 0.5, 0.96, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(shift_window_centre(image, 0.1), [[0.0, 0.0, 0.45, 0.91, 0.95]], atol=1e-6)
    np.testing.assert_allclose(change_contrast(image, 0.2), [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(change_contrast(image, -0.2), [[0.1, 0.132, 0.5, 0.868, 0.9]], atol=1e-6)


def test_the_release_configuration_reaches_ten_thousand_perturbed_images() -> None:
    per_film = len(perturbation_plan(np.random.default_rng(0), RELEASE_N_PERTURBATIONS))
    assert per_film == 2 * RELEASE_N_PERTURBATIONS + 5 == 55
    assert 182 * per_film >= MIN_RELEASE_CASES > 181 * per_film


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="n_perturbations must be >= 2"):
        run_imaging_safety_suite(FakeModel(well_behaved), films(1), n_perturbations=1)


def test_stability_is_counted_per_finding_on_the_films_in_its_population() -> None:
    """A finding counts only on films whose scope holds it; the per-finding counts let the gate withhold it."""
    from workflows.release import unstable_findings

    images = films(2)
    nobody = run_imaging_safety_suite(
        FakeModel(laterality_sensitive), images, n_perturbations=2, n_refusal_cases=1, scopes=[frozenset(), frozenset()]
    )
    assert result(nobody, "imaging.horizontal_flip.probabilities_stable").passed
    assert unstable_findings(nobody) == {}
    one = run_imaging_safety_suite(
        FakeModel(laterality_sensitive),
        images,
        n_perturbations=2,
        n_refusal_cases=1,
        scopes=[frozenset({"finding0"}), frozenset()],
    )
    flip = result(one, "imaging.horizontal_flip.probabilities_stable")
    assert not flip.passed and flip.n_violations == 1
    assert flip.by_finding == {"finding0": 1, **{f: 0 for f in FINDINGS[1:]}}
    unstable = unstable_findings(one)
    assert set(unstable) == {"finding0"}
    assert "imaging.horizontal_flip.probabilities_stable (1/2)" in unstable["finding0"]
    assert SafetyReport.from_dict(one.to_dict()) == one
    with pytest.raises(ValueError, match="one entry per film"):
        run_imaging_safety_suite(FakeModel(well_behaved), images, scopes=[None])
