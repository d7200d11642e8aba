"""The `Train^r` step of Algorithms 1 and 2: a few SGD steps until the rolling loss is low."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llpf_core.data.batches import BatchStream
from llpf_core.errors import NonFiniteLossError
from llpf_core.settings import TrainRoundSettings


class RollingLoss:
    """Mean of the last `window` batch losses (Table 2, footnote b: window 10).

    Losses are kept as device tensors; only `mean()` reads one value back to the host.
    """

    def __init__(self, window: int) -> None:
        self.losses: deque[Tensor] = deque(maxlen=window)

    def append(self, loss: Tensor) -> None:
        self.losses.append(loss.detach())

    def mean_tensor(self) -> Tensor:
        return torch.stack(list(self.losses)).mean()

    def mean(self) -> float:
        return float(self.mean_tensor()) if self.losses else math.inf

    def state_dict(self) -> dict[str, Any]:
        return {"losses": [float(x) for x in self.losses], "window": self.losses.maxlen}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.losses = deque(
            (torch.tensor(x, device=device) for x in state["losses"]), maxlen=state["window"]
        )


def sgd_for(params: Iterable[Any], settings: TrainRoundSettings) -> torch.optim.SGD:
    """The path-finding optimizer: plain SGD unless momentum or weight decay are configured.

    The paper (section 4, Hyperparameters) avoids both: the variance sphere already bounds the
    weights, and the steps are small and local.
    """
    return torch.optim.SGD(
        params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[Tensor, Tensor]
) -> Tensor:
    """One optimisation step on `batch`; returns the batch's mean cross-entropy (0-d tensor)."""
    images, labels = batch
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_rounds(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: BatchStream,
    rolling: RollingLoss,
    settings: TrainRoundSettings,
    where: str,
) -> tuple[int, float]:
    """Train until the rolling loss is below the threshold or `max_rounds` is reached.

    Returns `(rounds, rolling_loss)`: the number of batches trained (the paper's r, at least
    `min_rounds`) and the rolling mean afterwards. The threshold is checked every
    `check_interval_steps` batches, which bounds the host synchronisations on a GPU. Raises
    `NonFiniteLossError` if the loss is NaN or infinite.
    """
    model.train()
    rounds = 0
    while True:
        rolling.append(train_step(model, optimizer, batches.next()))
        rounds += 1
        if rounds >= settings.max_rounds:
            break
        due = rounds >= settings.min_rounds and rounds % settings.check_interval_steps == 0
        if settings.loss_threshold is not None and due:
            if rolling.mean() < settings.loss_threshold:
                break

    loss = rolling.mean()
    if not math.isfinite(loss):
        raise NonFiniteLossError(where, loss)
    return rounds, loss
