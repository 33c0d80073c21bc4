"""Training configuration: YAML in, a validated, typed config out (errors name the key).

Each config is a pydantic model (:class:`~models.config_schema.ConfigModel`): every key is declared with its type
and range beside its default, values are taken strictly (an int where a float is declared, nothing else: no
strings, no booleans for numbers), and an unknown key or a bad value is a :class:`~models.errors.ConfigError`
naming the key (:func:`load_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ConfigDict, Field

from models.config_schema import ConfigModel, validate_config
from models.errors import ConfigError

__all__ = [
    "CONFIG_DIR",
    "ImagingTrainConfig",
    "TrainConfig",
    "TriageTrainConfig",
    "load_config",
    "load_imaging_config",
    "load_triage_config",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
C = TypeVar("C", bound="TrainConfig")


class TrainConfig(ConfigModel):
    """A training config: strict types (an int is accepted for a float), every key declared, frozen."""

    model_config = ConfigDict(strict=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every key (for MLflow params and the model card)."""
        return self.model_dump()


class TriageTrainConfig(TrainConfig):
    """Everything that determines a triage training run; the run is reproducible from it."""

    seed: int = 20261123
    train_data: str = "nhamcs:2018,2019"
    test_data: str = "nhamcs:2020"
    external_data: str = "ktas"
    synthetic_train_n: int = Field(6000, ge=100, le=10_000_000)
    synthetic_test_n: int = Field(3000, ge=100, le=10_000_000)
    validation_fraction: float = Field(0.15, ge=0.05, le=0.5)
    epochs: int = Field(30, ge=1, le=500)
    patience: int = Field(5, ge=1, le=100)
    ensemble_size: int = Field(1, ge=1, le=20)
    batch_size: int = Field(256, ge=8, le=65536)
    learning_rate: float = Field(2e-3, ge=1e-6, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    hidden: int = Field(128, ge=4, le=4096)
    dropout: float = Field(0.2, ge=0.0, le=0.9)
    category_dim: int = Field(8, ge=1, le=256)
    token_dim: int = Field(32, ge=1, le=512)
    max_tokens: int = Field(16, ge=1, le=128)
    min_token_count: int = Field(5, ge=1, le=10_000)
    acuity_loss_weight: float = Field(1.0, ge=0.0, le=100.0)
    under_triage_weight: float = Field(2.0, ge=0.1, le=20.0)
    high_acuity_under_triage_target: float = Field(1.0, ge=0.05, le=1.0)
    operating_points_by_sex: bool = False
    outcome_loss_weight: float = Field(1.0, ge=0.0, le=100.0)
    #: Per training batch, each input is blanked in this fraction of rows, so that "not recorded" is a state
    #: the network learns (sex, arrival mode, complaint and vital signs are almost always recorded in NHAMCS).
    input_dropout: float = Field(0.05, ge=0.0, le=0.5)
    bootstrap_resamples: int = Field(1000, ge=10, le=100_000)
    threads: int = Field(2, ge=1, le=256)


class ImagingTrainConfig(TrainConfig):
    """Everything that determines a chest X-ray training run."""

    seed: int = 20261123
    image_size: int = Field(128, ge=32, le=1024)
    epochs: int = Field(12, ge=1, le=500)
    patience: int = Field(3, ge=1, le=100)
    batch_size: int = Field(64, ge=2, le=4096)
    learning_rate: float = Field(2e-3, ge=1e-6, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    dropout: float = Field(0.2, ge=0.0, le=0.9)
    rotate_degrees: float = Field(7.0, ge=0.0, le=45.0)
    scale_jitter: float = Field(0.1, ge=0.0, le=0.5)
    translate_fraction: float = Field(0.05, ge=0.0, le=0.3)
    intensity_jitter: float = Field(0.1, ge=0.0, le=0.5)
    gamma_jitter: float = Field(0.2, ge=0.0, le=1.0)
    saturation_jitter: float = Field(0.3, ge=0.0, le=0.5)
    saturation_probability: float = Field(0.5, ge=0.0, le=1.0)
    hflip_probability: float = Field(0.5, ge=0.0, le=1.0)
    dihedral_invariance: bool = True
    #: The exported model averages its reading of each image with the brightest 0.1, 0.2, ... up to this fraction
    #: saturated (models/imaging/net.py); 0 = off. A multiple of 0.1 (the averaged members are 0, 0.1, ... up to it).
    saturation_average: float = Field(0.4, ge=0.0, le=0.5, multiple_of=0.1)
    target_sensitivity: float = Field(0.9, ge=0.5, le=0.999)
    quantize_int8: bool = True
    int8_max_auroc_drop: float = Field(0.005, ge=0.0, le=0.1)
    synthetic_n: int = Field(600, ge=50, le=1_000_000)
    bootstrap_resamples: int = Field(1000, ge=10, le=100_000)
    threads: int = Field(2, ge=1, le=256)


def load_triage_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> TriageTrainConfig:
    """Read the triage config (default ``training/configs/triage.yaml``); see :func:`load_config`."""
    return load_config(TriageTrainConfig, path or CONFIG_DIR / "triage.yaml", overrides)


def load_imaging_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> ImagingTrainConfig:
    """Read the imaging config (default ``training/configs/imaging.yaml``); see :func:`load_config`."""
    return load_config(ImagingTrainConfig, path or CONFIG_DIR / "imaging.yaml", overrides)


def load_config(cls: type[C], path: Path, overrides: dict[str, Any] | None = None) -> C:
    """Read a YAML config and apply overrides.

    Raises
    ------
    ConfigError
        Unknown key, wrong type or out-of-range value (naming the key), or an unreadable file.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path.name} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path.name} must hold a mapping of keys to values")
    data.update(overrides or {})
    return validate_config(cls, data, f"config file {path.name}")
