"""Experiment: a chest X-ray model averaged over emulated display saturations at inference (docs/clinical_safety.md).

A window or contrast change that saturates the brightest fraction ``t`` of a film turns, after the pixel path's
histogram equalisation, every value above ``1 - t`` into ``1 - t / 2`` (the emulation of
``training.train_imaging.saturate``). Averaging the model over inputs saturated at several fractions leaves the
members above a change's ``t`` untouched. This script wraps a shipped ONNX model in that average (outside the
graph: an experiment, not the served model) and reports the per-finding validation AUROC and the imaging
safety-invariant suite, with the release gate's film set and per-finding populations (``--pneumonia-only``: the
pneumonia films only, a fifth of the time).

Run from the repository root (MODEL e.g. ``vigil-work/runs/imaging-<stamp>/cxr_fp32.onnx``; ``--tails`` the
bright fractions, 0 = the model as it is)::

    .venv/bin/python benchmarks/imaging_saturation_average.py MODEL --tails 0,0.1,0.2,0.3,0.4 --pneumonia-only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.safety_imaging import run_imaging_safety_suite
from fairness.policy_schema import load_policy
from models.imaging import IMAGE_MEAN, IMAGE_STD
from models.imaging_onnx import ImagingOnnxModel
from models.intended_use import FindingRelease, Population
from training.config import load_imaging_config
from training.data import resolve_data_dir
from vigil.pipeline_imaging import _auroc_by_finding, load_imaging_data
from vigil.release import imaging_safety_film_set


class SaturationAverage:
    """``model`` averaged over its input with the brightest ``t`` saturated, for each ``t`` in ``tails``."""

    def __init__(self, model: ImagingOnnxModel, tails: list[float]) -> None:
        self.model, self.tails = model, tails
        self.image_size, self.findings, self.card = model.image_size, model.findings, model.card

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def flags(self, probabilities: np.ndarray) -> np.ndarray:
        return self.model.flags(probabilities)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        display = np.clip(images * IMAGE_STD + IMAGE_MEAN, 0.0, 1.0)
        padding = display <= 1e-3  # padding stays black, as in training
        probabilities, maps = [], []
        for t in self.tails:
            out = np.where(display > 1 - t, 1 - t / 2, display) if t > 0 else display
            out = np.where(padding, display, out)
            p, m = self.model.run(((out - IMAGE_MEAN) / IMAGE_STD).astype(np.float32))
            probabilities.append(p)
            maps.append(m)
        return np.mean(probabilities, axis=0), np.mean(maps, axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--tails", default="0,0.1,0.2,0.3,0.4", help="comma-separated bright fractions")
    parser.add_argument("--pneumonia-only", action="store_true", help="the safety suite on pneumonia's films only")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    tails = [float(t) for t in args.tails.split(",")]
    root = resolve_data_dir(args.data_dir)
    declared = load_policy().intended_use["vigil-cxr"].findings
    populations = {finding: Population.from_dict(spec) for finding, spec in declared.items()}
    validated_on = {finding: "kermany" if finding == "pneumonia" else "nih" for finding in populations}
    base = ImagingOnnxModel(args.model, release=FindingRelease(populations, {}))
    model = SaturationAverage(base, tails)

    _, data = load_imaging_data(load_imaging_config(), root, progress=False)
    validation = data.split("validation")
    auroc = _auroc_by_finding(validation, model.run(validation.images)[0])
    films, scopes = imaging_safety_film_set(base, root, populations, validated_on)
    if args.pneumonia_only:
        keep = [i for i, scope in enumerate(scopes) if "pneumonia" in scope]
        films, scopes = [films[i] for i in keep], [scopes[i] for i in keep]
    report = run_imaging_safety_suite(model, films, seed=0, scopes=scopes)
    violations = {r.id: {"n": r.n_violations, "by_finding": dict(r.by_finding)} for r in report.results
                  if r.by_finding and r.n_violations}
    print(json.dumps({"model": str(args.model), "tails": tails, "films": len(films),
                      "validation_auroc": {k: round(v, 4) for k, v in auroc.items()},
                      "stability_violations": violations, "notes": report.notes}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
