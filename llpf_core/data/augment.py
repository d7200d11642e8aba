"""Whole-batch training augmentation on the batch's device (the paper's Table 5).

Each pipeline takes images (B, C, H, W) in [0, 1] and a `torch.Generator` on the same device,
and returns augmented images of the same shape, before normalisation. Random crops and flips are
gathers and `where`s over the whole batch; rotations are one `affine_grid`/`grid_sample`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Augmentation = Callable[[Tensor, torch.Generator], Tensor]


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad by `padding` and cut a random window of the original size from each image."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=images.device)
    rows = (dy.view(batch, 1) + torch.arange(height, device=images.device)).view(
        batch, 1, height, 1
    )
    cols = (dx.view(batch, 1) + torch.arange(width, device=images.device)).view(batch, 1, 1, width)
    channels = images.shape[1]
    rows = rows.expand(batch, channels, height, width + 2 * padding)
    picked_rows = padded.gather(2, rows)
    return picked_rows.gather(3, cols.expand(batch, channels, height, width))


def random_horizontal_flip(images: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability `p`."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def random_rotation(images: Tensor, degrees: float, generator: torch.Generator) -> Tensor:
    """Rotate each image by a uniform angle in [-degrees, degrees] about its centre."""
    batch = images.shape[0]
    angle = torch.rand(batch, generator=generator, device=images.device) * 2 - 1
    angle = angle * math.radians(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def mnist_augmentation(images: Tensor, generator: torch.Generator) -> Tensor:
    """Table 5, MNIST: random rotation of 5 degrees, random crop with padding 2."""
    return random_crop(random_rotation(images, 5.0, generator), 2, generator)


def cifar_augmentation(images: Tensor, generator: torch.Generator) -> Tensor:
    """Table 5, CIFAR-10/100: random crop with padding 4, horizontal flip with p=0.5."""
    return random_horizontal_flip(random_crop(images, 4, generator), generator)


def no_augmentation(images: Tensor, _generator: torch.Generator) -> Tensor:
    return images


AUGMENTATIONS: dict[str, Augmentation] = {
    "mnist": mnist_augmentation,
    "cifar": cifar_augmentation,
    "none": no_augmentation,
}


def get_augmentation(name: str) -> Augmentation:
    """The pipeline called `name`; raises ValueError naming the valid ones."""
    if name not in AUGMENTATIONS:
        raise ValueError(
            f"unknown augmentation {name!r}; valid: {', '.join(sorted(AUGMENTATIONS))}"
        )
    return AUGMENTATIONS[name]
