"""LeNet-5 for 28x28 grey-scale images (LeCun et al., 1998), 61,706 parameters for 10 classes."""

from __future__ import annotations

import torch
from torch import nn

from llpf_core.models.registry import ArchSpec, register


class LeNet5(nn.Module):
    """Classic LeNet-5: two 5x5 convolutions with max-pooling, then three fully connected layers.

    Input (B, 1, 28, 28); the first convolution pads by 2 so that the 32x32 geometry of the
    original network is kept. Output logits (B, num_classes).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = torch.flatten(x, 1)

        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.fc3(x)


def lenet5(num_classes: int = 10) -> LeNet5:
    return LeNet5(num_classes=num_classes)


register(
    ArchSpec(
        name="lenet5",
        factory=lenet5,
        datasets=("digits", "mnist"),
        recipes={"mnist": "lenet5-mnist", "digits": "lenet5-digits"},
        preset="lenet5",
        description="LeNet-5 for 28x28 grey-scale digits",
        dataset_presets={"digits": "lenet5-digits"},
    )
)
