"""Training config: every key validated, errors name the key."""

from __future__ import annotations

import pytest

from models.errors import ConfigError
from training.config import load_triage_config


def test_default_config_loads():
    cfg = load_triage_config()
    assert cfg.train_data == "nhamcs:2018,2019" and cfg.test_data == "nhamcs:2020"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("epochs: -1\n", r"config key 'epochs' must be in \[1, 500\]; got -1"),
        ("epochs: ten\n", r"config key 'epochs' must be int; got str"),
        ("learning_rate: 5\n", r"config key 'learning_rate' must be in"),
        ("epoch: 3\n", r"unknown config key\(s\) \['epoch'\]"),
        ("- a\n- b\n", r"must hold a mapping"),
        ("epochs: [\n", r"not valid YAML"),
    ],
)
def test_bad_config_names_key(tmp_path, text, pattern):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load_triage_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_triage_config(tmp_path / "nope.yaml")
