"""Data adapters: every dataset Vigil trains or evaluates on, as one :class:`TriageDataset` type.

``load_dataset`` takes a short spec so configs and the command line name data the same way:

``nhamcs:2018,2019``          NHAMCS ED public-use files of those years (:func:`load_nhamcs`)
``ktas``                      the KTAS dataset of Moon et al. 2019 (:func:`load_ktas`)
``csv:<path>``                a site's canonical CSV export, validated strictly (:func:`load_canonical_csv`)
``synthetic:n=2000,seed=0``   seeded synthetic visits (:func:`generate_synthetic`)

Real data live in the shared data folder: ``VIGIL_DATA_DIR`` when set, else ``../shared/data`` beside the
repository checkout. Nothing is copied into the repository or cached on disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from models.errors import DataSourceError, InputValidationError
from training.data.canonical_csv import load_canonical_csv, write_canonical_csv
from training.data.dataset import (
    AGE_BANDS,
    DATASET_COLUMNS,
    DIGEST_COLUMNS,
    LABEL_COLUMNS,
    META_COLUMNS,
    TriageDataset,
    frame_digest,
)
from training.data.ktas import load_ktas
from training.data.nhamcs import NHAMCS_SUBDIR, load_nhamcs, nhamcs_path
from training.data.synthetic import generate_synthetic

DATA_DIR_ENV: Final = "VIGIL_DATA_DIR"
#: NHAMCS years that :func:`data_available` checks by default (the ones staged in the shared folder).
DEFAULT_NHAMCS_YEARS: Final[tuple[int, ...]] = (2018, 2019, 2020)
SPEC_HELP: Final = "'nhamcs:2018,2019', 'ktas', 'csv:<path>' or 'synthetic:n=2000,seed=0'"


def default_data_dir() -> Path:
    """The shared data folder: ``$VIGIL_DATA_DIR`` if set, else ``../shared/data`` beside the repository."""
    configured = os.environ.get(DATA_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


def resolve_data_dir(data_dir: Path | None = None) -> Path:
    """``data_dir`` when given, else :func:`default_data_dir`; it is not checked for existence."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _data_dir(data_dir: Path | None) -> Path:
    folder = resolve_data_dir(data_dir)
    if not folder.is_dir():
        raise DataSourceError(
            f"data directory {folder} not found; set {DATA_DIR_ENV} to the shared data folder "
            "(the one holding triage/nhamcs_ed and triage/ktas_moon2019) or pass data_dir"
        )
    return folder


def data_available(data_dir: Path | None = None, years: tuple[int, ...] = DEFAULT_NHAMCS_YEARS) -> bool:
    """Whether the NHAMCS files of ``years`` (default 2018-2020) are in the data folder."""
    folder = resolve_data_dir(data_dir)
    if not (folder / NHAMCS_SUBDIR).is_dir():
        return False
    try:
        for year in years:
            nhamcs_path(folder, year)
    except DataSourceError:
        return False
    return True


def _bad_spec(spec: str, why: str) -> InputValidationError:
    return InputValidationError("dataset", f"dataset spec {spec[:80]!r} {why}; expected {SPEC_HELP}")


def _parse_years(spec: str, text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p.isdigit() or len(p) != 4 for p in parts):
        raise _bad_spec(spec, "needs comma-separated four-digit years")
    years = [int(p) for p in parts]
    if len(set(years)) != len(years):
        raise _bad_spec(spec, "repeats a year")
    return years


def _parse_synthetic(spec: str, text: str) -> tuple[int, int]:
    options = {"n": 2000, "seed": 0}
    if text.strip():
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in options:
                raise _bad_spec(spec, f"has an unknown synthetic option {key[:16]!r} (known: n, seed)")
            if not value.isdigit():
                raise _bad_spec(spec, f"needs a non-negative integer for {key}")
            options[key] = int(value)
    return options["n"], options["seed"]


def load_dataset(spec: str, data_dir: Path | None = None) -> TriageDataset:
    """Load a dataset named by ``spec``.

    Parameters
    ----------
    spec : str
        ``"nhamcs:<year>[,<year>...]"``, ``"ktas"``, ``"csv:<path>"`` or ``"synthetic[:n=<n>,seed=<seed>]"``
        (defaults n=2000, seed=0).
    data_dir : pathlib.Path, optional
        The shared data folder for ``nhamcs`` and ``ktas``; defaults to :func:`default_data_dir`.

    Raises
    ------
    InputValidationError
        ``field="dataset"`` for a malformed spec.
    DataSourceError
        A data folder or file is absent or unreadable (the message names the path and ``VIGIL_DATA_DIR``).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputValidationError("dataset", f"a dataset spec is needed; expected {SPEC_HELP}")
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "nhamcs":
        years = _parse_years(spec, rest)  # a malformed spec is reported before a missing folder
        return load_nhamcs(_data_dir(data_dir), years)
    if kind == "ktas":
        if rest.strip():
            raise _bad_spec(spec, "takes no options after 'ktas'")
        return load_ktas(_data_dir(data_dir))
    if kind == "csv":
        if not rest.strip():
            raise _bad_spec(spec, "needs a file path after 'csv:'")
        try:
            path = Path(rest.strip()).expanduser()
        except RuntimeError as exc:  # "~someone/..." for a user that does not exist
            raise _bad_spec(spec, "names a home folder ('~user') that does not exist on this machine") from exc
        return load_canonical_csv(path)
    if kind == "synthetic":
        n, seed = _parse_synthetic(spec, rest)
        try:
            return generate_synthetic(n, seed)
        except InputValidationError as exc:
            raise _bad_spec(spec, f"is invalid ({exc.message})") from exc
    raise _bad_spec(spec, f"names an unknown dataset kind {kind[:16]!r}")


__all__ = [
    "AGE_BANDS",
    "DATASET_COLUMNS",
    "DATA_DIR_ENV",
    "DIGEST_COLUMNS",
    "LABEL_COLUMNS",
    "META_COLUMNS",
    "TriageDataset",
    "data_available",
    "default_data_dir",
    "frame_digest",
    "generate_synthetic",
    "load_canonical_csv",
    "load_dataset",
    "load_ktas",
    "load_nhamcs",
    "resolve_data_dir",
    "write_canonical_csv",
]
