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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from models.labels import IMAGING_FINDINGS


class ChestXrayNet(nn.Module):
    """Single-channel MobileNetV3-Small trunk + linear multi-label head; returns (logits, feature maps)."""

    def __init__(self, n_findings: int = len(IMAGING_FINDINGS), dropout: float = 0.2) -> None:
        super().__init__()
        base = torchvision.models.mobilenet_v3_small(weights=None)
        stem = base.features[0][0]
        base.features[0][0] = nn.Conv2d(1, stem.out_channels, stem.kernel_size, stem.stride, stem.padding,
                                        bias=False)
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


def read_views(net: ChestXrayNet, image: torch.Tensor, dihedral: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, K]`` and rectified class-activation maps ``[N, K, h, w]``, averaged over the eight orientations
    of :data:`DIHEDRAL` (each map turned back to the input's orientation) when ``dihedral``, else of the image."""
    views = DIHEDRAL if dihedral else ((0, False),)
    batch = torch.cat([orient(image, k, flip) for k, flip in views]) if dihedral else image
    logits, maps = net(batch)
    cams = F.relu(torch.einsum("kc,bchw->bkhw", net.head.weight, maps))
    n = image.shape[0]
    logit_sum = logits[0:n]
    cam_sum = unorient(cams[0:n], *views[0])
    for i, (k, flip) in enumerate(views[1:], start=1):
        logit_sum = logit_sum + logits[i * n:(i + 1) * n]
        cam_sum = cam_sum + unorient(cams[i * n:(i + 1) * n], k, flip)
    return logit_sum / len(views), cam_sum / len(views)


#: The least class-activation peak a heat map is scaled by (activations are unbounded ReLU outputs; real films'
#: peaks were not measured against it: a peak below it shows as a faint map, which is what it is).
HEATMAP_PEAK_FLOOR = 1e-2


class CalibratedChestXray(nn.Module):
    """Temperature-scaled probabilities and per-finding heat maps: the module exported to ONNX."""

    def __init__(self, net: ChestXrayNet, temperatures: list[float], image_size: int, *, dihedral: bool = True) -> None:
        super().__init__()
        self.net = net
        self.image_size = image_size
        self.dihedral = dihedral
        self.register_buffer("temperatures", torch.tensor([float(t) for t in temperatures]))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, cam = read_views(self.net, image, self.dihedral)
        probabilities = torch.sigmoid(logits / self.temperatures)
        # Each map is scaled to its own peak, but never by less than HEATMAP_PEAK_FLOOR: a finding whose
        # activation is (almost) zero everywhere has no map to show, and dividing by a peak near zero turned
        # float rounding into a full-scale map (torch and onnxruntime then disagreed by 1.5e-4 on a small model).
        peak = cam.amax(dim=(2, 3), keepdim=True).clamp(min=HEATMAP_PEAK_FLOOR)
        cam = cam / peak
        heatmaps = F.interpolate(cam, size=(self.image_size, self.image_size), mode="bilinear",
                                 align_corners=False)
        return probabilities, heatmaps
