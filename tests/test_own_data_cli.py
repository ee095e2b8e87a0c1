"""Pictures and models of one's own, end to end through the trainer and every command (issue 21).

Every run here is on data the test makes (an array, a folder of colour PNGs of another size, IDX files of one's
own), with MINIDAE_DATA pointing at an empty directory: a run on one's own data never touches a public data set.
"""
import json
import pathlib
import re
import shlex

import numpy as np
import pytest
from PIL import Image

from minidae import backend, cli, models, nn
from minidae.checkpoint import load_checkpoint
from minidae.data import write_idx
from minidae.train import TrainConfig, load_data

ROOT = pathlib.Path(__file__).resolve().parents[1]

SMALL_MODEL = '''
from minidae import nn


def small():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1), nn.Sigmoid())


def raises():
    raise RuntimeError("the user's bug")


def not_a_module():
    return 3
'''


@pytest.fixture(autouse=True)
def no_public_data(tmp_path, monkeypatch):
    """The public sets' cache is an empty directory that must stay empty."""
    cache = tmp_path / "public-cache"
    cache.mkdir()
    monkeypatch.setenv("MINIDAE_DATA", str(cache))
    backend.use("numpy", seed_value=0)
    yield
    assert not any(cache.iterdir()), "a run on one's own data fetched a public data set"
    backend.use("numpy", seed_value=0)


def shapes(count, width=40, height=30, seed=0):
    """Colour pictures (RGB uint8) of discs and squares on a dark background, and their class (0 disc, 1 square)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    pictures, classes = [], []
    for index in range(count):
        picture = np.zeros((height, width, 3), np.uint8)
        cx, cy, r = rng.integers(width // 4, 3 * width // 4), rng.integers(height // 4, 3 * height // 4), 6
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r if index % 2 == 0 else \
            (abs(xx - cx) < r) & (abs(yy - cy) < r)
        picture[inside] = rng.integers(120, 256, size=3)
        pictures.append(picture)
        classes.append(index % 2)
    return pictures, classes


def picture_folder(root, count=48, width=40, height=30):
    for index, (picture, label) in enumerate(zip(*shapes(count, width, height))):
        folder = root / ("discs", "squares")[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(folder / f"{index}.png")
    (root / "notes.txt").write_text("not a picture")
    return root


def run(argv, capsys):
    """(exit status, stdout, stderr) of ``minidae ARGV``."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def console_commands(section):
    """The ``$ python -m minidae ...`` lines of docs/usage.md's ``### section``, and the files it shows."""
    text = (ROOT / "docs" / "usage.md").read_text()
    body = text.split(f"### {section}\n", 1)[1].split("\n### ", 1)[0]
    files = dict(re.findall(r"```python file=(\S+)\n(.*?)\n```", body, re.S))
    commands = [shlex.split(line[len("$ python -m minidae "):])
                for block in re.findall(r"```console\n(.*?)\n```", body, re.S) for line in block.splitlines()
                if line.startswith("$ python -m minidae ")]
    return commands, files


def test_the_usage_examples_run_as_written(tmp_path, monkeypatch, capsys):
    """docs/usage.md's "Train on your own pictures" and "Train your own model", command by command."""
    monkeypatch.chdir(tmp_path)
    picture_folder(tmp_path / "my_pictures")
    Image.fromarray(shapes(1, 64, 48, seed=5)[0][0]).save(tmp_path / "photo.png")
    for section in ("Train on your own pictures", "Train your own model"):
        commands, files = console_commands(section)
        assert commands, section
        for name, source in files.items():
            (tmp_path / name).write_text(source + "\n")
        for argv in commands:
            status, out, err = run(argv, capsys)
            assert status == 0, (argv, err)
    assert Image.open("clean.png").size == (112, 112)
    assert Image.open("small_clean.png").size == (32, 32), "denoise works at the run's image size"
    metrics = json.loads(pathlib.Path("runs/small/metrics.json").read_text())
    assert (metrics["train_images"], metrics["test_images"]) == (43, 5), "48 pictures, 10% held out"
    assert metrics["model"] == f"{tmp_path / 'my_model.py'}:small" and len(metrics["epochs"]) == 6
    assert "my_pictures (2 classes), 1 non-image file skipped" in metrics["data"]["train"]
    inspected = json.loads(pathlib.Path("runs/small/inspect.json").read_text())
    assert {"latent.png", "interpolation.png", "filters.png", "feature_maps.png"} <= set(inspected["written"])
    assert inspected["code_size"] == 32 * 8 * 8 and 0 <= inspected["probe_accuracy_code"] <= 1
    assert pathlib.Path("small.safetensors").is_file()
    assert json.loads(pathlib.Path("runs/small/eval.json").read_text())


def test_an_array_and_a_model_file_at_another_image_size_through_every_command(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    train = (rng.random((40, 1, 20, 20)) > 0.6).astype(np.float32)  # floats in [0, 1], with the channel axis
    np.save(tmp_path / "train.npy", train)
    np.savez(tmp_path / "test.npz", images=(rng.random((12, 20, 20)) * 255).astype(np.uint8))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.py").write_text(SMALL_MODEL)
    monkeypatch.chdir(tmp_path)
    status, out, err = run(["train", "--data", "train.npy", "--test-data", "test.npz", "--image-size", 20,
                            "--model", "models/mine.py:small", "--epochs", 2, "--batch-size", 8, "--out", "run",
                            "--no-progress"], capsys)
    assert status == 0, err
    assert "training on 40 images (40 images from " in out and "testing on 12 (12 images from " in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["train_images"], metrics["test_images"]) == (40, 12)
    assert metrics["data"] == {"train": f"40 images from {tmp_path / 'train.npy'}",
                               "test": f"12 images from {tmp_path / 'test.npz'}",
                               "colour": "arrays of 1 channel, as stored"}
    assert out.startswith("training on 40 images"), "arrays are taken as they are: nothing to say of colour"
    config = load_checkpoint(tmp_path / "run" / "checkpoint.npz")["config"]
    assert config["model"] == f"{tmp_path / 'models' / 'mine.py'}:small" and config["image_size"] == 20

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the checkpoint's paths are absolute: every command finds model and data again
    checkpoint = tmp_path / "run" / "checkpoint.npz"
    named = ["--model", tmp_path / "models" / "mine.py:small"]  # the checkpoint's factory runs only when named
    assert run(["eval", checkpoint, "--out", "ev", *named], capsys)[0] == 0
    assert json.loads((elsewhere / "ev" / "eval.json").read_text())
    Image.fromarray(shapes(1, 50, 50)[0][0]).save(elsewhere / "in.png")
    assert run(["denoise", checkpoint, "in.png", "out.png", *named], capsys)[0] == 0
    assert Image.open(elsewhere / "out.png").size == (20, 20)
    assert run(["export", checkpoint, "mine.safetensors", *named], capsys)[0] == 0
    status, out, _ = run(["summary", checkpoint, *named], capsys)
    assert status == 0 and "input (1, 20, 20)" in out and "Conv2d" in out
    status, out, err = run(["train", "--resume", checkpoint, "--epochs", 3, "--no-progress", *named], capsys)
    assert status == 0, err
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]) == 3
    status, _, err = run(["train", "--resume", checkpoint, "--epochs", 4, "--data", "other.npy", *named], capsys)
    assert status == 1 and "whose recipe has --data" in err and "leave --data out" in err, "a resumed run keeps its data"

    (tmp_path / "models" / "mine.py").unlink()
    status, _, err = run(["eval", checkpoint, *named], capsys)
    assert status == 1 and err.count("\n") == 1 and "its model cannot be rebuilt" in err and "mine.py" in err


def test_a_folder_of_colour_pngs_of_another_size_trains_the_spec_network(tmp_path, capsys):
    folder = picture_folder(tmp_path / "pictures", count=40)
    status, out, err = run(["train", "--data", folder, "--test-fraction", 0.25, "--epochs", 1, "--batch-size", 10,
                            "--out", tmp_path / "run", "--no-progress"], capsys)
    assert status == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["model"], metrics["train_images"], metrics["test_images"]) == ("conv_dae", 30, 10)
    assert Image.open(tmp_path / "run" / "denoising.png").size[0] > 0

    held_out = lambda seed: load_data(TrainConfig(data=str(folder), test_fraction=0.25, seed=seed))[2]  # noqa: E731
    np.testing.assert_array_equal(held_out(0), held_out(0))
    assert not np.array_equal(held_out(0), held_out(1)), "the held-out images are chosen by the seed"
    images, labels, test, test_labels, _ = load_data(TrainConfig(data=str(folder), test_fraction=0.25))
    assert images.shape == (30, 28, 28) and test.shape == (10, 28, 28) and images.dtype == np.uint8
    assert set(labels) | set(test_labels) == {0, 1}


def test_idx_files_of_ones_own_are_trained_on_not_mnist(tmp_path, capsys):
    """The issue's first report: IDX files of one's own trained on the real MNIST instead."""
    rng = np.random.default_rng(3)
    images = (rng.random((30, 28, 28)) * 255).astype(np.uint8)
    write_idx(tmp_path / "mine-images-idx3-ubyte", images)
    write_idx(tmp_path / "mine-labels-idx1-ubyte", (np.arange(30) % 3).astype(np.uint8))
    status, out, err = run(["train", "--data", tmp_path / "mine-images-idx3-ubyte", "--epochs", 1,
                            "--batch-size", 9, "--out", tmp_path / "run", "--no-progress"], capsys)
    assert status == 0, err
    assert "training on 27 images" in out and "testing on 3" in out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train_images"] == 27


def test_a_factory_in_an_importable_module(tmp_path, monkeypatch, capsys):
    (tmp_path / "user_models_for_minidae_test.py").write_text(SMALL_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    np.save(tmp_path / "x.npy", (np.random.default_rng(0).random((20, 12, 12)) * 255).astype(np.uint8))
    status, _, err = run(["train", "--data", tmp_path / "x.npy", "--image-size", 12, "--model",
                          "user_models_for_minidae_test:small", "--epochs", 1, "--batch-size", 6,
                          "--out", tmp_path / "run", "--no-progress"], capsys)
    assert status == 0, err
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz")["config"]["model"] == \
        "user_models_for_minidae_test:small"
    assert isinstance(models.build("user_models_for_minidae_test:small"), nn.Sequential)


REFUSALS = {
    "no such factory file": (["--model", "{tmp}/nowhere.py:small"], r"no such file .*nowhere\.py"),
    "no such function": (["--model", "{tmp}/mine.py:big"], r"defines no function 'big' \(it defines: .*small"),
    "a factory that raises": (["--model", "{tmp}/mine.py:raises"],
                              r"the factory raised RuntimeError: the user's bug"),
    "a factory returning no Module": (["--model", "{tmp}/mine.py:not_a_module"], r"returned int, not a minidae"),
    "no such module": (["--model", "no_such_package_xyz.models:small"], r"importing no_such_package_xyz.models "
                                                                         r"failed"),
    "a model for another size": (["--data", "{tmp}/x20.npy", "--image-size", "20"],
                                 r"the model conv_dae cannot take 20x20 images .*build it for that size"),
    "an array of another size": (["--image-size", "20", "--model", "{tmp}/mine.py:small"],
                                 r"x.npy: its images are 28 x 28, not 20 x 20"),
    "a folder without pictures": (["--data", "{tmp}/empty"], r"empty: no image files"),
    "a missing data path": (["--data", "{tmp}/missing"], r"--data .*missing: no such file or folder"),
    "a test fraction of 1.5": (["--test-fraction", "1.5"], r"--test-fraction 1.5: a fraction in \(0, 1\)"),
    "test data without data": (["--data", None, "--test-data", "{tmp}/x.npy"], r"--test-data needs --data"),
    "too few images to hold out": (["--data", "{tmp}/one.npy"], r"too few images \(1\) to hold out"),
    "a summary of a missing factory": (None, r"defines no function 'big'"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_what_cannot_work_is_refused_in_one_line(tmp_path, capsys, case):
    flags, message = REFUSALS[case]
    (tmp_path / "mine.py").write_text(SMALL_MODEL)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    np.save(tmp_path / "x.npy", np.zeros((20, 28, 28), np.uint8))
    np.save(tmp_path / "one.npy", np.zeros((1, 28, 28), np.uint8))
    np.save(tmp_path / "x20.npy", np.zeros((20, 20, 20), np.uint8))
    if flags is None:
        argv = ["summary", f"{tmp_path}/mine.py:big"]
    else:
        argv = ["train", "--data", tmp_path / "x.npy", "--epochs", 1, "--out", tmp_path / "run", "--no-progress"]
        for flag, value in zip(flags[::2], flags[1::2]):
            if flag in argv:
                del argv[argv.index(flag):argv.index(flag) + 2]
            if value is not None:
                argv += [flag, value.format(tmp=tmp_path)]
    status, out, err = run(argv, capsys)
    assert status == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists(), "a refused run leaves nothing behind"


def test_summary_of_any_module_is_the_presets_table():
    """A Sequential of the spec network's layers (hooks) has the rows the Chain has (its layer list)."""
    chain = models.conv_dae()
    rows = models.summary(chain, batch_size=2)
    plain = models.summary(nn.Sequential(*chain.layers), batch_size=2)
    assert [r[1:] for r in plain] == [r[1:] for r in rows]
    assert [r[0].split()[-1] for r in plain] == [type(layer).__name__ for layer in chain.layers]
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2)), nn.ModuleList([nn.ReLU()])[0])
    assert models.summary(nested, input_shape=(3, 9, 9)) == [
        ("0.0 Conv2d", (1, 4, 4, 4), 3 * 4 * 9 + 4, 4 * 4 * 4 * 27), ("1 ReLU", (1, 4, 4, 4), 0, 0)]


def test_a_colour_run_through_every_command(tmp_path, monkeypatch, capsys):
    """docs/usage.md's "Colour pictures", command by command, on a small folder of colour pictures: the run keeps
    the colour (and says so first), the model takes and gives 3 channels, and eval, denoise, inspect, export and
    summary work on it; what denoising.png, interpolation.png and the denoised picture hold is checked."""
    from minidae import inspection, plots
    from safetensors.numpy import load_file
    monkeypatch.chdir(tmp_path)
    picture_folder(tmp_path / "my_pictures", count=24)
    Image.fromarray(shapes(1, 64, 48, seed=5)[0][0]).save(tmp_path / "photo.png")
    drawn = {}
    for module, function in ((plots, "denoising_grid"), (inspection, "interpolation_plot")):
        real = getattr(module, function)
        monkeypatch.setattr(module, function, lambda *a, _real=real, _name=function, **k:
                            drawn.setdefault(_name, (a, k)) and _real(*a, **k))
    commands, _ = console_commands("Colour pictures")
    assert [argv[0] for argv in commands] == ["train", "eval", "denoise", "inspect", "export", "summary"]
    outputs = []
    for argv in commands:
        status, out, err = run(argv, capsys)
        assert status == 0, (argv, err)
        outputs.append(out)
    assert outputs[0].startswith("pictures kept in colour (RGB) (--channels 3; --channels 1 makes them grayscale); "
                                 "training on 22 images")
    state = load_checkpoint("runs/colour/checkpoint.npz")
    assert state["config"]["channels"] == 3
    assert state["model"]["conv1.weight"].shape == (16, 3, 3, 3) and state["model"]["conv6.weight"].shape == (16, 3, 3, 3)
    metrics = json.loads(pathlib.Path("runs/colour/metrics.json").read_text())
    assert metrics["parameters"] == 572_675 and metrics["data"]["colour"] == "pictures kept in colour (RGB)"
    assert metrics["data"]["classes"] == {"train": ["discs", "squares"], "test": ["discs", "squares"]}
    (noisy, denoised, clean), options = drawn["denoising_grid"][0][1:], drawn["denoising_grid"][1]
    assert clean.shape == noisy.shape == denoised.shape == (2, 3, 28, 28), "colour images, channels kept"
    assert options["names"] == ["discs", "squares"], "the columns are named by the folders"
    rows = json.loads(pathlib.Path("runs/colour/eval.json").read_text())["rows"]
    assert len(rows) == 9 and all(-1 <= r["ssim_noisy"] <= 1 and r["psnr_noisy"] > 0 for r in rows)
    with Image.open("colour_clean.png") as result:
        assert result.mode == "RGB" and result.size == (112, 112)
    inspected = json.loads(pathlib.Path("runs/colour/inspect.json").read_text())
    assert {"latent.png", "interpolation.png", "filters.png", "feature_maps.png"} <= set(inspected["written"])
    assert inspected["skipped"] == {} and 0 <= inspected["probe_accuracy_code"] <= 1
    rows, steps = drawn["interpolation_plot"][0][1:3]
    assert rows[0][:2] == ("discs", "squares") and rows[0][2].shape == (steps, 3, 28, 28)
    assert load_file("colour.safetensors")["conv6.bias"].shape == (3,)
    assert "input (3, 28, 28)" in outputs[-1] and re.search(r"total\s+572,675", outputs[-1])
