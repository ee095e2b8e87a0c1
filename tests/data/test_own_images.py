"""Your own images (a folder of pictures, arrays, IDX files) and the Dataset/DataLoader pair, on data made here."""
import gzip

import numpy as np
import pytest
from PIL import Image, ImageOps

from minidae import backend
from minidae.data import ArrayDataset, DataError, DataLoader, NoisyBatches, load_images, write_idx
from minidae.data.loader import epoch_seed, unit_images
from minidae.data.noise import apply_noise


def colour_pictures(folder, count=3, size=(40, 30), seed=0):
    """``count`` random RGB PNGs of ``size`` (width, height) in ``folder``; returns their arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = []
    for index in range(count):
        array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"{index}.png")
        arrays.append(array)
    return arrays


def expected(array, size=28):
    """What the documented rule makes of an RGB array: luma, centre crop to a square, Lanczos resize."""
    image = Image.fromarray(array).convert("L")
    return np.asarray(ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS))


def test_a_folder_of_colour_pictures_of_another_size(tmp_path):
    arrays = colour_pictures(tmp_path / "pictures")
    (tmp_path / "pictures" / "notes.txt").write_text("not an image")
    found = load_images(tmp_path / "pictures")
    assert found.images.shape == (3, 28, 28) and found.images.dtype == np.uint8 and found.labels is None
    for got, array in zip(found.images, arrays):
        assert np.array_equal(got, expected(array))
    assert "3 images from the folder" in found.source and "1 non-image file skipped" in found.source
    assert load_images(tmp_path / "pictures", image_size=16).images.shape == (3, 16, 16)


def test_class_sub_folders_give_labels(tmp_path):
    colour_pictures(tmp_path / "root" / "dog", count=2, seed=1)
    colour_pictures(tmp_path / "root" / "cat", count=3, seed=2)
    found = load_images(tmp_path / "root")
    assert found.classes == ["cat", "dog"] and found.labels.tolist() == [0, 0, 0, 1, 1]
    assert "(2 classes)" in found.source


def test_transparent_sixteen_bit_and_float_pictures(tmp_path):
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[10:18, 10:18] = (0, 0, 0, 255)  # a black square drawn on a transparent background
    Image.fromarray(rgba).save(tmp_path / "drawing.png")
    drawing = load_images(tmp_path / "drawing.png").images[0]
    assert drawing[0, 0] == 255 and drawing[14, 14] == 0  # laid on white, as a viewer shows it
    values = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    assert np.abs(load_images(tmp_path / "float.tif").images[0].astype(float) - values * 255).max() <= 1
    Image.fromarray((values * 65535).astype(np.uint16)).save(tmp_path / "deep.png")
    assert np.abs(load_images(tmp_path / "deep.png").images[0].astype(float) - values * 255).max() <= 1


@pytest.mark.parametrize("layout", ["npy-uint8", "npy-float-channel", "npz-one", "npz-images-labels"])
def test_array_files(tmp_path, layout):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.arange(5) % 2
    path = tmp_path / ("data.npy" if layout.startswith("npy") else "data.npz")
    if layout == "npy-uint8":
        np.save(path, images)
    elif layout == "npy-float-channel":
        np.save(path, (images / 255.0)[:, None])
    elif layout == "npz-one":
        np.savez(path, pictures=images)
    else:
        np.savez(path, images=images, labels=labels, other=np.zeros(3))
    found = load_images(path)
    assert found.images.shape == (5, 28, 28)
    if layout == "npy-float-channel":
        assert found.images.dtype == np.float32 and np.allclose(found.images * 255, images, atol=1e-3)
    else:
        assert np.array_equal(found.images, images)
    assert (found.labels.tolist() == labels.tolist()) if layout == "npz-images-labels" else found.labels is None


def test_idx_files_of_ones_own_with_their_labels(tmp_path):
    images = np.random.default_rng(4).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "own-images-idx3-ubyte", images)
    write_idx(tmp_path / "own-labels-idx1-ubyte", np.arange(6, dtype=np.uint8))
    found = load_images(tmp_path / "own-images-idx3-ubyte")
    assert np.array_equal(found.images, images) and found.labels.tolist() == list(range(6))
    with open(tmp_path / "own-images-idx3-ubyte", "rb") as f, gzip.open(tmp_path / "z-images-idx3-ubyte.gz", "wb") as g:
        g.write(f.read())
    assert np.array_equal(load_images(tmp_path / "z-images-idx3-ubyte.gz").images, images)


@pytest.mark.parametrize("make, message", [
    (lambda p: (p / "empty").mkdir(), "no image files"),
    (lambda p: (p / "broken.png").write_bytes(b"not a png"), "broken.png: not a readable image"),
    (lambda p: np.savez(p / "many.npz", a=np.zeros((2, 28, 28)), b=np.zeros(2)), "put the images under the name"),
    (lambda p: np.save(p / "small.npy", np.zeros((2, 20, 20), np.uint8)), "not 28 x 28"),
    (lambda p: np.save(p / "wide.npy", np.full((2, 28, 28), 3.0)), r"must lie in \[0, 1\]"),
    (lambda p: (p / "table.csv").write_text("1,2"), "not a folder of images"),
], ids=["empty-folder", "broken-png", "npz-without-images", "wrong-size", "float-0-255", "csv"])
def test_a_path_with_no_usable_image_is_refused_in_one_line(tmp_path, make, message):
    make(tmp_path)
    target = next(p for p in tmp_path.iterdir())
    with pytest.raises(DataError, match=message):
        load_images(target)


def test_the_data_loader_batches_shuffles_by_seed_and_keeps_labels(xp):
    """Arrays as they are (no rescaling outside the image tools), a tuple per batch, the order by the seed."""
    images = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2)
    labels = np.arange(10)
    loader = DataLoader(ArrayDataset(images, labels), batch_size=3, shuffle=True, seed=5)
    first = [(backend.to_numpy(x), backend.to_numpy(y)) for x, y in loader]
    second = [(backend.to_numpy(x), backend.to_numpy(y)) for x, y in loader]
    assert len(loader) == len(first) == 4 and first[-1][0].shape == (1, 2, 2)  # 10 = 3 + 3 + 3 + 1
    assert all(x.dtype == np.uint8 and y.dtype == labels.dtype for x, y in first)
    for x, y in first:  # each image keeps its label
        assert np.array_equal(x, images[y])
    order = np.concatenate([y for _, y in first])
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    assert not np.array_equal(order, np.concatenate([y for _, y in second]))  # the next epoch reshuffles
    replay = [backend.to_numpy(y) for _, y in loader.epoch(0)]
    assert np.array_equal(np.concatenate(replay), order)  # epoch 0 again, the same order
    assert len(DataLoader(ArrayDataset(images), batch_size=3, drop_last=True)) == 3
    alone = next(iter(DataLoader(ArrayDataset(images), batch_size=4)))
    assert isinstance(alone, tuple) and len(alone) == 1 and alone[0].shape == (4, 2, 2)


def test_from_path_gives_unit_images_with_a_channel_axis_and_the_class_names(tmp_path):
    """The image tool: pictures read by the rule, as float32 (N, C, S, S) in [0, 1], labels and class names."""
    colour_pictures(tmp_path / "root" / "dog", count=2, seed=1)
    colour_pictures(tmp_path / "root" / "cat", count=1, seed=2)
    gray = ArrayDataset.from_path(tmp_path / "root")
    images, labels = gray.arrays
    assert images.dtype == np.float32 and images.shape == (3, 1, 28, 28) and 0 <= images.min() <= images.max() <= 1
    assert labels.tolist() == [0, 1, 1] and gray.classes == ["cat", "dog"] and "3 images from the folder" in gray.source
    colour, _ = ArrayDataset.from_path(tmp_path / "root", channels=3).arrays
    assert colour.shape == (3, 3, 28, 28)
    np.testing.assert_array_equal(np.round(images[:, 0] * 255), load_images(tmp_path / "root").images)


def test_noisy_batches_draw_the_noise_from_the_epochs_generator_after_its_shuffle(xp):
    """The documented rule, written out: what keeps the trainer's runs and resumes reproducible."""
    images = np.random.default_rng(6).integers(0, 256, size=(9, 5, 5), dtype=np.uint8)
    batches = NoisyBatches(images, batch_size=4, noise="gaussian", level=0.3, seed=2)
    rng = xp.random.default_rng(epoch_seed(2, 1))
    order = xp.argsort(rng.random(9))
    for b, (noisy, clean) in enumerate(batches.epoch(1)):
        index = order[b * 4:(b + 1) * 4]
        want_clean = unit_images(xp.asarray(images)[index])
        assert bool((clean == want_clean).all())
        assert bool((noisy == apply_noise("gaussian", want_clean, 0.3, rng=rng)).all())
