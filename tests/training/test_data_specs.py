"""``load_dataset`` specs, the data folder, and the shared dataset helpers (age bands, digest, build)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.errors import DataSourceError, InputValidationError
from training.data import (
    DATA_DIR_ENV,
    data_available,
    default_data_dir,
    frame_digest,
    generate_synthetic,
    load_dataset,
    resolve_data_dir,
    write_canonical_csv,
)
from training.data.dataset import age_band, build_dataset


def test_synthetic_spec_matches_the_generator() -> None:
    assert load_dataset("synthetic:n=50,seed=1").digest == generate_synthetic(50, 1).digest
    assert len(load_dataset("synthetic")) == 2_000
    assert load_dataset(" synthetic:seed=4, n=20 ").name == "synthetic:n=20,seed=4"


def test_csv_spec_reads_the_path(tmp_path: Path) -> None:
    path = write_canonical_csv(generate_synthetic(20, 3), tmp_path / "site export.csv")
    assert load_dataset(f"csv:{path}").digest == generate_synthetic(20, 3).digest


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        "nhamcs",
        "nhamcs:",
        "nhamcs:18",
        "nhamcs:2018;2019",
        "nhamcs:2018,2018",
        "ktas:2019",
        "csv:",
        "synthetic:n=ten",
        "synthetic:size=10",
        "synthetic:n=0",
        "mimic:iv",
    ],
)
def test_bad_specs_name_the_dataset_field(spec: str) -> None:
    with pytest.raises(InputValidationError) as info:
        load_dataset(spec)
    assert info.value.field == "dataset"


def test_missing_data_dir_names_path_and_env(tmp_path: Path) -> None:
    absent = tmp_path / "nowhere"
    with pytest.raises(DataSourceError, match=rf"{absent}.*{DATA_DIR_ENV}"):
        load_dataset("ktas", absent)
    with pytest.raises(DataSourceError, match=rf"ED2018-stata\.zip.*{DATA_DIR_ENV}"):
        load_dataset("nhamcs:2018", tmp_path)  # the folder exists but holds no NHAMCS file


def test_default_data_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path.resolve()
    assert not data_available()
    monkeypatch.delenv(DATA_DIR_ENV)
    repo_root = Path(__file__).resolve().parents[2]
    assert default_data_dir() == (repo_root.parent / "shared" / "data").resolve()
    assert resolve_data_dir() == default_data_dir()
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"


def test_data_available_checks_each_year(tmp_path: Path) -> None:
    folder = tmp_path / "triage" / "nhamcs_ed"
    folder.mkdir(parents=True)
    for name in ("ED2018-stata.zip", "ED2019-stata.zip"):
        (folder / name).write_bytes(b"")
    assert not data_available(tmp_path)
    (folder / "ed2020-stata.zip").write_bytes(b"")
    assert data_available(tmp_path)
    assert not data_available(tmp_path, years=(2018, 2022))


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (0, "<15"),
        (14.9, "<15"),
        (15, "15-24"),
        (24, "15-24"),
        (25, "25-44"),
        (44, "25-44"),
        (45, "45-64"),
        (64, "45-64"),
        (65, "65-74"),
        (74, "65-74"),
        (75, "75+"),
        (120, "75+"),
        (np.nan, None),
    ],
)
def test_age_bands_follow_nhamcs_ager(age: float, band: str | None) -> None:
    assert age_band(pd.Series([age])).iloc[0] == band


def _tiny(**overrides: object) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "age_years": [30.0, 70.0],
            "sex": ["female", "male"],
            "heart_rate": [80.0, np.nan],
            "acuity": [3, 2],
            "admitted": [0, 1],
            "critical": [0, 0],
            "visit_id": ["a", "b"],
        }
    )
    for key, value in overrides.items():
        frame[key] = value
    return frame


def _digest(frame: pd.DataFrame) -> str:
    return build_dataset(frame, name="t", dataset="t", mode="strict").digest


def test_digest_identifies_rows_values_order_and_labels() -> None:
    base = _digest(_tiny())
    assert base == _digest(_tiny())
    assert base != _digest(_tiny().iloc[::-1])
    assert base != _digest(_tiny(heart_rate=[81.0, np.nan]))
    assert base != _digest(_tiny(heart_rate=[80.0, 20.0]))  # a value where one was missing
    assert base != _digest(_tiny(acuity=[3, 1]))
    assert base != _digest(_tiny(nurse_acuity=[3, 2]))
    assert base != _digest(_tiny(visit_id=["a", "c"]))
    assert base == _digest(_tiny(weight=[5.0, 5.0], payer=["private", None]))  # meta columns are not covered


def test_digest_treats_every_missing_alike_and_negative_zero_as_zero() -> None:
    with_none = _tiny(heart_rate=[80.0, None], acuity=pd.array([3, pd.NA], dtype="Int64"))
    with_nan = _tiny(heart_rate=[80.0, np.nan], acuity=[3.0, np.nan])
    assert _digest(with_none) == _digest(with_nan)
    built = build_dataset(_tiny(), name="t", dataset="t", mode="strict").frame
    negative = built.assign(pain_score=[-0.0, np.nan])
    assert frame_digest(negative) == frame_digest(built.assign(pain_score=[0.0, np.nan]))


def test_build_requires_unique_visit_ids() -> None:
    with pytest.raises(InputValidationError, match="visit_id"):
        _digest(_tiny(visit_id=["a", "a"]))
    with pytest.raises(InputValidationError, match="visit_id"):
        _digest(_tiny(visit_id=["a", " "]))
