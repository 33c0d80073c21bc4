"""The chest X-ray network: torchvision MobileNetV3-Small (weights=None) with a multi-label head, and the
exported module that returns calibrated probabilities and class-activation heat maps in one forward pass.

The classifier is a single linear layer over globally average-pooled features, so the class-activation
map (Zhou et al. 2016) is exact: for finding k, ``CAM_k = sum_c w_kc * F_c``, computed inside the graph
(forward only, no gradients), rectified, scaled to [0, 1] per image and upsampled to the input size.
MobileNetV3-Small was chosen over ResNet-18 because it trains in minutes on 2 CPU cores at 128 px
(about 5 ms per image per step, measured, against 28-56 ms for ResNet-18 at 96-128 px).

Orientation: with ``dihedral=True`` (the default, config key ``dihedral_invariance``) the exported module reads the
image in all eight orientations of the square (rotations by 0, 90, 180 and 270 degrees, each with and without a
left-right flip) in one batch, averages the eight logits and maps each view's heat map back to the input's
orientation before averaging them. An upside-down, rotated or mirrored film therefore gets the same probabilities
as the film the right way up (exactly, up to float rounding and the one-pixel asymmetry of odd padding), and its
heat map points at the same anatomy. No simple pixel statistic told up from down reliably on the real data (the
bottom-minus-top brightness of NIH and Kermany films spans -0.26 to +0.74), so such films are not refused; the
network is trained with random orientations (``training.train_imaging.augment``) so that each view is read well.
Inference costs eight forward passes (still about 1 ms per image at 128 px on one core).

Display window: with ``saturation_tails`` (config key ``saturation_average``) the module also reads each image with
its brightest fraction ``t`` merged into one grey level, for each ``t`` in the tails (0 = the image as it is), and
averages those members too (:func:`emulate_saturation`, the same emulation as the training augmentation). A window
or contrast change that saturates the brightest fraction ``u`` of a film changes only the members with ``t < u``:
the members above it already merged those pixels, so the average moves by a fraction of what one reading would
(docs/clinical_safety.md has the measurements). Each member costs the eight orientations again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from models.imaging.pixels import IMAGE_MEAN, IMAGE_STD
from models.labels import IMAGING_FINDINGS


class ChestXrayNet(nn.Module):
    """Single-channel MobileNetV3-Small trunk + linear multi-label head; returns (logits, feature maps)."""

    def __init__(self, n_findings: int = len(IMAGING_FINDINGS), dropout: float = 0.2) -> None:
        super().__init__()
        base = torchvision.models.mobilenet_v3_small(weights=None)
        stem = base.features[0][0]
        base.features[0][0] = nn.Conv2d(1, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False)
        self.features = base.features
        # torchvision builds MobileNetV3 with BatchNorm momentum 0.01 (tuned for ImageNet-length training); over a
        # few hundred steps the running statistics barely move and eval-mode outputs are meaningless (validation
        # AUROC ~0.57 vs 0.98 after one epoch with 0.1, measured on Kermany).
        for module in self.features.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        channels = base.classifier[0].in_features
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, n_findings)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.features(image)
        pooled = maps.mean(dim=(2, 3))
        return self.head(self.dropout(pooled)), maps


#: The eight symmetries of the square as (quarter turns, then a left-right flip or not).
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, flip) for k in range(4) for flip in (False, True))


def orient(image: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """Rotate ``[..., H, W]`` by ``turns`` quarter turns (counter-clockwise), then flip left-right if ``flip``."""
    out = torch.rot90(image, turns, dims=(-2, -1)) if turns % 4 else image
    return torch.flip(out, dims=(-1,)) if flip else out


def unorient(image: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """The inverse of :func:`orient`."""
    out = torch.flip(image, dims=(-1,)) if flip else image
    return torch.rot90(out, -turns, dims=(-2, -1)) if turns % 4 else out


#: Display values at or below this are padding (the pixel path pads with black): never saturated.
PADDING_DISPLAY = 1e-3


def emulate_saturation(image: torch.Tensor, dark: torch.Tensor | float, bright: torch.Tensor | float) -> torch.Tensor:
    """What a display window that saturates the darkest fraction ``dark`` and the brightest ``bright`` of a film does
    to the model input (normalised values in, normalised values out).

    After the pixel path's mid-rank histogram equalisation (:mod:`models.imaging.pixels`) that is exactly: display
    values below ``dark`` become ``dark / 2`` and those above ``1 - bright`` become ``1 - bright / 2``; every other
    pixel, and the black padding, is unchanged. ``dark``/``bright`` are floats or tensors broadcastable to the image.
    """
    display = (image * IMAGE_STD + IMAGE_MEAN).clamp(0.0, 1.0)
    out = torch.where(display < dark, dark / 2, display) if not isinstance(dark, float) or dark > 0 else display
    if not isinstance(bright, float) or bright > 0:
        out = torch.where(out > 1 - bright, 1 - bright / 2, out)
    out = torch.where(display <= PADDING_DISPLAY, display, out)
    return (out - IMAGE_MEAN) / IMAGE_STD


def saturation_tails(largest: float) -> tuple[float, ...]:
    """The averaged members for config ``saturation_average``: 0, 0.1, 0.2, ... up to ``largest`` (0: just 0)."""
    steps = round(largest * 10)
    return tuple(round(i / 10, 1) for i in range(steps + 1))


def readings_per_image(dihedral: bool, tails: tuple[float, ...]) -> int:
    """How many times :func:`read_views` passes each image through the network (orientations x saturations)."""
    return (len(DIHEDRAL) if dihedral else 1) * len(tails)


def read_views(
    net: ChestXrayNet, image: torch.Tensor, dihedral: bool, tails: tuple[float, ...] = (0.0,)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, K]`` and rectified class-activation maps ``[N, K, h, w]``, averaged over the eight orientations
    of :data:`DIHEDRAL` (each map turned back to the input's orientation) when ``dihedral``, else of the image, and
    over the image with its brightest fraction ``t`` saturated for each ``t`` in ``tails``
    (:func:`emulate_saturation`; 0 = as it is).

    Every reading goes through the network in one batch, ordered orientation-major, then saturation, then image,
    so that the exported graph has one operation per orientation and per saturation, not one per pair.
    """
    views = DIHEDRAL if dihedral else ((0, False),)
    saturated = [image if t == 0 else emulate_saturation(image, 0.0, t) for t in tails]
    block = torch.cat(saturated) if len(saturated) > 1 else saturated[0]  # [T*N, 1, H, W]
    batch = torch.cat([orient(block, k, flip) for k, flip in views]) if len(views) > 1 else orient(block, *views[0])
    logits, maps = net(batch)
    cams = F.relu(torch.einsum("kc,bchw->bkhw", net.head.weight, maps))
    n_views, n_tails, n_findings = len(views), len(tails), logits.shape[1]
    logit_mean = logits.reshape(n_views * n_tails, -1, n_findings).mean(dim=0)
    m = block.shape[0]
    cam_sum = unorient(cams[0:m], *views[0])
    for i, (k, flip) in enumerate(views[1:], start=1):
        cam_sum = cam_sum + unorient(cams[i * m : (i + 1) * m], k, flip)
    cam_mean = cam_sum.reshape(n_tails, -1, *cam_sum.shape[1:]).mean(dim=0) / n_views
    return logit_mean, cam_mean


#: The least class-activation peak a heat map is scaled by (activations are unbounded ReLU outputs; real films'
#: peaks were not measured against it: a peak below it shows as a faint map, which is what it is).
HEATMAP_PEAK_FLOOR = 1e-2


class CalibratedChestXray(nn.Module):
    """Temperature-scaled probabilities and per-finding heat maps: the module exported to ONNX."""

    temperatures: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(
        self,
        net: ChestXrayNet,
        temperatures: list[float],
        image_size: int,
        *,
        dihedral: bool = True,
        tails: tuple[float, ...] = (0.0,),
    ) -> None:
        super().__init__()
        self.net = net
        self.image_size = image_size
        self.dihedral = dihedral
        self.tails = tuple(tails)
        self.register_buffer("temperatures", torch.tensor([float(t) for t in temperatures]))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, cam = read_views(self.net, image, self.dihedral, self.tails)
        probabilities = torch.sigmoid(logits / self.temperatures)
        # Each map is scaled to its own peak, but never by less than HEATMAP_PEAK_FLOOR: a finding whose
        # activation is (almost) zero everywhere has no map to show, and dividing by a peak near zero turned
        # float rounding into a full-scale map (torch and onnxruntime then disagreed by 1.5e-4 on a small model).
        peak = cam.amax(dim=(2, 3), keepdim=True).clamp(min=HEATMAP_PEAK_FLOOR)
        cam = cam / peak
        heatmaps = F.interpolate(cam, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return probabilities, heatmaps
