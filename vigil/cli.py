"""The ``vigil`` command line: the Typer app, its commands and the console script's entry point.

It only parses arguments, calls ``workflows/`` (or, for the admin commands, the service's stores) and prints; the
commands are in :mod:`vigil.commands_models` (``run``, ``evaluate``, ``release``, ``safety``, ``second-read``,
``bench-imaging``), :mod:`vigil.commands_service` (``serve``, ``dicom-node``, ``openapi``) and
:mod:`vigil.commands_admin` (``dicom-queue``, ``keys``, ``audit``, ``monitor``).

Errors from bad input (config, CSV, model files) are printed as one clear line naming the field and exit
with status 2; they never end in a traceback (:func:`vigil.output.fail`).
"""

from __future__ import annotations

import typer

from vigil import commands_admin, commands_models, commands_service

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Vigil: triage and chest X-ray decision support (never replaces a clinician).",
)
app.command("run")(commands_models.run)
app.command("evaluate")(commands_models.evaluate)
app.command("release")(commands_models.release_command)
app.command("safety")(commands_models.safety_command)
app.command("second-read")(commands_models.second_read)
app.command("bench-imaging")(commands_models.bench_imaging)
app.command("serve")(commands_service.serve_command)
app.command("dicom-node")(commands_service.dicom_node_command)
app.command("openapi")(commands_service.openapi_command)
app.add_typer(commands_admin.dicom_queue_app, name="dicom-queue")
app.add_typer(commands_admin.keys_app, name="keys")
app.add_typer(commands_admin.audit_app, name="audit")
app.command("monitor")(commands_admin.monitor_command)


def main() -> None:
    """Entry point of the ``vigil`` console script."""
    app()


if __name__ == "__main__":
    main()
