"""A stand-in for ChestXrayNet in graph-level tests (an untrained MobileNetV3 at 32 px gives the same logits for
every input, so it cannot show that an input change moves the output)."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """ChestXrayNet's interface (``(logits, feature maps)``, a linear ``head``) with one strided convolution: an
    input-sensitive, orientation-sensitive stand-in that runs in milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 5, stride=4, padding=2), nn.ReLU())
        self.head = nn.Linear(8, 7)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.features(image)
        return self.head(maps.mean(dim=(2, 3))), maps
