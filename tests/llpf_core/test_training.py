"""The rolling stop rule of Train^r and its failure on a non-finite loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llpf_core.data.batches import BatchStream
from llpf_core.data.registry import ImageData
from llpf_core.errors import NonFiniteLossError
from llpf_core.settings import TrainRoundSettings
from llpf_core.training import RollingLoss, sgd_for, train_rounds


def _data(count: int = 64) -> ImageData:
    generator = torch.Generator().manual_seed(0)
    return ImageData(
        name="tiny",
        train_x=torch.rand(count, 1, 4, 4, generator=generator),
        train_y=torch.randint(0, 3, (count,), generator=generator),
        test_x=torch.rand(8, 1, 4, 4, generator=generator),
        test_y=torch.zeros(8, dtype=torch.long),
        num_classes=3,
        augmentation="none",
        mean=(0.5,),
        std=(0.25,),
    )


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def test_rolling_loss_is_the_mean_of_the_last_window_losses():
    rolling = RollingLoss(window=3)
    assert math.isinf(rolling.mean())
    for value in (9.0, 1.0, 2.0, 3.0):
        rolling.append(torch.tensor(value))
    assert rolling.mean() == pytest.approx(2.0)  # 9 fell out of the window


def test_rolling_loss_state_round_trips():
    rolling = RollingLoss(window=2)
    rolling.append(torch.tensor(1.0))
    rolling.append(torch.tensor(3.0))
    restored = RollingLoss(window=5)
    restored.load_state_dict(rolling.state_dict(), torch.device("cpu"))
    assert restored.mean() == pytest.approx(2.0)
    assert restored.losses.maxlen == 2


def _run(settings: TrainRoundSettings, rolling: RollingLoss | None = None) -> tuple[int, float]:
    model, data = _model(), _data()
    optimizer = sgd_for(model.parameters(), settings)
    batches = BatchStream(data, settings.batch_size, seed=0, augment=False)
    return train_rounds(
        model, optimizer, batches, rolling or RollingLoss(settings.rolling_window), settings, "test"
    )


def test_without_threshold_it_trains_exactly_max_rounds():
    rounds, loss = _run(TrainRoundSettings(loss_threshold=None, max_rounds=5, batch_size=8))
    assert rounds == 5
    assert math.isfinite(loss)


def test_a_reachable_threshold_stops_after_min_rounds():
    settings = TrainRoundSettings(loss_threshold=100.0, max_rounds=50, min_rounds=3, batch_size=8)
    assert _run(settings)[0] == 3


def test_an_unreachable_threshold_stops_at_max_rounds():
    settings = TrainRoundSettings(loss_threshold=1e-9, max_rounds=7, batch_size=8)
    assert _run(settings)[0] == 7


def test_the_window_carries_over_between_iterations():
    # A window full of low losses from earlier iterations lets the next one stop at once.
    rolling = RollingLoss(window=10)
    for _ in range(9):
        rolling.append(torch.tensor(0.0))
    settings = TrainRoundSettings(loss_threshold=0.5, max_rounds=50, batch_size=8)
    assert _run(settings, rolling)[0] == 1


def test_check_interval_reads_the_loss_only_every_k_batches():
    settings = TrainRoundSettings(
        loss_threshold=100.0, max_rounds=50, check_interval_steps=4, batch_size=8
    )
    assert _run(settings)[0] == 4


def test_non_finite_loss_raises():
    model, data = _model(), _data()
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    settings = TrainRoundSettings(max_rounds=2, batch_size=8)
    optimizer = sgd_for(model.parameters(), settings)
    batches = BatchStream(data, 8, seed=0, augment=False)
    with pytest.raises(NonFiniteLossError, match="nan"):
        train_rounds(model, optimizer, batches, RollingLoss(10), settings, "M2M iteration 1")


def test_path_finding_optimizer_is_plain_sgd_by_default():
    optimizer = sgd_for(_model().parameters(), TrainRoundSettings())
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["lr"]) == (0.0, 0.0, 1e-3)
