"""Orientation invariance of the chest X-ray network (eight dihedral views averaged) and the training augmentation
that goes with it. A small untrained network at 32 px: invariance holds by construction, whatever the weights."""

from __future__ import annotations

import pytest
import torch

from models.imaging.net import DIHEDRAL, CalibratedChestXray, ChestXrayNet, orient, unorient
from tests.models.tiny_cxr import TinyNet
from training.config import load_imaging_config
from training.train_imaging import augment

SIZE = 32


@pytest.fixture(scope="module")
def nets() -> tuple[CalibratedChestXray, CalibratedChestXray]:
    torch.manual_seed(0)
    net = TinyNet().eval()
    return (
        CalibratedChestXray(net, [1.3] * 7, SIZE).eval(),  # type: ignore[arg-type]
        CalibratedChestXray(net, [1.3] * 7, SIZE, dihedral=False).eval(),
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(("turns", "flip"), DIHEDRAL)
def test_orient_and_unorient_are_inverse(turns: int, flip: bool) -> None:
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(unorient(orient(x, turns, flip), turns, flip), x)


def test_the_eight_orientations_are_distinct() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert len({tuple(orient(x, k, f).flatten().tolist()) for k, f in DIHEDRAL}) == 8


def test_probabilities_do_not_depend_on_orientation(nets) -> None:
    invariant, plain = nets
    x = torch.randn(2, 1, SIZE, SIZE) + torch.linspace(-2.0, 2.0, SIZE)  # brighter to the right
    with torch.no_grad():
        p, maps = invariant(x)
        p_plain = plain(x)[0]
        for turns, flip in DIHEDRAL[1:]:
            p_turned, maps_turned = invariant(orient(x, turns, flip))
            torch.testing.assert_close(p_turned, p, atol=1e-5, rtol=0)
            # the heat map follows the anatomy: turned with the image
            torch.testing.assert_close(maps_turned, orient(maps, turns, flip), atol=1e-4, rtol=0)
            # the single-view network is not invariant (the test could fail)
            assert (plain(orient(x, turns, flip))[0] - p_plain).abs().max() > 1e-4


def test_the_real_network_is_invariant_too() -> None:
    torch.manual_seed(0)
    model = CalibratedChestXray(ChestXrayNet(7), [1.0] * 7, SIZE).eval()
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        p = model(x)[0]
        for turns, flip in ((2, False), (1, True)):
            torch.testing.assert_close(model(orient(x, turns, flip))[0], p, atol=1e-5, rtol=0)


def test_augment_is_seeded_and_draws_orientations() -> None:
    config = load_imaging_config(
        overrides={
            "rotate_degrees": 0.0,
            "scale_jitter": 0.0,
            "translate_fraction": 0.0,
            "intensity_jitter": 0.0,
            "gamma_jitter": 0.0,
            "saturation_jitter": 0.0,
        }
    )
    x = torch.randn(64, 1, 8, 8)
    a = augment(x, config, torch.Generator().manual_seed(1))
    assert torch.equal(a, augment(x, config, torch.Generator().manual_seed(1)))
    seen = set()
    for i in range(64):  # each image is exactly one of its eight orientations
        matches = [j for j, (k, f) in enumerate(DIHEDRAL) if torch.allclose(a[i], orient(x[i], k, f), atol=1e-5)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 8
    flips_only = load_imaging_config(
        overrides={
            **{
                k: getattr(config, k)
                for k in (
                    "rotate_degrees",
                    "scale_jitter",
                    "translate_fraction",
                    "intensity_jitter",
                    "gamma_jitter",
                    "saturation_jitter",
                )
            },
            "dihedral_invariance": False,
            "hflip_probability": 1.0,
        }
    )
    torch.testing.assert_close(augment(x, flips_only, torch.Generator().manual_seed(1)), torch.flip(x, dims=(-1,)))


def test_gamma_keeps_black_padding_black() -> None:
    config = load_imaging_config(
        overrides={
            "rotate_degrees": 0.0,
            "scale_jitter": 0.0,
            "translate_fraction": 0.0,
            "intensity_jitter": 0.0,
            "gamma_jitter": 0.5,
            "dihedral_invariance": False,
            "hflip_probability": 0.0,
        }
    )
    x = torch.full((4, 1, 8, 8), -2.0)  # black, normalised
    x[:, :, 2:6, 2:6] = 0.0  # mid-grey
    out = augment(x, config, torch.Generator().manual_seed(2))
    assert torch.equal(out[:, :, 0], x[:, :, 0]) and not torch.equal(out, x)
