"""Training recipes (the paper's Table 4) and the training of one mode.

A recipe is named (`llpf models` shows each architecture's default) or given as a YAML/TOML file
with the fields of `llpf_core.settings.Recipe`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from llpf_core.data.batches import BatchStream
from llpf_core.data.registry import ImageData
from llpf_core.errors import NonFiniteLossError
from llpf_core.evaluation import Metrics, evaluate, recalibrate_norm_statistics
from llpf_core.path import preserved_buffers
from llpf_core.settings import Recipe, ScheduleSpec

logger = logging.getLogger(__name__)


def _sgd(
    name: str, lr: float, wd: float, epochs: int, batch: int, schedule: ScheduleSpec
) -> Recipe:
    return Recipe(
        name=name,
        optimizer="sgd",
        lr=lr,
        momentum=0.9,
        weight_decay=wd,
        epochs=epochs,
        batch_size=batch,
        schedule=schedule,
    )


def _cosine() -> ScheduleSpec:
    return ScheduleSpec(kind="cosine", min_lr=0.0)


def _onecycle(max_lr: float) -> ScheduleSpec:
    return ScheduleSpec(kind="onecycle", max_lr=max_lr)


def _cct(name: str, lr: float, wd: float) -> Recipe:
    return Recipe(
        name=name,
        optimizer="adamw",
        lr=lr,
        betas=(0.9, 0.999),
        weight_decay=wd,
        epochs=300,
        batch_size=128,
        schedule=ScheduleSpec(
            kind="cosine", min_lr=1e-5, warmup_lr=1e-5, warmup_epochs=10, cooldown_epochs=10
        ),
    )


_CONSTANT = ScheduleSpec(kind="constant")

# Table 4. "-sphere" rows train the second mode of a pair on another variance sphere (Figure 4,
# Figure 13); "-sharp" is Appendix A.9's sharp-minimum recipe. The digits rows are this project's
# embedded default: LeNet-5's MNIST recipe, with more epochs because the set is 30x smaller.
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        _sgd("lenet5-mnist", 0.01, 0.0, 20, 64, _CONSTANT),
        _sgd("lenet5-digits", 0.01, 0.0, 30, 64, _CONSTANT),
        _sgd("lenet5-digits-wd", 0.01, 5e-3, 30, 64, _CONSTANT),
        _sgd("resnet18-cifar10", 0.1, 5e-4, 30, 256, _onecycle(0.1)),
        _sgd("resnet18-cifar10-long", 0.1, 5e-4, 140, 256, _onecycle(0.1)),
        _sgd("resnet18-cifar10-sphere", 0.2, 1e-4, 30, 256, _onecycle(0.2)),
        _sgd("resnet18-cifar10-sharp", 0.1, 0.0, 30, 256, _CONSTANT),
        _sgd("resnet18-cifar100", 0.1, 5e-4, 50, 256, _onecycle(0.1)),
        _cct("cct7-cifar10", 55e-5, 6e-2),
        _cct("cct7-cifar10-sphere", 100e-5, 1e-2),
        _sgd(
            "mobilenet_v2-cifar10",
            0.1,
            4e-5,
            200,
            128,
            ScheduleSpec(kind="multistep", milestones=[100], gamma=0.1),
        ),
        _sgd("regnet_x_200mf-cifar10", 0.1, 1e-4, 120, 256, _cosine()),
        _sgd(
            "shufflenet_v2-cifar10",
            0.1,
            4e-5,
            300,
            256,
            ScheduleSpec(kind="multistep", milestones=[150, 225], gamma=0.1),
        ),
        _sgd("vgg11-cifar10", 0.1, 1e-4, 120, 256, _cosine()),
        _sgd("densenet-cifar10", 0.1, 1e-4, 120, 256, _cosine()),
        _sgd("efficientnet_b0-cifar10", 0.1, 1e-4, 120, 256, _cosine()),
        _sgd("dla-cifar10", 0.1, 1e-4, 120, 256, _cosine()),
        _sgd("dla-cifar10-sphere", 0.2, 5e-4, 120, 256, _cosine()),
        _sgd("dla-cifar100", 0.1, 1e-4, 120, 256, _cosine()),
    ]
}


def recipe_names() -> list[str]:
    return sorted(RECIPES)


def resolve_recipe(reference: str | Recipe) -> Recipe:
    """A recipe by name, or loaded from a `.yaml`/`.yml`/`.toml` file.

    Raises ValueError naming the valid recipe names if `reference` is neither.
    """
    if isinstance(reference, Recipe):
        return reference
    if reference in RECIPES:
        return RECIPES[reference]
    path = Path(reference).expanduser()
    if path.suffix.lower() in {".yaml", ".yml", ".toml"}:
        if not path.is_file():
            raise ValueError(f"recipe file {str(path)!r} does not exist")
        from llpf_core.config_files import read_mapping

        fields = read_mapping(path)
        fields.setdefault("name", path.stem)
        return Recipe.model_validate(fields)
    raise ValueError(
        f"unknown recipe {reference!r}; valid recipes: {', '.join(recipe_names())} "
        "(or a .yaml/.toml recipe file)"
    )


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    optimizer_class = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(
        params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's schedule, stepped once per batch."""
    spec = recipe.schedule
    total_steps = recipe.epochs * steps_per_epoch
    if spec.kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=spec.max_lr or recipe.lr, total_steps=total_steps
        )
    if spec.kind == "multistep":
        milestones = [m * steps_per_epoch for m in spec.milestones]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=spec.gamma)
    if spec.kind == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_factor(recipe, steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)


def _cosine_factor(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warm-up from `warmup_lr`, cosine decay to `min_lr`, then `min_lr` for the cool-down.

    The shape of the CCT authors' schedule (Table 4); factors are relative to `recipe.lr`.
    """
    spec = recipe.schedule
    warmup = spec.warmup_epochs * steps_per_epoch
    decay = max((recipe.epochs - spec.warmup_epochs - spec.cooldown_epochs) * steps_per_epoch, 1)
    warmup_lr = recipe.lr if spec.warmup_lr is None else spec.warmup_lr

    def factor(step: int) -> float:
        if step < warmup:
            lr = warmup_lr + (recipe.lr - warmup_lr) * step / warmup
        elif step < warmup + decay:
            progress = (step - warmup) / decay
            lr = spec.min_lr + 0.5 * (recipe.lr - spec.min_lr) * (1 + math.cos(math.pi * progress))
        else:
            lr = spec.min_lr
        return lr / recipe.lr

    return factor


@dataclass(frozen=True)
class ModeReport:
    """What training a mode produced: final metrics and per-layer weight statistics (Eq. 2, 5)."""

    train: Metrics
    test: Metrics
    layer_variance: dict[str, float]
    layer_mean: dict[str, float]
    steps: int
    wall_seconds: float


ProgressCallback = Callable[[int, int, float], None]


def train_mode(
    model: nn.Module,
    data: ImageData,
    recipe: Recipe,
    seed: int,
    progress: ProgressCallback | None = None,
    progress_interval_steps: int = 50,
    norm_recalibration_batches: int = 20,
) -> ModeReport:
    """Train `model` from its current initialisation into a mode with `recipe`, in place.

    `data` must already be on the model's device. `progress(step, total_steps, loss)` is called
    every `progress_interval_steps` batches. Raises NonFiniteLossError if training diverges.
    """
    started = time.perf_counter()
    batches = BatchStream(data, recipe.batch_size, seed=seed)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, batches.batches_per_epoch)
    total_steps = recipe.epochs * batches.batches_per_epoch
    criterion_smoothing = recipe.label_smoothing

    model.train()
    for step in range(1, total_steps + 1):
        images, labels = batches.next()
        loss = torch.nn.functional.cross_entropy(
            model(images), labels, label_smoothing=criterion_smoothing
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % progress_interval_steps == 0 or step == total_steps:
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(f"mode training step {step}", value)
            if progress is not None:
                progress(step, total_steps, value)

    # Evaluated like every path point (BatchNorm statistics re-estimated, the trained ones kept),
    # so that a mode's loss and the loss at the path's ends are the same number.
    with preserved_buffers(model):
        recalibrate_norm_statistics(model, data, norm_recalibration_batches)
        train = evaluate(model, data, data.train_x, data.train_y)
        test = evaluate(model, data, data.test_x, data.test_y)
    if not math.isfinite(train.loss):
        raise NonFiniteLossError("mode evaluation", train.loss)
    stats = {name: p.detach().float() for name, p in model.named_parameters()}
    return ModeReport(
        train=train,
        test=test,
        layer_variance={
            n: float(p.var(unbiased=False)) if p.numel() > 1 else 0.0 for n, p in stats.items()
        },
        layer_mean={n: float(p.mean()) for n, p in stats.items()},
        steps=total_steps,
        wall_seconds=time.perf_counter() - started,
    )
