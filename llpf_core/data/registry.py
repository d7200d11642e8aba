"""The dataset registry: names, their loaders, class counts and augmentation pipelines."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset name is unknown, or its files are missing or damaged."""


@dataclass(frozen=True)
class ImageData:
    """A classification dataset held as tensors.

    `train_x`/`test_x`: float32 (N, C, H, W) in [0, 1]; `train_y`/`test_y`: int64 (N,).
    `augmentation` names the training pipeline of `llpf_core.data.augment`; `mean`/`std` are the
    per-channel normalisation constants applied after it.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    augmentation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to(self, device: torch.device | str) -> ImageData:
        """The same data on `device`."""
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def normalize(self, images: Tensor) -> Tensor:
        """Per-channel `(x - mean) / std`; images (B, C, H, W)."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std


Loader = Callable[[Path | None, bool, int], ImageData]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how to load it and what it is."""

    name: str
    loader: Loader
    num_classes: int
    input_shape: tuple[int, int, int]
    needs_files: bool
    description: str


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


def dataset_names() -> list[str]:
    """All registered dataset names, sorted."""
    _register_builtins()
    return sorted(DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """The registered dataset called `name`; raises DatasetError naming the valid ones."""
    _register_builtins()
    if name not in DATASETS:
        raise DatasetError(
            f"unknown dataset {name!r}; valid datasets: {', '.join(sorted(DATASETS))}"
        )
    return DATASETS[name]


def load_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = False, seed: int = 0
) -> ImageData:
    """Load a registered dataset into CPU tensors.

    `data_dir` is where the on-disk files are; datasets shipped with a package ignore it. Nothing
    is downloaded unless `download` is set. `seed` fixes any split the loader has to make.
    Raises `DatasetError` naming the valid datasets, or what was expected where.
    """
    spec = dataset_spec(name)
    if spec.needs_files and data_dir is None:
        raise DatasetError(
            f"dataset {name!r} is read from disk: give its directory with --data-dir"
        )
    path = Path(data_dir).expanduser() if data_dir is not None else None
    data = spec.loader(path, download, seed)
    logger.info(
        "loaded %s: %d train / %d test images of shape %s",
        name,
        len(data.train_y),
        len(data.test_y),
        tuple(data.train_x.shape[1:]),
    )
    return data


def _register_builtins() -> None:
    # Imported lazily so that the registry module stays importable on its own.
    from llpf_core.data import digits  # noqa: F401

    try:
        from llpf_core.data import torchvision_sets  # noqa: F401
    except ImportError:  # pragma: no cover - the module is optional during development
        pass
