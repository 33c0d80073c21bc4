"""The safety-invariant suite as the release gate runs it: the films of an imaging model (DICOM fixtures and a
seeded Kermany sample), the suite itself, and its one gate check (any violation fails the release).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.safety import SafetyReport
from models.errors import DataSourceError, VigilError
from models.intended_use import FindingRelease, Population, dicom_age_years
from workflows.release_checks import Check

log = logging.getLogger(__name__)


#: Perturbed records of the triage safety-invariant suite at release.
SAFETY_N_GRID = 10_000


SAFETY_CHECK = "safety invariants"


class SafetySuiteUnavailableError(VigilError):
    """The safety-invariant suite cannot run on a model: no suite for its task in this build, or no films."""


def unstable_findings(report: SafetyReport) -> dict[str, str]:
    """Findings that broke an imaging stability invariant (window, contrast, flip, orientation), with why."""
    broken: dict[str, list[str]] = {}
    for result in report.results:
        for finding, n in getattr(result, "by_finding", {}).items():
            if n:
                broken.setdefault(finding, []).append(f"{result.id} ({n}/{result.n_cases})")
    return {f: "safety invariants: " + ", ".join(ids) for f, ids in broken.items()}


def imaging_safety_films(model: Any, data_dir: Path | None) -> list[Path]:
    """Films for the imaging safety suite: the NIH images of the model's own validation patients (its patient
    split, never its test patients) and every file of ``imaging/dicom_fixtures/chest``."""
    from training.data import resolve_data_dir
    from training.data.imaging import NIH_DIR, nih_patient_split

    root = resolve_data_dir(data_dir)
    films: list[Path] = []
    table = root / NIH_DIR / "derived" / "nih1000_joined_labels_demographics.csv"
    if table.is_file():
        frame = pd.read_csv(table)
        seed = int(model.card.training["config"]["seed"])
        _, split = nih_patient_split(frame, seed)
        films += [root / NIH_DIR / p for p in frame.loc[split == "validation", "staged_path"]]
    else:
        log.warning("imaging safety suite without NIH validation films: %s not found", table)
    chest = root / "imaging" / "dicom_fixtures" / "chest"
    films += sorted(p for p in chest.glob("*") if p.is_file()) if chest.is_dir() else []
    if not films:
        raise SafetySuiteUnavailableError(
            f"no films for the imaging safety suite under {root} (NIH validation split or imaging/dicom_fixtures/chest)"
        )
    return films


#: Kermany validation films in the release's imaging safety suite (seeded choice; bounds the suite's time).
SAFETY_KERMANY_FILMS = 100


def imaging_safety_film_set(
    model: Any,
    data_dir: Path | None,
    populations: dict[str, Population] | None = None,
    validated_on: dict[str, str] | None = None,
) -> tuple[list[Path], list[frozenset[str]]]:
    """The films of the imaging safety suite and, per film, the findings whose intended population it belongs to.

    :func:`imaging_safety_films` (NIH validation patients, chest DICOM fixtures) plus
    :data:`SAFETY_KERMANY_FILMS` Kermany validation films (the model's own patient split). A finding counts on a
    film when the film comes from the data the finding was validated on (``validated_on``: finding -> "nih" or
    "kermany") and, where the film states an age (NIH table, DICOM header), that age is inside the finding's
    population; a DICOM fixture counts for the findings whose population its header places it in. Without
    ``populations`` every finding counts on every film.
    """
    from training.data import resolve_data_dir
    from training.data.imaging import NIH_DIR, kermany_patient_split

    root = resolve_data_dir(data_dir)
    films = imaging_safety_films(model, data_dir)
    seed = int(model.card.training["config"]["seed"])
    try:
        paths, _, split = kermany_patient_split(root, seed)
        chosen = [paths[i] for i in np.flatnonzero(split == "validation")]
        rng = np.random.default_rng(seed)
        films += [
            chosen[i] for i in sorted(rng.choice(len(chosen), min(SAFETY_KERMANY_FILMS, len(chosen)), replace=False))
        ]
    except DataSourceError as exc:
        log.warning("imaging safety suite without Kermany films: %s", exc)
    every = frozenset(model.findings)
    if populations is None:
        return films, [every] * len(films)
    validated_on = validated_on or {}
    table = root / NIH_DIR / "derived" / "nih1000_joined_labels_demographics.csv"
    nih_age = (
        {
            str(root / NIH_DIR / p): float(a)
            for p, a in pd.read_csv(table)[["staged_path", "Patient Age"]].itertuples(index=False)
        }
        if table.is_file()
        else {}
    )
    scopes = []
    for film in films:
        if str(film) in nih_age:
            scope = {
                f
                for f, pop in populations.items()
                if validated_on.get(f) == "nih" and pop.check(nih_age[str(film)], None)[0]
            }
        elif film.suffix.lower() == ".jpeg":
            scope = {f for f in populations if validated_on.get(f) == "kermany"}
        else:
            from models.imaging.dicom_read import read_dicom

            try:
                ds = read_dicom(film, stop_before_pixels=True)
                age, _ = dicom_age_years(ds)
                view = str(ds.get("ViewPosition", "") or "") or None
            except VigilError:
                age, view = None, None
            scope = {f for f, pop in populations.items() if pop.check(age, view)[0]}
        scopes.append(frozenset(scope))
    return films, scopes


def run_safety_suite(
    onnx_path: Path,
    data_dir: Path | None = None,
    *,
    n_grid: int = SAFETY_N_GRID,
    seed: int = 0,
    release: FindingRelease | None = None,
    validated_on: dict[str, str] | None = None,
) -> SafetyReport:
    """The safety-invariant suite of a triage or chest X-ray ONNX model (told apart by its card).

    Raises
    ------
    SafetySuiteUnavailableError
        An imaging model and no imaging suite in this build, or no films to run it on.
    ModelArtifactError
        The file is not a Vigil model.
    """
    from models.onnx_file import open_onnx_model

    _, card, _ = open_onnx_model(onnx_path)
    if "pixel_path_version" not in card.features:
        from evaluation.safety_triage import run_triage_safety_suite
        from models.triage.onnx import TriageOnnxModel

        return run_triage_safety_suite(TriageOnnxModel(onnx_path), n_grid=n_grid, seed=seed)
    from models.imaging.onnx import ImagingOnnxModel

    try:
        from evaluation.safety_imaging import run_imaging_safety_suite
    except ImportError as exc:
        raise SafetySuiteUnavailableError(
            "the imaging safety suite (evaluation.safety_imaging) is not in this build"
        ) from exc
    model = ImagingOnnxModel(onnx_path, release=release)
    populations = dict(release.released) if release is not None else None
    films, scopes = imaging_safety_film_set(model, data_dir, populations, validated_on)
    return run_imaging_safety_suite(model, films, seed=seed, scopes=scopes)


def safety_check(report: SafetyReport | None, reason: str = "") -> Check:
    """Pass only when every invariant ran and held; a violation, or a suite that did not run, fails."""
    if report is None:
        return Check(SAFETY_CHECK, "fail", f"not run: {reason}")
    return Check(SAFETY_CHECK, "pass" if report.passed else "fail", report.summary())
