"""The whole-batch augmentations of Table 5 and the seeded training-batch stream."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from llpf_core.data.augment import (
    cifar_augmentation,
    get_augmentation,
    mnist_augmentation,
    random_crop,
    random_horizontal_flip,
    random_rotation,
)
from llpf_core.data.batches import BatchStream
from llpf_core.data.registry import ImageData


def images(batch: int, channels: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Random (batch, channels, size, size) float32 in [0, 1]: no image equals its mirror."""
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image() -> None:
    # 1..9 in a 3x3 image, padding 1: the window at offset (dy, dx) of the 5x5 padded image.
    image = torch.arange(1.0, 10.0).view(1, 1, 3, 3).repeat(40, 2, 1, 1)
    padded = F.pad(image, (1, 1, 1, 1))
    # random_crop draws all row offsets, then all column offsets, from the generator
    replay = generator(7)
    dy = torch.randint(0, 3, (40,), generator=replay)
    dx = torch.randint(0, 3, (40,), generator=replay)

    out = random_crop(image, 1, generator(7))

    assert out.shape == image.shape
    for i in range(40):
        window = padded[i, :, dy[i] : dy[i] + 3, dx[i] : dx[i] + 3]
        assert torch.equal(out[i], window)
    # hand-computed: offset (0, 0) shows the top-left corner with a zero border
    corner = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 2.0], [0.0, 4.0, 5.0]])
    first = next(i for i in range(40) if dy[i] == 0 and dx[i] == 0)
    assert torch.equal(out[first, 0], corner) and torch.equal(out[first, 1], corner)
    # and offset (2, 1) the bottom rows, centred
    shifted = next(i for i in range(40) if dy[i] == 2 and dx[i] == 1)
    expected = torch.tensor([[4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.0, 0.0, 0.0]])
    assert torch.equal(out[shifted, 0], expected)
    # every offset in 0..2p occurs
    assert set(dy.tolist()) == set(dx.tolist()) == {0, 1, 2}


def test_random_crop_keeps_rectangular_shapes_and_padding_zero_is_identity() -> None:
    batch = torch.rand(6, 3, 5, 9, generator=generator())
    out = random_crop(batch, 4, generator())
    assert out.shape == batch.shape
    padded = F.pad(batch, (4, 4, 4, 4))
    for i in range(6):
        windows = [
            padded[i, :, y : y + 5, x : x + 9] for y in range(9) for x in range(9)
        ]  # every allowed offset
        assert any(torch.equal(out[i], window) for window in windows)
    assert torch.equal(random_crop(batch, 0, generator()), batch)


def test_horizontal_flip_mirrors_about_half_of_many_images() -> None:
    batch = images(4000, channels=1, size=4)
    out = random_horizontal_flip(batch, generator(1))

    mirrored = (out == batch.flip(-1)).flatten(1).all(1)
    kept = (out == batch).flatten(1).all(1)
    assert torch.all(mirrored ^ kept)  # each image exactly one of the two
    assert abs(mirrored.float().mean().item() - 0.5) < 0.04  # 5 binomial standard deviations
    assert torch.equal(random_horizontal_flip(batch, generator(1), p=0.0), batch)
    assert torch.equal(random_horizontal_flip(batch, generator(1), p=1.0), batch.flip(-1))


def test_rotation_by_zero_degrees_is_identity() -> None:
    batch = images(16, channels=1, size=28)
    out = random_rotation(batch, 0.0, generator())
    torch.testing.assert_close(out, batch, atol=1e-5, rtol=0)


def test_small_rotation_moves_pixels_but_keeps_the_centre() -> None:
    # A 5 degree rotation about the centre leaves the centre in place and the bulk of the
    # image nearly unchanged, but not exactly.
    batch = torch.zeros(8, 1, 29, 29)
    batch[:, :, 10:19, 10:19] = 1.0
    out = random_rotation(batch, 5.0, generator(2))
    assert out.shape == batch.shape
    assert torch.allclose(out[:, :, 14, 14], torch.ones(8), atol=1e-5)
    assert not torch.allclose(out, batch, atol=1e-3)
    assert (out - batch).abs().mean() < 0.05


@pytest.mark.parametrize("name", ["mnist", "cifar", "none"])
def test_pipelines_keep_shape_and_range_and_are_deterministic(name: str) -> None:
    augment = get_augmentation(name)
    channels, size = (1, 28) if name == "mnist" else (3, 32)
    batch = images(32, channels, size)

    first = augment(batch, generator(11))
    second = augment(batch, generator(11))

    assert first.shape == batch.shape and first.dtype == batch.dtype
    assert first.min() >= 0.0 and first.max() <= 1.0 + 1e-6
    assert torch.equal(first, second)
    if name != "none":
        assert not torch.equal(augment(batch, generator(12)), first)


def test_named_pipelines_are_table_5() -> None:
    assert get_augmentation("mnist") is mnist_augmentation
    assert get_augmentation("cifar") is cifar_augmentation
    with pytest.raises(ValueError, match="'imagenet'; valid: cifar, mnist, none"):
        get_augmentation("imagenet")


def indexed_data(n: int, augmentation: str = "none", size: int = 8) -> ImageData:
    """n images whose label is their index, each image filled with its index / n."""
    x = (torch.arange(n, dtype=torch.float32) / n).view(n, 1, 1, 1).expand(n, 3, size, size)
    labels = torch.arange(n)
    return ImageData(
        name="indexed",
        train_x=x.contiguous(),
        train_y=labels,
        test_x=x[:2].contiguous(),
        test_y=labels[:2],
        num_classes=n,
        augmentation=augmentation,
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.5),
    )


def test_batches_are_normalised_and_shaped() -> None:
    data = indexed_data(24)
    stream = BatchStream(data, batch_size=8, seed=0, augment=False)

    x, y = stream.next()

    assert x.shape == (8, 3, 8, 8) and x.dtype == torch.float32
    assert y.shape == (8,) and y.dtype == torch.int64
    torch.testing.assert_close(x, data.normalize(data.train_x[y]))
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (data.train_x[y] - mean) / std)


@pytest.mark.parametrize(("n", "batch_size"), [(24, 8), (26, 8)])
def test_every_image_appears_once_per_epoch(n: int, batch_size: int) -> None:
    stream = BatchStream(indexed_data(n), batch_size=batch_size, seed=3, augment=False)
    assert stream.batches_per_epoch == n // batch_size

    epochs = []
    for _ in range(3):
        seen = torch.cat([stream.next()[1] for _ in range(stream.batches_per_epoch)])
        assert len(seen) == len(set(seen.tolist())) == stream.batches_per_epoch * batch_size
        epochs.append(seen)
    if n % batch_size == 0:
        assert all(sorted(seen.tolist()) == list(range(n)) for seen in epochs)
    assert not torch.equal(epochs[0], epochs[1])  # a fresh permutation each epoch
    assert stream.epochs_started == 3


def test_batch_size_is_capped_at_the_training_set() -> None:
    stream = BatchStream(indexed_data(5), batch_size=64, seed=0, augment=False)
    x, y = stream.next()
    assert x.shape[0] == 5 and sorted(y.tolist()) == list(range(5))


@pytest.mark.parametrize("drawn_before", [0, 2, 5])
def test_state_dict_round_trip_reproduces_the_next_batches(drawn_before: int) -> None:
    data = indexed_data(20, augmentation="cifar")
    stream = BatchStream(data, batch_size=6, seed=4)
    for _ in range(drawn_before):
        stream.next()

    # saved and reloaded as a checkpoint would be
    buffer = io.BytesIO()
    torch.save(stream.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    # 7 batches cross at least two epoch boundaries (3 batches per epoch)
    expected = [stream.next() for _ in range(7)]

    resumed = BatchStream(data, batch_size=6, seed=99)
    resumed.load_state_dict(state)
    for want, got in zip(expected, (resumed.next() for _ in range(7)), strict=True):
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    assert resumed.epochs_started == stream.epochs_started


def test_same_seed_same_batches_other_seed_other_batches() -> None:
    data = indexed_data(20, augmentation="cifar")
    a, b, c = (BatchStream(data, 5, seed) for seed in (1, 1, 2))
    for _ in range(6):
        (xa, ya), (xb, yb), (xc, yc) = a.next(), b.next(), c.next()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(ya, yc) or not torch.equal(xa, xc)
