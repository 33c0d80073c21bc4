"""Imaging training pieces: patient-level splits, operating thresholds, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.operating_point import threshold_for_sensitivity as operating_threshold
from training.config import load_imaging_config
from training.data.imaging import patient_split
from training.train_imaging import augment


def test_patient_split_keeps_patients_whole_and_is_seeded():
    patients = np.repeat(np.arange(100).astype(str), 3)
    a = patient_split(patients, (0.6, 0.2, 0.2), seed=1)
    for p in np.unique(patients):
        assert len(set(a[patients == p])) == 1
    assert np.array_equal(a, patient_split(patients, (0.6, 0.2, 0.2), seed=1))
    assert not np.array_equal(a, patient_split(patients, (0.6, 0.2, 0.2), seed=2))
    assert (a == "train").sum() == 180 and (a == "validation").sum() == 60


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 1.0 - 1e-9])
def test_operating_threshold_reaches_target_and_is_highest(target):
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.3).astype(int)
    p = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1)
    threshold, sens = operating_threshold(y, p, target)
    assert sens >= target - 1e-12
    assert (p[y == 1] >= threshold).mean() == pytest.approx(sens)
    # any higher threshold loses sensitivity below the target
    higher = np.unique(p[p > threshold])
    if len(higher):
        assert (p[y == 1] >= higher[0]).mean() < target


def test_operating_threshold_without_positives_never_flags():
    threshold, sens = operating_threshold(np.zeros(5, int), np.linspace(0, 1, 5), 0.9)
    assert threshold == 1.0 and np.isnan(sens)


def test_augment_shapes_identity_and_determinism():
    cfg = load_imaging_config()
    x = torch.randn(4, 1, 32, 32)
    a = augment(x, cfg, torch.Generator().manual_seed(0))
    b = augment(x, cfg, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    still = load_imaging_config(
        overrides={
            "rotate_degrees": 0.0,
            "scale_jitter": 0.0,
            "translate_fraction": 0.0,
            "intensity_jitter": 0.0,
            "gamma_jitter": 0.0,
            "saturation_jitter": 0.0,
            "dihedral_invariance": False,
            "hflip_probability": 0.0,
        }
    )
    torch.testing.assert_close(augment(x, still, torch.Generator().manual_seed(0)), x, atol=1e-5, rtol=0)


def _gradient_film(low: float, span: float) -> np.ndarray:
    y, xx = np.mgrid[0:160, 0:160] / 160.0
    film = low + 0.55 * np.exp(-(((xx - 0.5) / 0.12) ** 2)) + span * y + 0.03 * np.sin(30 * y)
    return np.clip(film, 0, 1).astype(np.float32)


def test_a_window_change_saturating_less_than_the_tail_leaves_the_input_unchanged():
    """cxr-pixels/3: the darkest and brightest tenth are merged before equalisation, so a +20% contrast change that
    saturates less than that at each end gives the same model input up to float32 rounding (measured < 1e-4)."""
    from evaluation.safety_imaging_cases import change_contrast, shift_window_centre
    from models.imaging.pixels import model_input

    film = _gradient_film(0.02, 0.6)
    s, t = float((film < 0.5 - 0.5 / 1.2).mean()), float((film > 0.5 + 0.5 / 1.2).mean())
    assert 0.02 < s < 0.1 and 0.02 < t < 0.1  # it does saturate, less than a tenth at each end
    np.testing.assert_allclose(model_input(change_contrast(film, 0.2), 64), model_input(film, 64), atol=2e-4)
    np.testing.assert_allclose(model_input(shift_window_centre(film, 0.1), 64), model_input(film, 64), atol=2e-4)


def test_saturation_is_what_a_saturating_display_window_does_after_equalisation():
    """A +20% contrast change saturating more than the merged tenth (s, t at the ends) is, after the pixel path,
    the film's own input with equalised values below s set to s/2 and above 1 - t to 1 - t/2 (resize aside)."""
    from evaluation.safety_imaging_cases import change_contrast
    from models.imaging.pixels import IMAGE_MEAN, IMAGE_STD, model_input
    from training.train_imaging import saturate

    film = np.clip((_gradient_film(0.0, 0.75) - 0.5) * 1.25 + 0.5, 0, 1).astype(np.float32)
    before, after = model_input(film, 64), model_input(change_contrast(film, 0.2), 64)
    s, t = float((film < 0.5 - 0.5 / 1.2).mean()), float((film > 0.5 + 0.5 / 1.2).mean())
    assert 0.1 < s < 0.3 and 0.1 < t < 0.3, (s, t)
    cfg = load_imaging_config(overrides={"saturation_jitter": 0.3, "saturation_probability": 1.0})
    drawn = saturate(torch.from_numpy(before[None]), cfg, torch.Generator().manual_seed(0))
    assert not torch.allclose(drawn, torch.from_numpy(before[None]))  # it changes the input
    display = before * IMAGE_STD + IMAGE_MEAN
    emulated = np.where(display < s, s / 2, display)
    emulated = (np.where(emulated > 1 - t, 1 - t / 2, emulated) - IMAGE_MEAN) / IMAGE_STD
    assert np.abs(before - after).mean() > 0.01
    assert np.abs(emulated - after).mean() < 0.35 * np.abs(before - after).mean()
    black = torch.full((1, 1, 8, 8), -IMAGE_MEAN / IMAGE_STD)
    assert torch.equal(saturate(black, cfg, torch.Generator().manual_seed(0)), black)  # padding stays black


def test_saved_weights_rebuild_the_same_module_and_take_other_saturation_settings(tmp_path):
    from models.imaging.net import CalibratedChestXray, ChestXrayNet
    from training.train_imaging import TrainedImagingModel, load_imaging_weights, save_imaging_weights

    torch.manual_seed(0)
    config = load_imaging_config(overrides={"image_size": 64, "saturation_average": 0.2})
    net = ChestXrayNet().eval()
    with torch.no_grad():  # make the untrained BatchNorm statistics input-dependent, as after training
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 2.0)
                module.running_mean.uniform_(-0.5, 0.5)
    module = CalibratedChestXray(net, [1.1] * 7, 64, tails=(0.0, 0.1, 0.2)).eval()
    trained = TrainedImagingModel(module, [1.1] * 7, {"pneumonia": 0.4}, {})
    path = save_imaging_weights(trained, config, tmp_path / "w.pt")
    rebuilt, record = load_imaging_weights(path)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x)[0], module(x)[0])
        assert rebuilt.tails == (0.0, 0.1, 0.2) and record["thresholds"] == {"pneumonia": 0.4}
        single, _ = load_imaging_weights(path, tails=(0.0,))
        assert single.tails == (0.0,)


def test_saved_weights_with_a_bad_config_are_a_config_error_naming_the_key(tmp_path):
    from models.errors import ConfigError
    from training.train_imaging import load_imaging_weights

    path = tmp_path / "cxr_weights.pt"
    torch.save({"config": {"epochs": -1}, "findings": [], "state_dict": {}, "temperatures": []}, path)
    with pytest.raises(ConfigError, match=r"config key 'epochs' must be in \[1, 500\]; got -1"):
        load_imaging_weights(path)
