"""The chest X-ray network: torchvision MobileNetV3-Small (weights=None) with a multi-label head, and the
exported module that returns calibrated probabilities and class-activation heat maps in one forward pass.

The classifier is a single linear layer over globally average-pooled features, so the class-activation
map (Zhou et al. 2016) is exact: for finding k, ``CAM_k = sum_c w_kc * F_c``, computed inside the graph
(forward only, no gradients), rectified, scaled to [0, 1] per image and upsampled to the input size.
MobileNetV3-Small was chosen over ResNet-18 because it trains in minutes on 2 CPU cores at 128 px
(about 5 ms per image per step, measured, against 28-56 ms for ResNet-18 at 96-128 px).
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


class CalibratedChestXray(nn.Module):
    """Temperature-scaled probabilities and per-finding heat maps: the module exported to ONNX."""

    def __init__(self, net: ChestXrayNet, temperatures: list[float], image_size: int) -> None:
        super().__init__()
        self.net = net
        self.image_size = image_size
        self.register_buffer("temperatures", torch.tensor([float(t) for t in temperatures]))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, maps = self.net(image)
        probabilities = torch.sigmoid(logits / self.temperatures)
        cam = torch.einsum("kc,bchw->bkhw", self.net.head.weight, maps)
        cam = F.relu(cam)
        peak = cam.amax(dim=(2, 3), keepdim=True)
        cam = cam / (peak + 1e-6)
        heatmaps = F.interpolate(cam, size=(self.image_size, self.image_size), mode="bilinear",
                                 align_corners=False)
        return probabilities, heatmaps
