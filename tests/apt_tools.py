"""Third-party command-line tools the tests drive as real counterparts (dcmtk, dicom3tools, nginx).

A tool that is missing is installed with apt-get when the tests run as root (as CI does); otherwise the test that
needs it is skipped with a reason that names the tool, the package and what is not run. apt-get talks to the
distribution's package mirror only; the tests themselves never leave 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from filelock import FileLock

__all__ = ["file_or_skip", "tool_or_skip"]

_APT_TIMEOUT_S = 600


def _find(binary: str, also_look_in: Sequence[Path]) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    for folder in also_look_in:  # e.g. /usr/sbin, which is not on a non-root PATH
        candidate = Path(folder) / binary
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def tool_or_skip(binary: str, package: str, purpose: str, *, also_look_in: Sequence[Path] = ()) -> str:
    """The path of ``binary``, installing ``package`` with apt-get first when it is missing and this runs as root.

    Parameters
    ----------
    binary : str
        The executable to find, e.g. ``"storescu"``.
    package : str
        The Debian package that provides it, e.g. ``"dcmtk"``.
    purpose : str
        What is not run without it, for the skip reason, e.g. ``"the dcmtk modality/PACS tests"``.
    also_look_in : sequence of Path
        Folders searched besides ``PATH``.

    Returns
    -------
    str
        The path of the executable. The calling test is skipped (never failed) when it cannot be had.
    """
    found = _find(binary, also_look_in)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            f"{binary} is not installed and cannot be (not root, or no apt-get): install the Debian package "
            f"{package!r}; {purpose} are not run"
        )
    _apt_install(package, lambda: _find(binary, also_look_in) is not None)
    found = _find(binary, also_look_in)
    if not found:
        pytest.skip(
            f"{binary} could not be installed with 'apt-get install {package}' (no network or no such "
            f"package): {purpose} are not run"
        )
    return found


def file_or_skip(path: Path, package: str, purpose: str) -> Path:
    """``path`` (a file a package installs that is not an executable, e.g. an Orthanc plugin), installing
    ``package`` with apt-get first when it is missing and this runs as root; else the calling test is skipped."""
    if path.is_file():
        return path
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            f"{path} is not installed and cannot be (not root, or no apt-get): install the Debian package "
            f"{package!r}; {purpose} are not run"
        )
    _apt_install(package, path.is_file)
    if not path.is_file():
        pytest.skip(f"{path} could not be installed with 'apt-get install {package}': {purpose} are not run")
    return path


def _apt_install(package: str, present: Callable[[], bool]) -> None:
    """``apt-get install package`` unless ``present()``; one apt-get at a time across pytest-xdist workers (dpkg's
    own lock makes a second one fail, not wait)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with FileLock(str(Path(tempfile.gettempdir()) / "vigil-tests-apt.lock")):
        if present():  # another worker may have installed it meanwhile
            return
        # Install from the lists already there first; refresh them only when that fails (a fresh container has none).
        for command in (
            ["apt-get", "install", "-y", "-q", package],
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", package],
        ):
            done = subprocess.run(command, capture_output=True, timeout=_APT_TIMEOUT_S, check=False, env=env)
            if done.returncode == 0 and command[1] == "install":
                return
