"""Tiny, learnable stand-ins for MNIST, CIFAR-10 and CIFAR-100, written in the real on-disk formats.

The files have the layouts that torchvision's dataset classes (and the datasets' own
instructions) read, so `load_dataset("mnist" | "cifar10" | "cifar100", data_dir=root)` runs
its real loading code on them:

- MNIST: `root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`, big-endian idx files
  (magic 0x0803 with dims N, 28, 28 for images; 0x0801 with N for labels), optionally gzipped
  as `*.gz` the way they are distributed.
- CIFAR-10: `root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`;
  CIFAR-100: `root/cifar-100-python/{train,test,meta}`. Protocol-2 pickles of dicts whose keys
  and strings are Python 2 `str`, as in the released files: they unpickle to `str` under
  torchvision's `encoding="latin1"` and to `bytes` (`b"data"`, `b"labels"`) under the
  `encoding="bytes"` of the datasets' home page. `data` is a uint8 array (N, 3072) of
  channel-major 32x32 RGB images; `labels` (CIFAR-10) or `fine_labels`/`coarse_labels`
  (CIFAR-100) are lists of ints.

Each class is a fixed random smooth pattern (a coarse 4x4 grid, bilinearly upsampled) and each
image is its class pattern with a random gain, offset and pixel noise, so a small network fits
them in a few hundred steps and the paper's augmentations (5 degree rotations, shifts of a few
pixels, and for CIFAR horizontal flips: the CIFAR patterns are mirror-symmetric) keep them
recognisable. Labels are balanced: every class appears when N is at least the number of classes.
The same `seed` writes the same files.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

CIFAR10_LABEL_NAMES = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())
CIFAR100_FINE_LABEL_NAMES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
    crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard
    lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom
    oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
    possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
    spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor
    train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)
CIFAR100_COARSE_LABEL_NAMES = tuple(
    """aquatic_mammals fish flowers food_containers fruit_and_vegetables
    household_electrical_devices household_furniture insects large_carnivores
    large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores
    medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
    vehicles_2""".split()
)
# The released fine-to-coarse assignment, indexed by fine label.
CIFAR100_COARSE_OF_FINE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_TRAIN_BATCHES = 5

PATTERN_GRID = 4  # each class pattern is a PATTERN_GRID x PATTERN_GRID grid, upsampled
NOISE_STD = 0.08  # per-pixel Gaussian noise, in [0, 1] intensity units


def write_fake_mnist(
    root: str | Path,
    n_train: int = 600,
    n_test: int = 100,
    seed: int = 0,
    compressed: bool = False,
) -> Path:
    """Write a fake MNIST of `n_train`/`n_test` 28x28 grey images to `root/MNIST/raw`.

    With `compressed`, only the `.gz` files are written, as distributed; otherwise the extracted
    files, as torchvision leaves them after downloading. Returns `root`, the directory to pass as
    `data_dir`.
    """
    _check_sizes(n_train, n_test)
    root = Path(root)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    patterns = _class_patterns(rng, num_classes=10, channels=1, size=28, mirror=False)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = _balanced_labels(rng, n, 10)
        images = _noisy_images(rng, patterns, labels)[:, 0]  # (N, 28, 28) uint8
        _write_bytes(raw / f"{prefix}-images-idx3-ubyte", _idx_bytes(images), compressed)
        _write_bytes(raw / f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels), compressed)
    logger.debug("wrote a fake MNIST (%d/%d images) to %s", n_train, n_test, raw)
    return root


def write_fake_cifar10(
    root: str | Path, n_train: int = 500, n_test: int = 100, seed: int = 0
) -> Path:
    """Write a fake CIFAR-10 of `n_train`/`n_test` 32x32 RGB images to `root/cifar-10-batches-py`.

    The training images are split over `data_batch_1`..`data_batch_5` as in the release.
    Returns `root`, the directory to pass as `data_dir`.
    """
    _check_sizes(n_train, n_test)
    root = Path(root)
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    patterns = _class_patterns(rng, num_classes=10, channels=3, size=32, mirror=True)
    train_labels = _balanced_labels(rng, n_train, 10)
    train_images = _noisy_images(rng, patterns, train_labels)
    parts = np.array_split(np.arange(n_train), CIFAR10_TRAIN_BATCHES)
    for number, part in enumerate(parts, start=1):
        batch = _cifar_batch(
            f"training batch {number} of {CIFAR10_TRAIN_BATCHES}",
            train_images[part],
            {"labels": train_labels[part]},
            first_index=int(part[0]) if len(part) else 0,
        )
        _write_python2_pickle(folder / f"data_batch_{number}", batch)

    test_labels = _balanced_labels(rng, n_test, 10)
    test_batch = _cifar_batch(
        "testing batch 1 of 1", _noisy_images(rng, patterns, test_labels), {"labels": test_labels}
    )
    _write_python2_pickle(folder / "test_batch", test_batch)
    meta = {
        _Py2Str(b"num_cases_per_batch"): len(parts[0]),
        _Py2Str(b"label_names"): [_py2(name) for name in CIFAR10_LABEL_NAMES],
        _Py2Str(b"num_vis"): 3 * 32 * 32,
    }
    _write_python2_pickle(folder / "batches.meta", meta)
    logger.debug("wrote a fake CIFAR-10 (%d/%d images) to %s", n_train, n_test, folder)
    return root


def write_fake_cifar100(
    root: str | Path, n_train: int = 1000, n_test: int = 200, seed: int = 0
) -> Path:
    """Write a fake CIFAR-100 of `n_train`/`n_test` 32x32 RGB images to `root/cifar-100-python`.

    Fine labels are balanced over the 100 classes; coarse labels follow the release's
    fine-to-coarse assignment. Returns `root`, the directory to pass as `data_dir`.
    """
    _check_sizes(n_train, n_test)
    root = Path(root)
    folder = root / CIFAR100_FOLDER
    folder.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    patterns = _class_patterns(rng, num_classes=100, channels=3, size=32, mirror=True)
    coarse_of_fine = np.array(CIFAR100_COARSE_OF_FINE)
    for file_name, batch_label, n in (
        ("train", "training batch 1 of 1", n_train),
        ("test", "testing batch 1 of 1", n_test),
    ):
        fine = _balanced_labels(rng, n, 100)
        labels = {"fine_labels": fine, "coarse_labels": coarse_of_fine[fine]}
        batch = _cifar_batch(batch_label, _noisy_images(rng, patterns, fine), labels)
        _write_python2_pickle(folder / file_name, batch)

    meta = {
        _Py2Str(b"fine_label_names"): [_py2(name) for name in CIFAR100_FINE_LABEL_NAMES],
        _Py2Str(b"coarse_label_names"): [_py2(name) for name in CIFAR100_COARSE_LABEL_NAMES],
    }
    _write_python2_pickle(folder / "meta", meta)
    logger.debug("wrote a fake CIFAR-100 (%d/%d images) to %s", n_train, n_test, folder)
    return root


def _check_sizes(n_train: int, n_test: int) -> None:
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if value < 1:
            raise ValueError(f"{name} must be a positive number of images, got {value}")


def _class_patterns(
    rng: np.random.Generator, num_classes: int, channels: int, size: int, mirror: bool
) -> np.ndarray:
    """One smooth pattern per class: float32 (num_classes, channels, size, size) in [0, 1].

    With `mirror`, each pattern is left-right symmetric, so a horizontal flip keeps its class.
    """
    grid = rng.random((num_classes, channels, PATTERN_GRID, PATTERN_GRID), dtype=np.float32)
    if mirror:
        half = grid[..., : PATTERN_GRID // 2]
        grid = np.concatenate([half, half[..., ::-1]], axis=-1)
    patterns = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(grid)),
        size=(size, size),
        mode="bilinear",
        align_corners=False,
    )
    return patterns.numpy()


def _balanced_labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    """int64 (n,): the classes in turn, shuffled, so that counts differ by at most one."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def _noisy_images(rng: np.random.Generator, patterns: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W): each label's pattern with a random gain and offset, plus pixel noise."""
    n = len(labels)
    gain = rng.uniform(0.8, 1.0, (n, 1, 1, 1))
    offset = rng.uniform(-0.05, 0.05, (n, 1, 1, 1))
    noise = rng.normal(0.0, NOISE_STD, (n, *patterns.shape[1:]))
    images = patterns[labels] * gain + offset + noise
    return np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)


def _idx_bytes(array: np.ndarray) -> bytes:
    """`array` (uint8, 1 to 3 dims) in the big-endian idx format of the MNIST files."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = (0x08 << 8) | array.ndim  # 0x08: unsigned byte
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return header + array.tobytes()


def _write_bytes(path: Path, data: bytes, compressed: bool) -> None:
    if compressed:
        # mtime=0 keeps the bytes identical for the same seed.
        with gzip.GzipFile(path.with_name(path.name + ".gz"), "wb", mtime=0) as out:
            out.write(data)
    else:
        path.write_bytes(data)


def _cifar_batch(
    batch_label: str, images: np.ndarray, labels: dict[str, np.ndarray], first_index: int = 0
) -> dict[_Py2Str, Any]:
    """A CIFAR batch dict: `data` uint8 (N, 3072), channel-major rows; label lists; filenames."""
    n = len(images)
    batch: dict[_Py2Str, Any] = {
        _Py2Str(b"batch_label"): _py2(batch_label),
        _Py2Str(b"data"): np.ascontiguousarray(images.reshape(n, -1), dtype=np.uint8),
        _Py2Str(b"filenames"): [_py2(f"fake_{first_index + i:06d}.png") for i in range(n)],
    }
    for key, values in labels.items():
        batch[_py2(key)] = [int(v) for v in values]
    return batch


class _Py2Str(bytes):
    """A Python 2 `str`: pickled as (SHORT_)BINSTRING, as in the released CIFAR pickles."""


def _py2(text: str) -> _Py2Str:
    return _Py2Str(text.encode("latin1"))


class _Python2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table is open
    """Protocol-2 pickles as Python 2's cPickle wrote the CIFAR files.

    `_Py2Str` is written as a Python 2 `str`, and numpy arrays name their reconstructor
    `numpy.core.multiarray._reconstruct`, which every numpy version since can unpickle.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: _Py2Str) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + bytes(obj))
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + bytes(obj))

    def save_ndarray(self, obj: np.ndarray) -> None:
        # ndarray.__reduce__: (_reconstruct, (ndarray, (0,), b"b"), (1, shape, dtype, fortran, raw))
        _, (cls, shape, typecode), (version, dims, dtype, fortran, raw) = obj.__reduce__()
        self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
        self.save((cls, shape, _Py2Str(typecode)))
        self.write(pickle.REDUCE)
        self.save((version, dims, dtype, fortran, _Py2Str(raw)))
        self.write(pickle.BUILD)

    dispatch[_Py2Str] = save_py2_str
    dispatch[np.ndarray] = save_ndarray


def _write_python2_pickle(path: Path, obj: Any) -> None:
    with open(path, "wb") as out:
        _Python2Pickler(out, protocol=2).dump(obj)
