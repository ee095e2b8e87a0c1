"""Findings of using the command line as a careful user would, each as it was found.

Every test here failed before its fix: a silent wrong result, a traceback or a misleading line where one clear
error line belongs. Runs are tiny (40 images of one's own, one epoch) and use no public data set.
"""
import shutil

import numpy as np
import pytest
from PIL import Image

from minidae import backend, cli, models, optim
from minidae.checkpoint import load_checkpoint, save_checkpoint
from cli_checks import one_line, own_images


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """One short run on 28 x 28 images of one's own with labels, trained once for the tests below."""
    folder = tmp_path_factory.mktemp("stored")
    own_images(folder / "x.npz")
    backend.use("numpy", seed_value=0)
    assert cli.main(["train", "--data", str(folder / "x.npz"), "--epochs", "1", "--batch-size", "8", "--out",
                     str(folder / "run"), "--no-progress", "--no-diagnostics"]) == 0
    return folder / "run"


@pytest.fixture
def run_dir(tmp_path, stored_run, monkeypatch):
    """A copy of the stored run's folder (cwd: tmp_path, the public sets' cache an empty folder)."""
    monkeypatch.setenv("MINIDAE_DATA", str(tmp_path / "public-cache"))
    monkeypatch.chdir(tmp_path)
    backend.use("numpy", seed_value=0)
    shutil.copytree(stored_run, tmp_path / "run")
    np.save(tmp_path / "x.npy", (np.random.default_rng(2).random((20, 28, 28)) * 255).astype(np.uint8))
    return tmp_path / "run"


def picture(path, size=(40, 30)):
    Image.fromarray((np.random.default_rng(1).random(size) * 255).astype(np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------ --image-size on a public set

def test_image_size_without_data_is_refused_not_ignored(tmp_path, monkeypatch, capsys):
    """`train --image-size 32` on MNIST trained at 28 x 28 and recorded 32: denoise and summary of its checkpoint
    then failed (denoise blamed the user for not resizing)."""
    monkeypatch.setenv("MINIDAE_DATA", str(tmp_path / "public-cache"))
    status = cli.main(["train", "--image-size", "32", "--epochs", "1", "--train-samples", "50",
                       "--out", str(tmp_path / "run"), "--no-progress"])
    err = one_line(capsys)
    assert status == 1 and "--image-size 32" in err and "--data" in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "public-cache").exists()


def test_a_checkpoint_recording_an_image_size_for_mnist_still_denoises(run_dir, capsys):
    """Checkpoints written before that refusal record image_size 32 for a 28 x 28 MNIST run."""
    state = load_checkpoint(run_dir / "checkpoint.npz")
    config = {**state["config"], "data": None, "test_data": None, "test_fraction": None, "image_size": 32}
    model = models.build("conv_dae")
    save_checkpoint(run_dir / "old.npz", model, optim.Adam(model.parameters()), 1, 0, [0.1], [0.1], config)
    assert cli.main(["denoise", str(run_dir / "old.npz"), str(picture(run_dir / "in.png")), "out.png"]) == 0
    assert Image.open("out.png").size == (28, 28)
    assert cli.main(["summary", str(run_dir / "old.npz")]) == 0
    assert "(1, 1, 28, 28)" in capsys.readouterr().out


def test_a_negative_seed_is_named(run_dir, capsys):
    """`train --seed -1` said only "error: expected non-negative integer" (NumPy's words), naming no option."""
    status = cli.main(["train", "--data", str(run_dir.parent / "x.npy"), "--seed", "-1", "--out", "new",
                       "--no-progress"])
    err = one_line(capsys)
    assert status == 1 and "--seed" in err and "-1" in err, err


@pytest.mark.parametrize("size", [8001, 100_000])
def test_denoise_size_has_an_upper_bound(run_dir, capsys, size):
    """`denoise --size 100000` wrote a 10-gigapixel picture (10 GB of memory) without a word."""
    status = cli.main(["denoise", str(run_dir / "checkpoint.npz"), str(picture(run_dir / "in.png")), "out.png",
                       "--size", str(size)])
    err = one_line(capsys)
    assert status == 1 and f"--size {size}" in err and "1..8000" in err, err
    assert not (run_dir.parent / "out.png").exists()


@pytest.mark.parametrize("output", ["out.xyz", "out", "out.psd", "folder"])
def test_denoise_names_an_output_it_cannot_write_before_the_work(run_dir, capsys, output):
    """`denoise ... out.xyz` said only "unknown file extension: .xyz", and an output without a suffix (or a
    folder) "unknown file extension: ", after loading the model and denoising."""
    (run_dir.parent / "folder").mkdir()
    status = cli.main(["denoise", str(run_dir / "checkpoint.npz"), str(picture(run_dir / "in.png")), output])
    err = one_line(capsys)
    assert status == 1 and err.startswith(f"error: {output}: ") and ".png" in err, err
    assert not list(run_dir.parent.glob("out*")) and not list((run_dir.parent / "folder").iterdir())


def test_inspect_of_one_test_image(run_dir, capsys):
    """`inspect --test-samples 1` ended in a traceback (IndexError in the latent plot: one image has one principal
    component)."""
    status = cli.main(["inspect", str(run_dir / "checkpoint.npz"), "--test-samples", "1", "--train-samples", "8",
                       "--probe-epochs", "1", "--out", "ins"])
    assert status == 0, capsys.readouterr().err
    assert (run_dir.parent / "ins" / "latent.png").is_file()


@pytest.mark.parametrize("flag, value", [("--pairs", "0"), ("--pairs", "-1"), ("--probe-epochs", "0"),
                                         ("--probe-epochs", "-1")])
def test_inspect_refuses_counts_below_one(run_dir, capsys, flag, value):
    """`inspect --pairs -1` left out interpolation.png saying the test images hold fewer than two classes;
    `--probe-epochs -1` reported the accuracy of a probe that never trained, as if it had."""
    status = cli.main(["inspect", str(run_dir / "checkpoint.npz"), "--test-samples", "8", "--train-samples", "8",
                       flag, value, "--out", "ins"])
    err = one_line(capsys)
    assert status == 1 and f"{flag} must be at least 1, got {value}" in err, err
    assert not (run_dir.parent / "ins").exists()


@pytest.mark.parametrize("labels", [-(np.arange(40) % 2), (np.arange(40) % 2) * 10**9])
def test_inspect_probes_labels_that_are_not_0_to_k(tmp_path, monkeypatch, capsys, labels):
    """An .npz's labels -1 and 0 (or 0 and 10**9) trained fine, then inspect's probe failed: "CrossEntropyLoss:
    class indices must lie in 0..0" (or an out-of-memory line asking for fewer images, for a 10**9-class probe)."""
    monkeypatch.chdir(tmp_path)
    backend.use("numpy", seed_value=0)
    images = (np.random.default_rng(0).random((40, 28, 28)) * 255).astype(np.uint8)
    np.savez("x.npz", images=images, labels=labels)
    assert cli.main(["train", "--data", "x.npz", "--epochs", "1", "--out", "run", "--no-progress",
                     "--no-diagnostics"]) == 0
    status = cli.main(["inspect", "run/checkpoint.npz", "--probe-epochs", "1", "--out", "ins"])
    assert status == 0, capsys.readouterr().err
    assert "linear probe" in capsys.readouterr().out


def test_resume_refuses_fewer_epochs_than_done(run_dir, capsys):
    """`train --resume` of a 2-epoch checkpoint with `--epochs 1` "succeeded": it trained nothing and rewrote
    metrics.json and the checkpoint with a recipe of 1 epoch beside the 2 epochs' losses."""
    checkpoint = run_dir / "checkpoint.npz"
    assert cli.main(["train", "--resume", str(checkpoint), "--epochs", "2", "--no-progress"]) == 0
    before = checkpoint.read_bytes()
    capsys.readouterr()
    status = cli.main(["train", "--resume", str(checkpoint), "--epochs", "1", "--no-progress"])
    err = one_line(capsys)
    assert status == 1 and "--epochs 1" in err and "2 epochs" in err, err
    assert checkpoint.read_bytes() == before


def test_summary_of_a_missing_checkpoint_says_so(run_dir, capsys):
    """`summary runs/typo/checkpoint.npz` said it was "not a preset, a FILE.py:FACTORY or a checkpoint .npz"."""
    status = cli.main(["summary", "typo/checkpoint.npz"])
    err = one_line(capsys)
    assert status == 1 and "typo/checkpoint.npz" in err and "no such file" in err, err


@pytest.mark.parametrize("command", [["eval", "--noises", "mask"], ["inspect", "--probe-epochs", "1"]])
def test_eval_and_inspect_refuse_an_out_that_is_a_file_before_the_work(run_dir, capsys, monkeypatch, command):
    """`eval --out FILE` evaluated every noise level (minutes on the full test set), then said only
    "error: FILE: File exists"; so did inspect after its probe."""
    (run_dir.parent / "afile").write_text("mine")
    from minidae import train as training
    monkeypatch.setattr(training, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking --out"))
    status = cli.main([command[0], str(run_dir / "checkpoint.npz"), *command[1:], "--out", "afile"])
    err = one_line(capsys)
    assert status == 1 and "--out afile" in err and "not a folder" in err, err
    assert (run_dir.parent / "afile").read_text() == "mine"


def test_a_checkpoint_with_a_negative_seed_is_named(run_dir, capsys):
    """eval of a checkpoint whose config says seed -5 ended in "error: expected non-negative integer" (NumPy's
    words), naming neither the file nor the entry."""
    state = load_checkpoint(run_dir / "checkpoint.npz")
    model = models.build("conv_dae")
    save_checkpoint(run_dir / "edited.npz", model, optim.Adam(model.parameters()), 1, 0, [0.1], [0.1],
                    {**state["config"], "seed": -5})
    status = cli.main(["eval", str(run_dir / "edited.npz"), "--noises", "mask", "--out", "ev"])
    err = one_line(capsys)
    assert status == 1 and "edited.npz" in err and "seed = -5" in err, err


@pytest.mark.parametrize("out", [None, "pictures/run", "pictures"])
def test_a_run_never_writes_into_the_folder_it_trains_on(tmp_path, monkeypatch, capsys, out):
    """`cd pictures; minidae train --data .` wrote runs/<time>/ there, and the next run trained on its plots
    (loss_vs_iters.png, denoising.png) as if they were the user's pictures; so did --out inside --data."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for index in range(12):
        picture(pictures / f"{index}.png")
    monkeypatch.chdir(pictures if out is None else tmp_path)
    argv = ["train", "--data", "." if out is None else "pictures", "--epochs", "1", "--no-progress"]
    status = cli.main(argv + ([] if out is None else ["--out", out]))
    err = one_line(capsys)
    assert status == 1 and "--out" in err and "inside" in err, err
    assert sorted(p.name for p in pictures.iterdir()) == sorted(f"{index}.png" for index in range(12))


@pytest.mark.parametrize("flag", ["--train-samples", "--test-samples"])
def test_more_samples_than_ones_own_data_holds_is_refused(run_dir, capsys, flag):
    """`train --data x.npy --train-samples 1000` on 18 training images trained on 18 and recorded "the first
    1000: ..." in its first line and metrics.json; MNIST's --train-samples 70000 is refused."""
    status = cli.main(["train", "--data", str(run_dir.parent / "x.npy"), flag, "1000", "--epochs", "1",
                       "--out", "new", "--no-progress"])
    err = one_line(capsys)
    count = 18 if flag == "--train-samples" else 2  # 20 images, 2 held out
    assert status == 1 and f"{flag} 1000: there are {count} " in err and f"at most {count}" in err, err
    assert not (run_dir.parent / "new").exists()
