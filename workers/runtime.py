"""What every stage does before its real work: pick a device, size threads, load data once."""

from __future__ import annotations

import functools
import logging
import random
from dataclasses import dataclass

import numpy as np
import torch

from llpf_core.data import ImageData, load_dataset
from llpf_core.errors import NonTransientError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where a stage runs: the device policy and the share of the machine Ray gave it."""

    device: str = "auto"  # "auto" | "cpu" | "cuda"
    num_cpus: float = 1.0
    num_gpus: float = 0.0


def choose_device(placement: Placement) -> torch.device:
    """The torch device for a stage; CPU fallback under "auto" when no GPU was assigned.

    Under a fractional GPU share the process's CUDA memory is capped to that share, so that
    several small stages can share one GPU without one starving the others.
    """
    if placement.device == "cpu" or (placement.device == "auto" and placement.num_gpus == 0):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if placement.device == "cuda":
            raise NonTransientError("device 'cuda' was requested but this worker has no CUDA GPU")
        logger.warning("no CUDA device visible to this worker; running on the CPU")
        return torch.device("cpu")
    device = torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU
    if 0 < placement.num_gpus < 1:
        torch.cuda.set_per_process_memory_fraction(placement.num_gpus, device)
    return device


def set_threads(placement: Placement) -> None:
    """Match torch's intra-op threads to the CPUs Ray reserved for the stage."""
    torch.set_num_threads(max(int(placement.num_cpus), 1))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@functools.lru_cache(maxsize=4)
def _cached_dataset(name: str, data_dir: str | None, download: bool) -> ImageData:
    return load_dataset(name, data_dir, download=download)


def dataset_on(name: str, data_dir: str | None, download: bool, device: torch.device) -> ImageData:
    """The dataset on `device`, loaded from disk once per worker process."""
    return _cached_dataset(name, data_dir, download).to(device)
