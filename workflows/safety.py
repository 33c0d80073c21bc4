"""``vigil safety``: the safety-invariant suite (docs/clinical_safety.md) on a triage or chest X-ray model named by
file or registry reference."""

from __future__ import annotations

from pathlib import Path

from evaluation.safety import SafetyReport

__all__ = ["model_file", "model_safety"]


def model_file(model: str) -> Path:
    """The ONNX file of ``model``: a path, or a registry reference (``NAME/VERSION``, ``NAME@ALIAS``,
    ``models:/NAME@ALIAS``) fetched from the tracking server.

    Raises
    ------
    models.errors.VigilError
        The file or the registered version cannot be found.
    """
    from training.tracking import parse_model_ref, resolve_model_file
    from workflows.triage import work_dir

    if model.endswith(".onnx") or Path(model).is_file():
        return resolve_model_file(model, work_dir())
    name, version, alias = parse_model_ref(model)
    uri = f"models:/{name}/{version}" if version else f"models:/{name}@{alias}"
    return resolve_model_file(uri, work_dir(), experiment=name)


def model_safety(
    model: str, out: Path, data_dir: Path | None = None, *, n_grid: int = 10_000, seed: int = 0
) -> tuple[SafetyReport, list[Path]]:
    """Run the safety suite on ``model`` (see :func:`model_file`; films for an imaging model from ``data_dir``) and
    write ``safety_invariants.json`` and ``.md`` to ``out``; the report and the files written."""
    from evaluation.safety_report import write_safety_report
    from workflows.release import run_safety_suite

    report = run_safety_suite(model_file(model), data_dir, n_grid=n_grid, seed=seed)
    return report, write_safety_report(report, out)
