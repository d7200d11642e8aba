"""An endless, seeded stream of augmented, normalised training batches drawn from tensors."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from llpf_core.data.augment import get_augmentation
from llpf_core.data.registry import ImageData


class BatchStream:
    """Shuffled mini-batches over `data`'s training split, epoch after epoch, on its device.

    Each epoch is a fresh permutation; a short last batch is dropped so that every batch has
    `batch_size` images (B, C, H, W) and labels (B,). The whole position (generator states, the
    current permutation, the cursor) round-trips through `state_dict`, so a resumed stage draws
    exactly the batches an uninterrupted one would have.
    """

    def __init__(self, data: ImageData, batch_size: int, seed: int, augment: bool = True) -> None:
        self.data = data
        self.batch_size = min(batch_size, len(data.train_y))
        self.augment = get_augmentation(data.augmentation if augment else "none")
        # The permutation is drawn on the CPU (cheap, and identical on every device); the
        # augmentation's random numbers are drawn where the images are.
        self.order_generator = torch.Generator().manual_seed(seed)
        self.augment_generator = torch.Generator(device=data.device).manual_seed(seed + 1)
        self.order = self._new_order()
        self.cursor = 0
        self.epochs_started = 1

    @property
    def batches_per_epoch(self) -> int:
        return len(self.data.train_y) // self.batch_size

    def _new_order(self) -> Tensor:
        order = torch.randperm(len(self.data.train_y), generator=self.order_generator)
        return order.to(self.data.device)

    def next(self) -> tuple[Tensor, Tensor]:
        """The next batch: normalised, augmented images (B, C, H, W) and labels (B,)."""
        if self.cursor + self.batch_size > len(self.order):
            self.order = self._new_order()
            self.cursor = 0
            self.epochs_started += 1
        index = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        images = self.augment(self.data.train_x[index], self.augment_generator)
        return self.data.normalize(images), self.data.train_y[index]

    def state_dict(self) -> dict[str, Any]:
        return {
            "order_generator": self.order_generator.get_state(),
            "augment_generator": self.augment_generator.get_state(),
            "order": self.order.cpu(),
            "cursor": self.cursor,
            "epochs_started": self.epochs_started,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order_generator.set_state(state["order_generator"])
        self.augment_generator.set_state(state["augment_generator"])
        self.order = state["order"].to(self.data.device)
        self.cursor = int(state["cursor"])
        self.epochs_started = int(state["epochs_started"])
