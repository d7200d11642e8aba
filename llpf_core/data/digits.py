"""scikit-learn's bundled handwritten digits: the embedded default dataset.

1,797 real 8x8 grey-scale images (values 0-16) ship inside scikit-learn, so the default job needs
no download. They are resized to 28x28 so that the MNIST LeNet-5 serves them unchanged, and split
80/20 with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llpf_core.data.registry import DatasetSpec, ImageData, register

TEST_SHARE = 0.2
SPLIT_SEED = 0  # fixed: every experiment on "digits" sees the same split
MEAN, STD = (0.3056,), (0.3247,)  # of the resized training images of the fixed split


def load_digits_28(
    _data_dir: Path | None = None, _download: bool = False, _seed: int = 0
) -> ImageData:
    """The digits as (N, 1, 28, 28) float32 in [0, 1], bilinearly resized, with a fixed split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    images = images.clamp_(0.0, 1.0)
    labels = torch.from_numpy(bunch.target.astype(np.int64))

    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = int(round(len(labels) * TEST_SHARE))
    test_idx, train_idx = order[:n_test], order[n_test:]
    return ImageData(
        name="digits",
        train_x=images[train_idx].contiguous(),
        train_y=labels[train_idx].contiguous(),
        test_x=images[test_idx].contiguous(),
        test_y=labels[test_idx].contiguous(),
        num_classes=10,
        augmentation="mnist",
        mean=MEAN,
        std=STD,
    )


register(
    DatasetSpec(
        name="digits",
        loader=load_digits_28,
        num_classes=10,
        input_shape=(1, 28, 28),
        needs_files=False,
        description="scikit-learn's 1,797 handwritten digits, resized to 28x28 (bundled)",
    )
)
