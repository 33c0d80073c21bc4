"""The model commands of ``vigil``: ``run`` (the main job), ``evaluate``, ``release``, ``safety``, ``second-read``
and ``bench-imaging``. Each parses its options, calls its workflow and prints the outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from models.errors import VigilError
from vigil.output import fail
from workflows.logs import configure_logging


def run(
    config: Annotated[Path | None, typer.Option(help="Triage training config (YAML).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data folder (default $VIGIL_DATA_DIR or ../shared/data).")
    ] = None,
    imaging_config: Annotated[Path | None, typer.Option(help="Chest X-ray training config (YAML).")] = None,
    only: Annotated[str | None, typer.Option(help="Run only 'triage' or only 'imaging'.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override both configs' epochs.")] = None,
    skip_release: Annotated[bool, typer.Option(help="Register @candidate only; do not run the release gate.")] = False,
    verbose: bool = False,
) -> None:
    """The main job: train the triage and chest X-ray models, track them in MLflow, export to ONNX (parity
    checked), evaluate against baselines, register each as @candidate, then run the release gate (fairness
    audit, floors, artefact checks), which alone moves @production.

    `make run` then starts `vigil serve` on the released models.
    """
    configure_logging(verbose)
    from workflows.job import run_job

    try:
        run_job(
            config=config,
            imaging_config=imaging_config,
            data_dir=data_dir,
            only=only,
            epochs=epochs,
            skip_release=skip_release,
            echo=typer.echo,
        )
    except VigilError as exc:
        fail(exc)
        return
    typer.echo(
        "Only a model that passed the release gate is ever at @production; `vigil serve` serves those "
        "(see README: Serving)."
    )


def evaluate(
    model: Annotated[str, typer.Option(help="An .onnx file, or a registry URI such as models:/vigil-triage@candidate")],
    data: Annotated[str, typer.Option(help="Dataset: nhamcs:2020, ktas, csv:<path>, synthetic:n=2000,seed=0")],
    out: Annotated[Path, typer.Option(help="Output folder for JSON, Markdown and plots")] = Path("vigil-work/eval"),
    baseline_train: Annotated[
        str | None,
        typer.Option(
            help="Dataset to fit the logistic/GBM/NEWS2 baselines on (default: none for csv, else nhamcs:2018,2019)"
        ),
    ] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="Data folder for named datasets")] = None,
    bootstrap: Annotated[int, typer.Option(min=10, max=100000, help="Bootstrap resamples")] = 1000,
    seed: int = 0,
    verbose: bool = False,
) -> None:
    """Evaluate a triage model on a dataset (including a site's own canonical CSV) with baselines, or a chest X-ray
    model on the held-out patients of NIH or Kermany."""
    configure_logging(verbose)
    from workflows.evaluate import evaluate_model

    try:
        done = evaluate_model(
            model, data, out, baseline_train=baseline_train, data_dir=data_dir, bootstrap=bootstrap, seed=seed
        )
    except VigilError as exc:
        fail(exc)
        return
    for line in done.lines:
        typer.echo(line)
    typer.echo(json.dumps({"written": [str(p) for p in done.paths], **done.extra}))


def release_command(
    model: Annotated[str, typer.Argument(help="NAME/VERSION or NAME@ALIAS, e.g. vigil-triage/3")],
    data_dir: Annotated[Path | None, typer.Option(help="Data folder holding the evaluation data")] = None,
    policy: Annotated[Path | None, typer.Option(help="Release policy (default fairness/release_policy.yaml)")] = None,
    bootstrap: Annotated[int, typer.Option(min=100, max=100000, help="Bootstrap resamples of the audit")] = 1000,
    verbose: bool = False,
) -> None:
    """Release gate: artefact checks, performance floors and the fairness audit; moves @production only on pass.

    Exits 0 when the model was released, 1 when a check failed or evidence was insufficient (the reasons are
    printed and recorded on the model version), 2 for bad input.
    """
    configure_logging(verbose)
    from workflows.release import POLICY_PATH, release

    try:
        outcome = release(model, data_dir=data_dir, policy_path=policy or POLICY_PATH, n_boot=bootstrap)
    except VigilError as exc:
        fail(exc)
        return
    for check in outcome.checks:
        typer.echo(f"[{check.status}] {check.name}: {check.reason}")
    typer.echo(f"reports: {outcome.reports[-1].parent}")
    if outcome.promoted:
        typer.echo(f"RELEASED: {outcome.model} version {outcome.version} is now @production")
        return
    typer.echo(f"NOT RELEASED: {outcome.model} version {outcome.version}: {outcome.status}", err=True)
    raise typer.Exit(code=1)


def safety_command(
    model: Annotated[
        str, typer.Option(help="An .onnx file, or a registry reference: NAME/VERSION, NAME@ALIAS or models:/NAME@ALIAS")
    ],
    out: Annotated[Path, typer.Option(help="Folder for safety_invariants.json and .md")] = Path("vigil-work/safety"),
    data_dir: Annotated[Path | None, typer.Option(help="Data folder holding the films (imaging models)")] = None,
    n_grid: Annotated[int, typer.Option(min=100, max=10_000_000, help="Perturbed triage records")] = 10_000,
    seed: int = 0,
    verbose: bool = False,
) -> None:
    """Run the safety-invariant suite on a triage or chest X-ray model (docs/clinical_safety.md).

    Prints each invariant's result and writes JSON and Markdown. Exits 0 when every invariant holds, 1 on any
    violation, 2 for bad input.
    """
    configure_logging(verbose)
    from workflows.safety import model_safety

    try:
        report, paths = model_safety(model, out, data_dir, n_grid=n_grid, seed=seed)
    except VigilError as exc:
        fail(exc)
        return
    for result in report.results:
        typer.echo(
            f"[{'pass' if result.passed else 'FAIL'}] {result.id}: {result.n_violations}/{result.n_cases} "
            f"violations (tolerance: {result.tolerance})"
        )
    typer.echo(f"{report.model_name} {report.model_version}: {'PASS' if report.passed else 'FAIL'}: {report.summary()}")
    typer.echo(json.dumps({"written": [str(p) for p in paths]}))
    if not report.passed:
        raise typer.Exit(code=1)


def second_read(
    model: Annotated[str, typer.Option(help="An .onnx file, or models:/vigil-cxr@candidate")],
    dicom: Annotated[Path, typer.Option(help="A DICOM instance (CR/DX chest radiograph)")],
    out: Annotated[Path, typer.Option(help="Folder for the SR (.dcm), the heat map (.png) and the JSON")] = Path(
        "vigil-work/second-read"
    ),
) -> None:
    """Second read of one DICOM: per-finding probabilities and flags, a heat map PNG and a TID 1500 SR."""
    configure_logging(False)
    from workflows.second_read import second_read_file

    try:
        summary = second_read_file(model, dicom, out)
    except (VigilError, ValueError) as exc:
        fail(exc)
        return
    typer.echo(json.dumps(summary, indent=2))


def bench_imaging(
    run_dir: Annotated[Path, typer.Option(help="A run folder holding cxr_fp32.onnx (and cxr_int8.onnx)")],
    data_dir: Annotated[Path | None, typer.Option(help="Data folder holding imaging/dicom_fixtures")] = None,
    repeats: Annotated[int, typer.Option(min=3, max=10000)] = 50,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 2,
    out: Annotated[Path, typer.Option(help="Markdown report")] = Path("docs/imaging_latency.md"),
) -> None:
    """Benchmark: DICOM bytes -> flags against raw onnxruntime inference on every chest fixture."""
    configure_logging(False)
    from workflows.bench import bench_imaging as run_bench

    try:
        written = run_bench(run_dir, data_dir, repeats=repeats, threads=threads, out=out)
    except VigilError as exc:
        fail(exc)
        return
    typer.echo(f"wrote {written}")
