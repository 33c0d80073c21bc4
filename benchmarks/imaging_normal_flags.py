"""How often a chest X-ray model flags normal films: every finding, against only the findings of the film's population.

On the model's own held-out test patients (its seed's split): Kermany children's films (pneumonia's population) and
NIH adult films (the six NIH findings' population). A study is flagged when any counted finding reaches its
operating threshold; "normal" = no labelled finding. Finding-level release and intended use (models/intended_use.py)
mean a paediatric film is read for pneumonia only and an adult film for the NIH findings only.

Run from the repository root (MODEL is e.g. ``vigil-work/runs/imaging-<stamp>/cxr_fp32.onnx``)::

    .venv/bin/python benchmarks/imaging_normal_flags.py MODEL
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.imaging.onnx import ImagingOnnxModel
from training.data import resolve_data_dir
from training.data.imaging import load_kermany, load_nih


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    model = ImagingOnnxModel(args.model)
    seed = int(model.card.training["config"]["seed"])
    root = resolve_data_dir(args.data_dir)
    findings = list(model.findings)
    print(
        "| test films | normal | abnormal | normal flagged: all 7 findings | normal flagged: own population's "
        "findings | abnormal flagged: all | abnormal flagged: own |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, data, own in (
        ("Kermany children", load_kermany(root, model.image_size, seed).split("test"), ["pneumonia"]),
        ("NIH adults", load_nih(root, model.image_size, seed).split("test"), [f for f in findings if f != "pneumonia"]),
    ):
        probs, _ = model.run(data.images.astype(np.float32))
        flags = model.flags(probs)
        abnormal = (data.labels * data.mask).max(axis=1) > 0
        every, mine = flags.any(axis=1), flags[:, [findings.index(f) for f in own]].any(axis=1)
        print(
            f"| {name} ({', '.join(own)}) | {int((~abnormal).sum())} | {int(abnormal.sum())} | "
            f"{every[~abnormal].mean():.3f} | {mine[~abnormal].mean():.3f} | {every[abnormal].mean():.3f} | "
            f"{mine[abnormal].mean():.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
