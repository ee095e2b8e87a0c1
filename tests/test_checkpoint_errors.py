"""Damaged or foreign checkpoints, bad options and misuse get one clear line, not a traceback;
weights cross over to and from PyTorch as safetensors."""
import json
import zipfile

import numpy as np
import pytest

from minidae import backend, cli, models, optim
from minidae.checkpoint import save_checkpoint

CONFIG = dict(dataset="mnist", seed=0, noise="gaussian", noise_level=0.5, batch_size=64, lr=1e-3, weight_decay=1e-5,
              epochs=1, backend="numpy")


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
}


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


def test_resuming_from_a_damaged_checkpoint_is_refused_with_its_name(tmp_path, checkpoint, capsys):
    DAMAGE["missing weights"][0](checkpoint)
    assert cli.main(["train", "--resume", str(checkpoint), "--no-progress", "--data-dir", str(tmp_path)]) == 1
    assert f"error: {checkpoint}: its weights do not fit the model" in capsys.readouterr().err


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
