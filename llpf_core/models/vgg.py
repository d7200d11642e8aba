"""VGG-11 with batch normalisation for 32x32 CIFAR images (kuangliu/pytorch-cifar's `VGG('VGG11')`).

The paper (appendix A.11) takes VGG-11 from kuangliu's CIFAR re-implementations: torchvision's
configuration "A" feature extractor (eight 3x3 convolutions with bias, each followed by BatchNorm
and ReLU, five 2x2 max-poolings) and, since five poolings leave a 1x1x512 map of a 32x32 image,
one linear layer as the classifier instead of torchvision's three-layer 4096-wide head.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from llpf_core.models.registry import ArchSpec, register


class VGG11(nn.Module):
    """VGG-11-BN for 3x32x32 inputs: `features` (torchvision layout), then `classifier` (Linear)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = make_layers(cfgs["A"], batch_norm=True)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 512, 1, 1) for 32x32 inputs
        return self.classifier(torch.flatten(x, 1))


def vgg11(num_classes: int = 10) -> VGG11:
    """VGG-11 (Simonyan & Zisserman, 2015) with BatchNorm, as in kuangliu/pytorch-cifar.

    Parameter names are kuangliu's (`features.0.weight`, ..., `classifier.weight`); the trailing
    1x1 average pooling of that implementation is an identity and is left out. 9,231,114
    parameters for 10 classes: no source states a count; computed, and equal to the reference
    code's (same names and shapes).
    """
    return VGG11(num_classes=num_classes)


register(
    ArchSpec(
        name="vgg11",
        factory=vgg11,
        datasets=("cifar10", "cifar100"),
        recipes={"cifar10": "vgg11-cifar10", "cifar100": "vgg11-cifar10"},
        preset=None,
        description="VGG-11 with BatchNorm and a linear classifier (kuangliu/pytorch-cifar)",
    )
)
