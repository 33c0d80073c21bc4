"""The ``vigil`` command line. It only parses arguments and delegates to the packages.

Errors from bad input (config, CSV, model files) are printed as one clear line naming the field and exit
with status 2; they never end in a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from models.errors import RecordValidationErrors, VigilError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Vigil: triage and chest X-ray decision support (never replaces a clinician).")
log = logging.getLogger("vigil")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib", "onnxscript", "torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(exc: Exception) -> None:
    if isinstance(exc, RecordValidationErrors):
        typer.echo(f"error: {len(exc.errors)} validation error(s):", err=True)
        for err in exc.errors[:50]:
            typer.echo(f"  - {err}", err=True)
    else:
        typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


@app.command()
def run(
    config: Annotated[Path | None, typer.Option(help="Triage training config (YAML).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (default $VIGIL_DATA_DIR or ../shared/data).")]
    = None,
    epochs: Annotated[int | None, typer.Option(help="Override the config's epochs.")] = None,
    verbose: bool = False,
) -> None:
    """The main job: train the triage model, track it in MLflow, export to ONNX, check parity, evaluate.

    Fairness audit and release gate (issue 4) and serving (issue 5) are not built yet; this says so.
    """
    _setup_logging(verbose)
    from training.config import load_triage_config
    from vigil.pipeline import run_triage, summary_lines

    try:
        cfg = load_triage_config(config, {"epochs": epochs} if epochs else None)
        result = run_triage(cfg, data_dir=data_dir)
    except VigilError as exc:
        _fail(exc)
        return
    for line in summary_lines(result):
        typer.echo(line)
    typer.echo("Not yet part of the main job: the fairness audit and release gate, imaging, and serving "
               "(open issues 3-5). The model stays at alias @candidate; nothing is released.")


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="An .onnx file, or a registry URI such as models:/vigil-triage@candidate")],
    data: Annotated[str, typer.Option(help="Dataset: nhamcs:2020, ktas, csv:<path>, synthetic:n=2000,seed=0")],
    out: Annotated[Path, typer.Option(help="Output folder for JSON, Markdown and plots")] = Path("vigil-work/eval"),
    baseline_train: Annotated[str | None, typer.Option(
        help="Dataset to fit the logistic/GBM/NEWS2 baselines on (default: none for csv, else nhamcs:2018,2019)"
    )] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="Data folder for named datasets")] = None,
    bootstrap: Annotated[int, typer.Option(min=10, max=100000, help="Bootstrap resamples")] = 1000,
    seed: int = 0,
    verbose: bool = False,
) -> None:
    """Evaluate a triage model on a dataset (including a site's own canonical CSV) with baselines."""
    _setup_logging(verbose)
    from evaluation.baselines import fit_baselines, nurse_baseline
    from evaluation.triage_report import evaluate_triage, write_plots, write_report
    from models.onnx_runtime import TriageOnnxModel
    from training.data import load_dataset
    from training.tracking import resolve_model_file
    from vigil.pipeline import work_dir

    try:
        onnx_path = resolve_model_file(model, work_dir())
        onnx_model = TriageOnnxModel(onnx_path)
        dataset = load_dataset(data, data_dir)
        frame = dataset.frame
        if frame["admitted"].isna().any() or frame["critical"].isna().any():
            raise VigilError("evaluation needs 'admitted' and 'critical' in every row; "
                             f"{int(frame['admitted'].isna().sum())} rows lack 'admitted'")
        if baseline_train == "auto":
            baseline_train = None if data.startswith(("csv:", "synthetic:")) else "nhamcs:2018,2019"
        baselines = []
        if baseline_train:
            baselines = fit_baselines(load_dataset(baseline_train, data_dir).frame, onnx_model.encoder, seed)
        prediction = onnx_model.predict(frame)
        preds = [b.predict(frame) for b in baselines]
        nurse = nurse_baseline(frame)
        if nurse is not None:
            preds.append(nurse)
        result = evaluate_triage(frame, prediction, preds, dataset=dataset.name, n_boot=bootstrap, seed=seed)
        result["model"] = onnx_model.describe()
        result["data_digest"] = dataset.digest
        result["synthetic_data"] = bool(onnx_model.card.synthetic_data or data.startswith("synthetic:"))
        paths = write_report(result, out, "evaluation", f"Triage evaluation: {dataset.name}")
        paths += write_plots(result, frame, prediction, preds, out, "evaluation")
    except VigilError as exc:
        _fail(exc)
        return
    for outcome, entry in result["outcomes"].items():
        typer.echo(f"{outcome}: " + ", ".join(f"{k} AUROC {v['auroc']['estimate']:.3f}"
                                              for k, v in entry["models"].items()))
    typer.echo(json.dumps({"written": [str(p) for p in paths]}))


def main() -> None:
    """Entry point of the ``vigil`` console script."""
    app()


if __name__ == "__main__":
    main()
