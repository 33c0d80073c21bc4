"""Experiment: one trained chest X-ray network exported with and without the average over emulated display
saturations (models/imaging/net.py; docs/clinical_safety.md), compared on validation AUROC and the imaging
safety-invariant suite.

Each variant is rebuilt from the run's torch weights (``cxr_weights.pt``, written by ``vigil run --only imaging``)
and exported through the pipeline's own ONNX export with the run's model card, so what is measured is the graph
that would ship. The suite uses the release gate's film set and per-finding populations (``--pneumonia-only``:
pneumonia's films only, a fifth of the time).

Run from the repository root (RUN e.g. ``vigil-work/runs/imaging-<stamp>``; each ``--variants`` item is the
largest bright fraction averaged, 0 = one reading)::

    .venv/bin/python benchmarks/imaging_saturation_average.py RUN --variants 0,0.4 --pneumonia-only
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from evaluation.safety_imaging import run_imaging_safety_suite
from fairness.policy import load_policy
from models.config_schema import validate_config
from models.imaging.net import saturation_tails
from models.imaging.onnx import ImagingOnnxModel, export_imaging_onnx
from models.intended_use import FindingRelease, Population
from models.model_card import ModelCard
from training.config import ImagingTrainConfig
from training.data import resolve_data_dir
from training.train_imaging import load_imaging_weights
from workflows.imaging import _auroc_by_finding, load_imaging_data
from workflows.release import imaging_safety_film_set


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("run", type=Path, help="an imaging run folder with cxr_weights.pt and imaging_model_card.json")
    parser.add_argument("--variants", default="0,0.4", help="comma-separated largest bright fractions (0 = off)")
    parser.add_argument("--pneumonia-only", action="store_true", help="the safety suite on pneumonia's films only")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    root = resolve_data_dir(args.data_dir)
    card = ModelCard.from_json((args.run / "imaging_model_card.json").read_text(encoding="utf-8"))
    declared = load_policy().intended_use["vigil-cxr"].findings
    populations = {finding: Population.from_dict(spec) for finding, spec in declared.items()}
    validated_on = {finding: "kermany" if finding == "pneumonia" else "nih" for finding in populations}
    _, record = load_imaging_weights(args.run / "cxr_weights.pt")
    config = validate_config(ImagingTrainConfig, record["config"], "the training config saved with the weights")
    _, data = load_imaging_data(config, root, progress=False)
    validation = data.split("validation")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for largest in (float(v) for v in args.variants.split(",")):
            tails = saturation_tails(largest)
            module, _ = load_imaging_weights(args.run / "cxr_weights.pt", tails=tails)
            path = export_imaging_onnx(module, config.image_size, card, Path(tmp) / f"cxr_{largest}.onnx")
            model = ImagingOnnxModel(path, release=FindingRelease(populations, {}), threads=config.threads)
            started = time.perf_counter()
            auroc = _auroc_by_finding(validation, model.run(validation.images)[0])
            seconds_per_image = (time.perf_counter() - started) / len(validation.images)
            films, scopes = imaging_safety_film_set(model, root, populations, validated_on)
            if args.pneumonia_only:
                keep = [i for i, scope in enumerate(scopes) if "pneumonia" in scope]
                films, scopes = [films[i] for i in keep], [scopes[i] for i in keep]
            report = run_imaging_safety_suite(model, films, seed=0, scopes=scopes)
            results.append(
                {
                    "saturation_average": largest,
                    "tails": list(tails),
                    "films": len(films),
                    "validation_auroc": {k: round(v, 4) for k, v in auroc.items()},
                    "validation_ms_per_image": round(seconds_per_image * 1000, 2),
                    "stability_violations": {
                        r.id: {"n": r.n_violations, "by_finding": dict(r.by_finding)}
                        for r in report.results
                        if r.by_finding and r.n_violations
                    },
                    "notes": report.notes,
                }
            )
            print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"run": str(args.run), "variants": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
