"""MNIST, CIFAR-10 and CIFAR-100 read from their standard on-disk formats by torchvision.

`data_dir` is the directory torchvision calls `root`:

- "mnist": `data_dir/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`, each file either
  extracted or still gzipped (`.gz`, as distributed);
- "cifar10": `data_dir/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`;
- "cifar100": `data_dir/cifar-100-python/{train,test,meta}`.

Giving the dataset's own folder (`.../MNIST`, `.../cifar-10-batches-py`) works too. The files are
read by torchvision's `MNIST`/`CIFAR10`/`CIFAR100` classes; nothing is downloaded unless
`download` is set, and then only through torchvision's own (checksummed) download. The splits
are the official ones, so `seed` is unused. Preprocessing follows the paper's Table 5: images
become float32 (N, C, H, W) in [0, 1]; the per-channel mean/std are the table's.

torchvision checks the CIFAR files against the md5 sums of the official release, which no other
copy in the same format can pass (`llpf_core.data.fake` writes such copies); here the files are
instead checked for their structure (keys, dtype, shape, label range) after reading, so a
truncated or garbled file is reported by name, but a byte flipped inside the pixels of a
well-formed file is not noticed.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import CIFAR10, CIFAR100, MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from llpf_core.data.registry import DatasetError, DatasetSpec, ImageData, register

logger = logging.getLogger(__name__)

# The paper's Table 5.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.491, 0.482, 0.446), (0.247, 0.243, 0.262)
CIFAR100_MEAN, CIFAR100_STD = (0.507, 0.487, 0.441), (0.268, 0.257, 0.276)

MNIST_IMAGE_SIZE = 28
CIFAR_IMAGE_SIZE = 32
MAX_REASON_CHARS = 160  # an error's own text, quoted inside our one-line message

# What a failed download can raise: network (URLError is an OSError), checksum and archive errors.
_DOWNLOAD_ERRORS = (OSError, RuntimeError, ValueError, tarfile.TarError, zlib.error)


class _DownloadErrors:
    """Mixin: a failed download becomes one `DatasetError` line naming where it was going."""

    llpf_name: str
    root: str

    def download(self) -> None:
        try:
            super().download()  # type: ignore[misc]
        except _DOWNLOAD_ERRORS as err:
            raise DatasetError(
                f"{self.llpf_name}: could not download into {self.root}: {_one_line(err)}"
            ) from err


class _MNISTFiles(_DownloadErrors, MNIST):
    """torchvision's MNIST, also reading the `.gz` files as distributed, without extracting them.

    torchvision itself reads only the extracted files; its download leaves both.
    """

    llpf_name = "mnist"

    @property
    def raw_folder(self) -> str:
        # torchvision names the folder after the class; keep MNIST's.
        return os.path.join(self.root, "MNIST", "raw")

    @property
    def processed_folder(self) -> str:
        return os.path.join(self.root, "MNIST", "processed")

    def _check_exists(self) -> bool:
        return not _missing_mnist_files(Path(self.raw_folder))

    def _load_data(self) -> tuple[Tensor, Tensor]:
        prefix = "train" if self.train else "t10k"
        raw = Path(self.raw_folder)
        images = _read_idx(raw / f"{prefix}-images-idx3-ubyte", read_image_file)
        labels = _read_idx(raw / f"{prefix}-labels-idx1-ubyte", read_label_file)
        return images, labels


class _CIFAR10Files(_DownloadErrors, CIFAR10):
    """torchvision's CIFAR10, accepting present files instead of the release's md5 sums."""

    llpf_name = "cifar10"
    train_list = [[name, None] for name, _md5 in CIFAR10.train_list]
    test_list = [[name, None] for name, _md5 in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class _CIFAR100Files(_DownloadErrors, CIFAR100):
    """torchvision's CIFAR100, accepting present files instead of the release's md5 sums."""

    llpf_name = "cifar100"
    train_list = [[name, None] for name, _md5 in CIFAR100.train_list]
    test_list = [[name, None] for name, _md5 in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


def load_mnist(data_dir: Path | None, download: bool = False, _seed: int = 0) -> ImageData:
    """MNIST's official 60,000/10,000 split as (N, 1, 28, 28) float32 in [0, 1]."""
    root = _dataset_root(data_dir, "MNIST")
    raw = root / "MNIST" / "raw"
    missing = _missing_mnist_files(raw)
    if missing and not download:
        listing = ", ".join(_mnist_file_names())
        raise DatasetError(
            f"mnist: expected the MNIST idx files in {raw} ({listing}, each optionally .gz); "
            f"{_absence(raw, missing)}. Download them yourself or pass --download"
        )

    splits = []
    for train in (True, False):
        try:
            dataset = _MNISTFiles(str(root), train=train, download=download)
        except DatasetError:  # a failed download, or a damaged file named by _read_idx
            raise
        except (
            Exception
        ) as err:  # e.g. a damaged legacy MNIST/processed/*.pt, which torch.load reads
            raise DatasetError(
                f"mnist: could not read the MNIST files in {root / 'MNIST'} ({_one_line(err)}); "
                "delete them and download the dataset again"
            ) from err
        images, labels = dataset.data, dataset.targets
        prefix = "train" if train else "t10k"
        if tuple(images.shape[1:]) != (MNIST_IMAGE_SIZE, MNIST_IMAGE_SIZE):
            raise _damaged(
                "mnist",
                raw / f"{prefix}-images-idx3-ubyte",
                f"images of {tuple(images.shape[1:])} pixels, not 28x28",
            )
        if len(labels) != len(images) or not _labels_in_range(labels, 10):
            raise _damaged(
                "mnist",
                raw / f"{prefix}-labels-idx1-ubyte",
                f"{len(labels)} labels in {_label_span(labels)} for {len(images)} images, "
                "expected one label in 0..9 per image",
            )
        splits.append((images.unsqueeze(1).float().div_(255), labels.long()))
    (train_x, train_y), (test_x, test_y) = splits
    return ImageData(
        name="mnist",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=10,
        augmentation="mnist",
        mean=MNIST_MEAN,
        std=MNIST_STD,
    )


def load_cifar10(data_dir: Path | None, download: bool = False, _seed: int = 0) -> ImageData:
    """CIFAR-10's official 50,000/10,000 split as (N, 3, 32, 32) float32 in [0, 1]."""
    train_x, train_y, test_x, test_y = _load_cifar(
        _CIFAR10Files,
        data_dir,
        download,
        num_classes=10,
        label_key="labels",
        description="CIFAR-10 python batches",
        archive="cifar-10-python.tar.gz",
    )
    return ImageData(
        name="cifar10",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=10,
        augmentation="cifar",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )


def load_cifar100(data_dir: Path | None, download: bool = False, _seed: int = 0) -> ImageData:
    """CIFAR-100's official 50,000/10,000 split, fine labels, as (N, 3, 32, 32) in [0, 1]."""
    train_x, train_y, test_x, test_y = _load_cifar(
        _CIFAR100Files,
        data_dir,
        download,
        num_classes=100,
        label_key="fine_labels",
        description="CIFAR-100 python files",
        archive="cifar-100-python.tar.gz",
    )
    return ImageData(
        name="cifar100",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=100,
        augmentation="cifar",
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
    )


def _load_cifar(
    cls: type[_CIFAR10Files] | type[_CIFAR100Files],
    data_dir: Path | None,
    download: bool,
    num_classes: int,
    label_key: str,
    description: str,
    archive: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train and test images (N, 3, 32, 32) float32 in [0, 1] and int64 labels (N,)."""
    name = cls.llpf_name
    root = _dataset_root(data_dir, cls.base_folder)
    folder = root / cls.base_folder
    data_files = [file_name for file_name, _md5 in cls.train_list + cls.test_list]
    expected = data_files + [cls.meta["filename"]]
    missing = [file_name for file_name in expected if not (folder / file_name).is_file()]
    if missing and not download:
        raise DatasetError(
            f"{name}: expected the {description} in {folder} ({_cifar_listing(expected)}); "
            f"{_absence(folder, missing)}. Download and extract {archive} there yourself "
            "or pass --download"
        )

    splits = []
    for train in (True, False):
        try:
            dataset = cls(str(root), train=train, download=download)
        except DatasetError:
            raise
        except Exception as err:
            # Unpickling a garbled file can raise nearly anything; find the file to name it.
            raise _cifar_damage(name, folder, data_files, label_key, num_classes, err) from err
        images, labels = dataset.data, np.asarray(dataset.targets)
        if (
            images.dtype != np.uint8
            or len(labels) != len(images)
            or (len(labels) and labels.dtype.kind not in "iu")
            or not _labels_in_range(labels, num_classes)
            or len(dataset.classes) != num_classes
        ):
            raise _cifar_damage(name, folder, data_files, label_key, num_classes, None)
        # (N, H, W, C) uint8 -> (N, C, H, W) float32, contiguous
        images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float().div_(255)
        splits.append((images, torch.from_numpy(labels.astype(np.int64))))
    (train_x, train_y), (test_x, test_y) = splits
    return train_x, train_y, test_x, test_y


def _dataset_root(data_dir: Path | None, folder: str) -> Path:
    """torchvision's `root`: `data_dir`, or its parent when `data_dir` is the dataset's folder."""
    if data_dir is None:
        raise DatasetError(f"the {folder} files are read from disk: give their directory")
    data_dir = Path(data_dir)
    if data_dir.name == folder and not (data_dir / folder).exists():
        return data_dir.parent
    return data_dir


def _mnist_file_names() -> list[str]:
    # torchvision lists the distributed `.gz` names; the extracted files drop the suffix.
    return [file_name.removesuffix(".gz") for file_name, _md5 in MNIST.resources]


def _missing_mnist_files(raw: Path) -> list[str]:
    return [
        file_name
        for file_name in _mnist_file_names()
        if not (raw / file_name).is_file() and not (raw / f"{file_name}.gz").is_file()
    ]


def _read_idx(path: Path, reader: Callable[[str], Tensor]) -> Tensor:
    """`reader` (torchvision's idx reader) applied to `path`, or else to `path.gz` decompressed."""
    source = path if path.is_file() else path.with_name(path.name + ".gz")
    try:
        if source == path:
            return reader(str(path))
        # torchvision's reader takes a file name: decompress into scratch space, not into the
        # user's data directory (which may be read-only or shared).
        with tempfile.TemporaryDirectory(prefix="llpf-mnist-") as scratch:
            extracted = Path(scratch) / path.name
            with gzip.open(source, "rb") as packed:
                extracted.write_bytes(packed.read())
            return reader(str(extracted))
    except (
        AssertionError,
        RuntimeError,
        ValueError,
        TypeError,
        OSError,
        EOFError,
        zlib.error,
    ) as err:
        # torchvision checks the idx header with asserts and the length with a reshape.
        raise _damaged("mnist", source, _one_line(err)) from err


def _cifar_damage(
    name: str,
    folder: Path,
    data_files: list[str],
    label_key: str,
    num_classes: int,
    err: BaseException | None,
) -> DatasetError:
    """The `DatasetError` for a CIFAR copy that torchvision could not read, naming the file."""
    for file_name in data_files:
        reason = _cifar_file_problem(folder / file_name, label_key, num_classes)
        if reason:
            return _damaged(name, folder / file_name, reason)
    reason = _cifar_meta_problem(folder, name, num_classes)
    if reason:
        return _damaged(name, folder / _cifar_meta_file(name), reason)
    detail = _one_line(err) if err is not None else "inconsistent contents"
    return DatasetError(
        f"{name}: the files in {folder} are damaged ({detail}); download them again"
    )


def _cifar_file_problem(path: Path, label_key: str, num_classes: int) -> str | None:
    """What is wrong with one CIFAR batch file, or None if it has the released layout."""
    entry = _unpickle(path)
    if isinstance(entry, str):
        return entry
    if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
        return f"not a batch with 'data' and {label_key!r}"
    data, labels = entry["data"], np.asarray(entry[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        return "'data' is not a uint8 (N, 3072) array"
    if data.shape[1] != 3 * CIFAR_IMAGE_SIZE**2:
        return f"'data' rows have {data.shape[1]} values, not 3072"
    if labels.shape != (len(data),):
        return f"{len(labels)} labels for {len(data)} images"
    if len(labels) and labels.dtype.kind not in "iu":
        return f"{label_key!r} are not integers"
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        return f"labels in {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}"
    return None


def _cifar_meta_file(name: str) -> str:
    return (_CIFAR10Files if name == "cifar10" else _CIFAR100Files).meta["filename"]


def _cifar_meta_problem(folder: Path, name: str, num_classes: int) -> str | None:
    cls = _CIFAR10Files if name == "cifar10" else _CIFAR100Files
    entry = _unpickle(folder / cls.meta["filename"])
    if isinstance(entry, str):
        return entry
    key = cls.meta["key"]
    if not isinstance(entry, dict) or len(entry.get(key, ())) != num_classes:
        return f"no list of {num_classes} {key!r}"
    return None


def _unpickle(path: Path) -> Any:
    """The unpickled object, or a string saying why `path` could not be read as a pickle."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as err:  # a garbled pickle can raise nearly anything
        return f"not a readable pickle: {_one_line(err)}"


def _damaged(name: str, path: Path, reason: str) -> DatasetError:
    return DatasetError(
        f"{name}: {path} is damaged ({reason}); delete it and download the dataset again"
    )


def _absence(folder: Path, missing: list[str]) -> str:
    if not folder.is_dir():
        return "not found"
    return f"missing {', '.join(missing)}"


def _cifar_listing(expected: list[str]) -> str:
    batches = [f for f in expected if f.startswith("data_batch_")]
    if len(batches) > 1:
        rest = [f for f in expected if not f.startswith("data_batch_")]
        return ", ".join([f"data_batch_1..{len(batches)}", *rest])
    return ", ".join(expected)


def _labels_in_range(labels: Tensor | np.ndarray, num_classes: int) -> bool:
    return len(labels) == 0 or (int(labels.min()) >= 0 and int(labels.max()) < num_classes)


def _label_span(labels: Tensor) -> str:
    return f"{int(labels.min())}..{int(labels.max())}" if len(labels) else "nothing"


def _one_line(err: BaseException) -> str:
    """An exception as `Type: text` on one line, cut to MAX_REASON_CHARS."""
    text = " ".join(str(err).split())
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


register(
    DatasetSpec(
        name="mnist",
        loader=load_mnist,
        num_classes=10,
        input_shape=(1, MNIST_IMAGE_SIZE, MNIST_IMAGE_SIZE),
        needs_files=True,
        description="MNIST handwritten digits, 60,000/10,000 (torchvision's MNIST/raw files)",
    )
)
register(
    DatasetSpec(
        name="cifar10",
        loader=load_cifar10,
        num_classes=10,
        input_shape=(3, CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE),
        needs_files=True,
        description="CIFAR-10, 50,000/10,000 (the cifar-10-batches-py python version)",
    )
)
register(
    DatasetSpec(
        name="cifar100",
        loader=load_cifar100,
        num_classes=100,
        input_shape=(3, CIFAR_IMAGE_SIZE, CIFAR_IMAGE_SIZE),
        needs_files=True,
        description="CIFAR-100, fine labels, 50,000/10,000 (the cifar-100-python version)",
    )
)
