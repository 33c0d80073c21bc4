"""The chest X-ray graph's average over emulated display saturations (models/imaging/net.py): which members a
window change leaves untouched, and that the exported graph computes the same average. A small untrained network
at 32 px: the properties hold by construction, whatever the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.errors import ConfigError
from models.imaging.net import CalibratedChestXray, emulate_saturation, read_views, saturation_tails
from models.imaging.pixels import IMAGE_MEAN, IMAGE_STD
from tests.models.tiny_cxr import TinyNet
from training.config import load_imaging_config

SIZE = 32


def _film(seed: int = 0) -> torch.Tensor:
    """Two normalised 'equalised' films: display values uniform in (0, 1), with a black padding border."""
    g = torch.Generator().manual_seed(seed)
    display = torch.rand(2, 1, SIZE, SIZE, generator=g) * 0.99 + 0.005
    display[..., :3] = 0.0
    return (display - IMAGE_MEAN) / IMAGE_STD


def test_members_are_zero_to_the_largest_in_tenths() -> None:
    assert saturation_tails(0.4) == (0.0, 0.1, 0.2, 0.3, 0.4)
    assert saturation_tails(0.0) == (0.0,)


def test_emulation_merges_the_brightest_fraction_and_keeps_padding_and_the_rest() -> None:
    x = _film()
    display = x * IMAGE_STD + IMAGE_MEAN
    out = emulate_saturation(x, 0.0, 0.2) * IMAGE_STD + IMAGE_MEAN
    bright = display > 0.8
    torch.testing.assert_close(out[bright], torch.full_like(out[bright], 0.9))
    torch.testing.assert_close(out[~bright], display[~bright])
    assert torch.equal(out[..., :3], display[..., :3])  # black padding is never saturated
    assert bright.any() and (~bright & (display > 0.01)).any()


def test_a_window_change_leaves_the_members_at_or_above_its_saturation_untouched() -> None:
    x = _film(1)
    windowed = emulate_saturation(x, 0.0, 0.2)  # a window change that saturates the brightest fifth
    for t in (0.2, 0.3, 0.4):
        torch.testing.assert_close(
            emulate_saturation(windowed, 0.0, t), emulate_saturation(x, 0.0, t), atol=1e-6, rtol=0
        )
    # so the averaged reading moves by the members below 0.2 only, each weighted a fifth
    torch.manual_seed(0)
    net = TinyNet().eval()
    tails = saturation_tails(0.4)
    with torch.no_grad():
        moved = read_views(net, windowed, False, tails)[0] - read_views(net, x, False, tails)[0]
        by_member = [read_views(net, windowed, False, (t,))[0] - read_views(net, x, False, (t,))[0] for t in tails]
    torch.testing.assert_close(moved, (by_member[0] + by_member[1]) / len(tails), atol=1e-5, rtol=0)
    assert all(float(d.abs().max()) < 1e-5 for d in by_member[2:])
    assert float(by_member[0].abs().max()) > 1e-4  # the single reading does move (the test could fail)


def test_exported_graph_averages_the_same_members(tmp_path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = CalibratedChestXray(TinyNet(), [1.2] * 7, SIZE, dihedral=False, tails=(0.0, 0.1, 0.2)).eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(2, 1, SIZE, SIZE),),
        str(path),
        dynamo=True,
        external_data=False,
        input_names=["image"],
        output_names=["probabilities", "heatmaps"],
        dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=64)}},
    )
    x = _film(2)
    with torch.no_grad():
        expected = model(x)[0].numpy()
        single = CalibratedChestXray(model.net, [1.2] * 7, SIZE, dihedral=False).eval()(x)[0].numpy()
    got = onnxruntime.InferenceSession(str(path)).run(["probabilities"], {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.abs(expected - single).max() > 1e-4  # the average is not the single reading


@pytest.mark.parametrize("value", [0.25, 0.6, -0.1])
def test_config_refuses_a_largest_saturation_off_the_tenths(value: float) -> None:
    with pytest.raises(ConfigError, match="saturation_average"):
        load_imaging_config(overrides={"saturation_average": value})
