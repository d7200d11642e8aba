"""The on-disk datasets (MNIST, CIFAR-10/100) read through torchvision, on fake files in the real
formats, and the bundled digits; also the fake writers' own layouts."""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from llpf_core.data import DatasetError, dataset_names, load_dataset
from llpf_core.data.fake import (
    CIFAR100_COARSE_OF_FINE,
    write_fake_cifar10,
    write_fake_cifar100,
    write_fake_mnist,
)

N_TRAIN, N_TEST = 60, 20
TABLE_5 = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.491, 0.482, 0.446), (0.247, 0.243, 0.262)),
    "cifar100": ((0.507, 0.487, 0.441), (0.268, 0.257, 0.276)),
}
EXPECTED = {  # name: (num_classes, input shape, augmentation, writer)
    "mnist": (10, (1, 28, 28), "mnist", write_fake_mnist),
    "cifar10": (10, (3, 32, 32), "cifar", write_fake_cifar10),
    "cifar100": (100, (3, 32, 32), "cifar", write_fake_cifar100),
}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def sizes(name: str) -> tuple[int, int]:
    """Enough images that every class appears in both splits."""
    num_classes = EXPECTED[name][0]
    return max(N_TRAIN, 2 * num_classes), max(N_TEST, num_classes)


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if torchvision tries to download anything."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unexpected download: {args}")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", refuse)
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", refuse)


def assert_one_line(err: pytest.ExceptionInfo[DatasetError]) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_fake_files_load_with_shapes_ranges_and_table5_constants(
    name: str, tmp_path: Path, no_download: None
) -> None:
    num_classes, shape, augmentation, writer = EXPECTED[name]
    n_train, n_test = sizes(name)
    writer(tmp_path, n_train, n_test, seed=3)

    data = load_dataset(name, tmp_path)

    assert data.name == name and data.num_classes == num_classes
    assert data.train_x.shape == (n_train, *shape) and data.test_x.shape == (n_test, *shape)
    assert data.input_shape == shape
    for images, labels in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        assert images.dtype == torch.float32 and images.is_contiguous()
        assert labels.dtype == torch.int64 and labels.shape == (len(images),)
        assert 0.0 <= images.min() and images.max() <= 1.0
        assert images.std() > 0.05  # real images, not all zeros
        # balanced labels: each class n // num_classes or one more times
        counts = torch.bincount(labels, minlength=num_classes)
        assert len(counts) == num_classes
        assert counts.min() >= len(labels) // num_classes and counts.max() - counts.min() <= 1
    assert data.augmentation == augmentation
    assert (data.mean, data.std) == TABLE_5[name]


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_loaded_pixels_are_the_written_bytes_over_255(name: str, tmp_path: Path) -> None:
    writer = EXPECTED[name][3]
    writer(tmp_path, *sizes(name), seed=0)
    data = load_dataset(name, tmp_path)

    if name == "mnist":
        raw = (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()
        first = np.frombuffer(raw, dtype=np.uint8, offset=16, count=28 * 28).reshape(1, 28, 28)
        labels = np.frombuffer(
            (tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte").read_bytes()[8:], np.uint8
        )
    else:
        file_name = "test_batch" if name == "cifar10" else "test"
        with open(tmp_path / CIFAR_FOLDERS[name] / file_name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        first = batch[b"data"][0].reshape(3, 32, 32)  # channel-major rows: R, G, B planes
        labels = np.array(batch[b"labels" if name == "cifar10" else b"fine_labels"])

    torch.testing.assert_close(data.test_x[0], torch.from_numpy(first.astype(np.float32) / 255))
    assert data.test_y.tolist() == labels.tolist()


def test_mnist_reads_gzipped_files_like_extracted_ones(tmp_path: Path) -> None:
    plain = load_dataset("mnist", write_fake_mnist(tmp_path / "plain", 30, 10, seed=1))
    packed_root = write_fake_mnist(tmp_path / "gz", 30, 10, seed=1, compressed=True)
    raw_files = sorted(p.name for p in (packed_root / "MNIST" / "raw").iterdir())
    assert raw_files and all(name.endswith(".gz") for name in raw_files)

    packed = load_dataset("mnist", packed_root)

    assert torch.equal(plain.train_x, packed.train_x) and torch.equal(plain.test_y, packed.test_y)
    # nothing was extracted into the data directory
    assert sorted(p.name for p in (packed_root / "MNIST" / "raw").iterdir()) == raw_files


def test_fake_mnist_files_are_big_endian_idx(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, 7, 3, compressed=True)
    raw = tmp_path / "MNIST" / "raw"
    images = gzip.decompress((raw / "train-images-idx3-ubyte.gz").read_bytes())
    labels = gzip.decompress((raw / "t10k-labels-idx1-ubyte.gz").read_bytes())

    assert struct.unpack(">IIII", images[:16]) == (0x0803, 7, 28, 28)
    assert len(images) == 16 + 7 * 28 * 28
    assert struct.unpack(">II", labels[:8]) == (0x0801, 3)
    assert len(labels) == 8 + 3 and max(labels[8:]) <= 9


def test_fake_cifar10_pickles_have_the_released_layout(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path, 23, 7)
    folder = tmp_path / "cifar-10-batches-py"
    sizes_seen = []
    for number in range(1, 6):
        # the datasets' home page reads them with encoding="bytes"
        with open(folder / f"data_batch_{number}", "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
        assert batch[b"batch_label"] == f"training batch {number} of 5".encode()
        assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072
        assert isinstance(batch[b"labels"], list) and all(type(v) is int for v in batch[b"labels"])
        assert len(batch[b"labels"]) == len(batch[b"filenames"]) == len(batch[b"data"])
        sizes_seen.append(len(batch[b"data"]))
    assert sum(sizes_seen) == 23

    # torchvision reads them with encoding="latin1": the same keys as str
    with open(folder / "test_batch", "rb") as f:
        test = pickle.load(f, encoding="latin1")
    assert set(test) == {"batch_label", "labels", "data", "filenames"}
    assert test["data"].shape == (7, 3072)
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    assert meta[b"num_vis"] == 3072 and len(meta[b"label_names"]) == 10
    assert meta[b"label_names"][0] == b"airplane"


def test_fake_cifar100_pickles_have_the_released_layout(tmp_path: Path) -> None:
    write_fake_cifar100(tmp_path, 120, 30)
    folder = tmp_path / "cifar-100-python"
    with open(folder / "train", "rb") as f:
        train = pickle.load(f, encoding="bytes")
    assert set(train) == {b"batch_label", b"fine_labels", b"coarse_labels", b"data", b"filenames"}
    assert train[b"data"].dtype == np.uint8 and train[b"data"].shape == (120, 3072)
    fine, coarse = np.array(train[b"fine_labels"]), np.array(train[b"coarse_labels"])
    assert fine.max() <= 99 and coarse.max() <= 19
    assert coarse.tolist() == [CIFAR100_COARSE_OF_FINE[label] for label in fine]
    with open(folder / "meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    assert len(meta[b"fine_label_names"]) == 100 and len(meta[b"coarse_label_names"]) == 20


def test_fake_data_is_seeded(tmp_path: Path) -> None:
    for run in ("a", "b"):
        write_fake_cifar10(tmp_path / run, 20, 10, seed=5)
    write_fake_cifar10(tmp_path / "c", 20, 10, seed=6)
    batch = "cifar-10-batches-py/data_batch_1"
    assert (tmp_path / "a" / batch).read_bytes() == (tmp_path / "b" / batch).read_bytes()
    assert (tmp_path / "a" / batch).read_bytes() != (tmp_path / "c" / batch).read_bytes()

    write_fake_mnist(tmp_path / "m1", 10, 5, compressed=True)
    write_fake_mnist(tmp_path / "m2", 10, 5, compressed=True)
    gz = "MNIST/raw/train-images-idx3-ubyte.gz"
    assert (tmp_path / "m1" / gz).read_bytes() == (tmp_path / "m2" / gz).read_bytes()


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_fake_data_is_learnable_by_nearest_class_mean(name: str, tmp_path: Path) -> None:
    # A stand-in for "a tiny model can fit it": class means of the training split classify
    # the test split, also after the paper's augmentation.
    from llpf_core.data.augment import get_augmentation

    num_classes, _, augmentation, writer = EXPECTED[name]
    writer(tmp_path, 4 * num_classes, 2 * num_classes, seed=0)
    data = load_dataset(name, tmp_path)
    means = torch.stack([data.train_x[data.train_y == c].mean(0) for c in range(num_classes)])
    augmented = get_augmentation(augmentation)(data.test_x, torch.Generator().manual_seed(0))

    for images, least in ((data.test_x, 0.95), (augmented, 0.7)):
        predicted = torch.cdist(images.flatten(1), means.flatten(1)).argmin(1)
        assert (predicted == data.test_y).float().mean() >= least


def test_data_dir_may_be_the_dataset_folder_itself(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path, 20, 10)
    write_fake_mnist(tmp_path, 20, 10)
    assert len(load_dataset("cifar10", tmp_path / "cifar-10-batches-py").train_y) == 20
    assert len(load_dataset("mnist", tmp_path / "MNIST").test_y) == 10


def test_download_flag_with_files_present_downloads_nothing(
    tmp_path: Path, no_download: None
) -> None:
    write_fake_cifar100(tmp_path, 100, 100)
    write_fake_mnist(tmp_path, 20, 10, compressed=True)
    assert load_dataset("cifar100", tmp_path, download=True).num_classes == 100
    assert len(load_dataset("mnist", tmp_path, download=True).train_y) == 20


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_failed_download_is_one_clear_line(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", offline)
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(DatasetError) as err:
        load_dataset(name, tmp_path / "empty", download=True)
    message = assert_one_line(err)
    assert message.startswith(f"{name}: could not download into") and "empty" in message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", "MNIST/raw"),
        ("cifar10", "cifar-10-batches-py (data_batch_1..5, test_batch, batches.meta)"),
        ("cifar100", "cifar-100-python (train, test, meta)"),
    ],
)
def test_missing_directory_says_what_was_expected_where(
    name: str, expected: str, tmp_path: Path, no_download: None
) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset(name, tmp_path / "nowhere")
    message = assert_one_line(err)
    assert str(tmp_path / "nowhere") in message and expected in message
    assert "not found" in message and "--download" in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    write_fake_cifar10(tmp_path, 20, 10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    write_fake_mnist(tmp_path, 20, 10)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()

    with pytest.raises(DatasetError, match="missing data_batch_3") as err:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in assert_one_line(err)
    with pytest.raises(DatasetError, match="missing t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8)


@pytest.mark.parametrize("damage", [truncate, garble])
@pytest.mark.parametrize(
    ("name", "file_name"),
    [
        ("cifar10", "cifar-10-batches-py/data_batch_2"),
        ("cifar10", "cifar-10-batches-py/test_batch"),
        ("cifar10", "cifar-10-batches-py/batches.meta"),
        ("cifar100", "cifar-100-python/train"),
        ("cifar100", "cifar-100-python/meta"),
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("mnist", "MNIST/raw/t10k-labels-idx1-ubyte"),
    ],
)
def test_damaged_file_is_named(
    name: str, file_name: str, damage: Callable[[Path], None], tmp_path: Path
) -> None:
    EXPECTED[name][3](tmp_path, *sizes(name))
    damage(tmp_path / file_name)
    with pytest.raises(DatasetError, match="is damaged") as err:
        load_dataset(name, tmp_path)
    assert str(tmp_path / file_name) in assert_one_line(err)


def test_damaged_gzip_is_named(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, 20, 10, compressed=True)
    path = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"not a gzip stream")
    with pytest.raises(DatasetError, match="is damaged") as err:
        load_dataset("mnist", tmp_path)
    assert str(path) in assert_one_line(err)


def test_cifar_labels_out_of_range_are_damage(tmp_path: Path) -> None:
    # A well-formed pickle that torchvision reads without complaint, with a label of 10.
    write_fake_cifar10(tmp_path, 20, 10)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    batch["labels"][0] = 10
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(DatasetError, match=r"test_batch is damaged \(labels in 0..10, expected"):
        load_dataset("cifar10", tmp_path)


def test_unknown_dataset_lists_the_valid_names() -> None:
    assert {"digits", "mnist", "cifar10", "cifar100"} <= set(dataset_names())
    with pytest.raises(DatasetError) as err:
        load_dataset("imagenet")
    message = assert_one_line(err)
    assert "'imagenet'" in message
    assert "cifar10, cifar100, digits, mnist" in message


def test_on_disk_datasets_need_a_data_dir() -> None:
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("cifar10")


def test_digits_load_1797_images_split_1438_359() -> None:
    data = load_dataset("digits")

    assert data.train_x.shape == (1438, 1, 28, 28) and data.test_x.shape == (359, 1, 28, 28)
    assert data.train_y.shape == (1438,) and data.test_y.shape == (359,)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert 0.0 <= data.train_x.min() and data.train_x.max() <= 1.0
    assert set(data.train_y.tolist()) == set(range(10)) == set(data.test_y.tolist())
    assert data.num_classes == 10 and data.augmentation == "mnist"
    # the split is fixed whatever the seed
    again = load_dataset("digits", seed=123)
    assert torch.equal(again.test_y, data.test_y) and torch.equal(again.test_x, data.test_x)
