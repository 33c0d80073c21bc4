"""Training configuration: YAML in, a validated, typed config out (errors name the key)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from models.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
C = TypeVar("C", bound="_ValidatedConfig")


class _ValidatedConfig:
    """Type and range checks for a frozen config dataclass; ranges come from the subclass's ``_RANGES``."""

    _RANGES: ClassVar[dict[str, tuple[float, float]]] = {}

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            kind: type[Any] = {"int": int, "float": float, "bool": bool}.get(str(f.type), str)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
                value = float(value)
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise ConfigError(f"config key '{f.name}' must be {kind.__name__}; got {type(value).__name__}")
            bounds = self._RANGES.get(f.name)
            if bounds and not bounds[0] <= value <= bounds[1]:
                raise ConfigError(f"config key '{f.name}' must be in [{bounds[0]}, {bounds[1]}]; got {value}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every key (for MLflow params and the model card)."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class TriageTrainConfig(_ValidatedConfig):
    """Everything that determines a triage training run; the run is reproducible from it."""

    seed: int = 20261123
    train_data: str = "nhamcs:2018,2019"
    test_data: str = "nhamcs:2020"
    external_data: str = "ktas"
    synthetic_train_n: int = 6000
    synthetic_test_n: int = 3000
    validation_fraction: float = 0.15
    epochs: int = 30
    patience: int = 5
    ensemble_size: int = 1
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    hidden: int = 128
    dropout: float = 0.2
    category_dim: int = 8
    token_dim: int = 32
    max_tokens: int = 16
    min_token_count: int = 5
    acuity_loss_weight: float = 1.0
    under_triage_weight: float = 2.0
    high_acuity_under_triage_target: float = 1.0
    operating_points_by_sex: bool = False
    outcome_loss_weight: float = 1.0
    #: Per training batch, each input is blanked in this fraction of rows, so that "not recorded" is a state
    #: the network learns (sex, arrival mode, complaint and vital signs are almost always recorded in NHAMCS).
    input_dropout: float = 0.05
    bootstrap_resamples: int = 1000
    threads: int = 2

    _RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "validation_fraction": (0.05, 0.5),
        "epochs": (1, 500),
        "patience": (1, 100),
        "ensemble_size": (1, 20),
        "batch_size": (8, 65536),
        "learning_rate": (1e-6, 1.0),
        "weight_decay": (0.0, 1.0),
        "hidden": (4, 4096),
        "dropout": (0.0, 0.9),
        "category_dim": (1, 256),
        "token_dim": (1, 512),
        "max_tokens": (1, 128),
        "min_token_count": (1, 10_000),
        "acuity_loss_weight": (0.0, 100.0),
        "under_triage_weight": (0.1, 20.0),
        "high_acuity_under_triage_target": (0.05, 1.0),
        "outcome_loss_weight": (0.0, 100.0),
        "input_dropout": (0.0, 0.5),
        "bootstrap_resamples": (10, 100_000),
        "synthetic_train_n": (100, 10_000_000),
        "synthetic_test_n": (100, 10_000_000),
        "threads": (1, 256),
    }


@dataclass(frozen=True)
class ImagingTrainConfig(_ValidatedConfig):
    """Everything that determines a chest X-ray training run."""

    seed: int = 20261123
    image_size: int = 128
    epochs: int = 12
    patience: int = 3
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2
    rotate_degrees: float = 7.0
    scale_jitter: float = 0.1
    translate_fraction: float = 0.05
    intensity_jitter: float = 0.1
    gamma_jitter: float = 0.2
    saturation_jitter: float = 0.3
    saturation_probability: float = 0.5
    hflip_probability: float = 0.5
    dihedral_invariance: bool = True
    #: The exported model averages its reading of each image with the brightest 0.1, 0.2, ... up to this fraction
    #: saturated (models/imaging/net.py); 0 = off. A multiple of 0.1.
    saturation_average: float = 0.4
    target_sensitivity: float = 0.9
    quantize_int8: bool = True
    int8_max_auroc_drop: float = 0.005
    synthetic_n: int = 600
    bootstrap_resamples: int = 1000
    threads: int = 2

    _RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "image_size": (32, 1024),
        "epochs": (1, 500),
        "patience": (1, 100),
        "batch_size": (2, 4096),
        "learning_rate": (1e-6, 1.0),
        "weight_decay": (0.0, 1.0),
        "dropout": (0.0, 0.9),
        "rotate_degrees": (0.0, 45.0),
        "scale_jitter": (0.0, 0.5),
        "translate_fraction": (0.0, 0.3),
        "intensity_jitter": (0.0, 0.5),
        "gamma_jitter": (0.0, 1.0),
        "saturation_jitter": (0.0, 0.5),
        "saturation_probability": (0.0, 1.0),
        "hflip_probability": (0.0, 1.0),
        "saturation_average": (0.0, 0.5),
        "target_sensitivity": (0.5, 0.999),
        "int8_max_auroc_drop": (0.0, 0.1),
        "synthetic_n": (50, 1_000_000),
        "bootstrap_resamples": (10, 100_000),
        "threads": (1, 256),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if abs(self.saturation_average * 10 - round(self.saturation_average * 10)) > 1e-9:
            raise ConfigError(
                "config key 'saturation_average' must be a multiple of 0.1 (the averaged members are "
                f"0, 0.1, ... up to it); got {self.saturation_average}"
            )


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
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**data)
