"""The service commands of ``vigil``: ``serve`` (the HTTP API), ``dicom-node`` and ``openapi``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from models.errors import VigilError
from vigil.output import fail


def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes; threads are split between them")] = 1,
    allow_unreleased: Annotated[
        bool,
        typer.Option(
            "--allow-unreleased",
            help="Serve models without a passing release gate (logged; flagged in every "
            "response; evaluation only, never for patients)",
        ),
    ] = False,
    triage_model: Annotated[str | None, typer.Option(help="Registry ref (default vigil-triage@production)")] = None,
    imaging_model: Annotated[str | None, typer.Option(help="Registry ref (default vigil-cxr@production)")] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Serve the ONNX files of this folder instead of the registry")
    ] = None,
) -> None:
    """Start the HTTP API (OpenAPI at /docs) on the released models; settings also come from VIGIL_* variables."""
    from workflows.serve import configure_serve, serve

    try:
        configure_serve(
            workers=workers,
            allow_unreleased=allow_unreleased,
            triage_model=triage_model,
            imaging_model=imaging_model,
            model_dir=model_dir,
        )
    except VigilError as exc:
        fail(exc)
        return
    serve(host=host, port=port, workers=workers)


def dicom_node_command() -> None:
    """Run the DICOM node: Storage SCP (C-STORE, C-ECHO) for the AE titles in VIGIL_DICOM_ALLOWED_CALLING_AETS,
    second reads of CR/DX chest images, TID 1500 SRs sent by C-STORE to VIGIL_DICOM_DESTINATION."""
    from workflows.serve import run_dicom_node

    try:
        run_dicom_node()
    except VigilError as exc:
        fail(exc)


def openapi_command(
    out: Annotated[Path, typer.Option(help="Where to write the OpenAPI description")] = Path("docs/openapi.json"),
) -> None:
    """Write the service's OpenAPI description (the same document the service serves at /openapi.json)."""
    from serving.api.app import openapi_document

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    typer.echo(f"wrote {out}")
