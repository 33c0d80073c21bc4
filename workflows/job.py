"""The main job (``vigil run``, ``make run``): train the triage and chest X-ray models, register each as @candidate,
then run the release gate on each, which alone moves @production."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from models.errors import InputValidationError

__all__ = ["run_job"]

TASKS = ("triage", "imaging")


def run_job(
    *,
    config: Path | None = None,
    imaging_config: Path | None = None,
    data_dir: Path | None = None,
    only: str | None = None,
    epochs: int | None = None,
    skip_release: bool = False,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Run the main job; each summary line goes to ``echo`` as it is known. Returns the registered references
    (``NAME/VERSION``).

    Raises
    ------
    models.errors.VigilError
        A bad config, a data source that cannot be read, a failed export or parity check (the CLI prints it).
    """
    from training.config import load_imaging_config, load_triage_config

    if only not in (None, *TASKS):
        raise InputValidationError("only", f"--only must be 'triage' or 'imaging'; got {only!r}")
    overrides = {"epochs": epochs} if epochs else None
    triage_cfg = load_triage_config(config, overrides)
    imaging_cfg = load_imaging_config(imaging_config, overrides)
    registered = []
    if only in (None, "triage"):
        from workflows.triage import REGISTERED_TRIAGE_MODEL, run_triage, summary_lines

        triage = run_triage(triage_cfg, data_dir=data_dir)
        for line in summary_lines(triage):
            echo(line)
        registered.append(f"{REGISTERED_TRIAGE_MODEL}/{triage.registered_version}")
    if only in (None, "imaging"):
        from workflows.imaging import REGISTERED_IMAGING_MODEL, imaging_summary_lines, run_imaging

        imaging = run_imaging(imaging_cfg, data_dir=data_dir)
        for line in imaging_summary_lines(imaging):
            echo(line)
        registered.append(f"{REGISTERED_IMAGING_MODEL}/{imaging.registered_version}")
    if not skip_release:
        from workflows.release import release

        for ref in registered:
            outcome = release(ref, data_dir=data_dir)
            verdict = "RELEASED to @production" if outcome.promoted else f"NOT released ({outcome.status})"
            echo(f"release gate {ref}: {verdict}")
            for check in outcome.checks:
                if check.status != "pass":
                    echo(f"  [{check.status}] {check.name}: {check.reason[:300]}")
    return registered
