"""How a ``vigil`` command ends on bad input: one clear line naming the field (or the list of a record's
validation errors) on stderr, and exit status 2; never a traceback."""

from __future__ import annotations

import typer

from models.errors import RecordValidationErrors


def fail(exc: Exception) -> None:
    """Print ``exc`` for the user and exit with status 2 (raises :class:`typer.Exit`)."""
    if isinstance(exc, RecordValidationErrors):
        typer.echo(f"error: {len(exc.errors)} validation error(s):", err=True)
        for err in exc.errors[:50]:
            typer.echo(f"  - {err}", err=True)
    else:
        typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)
