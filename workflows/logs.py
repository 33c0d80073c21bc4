"""Logging set-up shared by every ``vigil`` command, the service's worker processes included."""

from __future__ import annotations

import logging
import sys

#: Libraries whose INFO output is noise here; highdicom logs source UIDs at INFO (identifiers stay out of logs)
#: and uvicorn's access log would hold query strings (Vigil writes its own, without them).
_QUIET = (
    "alembic",
    "mlflow",
    "urllib3",
    "matplotlib",
    "onnxscript",
    "onnx_ir",
    "torch",
    "highdicom",
    "uvicorn.access",
    "multipart",
)


def configure_logging(verbose: bool = False, *, with_process: bool = False) -> None:
    """INFO (or DEBUG) to stderr, with the process id when several worker processes share the output."""
    process = " %(process)d" if with_process else ""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s{process} %(name)s: %(message)s",
    )
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
