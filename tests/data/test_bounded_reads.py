"""Data reads are bounded before they are made (issue 24).

Only regular files are read: a named pipe (which would make a reader wait for a writer for ever), a socket or a
device is refused or skipped by name; every test that meets one runs under an alarm, so a regression fails
instead of hanging. Decompressed sizes are checked against the data budget (minidae.data.budget) before
anything is decompressed or allocated, which tracemalloc measures; picture headers are checked before
decoding; a size the model cannot take is refused before any picture is read; unreadable files and folders
are counted and named; hidden files are skipped and counted.
"""
import contextlib
import errno
import gzip
import io
import os
import signal
import socket
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from PIL import Image

from minidae import backend, cli, models, optim
from minidae.checkpoint import load_checkpoint, save_checkpoint, CheckpointError
from minidae.data import DataError, IDXError, images as images_module, load_images, read_idx, write_idx
from cli_checks import one_line


@contextlib.contextmanager
def no_hang(seconds=10):
    """Fail (TimeoutError) instead of waiting for ever: a blocking open or read is interrupted by the alarm."""
    def expire(signum, frame):
        raise TimeoutError(f"still waiting after {seconds} s: a read that should have been refused hung")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def peak_memory(limit):
    """Assert that Python's allocations (NumPy's arrays included) stay under ``limit`` bytes in the block."""
    tracemalloc.start()
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < limit, f"the read allocated {peak / 2 ** 20:.1f} MiB before it was refused"


def pictures(folder, count=3, size=(20, 16)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDAE_DATA", str(tmp_path / "public-cache"))
    monkeypatch.delenv("MINIDAE_MAX_DATA_MB", raising=False)
    backend.use("numpy", seed_value=0)


# ------------------------------------------------------------------------------------------ regular files only

@pytest.mark.parametrize("name", ["pipe.npy", "pipe.npz", "pipe-images-idx3-ubyte", "pipe.png"])
def test_a_named_pipe_given_as_data_is_refused_at_once(tmp_path, name):
    os.mkfifo(tmp_path / name)
    with no_hang(), pytest.raises(DataError, match=rf"{name}: a named pipe \(FIFO\), not a regular file"):
        load_images(tmp_path / name)


def test_a_device_given_as_data_is_refused(tmp_path):
    (tmp_path / "zero.npy").symlink_to("/dev/zero")  # endless: np.load would read it until memory runs out
    with no_hang(), pytest.raises(DataError, match=r"zero.npy: a character device, not a regular file"):
        load_images(tmp_path / "zero.npy")
    with no_hang(), pytest.raises(IDXError, match=r"a character device, not a regular file"):
        read_idx(tmp_path / "zero.npy")


def test_pipes_sockets_and_hidden_files_in_a_folder_are_skipped_by_name(tmp_path):
    folder = pictures(tmp_path / "pictures")
    os.mkfifo(folder / "pipe.png")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "socket.png"))
    (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork, not a picture")
    (folder / ".DS_Store").write_bytes(b"Bud1")
    (folder / ".git").mkdir()
    (folder / ".git" / "x.png").write_bytes(b"not a picture")
    try:
        with no_hang():
            found = load_images(folder)
    finally:
        server.close()
    assert len(found) == 3
    assert "2 special files skipped (pipe.png: a named pipe (FIFO), socket.png: a socket)" in found.source
    assert "3 hidden files skipped (.DS_Store, ._0.png, .git/)" in found.source


def test_an_idx_labels_file_that_is_a_pipe_is_refused(tmp_path):
    write_idx(tmp_path / "mine-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    os.mkfifo(tmp_path / "mine-labels-idx1-ubyte")
    with no_hang(), pytest.raises(DataError, match=r"mine-labels-idx1-ubyte: not a readable IDX labels file .*a "
                                                   r"named pipe"):
        load_images(tmp_path / "mine-images-idx3-ubyte")


def checkpoint_of(path, data, image_size=28):
    """A conv_dae checkpoint whose config records ``data`` as the run's pictures."""
    model = models.conv_dae()
    config = dict(dataset="mnist", seed=0, noise="gaussian", noise_level=0.5, batch_size=8, lr=1e-3,
                  weight_decay=0.0, epochs=1, model="conv_dae", data=str(data), test_data=None,
                  test_fraction=None, image_size=image_size)
    save_checkpoint(path, model, optim.Adam(model.parameters()), 1, 0, [0.1], [0.1], config)
    return path


def test_a_checkpoint_whose_data_is_a_pipe_cannot_hang_eval_or_inspect(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.npy")
    checkpoint = checkpoint_of(tmp_path / "checkpoint.npz", tmp_path / "pipe.npy")
    for command in (["eval", checkpoint], ["inspect", checkpoint], ["train", "--resume", checkpoint]):
        with no_hang():
            assert cli.main([str(a) for a in command] + ["--out", str(tmp_path / "out")]) == 1
        assert f"{tmp_path / 'pipe.npy'}: a named pipe (FIFO), not a regular file" in one_line(capsys)


def test_a_pipe_where_a_checkpoint_or_a_picture_should_be_cannot_hang_a_command(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.npz")
    os.mkfifo(tmp_path / "pipe.png")
    checkpoint = checkpoint_of(tmp_path / "checkpoint.npz", tmp_path / "x.npy")
    Image.new("L", (28, 28)).save(tmp_path / "in.png")
    for argv, message in ((["eval", tmp_path / "pipe.npz"], "pipe.npz: not a minidae checkpoint (a named pipe"),
                          (["export", tmp_path / "pipe.npz", tmp_path / "o.safetensors"], "a named pipe"),
                          (["summary", tmp_path / "pipe.npz"], "pipe.npz: not a minidae checkpoint (a named pipe"),
                          (["denoise", checkpoint, tmp_path / "pipe.png", tmp_path / "o.png"],
                           "pipe.png: a named pipe (FIFO), not a regular file")):
        with no_hang():
            assert cli.main([str(a) for a in argv]) == 1
        assert message in one_line(capsys)
    with no_hang():  # a pipe as the output is no checkpoint to protect: replaced by the file written
        assert cli.main(["denoise", str(checkpoint), str(tmp_path / "in.png"), str(tmp_path / "pipe.png")]) == 0
    assert Image.open(tmp_path / "pipe.png").size == (28, 28)
    with no_hang(), pytest.raises(CheckpointError, match="a named pipe"):
        load_checkpoint(tmp_path / "pipe.npz")


# ------------------------------------------------------------------------------------------ decompression budgets

def gzip_idx(path, count, side=28, written=None):
    """A gzip IDX file whose header declares ``count`` uint8 images of ``side`` x ``side``; ``written`` (default:
    all) zero bytes of payload follow, deflated."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(struct.pack(">HBB3I", 0, 0x08, 3, count, side, side))
        left = count * side * side if written is None else written
        block = bytes(1 << 20)
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)


def test_a_gzip_idx_bomb_is_refused_before_it_is_decompressed(tmp_path, monkeypatch):
    """The issue's 2 MB file that took 4.1 GB, scaled down: 64 MiB of zeros in a 64 kB file, budget 16 MiB."""
    path = tmp_path / "bomb-images-idx3-ubyte.gz"
    gzip_idx(path, (64 << 20) // (28 * 28))
    assert path.stat().st_size < 1 << 20
    monkeypatch.setenv("MINIDAE_MAX_DATA_MB", "16")
    with peak_memory(4 << 20), pytest.raises(DataError, match=r"would take 64.0 MiB, more than the data budget of "
                                                              r"16.0 MiB; .*MINIDAE_MAX_DATA_MB=64"):
        load_images(path)


def test_an_idx_header_claiming_more_than_the_budget_allocates_nothing(tmp_path):
    """At the default budget of 1 GiB: a 1.2 MB gzip file declaring 1.1 GiB (within deflate's ratio)."""
    path = tmp_path / "big-images-idx3-ubyte.gz"
    count = (1100 << 20) // (28 * 28)
    with gzip.open(path, "wb", compresslevel=0) as f:  # stored, so the file is as large as deflate's bound needs
        f.write(struct.pack(">HBB3I", 0, 0x08, 3, count, 28, 28) + os.urandom(1100 << 10))
    with peak_memory(8 << 20), pytest.raises(DataError, match=r"would take 1.1 GiB, more than the data budget of "
                                                              r"1.0 GiB"):
        load_images(path)


def npz_member(path, name, header, zeros):
    with zipfile.ZipFile(path, "a" if path.exists() else "w") as archive:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as f:
            f.write(header)
            for _ in range(zeros >> 20):
                f.write(bytes(1 << 20))


def npy_header(shape, dtype="|u1"):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_an_npz_bomb_is_refused_before_it_is_decompressed(tmp_path, monkeypatch):
    """The issue's 2.3 MB .npz that took 2.4 GB, scaled down: 64 MiB of zeros, budget 16 MiB."""
    path = tmp_path / "bomb.npz"
    npz_member(path, "images.npy", npy_header((64 << 20 >> 10, 32, 32)), zeros=64 << 20)
    assert path.stat().st_size < 1 << 20
    monkeypatch.setenv("MINIDAE_MAX_DATA_MB", "16")
    with peak_memory(4 << 20), pytest.raises(DataError, match=r"bomb.npz: its arrays images unpack to 64.0 MiB, "
                                                              r"more than the data budget of 16.0 MiB"):
        load_images(path, image_size=32)


def test_an_npz_member_whose_header_claims_more_than_it_holds_allocates_nothing(tmp_path):
    """A 2 GiB shape in a member of 1 kB, at the default budget: refused on its header."""
    path = tmp_path / "forged.npz"
    npz_member(path, "images.npy", npy_header((2 << 20, 32, 32)) + bytes(1024), zeros=0)
    with peak_memory(8 << 20), pytest.raises(DataError, match=r"images: declares shape \(2097152, 32, 32\) of uint8, "
                                                              r"which would take 2.0 GiB, more than the data budget"):
        load_images(path, image_size=32)
    npz_member(tmp_path / "short.npz", "images.npy", npy_header((200, 32, 32)) + bytes(1024), zeros=0)
    with peak_memory(8 << 20), pytest.raises(DataError, match=r"images: declares shape \(200, 32, 32\) of uint8 "
                                                              r"\(200.0 KiB\), but holds 1.0 KiB for it"):
        load_images(tmp_path / "short.npz", image_size=32)


def test_a_picture_whose_header_declares_too_many_pixels_is_never_decoded(tmp_path, monkeypatch):
    folder = pictures(tmp_path / "pictures")
    Image.new("1", (8200, 8200)).save(folder / "huge.png")  # 67 megapixels in a few kB
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real_load(self))
    with pytest.raises(DataError, match=r"huge.png: its header declares 8200 x 8200 pixels, more than the "
                                        r"64,000,000 a picture may have"):
        load_images(folder)
    assert (8200, 8200) not in decoded


# ------------------------------------------------------------------------------------------ sizes checked first

def test_a_size_the_model_cannot_take_is_refused_before_any_picture_is_read(tmp_path, capsys, monkeypatch):
    folder = pictures(tmp_path / "pictures", count=30)
    read = []
    real = images_module.read_picture
    monkeypatch.setattr(images_module, "read_picture", lambda *a: read.append(a) or real(*a))
    assert cli.main(["train", "--data", str(folder), "--image-size", "1024", "--epochs", "1",
                     "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    assert "the model conv_dae cannot take 1024x1024 images" in one_line(capsys)
    assert read == [], "pictures were read before the model was checked"


def test_pictures_that_would_take_more_than_the_budget_are_refused_before_any_is_read(tmp_path, monkeypatch):
    """The issue's 2,000 tiny PNGs at --image-size 1024 (5 GB, 69 s), scaled down: 40 at 1024, budget 16 MiB."""
    folder = pictures(tmp_path / "pictures", count=40)
    monkeypatch.setenv("MINIDAE_MAX_DATA_MB", "16")
    read = []
    monkeypatch.setattr(images_module, "read_picture", lambda *a: read.append(a))
    with pytest.raises(DataError, match=r"its 40 pictures at 1024 x 1024 would take 40.0 MiB, more than the data "
                                        r"budget of 16.0 MiB"):
        load_images(folder, image_size=1024)
    assert read == []


# ------------------------------------------------------------------------------------------ unreadable files

@contextlib.contextmanager
def unreadable(monkeypatch, *paths):
    """Make ``paths`` unreadable: chmod 0 where that works; as root (which reads anyway) the calls that open or
    list them fail with EACCES as they would."""
    paths = [str(p) for p in paths]
    if os.geteuid() != 0:
        for path in paths:
            os.chmod(path, 0)
        try:
            yield
        finally:
            for path in paths:
                os.chmod(path, 0o755)
        return

    def denied(path):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    real_scandir, real_open = os.scandir, os.open

    def scandir(path="."):
        if os.fspath(path) in paths:
            raise denied(path)
        return real_scandir(path)

    def open_(path, *args, **kwargs):
        if os.fspath(path) in paths:
            raise denied(path)
        return real_open(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "scandir", scandir)
        patch.setattr(os, "open", open_)
        yield


def test_unreadable_files_and_folders_are_counted_and_named(tmp_path, monkeypatch):
    root = tmp_path / "pictures"
    for name in ("cats", "dogs"):
        pictures(root / name, count=3)
    pictures(root / "dogs" / "old", count=2)
    with unreadable(monkeypatch, root / "cats" / "1.png", root / "dogs" / "old"):
        found = load_images(root)
    assert len(found) == 5 and found.classes == ["cats", "dogs"]
    assert "2 unreadable files or folders skipped (dogs/old/ (Permission denied), cats/1.png (Permission denied))" \
        in found.source


@pytest.mark.parametrize("how", ["the folder cannot be listed", "none of its pictures can be read"])
def test_a_class_folder_that_cannot_be_read_is_refused(tmp_path, monkeypatch, capsys, how):
    """The issue: an unreadable class folder was skipped without a word; the run trained on the other class."""
    root = tmp_path / "pictures"
    for name in ("cats", "dogs"):
        pictures(root / name, count=6, size=(28, 28))
    targets = [root / "dogs"] if how.startswith("the folder") else [root / "dogs" / f"{i}.png" for i in range(6)]
    with unreadable(monkeypatch, *targets):
        assert cli.main(["train", "--data", str(root), "--epochs", "1", "--out", str(tmp_path / "run"),
                         "--no-progress"]) == 1
    err = one_line(capsys)
    assert f"{root / 'dogs'}: " in err and ("cannot be read (Permission denied)" in err
                                            or "none of the pictures of the class folder could be read" in err)
    assert not (tmp_path / "run").exists()


def test_the_budget_setting_is_checked(tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), np.uint8))
    monkeypatch.setenv("MINIDAE_MAX_DATA_MB", "lots")
    with pytest.raises(ValueError, match="MINIDAE_MAX_DATA_MB=lots: expected a positive whole number"):
        load_images(tmp_path / "x.npy")
