"""Opening a checkpoint never runs code (issue 24).

A checkpoint trained with a model of one's own records its factory (``FILE.py:FACTORY`` or
``package.module:factory``) and the SHA-256 of the factory's file. ``eval``, ``denoise``, ``export``, ``inspect``,
``summary`` and ``train --resume`` import that factory only when ``--model`` names it on their command line, and
import it once; without the flag they stop in one line naming the recorded factory and the flag. The factory
files here write a marker file when they are imported: the refusals assert that it never appears.
"""
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import uuid

import numpy as np
import pytest
from PIL import Image

from minidae import backend, cli, nn, optim
from minidae.checkpoint import load_checkpoint, save_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Imported, this file appends a line to $MINIDAE_TEST_MARKER: the tests count the lines.
FACTORY = '''
import os
with open(os.environ["MINIDAE_TEST_MARKER"], "a") as marker:
    marker.write("imported\\n")
from minidae import nn


def small():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1), nn.Sigmoid())
'''


def small():
    """The factory's model, built here without importing the factory's file."""
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1), nn.Sigmoid())


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A folder with the factory file (code/evil.py), the same code as an importable module, 12 x 12 images
    (x.npy), a picture, and the public data sets' cache pointed at an empty folder; cwd is work/."""
    code, work = tmp_path / "code", tmp_path / "work"
    code.mkdir()
    work.mkdir()
    (code / "evil.py").write_text(FACTORY)
    module = f"evil_{uuid.uuid4().hex[:12]}"  # a name never imported before: a cached module would hide an import
    (code / f"{module}.py").write_text(FACTORY)
    (work / "evil.py").write_text(FACTORY)  # a model.py shipped beside the checkpoint
    np.save(work / "x.npy", (np.random.default_rng(0).random((20, 12, 12)) * 255).astype(np.uint8))
    Image.fromarray((np.random.default_rng(1).random((16, 16)) * 255).astype(np.uint8)).save(work / "in.png")
    marker = tmp_path / "marker"
    monkeypatch.setenv("MINIDAE_TEST_MARKER", str(marker))
    monkeypatch.setenv("MINIDAE_DATA", str(tmp_path / "public-cache"))
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.syspath_prepend(str(work))
    backend.use("numpy", seed_value=0)
    yield {"tmp": tmp_path, "code": code, "work": work, "module": module, "marker": marker}
    sys.modules.pop(module, None)


def imports(place):
    """How many times a factory file was imported so far."""
    return len(place["marker"].read_text().splitlines()) if place["marker"].exists() else 0


def forged(place, spec, sha256=None, model=None):
    """A checkpoint whose config records the factory ``spec`` (as someone could send it), with weights that fit."""
    model = model or small()
    config = dict(dataset="mnist", seed=0, noise="gaussian", noise_level=0.5, batch_size=8, lr=1e-3,
                  weight_decay=0.0, epochs=1, backend="numpy", model=spec, optimizer="adam", loss="mse", clip=True,
                  data=str(place["work"] / "x.npy"), test_data=None, test_fraction=None, image_size=12,
                  model_sha256=sha256)
    path = place["work"] / "checkpoint.npz"
    save_checkpoint(path, model, optim.Adam(model.parameters()), 1, 0, [0.1] * 2, [0.1], config)
    return path


def run(argv, capsys):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


COMMANDS = {"eval": lambda c: ["eval", c, "--out", "ev"], "denoise": lambda c: ["denoise", c, "in.png", "o.png"],
            "export": lambda c: ["export", c, "o.safetensors"], "inspect": lambda c: ["inspect", c, "--out", "ins"],
            "summary": lambda c: ["summary", c],
            "train --resume": lambda c: ["train", "--resume", c, "--epochs", 2, "--no-progress"]}
SPECS = {"an absolute path": lambda p: f"{p['code'] / 'evil.py'}:small",
         "a path relative to the working directory": lambda p: "evil.py:small",
         "a ../ path": lambda p: "../code/evil.py:small",
         "a module name": lambda p: f"{p['module']}:small"}


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_recorded_factory_is_never_imported_without_the_flag(place, capsys, command, spec):
    recorded = SPECS[spec](place)
    checkpoint = forged(place, recorded)
    status, out, err = run(COMMANDS[command](checkpoint), capsys)
    assert status == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert f"its model is built by {recorded}" in err and err.rstrip().endswith(f"add --model {recorded}"), err
    assert imports(place) == 0, f"{command} imported the factory a checkpoint named"
    assert not any(pathlib.Path(name).exists() for name in ("ev", "o.png", "o.safetensors", "ins"))


@pytest.mark.parametrize("spec", ["sys:exit", "os:abort", "signal:pause", "http.server:test"])
def test_a_standard_library_function_named_by_a_checkpoint_is_never_called(place, spec):
    """In a real process: a regression would exit 0 silently, crash, hang (the timeout fails it) or serve HTTP."""
    checkpoint = forged(place, spec)
    done = subprocess.run([sys.executable, "-m", "minidae", "eval", str(checkpoint)], capture_output=True,
                          text=True, timeout=120, cwd=place["work"], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"add --model {spec}" in done.stderr


def test_the_flag_runs_the_named_file_once_per_command_and_the_checkpoint_records_its_sha256(place, capsys):
    status, _, err = run(["train", "--data", "x.npy", "--image-size", 12, "--model", "../code/evil.py:small",
                          "--epochs", 1, "--batch-size", 6, "--out", "run", "--no-progress"], capsys)
    assert status == 0, err
    assert imports(place) == 1, "a new run imports its factory once"
    digest = hashlib.sha256((place["code"] / "evil.py").read_bytes()).hexdigest()
    config = load_checkpoint("run/checkpoint.npz")["config"]
    assert (config["model"], config["model_sha256"]) == (f"{place['code'] / 'evil.py'}:small", digest)
    assert json.loads(pathlib.Path("run/metrics.json").read_text())["model_sha256"] == digest
    named = ["--model", place["code"] / "evil.py:small"]
    for argv in (["eval", "run/checkpoint.npz", "--test-samples", 2], ["denoise", "run/checkpoint.npz", "in.png",
                 "o.png"], ["export", "run/checkpoint.npz", "o.safetensors"], ["summary", "run/checkpoint.npz"],
                 ["inspect", "run/checkpoint.npz", "--probe-epochs", 1],
                 ["train", "--resume", "run/checkpoint.npz", "--epochs", 2, "--no-progress"]):
        before = imports(place)
        status, _, err = run(argv + named, capsys)
        assert status == 0 and err == "", (argv, err)
        assert imports(place) == before + 1, f"{argv[0]} imported the factory {imports(place) - before} times"


def test_a_factory_file_that_changed_since_training_is_named_in_one_line(place, capsys):
    source = place["code"] / "evil.py"
    checkpoint = forged(place, f"{source}:small", hashlib.sha256(source.read_bytes()).hexdigest())
    assert run(["export", checkpoint, "a.safetensors", "--model", f"{source}:small"], capsys)[2] == ""
    source.write_text(FACTORY + "\n# edited after training\n")
    status, out, err = run(["export", checkpoint, "b.safetensors", "--model", f"{source}:small"], capsys)
    assert status == 0 and err.count("\n") == 1, err
    assert f"{source} differs from the file {checkpoint} was trained with" in err and "going on" in err

    moved = place["work"] / "copy.py"  # the same code elsewhere: the recorded SHA-256 matches, no word
    moved.write_text(FACTORY)
    checkpoint = forged(place, f"{source}:small", hashlib.sha256(moved.read_bytes()).hexdigest())
    assert run(["export", checkpoint, "c.safetensors", "--model", "copy.py:small"], capsys)[:3:2] == (0, "")

    checkpoint = forged(place, f"{source}:small", None)  # an older checkpoint: nothing to compare with
    status, out, err = run(["export", checkpoint, "d.safetensors", "--model", "copy.py:small"], capsys)
    assert status == 0 and "records no SHA-256 of its factory's file" in err and err.count("\n") == 1


def test_a_module_factory_records_its_files_sha256(place, capsys):
    spec = f"{place['module']}:small"
    status, _, err = run(["train", "--data", "x.npy", "--image-size", 12, "--model", spec, "--epochs", 1,
                          "--batch-size", 6, "--out", "run", "--no-progress"], capsys)
    assert status == 0, err
    config = load_checkpoint("run/checkpoint.npz")["config"]
    digest = hashlib.sha256((place["code"] / f"{place['module']}.py").read_bytes()).hexdigest()
    assert (config["model"], config["model_sha256"]) == (spec, digest)


def test_presets_need_no_flag_and_refuse_a_factory_flag(place, capsys):
    from minidae.models import conv_dae
    checkpoint = forged(place, "conv_dae", model=conv_dae())
    assert run(["export", checkpoint, "a.safetensors"], capsys)[:3:2] == (0, "")
    status, _, err = run(["export", checkpoint, "b.safetensors", "--model", "evil.py:small"], capsys)
    assert status == 1 and "holds the built-in model 'conv_dae', which needs no --model" in err
    assert imports(place) == 0
