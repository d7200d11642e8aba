"""Datasets as device-resident tensors.

Path finding runs millions of short training bursts, so a stage loads its whole dataset once
into tensors on its device and draws augmented batches from them (`llpf_core.data.batches`); no
per-sample loader sits in the hot loop. Images are stored as float32 in [0, 1], shape
(N, C, H, W); normalisation is the last augmentation step, as in the paper's Table 5.
"""

from __future__ import annotations

from llpf_core.data.registry import (
    DATASETS,
    DatasetError,
    DatasetSpec,
    ImageData,
    dataset_names,
    dataset_spec,
    load_dataset,
)

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetSpec",
    "ImageData",
    "dataset_names",
    "dataset_spec",
    "load_dataset",
]
