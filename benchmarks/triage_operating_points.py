"""Before/after table of the triage decision rule's operating points, on NHAMCS 2020 and KTAS, for one model.

The same ONNX model is scored three ways: the stated rule alone (one under-triage weight for everyone), with its
card's age-band weights, and with its age band x sex weights (what it serves). Levels are served levels (the
safety floor applied). Prints a Markdown table per data set and writes the figures as JSON.

Run from the repository root (after ``vigil run``; MODEL is e.g. ``vigil-work/runs/triage-<stamp>/triage.onnx``)::

    .venv/bin/python benchmarks/triage_operating_points.py MODEL --out docs/triage_operating_points.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluation.metrics.discrimination import auroc
from models.triage.onnx import TriageOnnxModel
from training.data import load_dataset, resolve_data_dir

RULES = ("stated rule", "age-band points", "age band x sex points")
ATTRIBUTES = ("sex", "age_band", "ethnicity", "payer")


def _rates(truth: np.ndarray, served: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    high = mask & (truth <= 2)
    return {
        "n": int(mask.sum()),
        "n_high": int(high.sum()),
        "high_acuity_under_triage": float((served[high] > 2).mean()) if high.any() else float("nan"),
        "under_triage": float((served[mask] > truth[mask]).mean()),
        "over_triage": float((served[mask] < truth[mask]).mean()),
    }


def score(model: TriageOnnxModel, frame: pd.DataFrame) -> dict[str, Any]:
    rule = dict(model.card.decision_rule)
    variants = {
        "stated rule": {},
        "age-band points": {"under_triage_weight_by_age_band": rule.get("under_triage_weight_by_age_band")},
        "age band x sex points": {
            "under_triage_weight_by_age_band": rule.get("under_triage_weight_by_age_band"),
            "under_triage_weight_by_age_band_sex": rule.get("under_triage_weight_by_age_band_sex"),
        },
    }
    known = frame["acuity"].notna().to_numpy()
    truth = frame.loc[known, "acuity"].astype(int).to_numpy()
    rated = frame.loc[known]
    out: dict[str, Any] = {}
    for name, extra in variants.items():
        model.card.decision_rule = {
            **{k: v for k, v in rule.items() if not k.startswith("under_triage_weight_by")},
            **{k: v for k, v in extra.items() if v},
        }
        pred = model.predict(frame)
        served = pred.recommended_level[known]
        groups = {"all": _rates(truth, served, np.ones(len(truth), bool))}
        for attribute in ATTRIBUTES:
            values = rated[attribute].fillna("unknown").astype(str)
            if values.nunique() > 1:
                for value in sorted(values.unique()):
                    groups[f"{attribute}={value}"] = _rates(truth, served, (values == value).to_numpy())
        out[name] = {
            "groups": groups,
            "auroc_admitted": float(auroc(frame["admitted"].to_numpy(int), pred.p_admitted)),
            "auroc_critical": float(auroc(frame["critical"].to_numpy(int), pred.p_critical))
            if frame["critical"].sum()
            else float("nan"),
        }
    model.card.decision_rule = rule
    return out


def markdown(name: str, result: dict[str, Any]) -> str:
    lines = [
        f"#### {name}",
        "",
        "| group | n | true L1-2 | L1-2 under-triage: " + " | ".join(RULES) + " | over-triage: stated | served |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group, first in result[RULES[0]]["groups"].items():
        cells = " | ".join(f"{result[r]['groups'][group]['high_acuity_under_triage']:.3f}" for r in RULES)
        lines.append(
            f"| {group} | {first['n']} | {first['n_high']} | {cells} | {first['over_triage']:.3f} | "
            f"{result[RULES[-1]]['groups'][group]['over_triage']:.3f} |"
        )
    s, a = result[RULES[0]], result[RULES[-1]]
    lines += [
        "",
        f"AUROC admission {s['auroc_admitted']:.3f}, critical {s['auroc_critical']:.3f} (the operating "
        f"points change the level only). All-patient under-triage {s['groups']['all']['under_triage']:.3f} -> "
        f"{a['groups']['all']['under_triage']:.3f}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/triage_operating_points.json"))
    args = parser.parse_args(argv)
    model = TriageOnnxModel(args.model)
    results = {}
    for data in ("nhamcs:2020", "ktas"):
        frame = load_dataset(data, resolve_data_dir(args.data_dir)).frame.reset_index(drop=True)
        results[data] = score(model, frame)
        print(markdown(data, results[data]))
    args.out.write_text(
        json.dumps({"model": str(args.model), "model_version": model.card.version, "results": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
