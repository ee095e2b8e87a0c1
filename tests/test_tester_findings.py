"""A tester's findings on the command line, each as it was found: a test set that is the training set, said
nowhere; and lines whose wording was wrong or unclear. Runs are tiny (a dozen pictures of one's own, one epoch).
(The tester's SIGHUP finding: tests/test_hangup.py.)
"""
import shutil

import numpy as np
import pytest
from PIL import Image

from minidae import backend, cli
from cli_checks import one_line


@pytest.fixture
def here(tmp_path, monkeypatch):
    """cwd: tmp_path, the public sets' cache an empty folder."""
    monkeypatch.setenv("MINIDAE_DATA", str(tmp_path / "public-cache"))
    monkeypatch.chdir(tmp_path)
    backend.use("numpy", seed_value=0)
    return tmp_path


def pictures(folder, count, seed=0):
    """``count`` different 28 x 28 grayscale pictures in ``folder``."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(folder / f"{index}.png")
    return folder


def train(data, test_data, out, *extra):
    return cli.main(["train", "--data", str(data), "--test-data", str(test_data), "--epochs", "1", "--batch-size",
                     "8", "--out", str(out), "--no-progress", "--no-diagnostics", *extra])


# ------------------------------------------------------------------------------ the test set is the training set

@pytest.mark.parametrize("test_data", ["pics", "pics/", "copy"])
def test_test_data_that_is_the_training_data_is_named_in_one_warning(here, capsys, test_data):
    """`train --data pics --test-data pics` trained and reported a test loss as if on unseen pictures."""
    pictures(here / "pics", 10)
    shutil.copytree(here / "pics", here / "copy")  # the same files under another name
    assert train("pics", test_data, "run") == 0
    err = one_line(capsys)
    assert err.startswith(f"warning: --test-data {here / test_data.rstrip('/')}: its 10 images are all training "
                          f"images (--data {here / 'pics'})"), err
    assert "the test loss measures memorisation, not the denoising of unseen pictures" in err, err
    assert (here / "run" / "metrics.json").exists()


def test_test_data_that_shares_some_training_pictures_says_how_many(here, capsys):
    pictures(here / "pics", 10)
    pictures(here / "test", 4, seed=1)
    shutil.copy(here / "pics" / "3.png", here / "test" / "9.png")
    assert train("pics", "test", "run") == 0
    err = one_line(capsys)
    assert err.startswith(f"warning: --test-data {here / 'test'}: 1 of its 5 images is also a training image "
                          f"(--data {here / 'pics'})"), err
    assert "memorisation" in err


def test_test_data_apart_from_the_training_data_warns_of_nothing(here, capsys):
    pictures(here / "pics", 10)
    pictures(here / "test", 4, seed=1)
    assert train("pics", "test", "run") == 0
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------ wording

def test_one_image_is_one_image_not_1_images(here, capsys):
    """A folder of one picture: "1 images from the folder ...", "training on 1 images", "test set (1 images)"."""
    pictures(here / "one", 1)
    pictures(here / "other", 1, seed=1)
    assert train("one", "other", "run") == 0
    out = capsys.readouterr().out
    assert f"training on 1 image (1 image from the folder {here / 'one'}), testing on 1 (1 image from" in out, out
    assert "test set (1 image): " in out and "1 images" not in out, out
    assert cli.main(["train", "--data", "one", "--epochs", "1", "--out", "run2", "--no-progress"]) == 1
    err = one_line(capsys)
    assert "too few images (1) to hold out" in err, err  # it said "1 images are too few"
    np.save(here / "x.npy", np.zeros((1, 28, 28), dtype=np.uint8))
    assert train("one", "x.npy", "run3", "--test-samples", "2") == 1
    err = one_line(capsys)
    assert "there is 1 test image (1 image from" in err, err


def test_a_file_that_is_no_picture_is_named_by_its_path_not_by_a_reader(here, capsys):
    """It said "cannot identify image file <_io.BufferedReader name=4>": Pillow's repr of the open file."""
    pictures(here / "pics", 3)
    (here / "pics" / "notes.png").write_text("not a picture")
    assert cli.main(["train", "--data", "pics", "--epochs", "1", "--out", "run", "--no-progress"]) == 1
    err = one_line(capsys)
    assert err == (f"error: {here / 'pics' / 'notes.png'}: not a readable image (Pillow cannot identify it as a "
                   f"picture); remove it or convert it"), err


def test_resume_with_a_changed_recipe_flag_is_refused_in_a_clear_sentence(here, capsys):
    """It said "... continues that run with its own recipe, but --lr 0.01 (the checkpoint's: 0.001) differ from it;
    drop it (--epochs may change), ...": "differ" for one flag, and "it" the recipe or the checkpoint."""
    pictures(here / "pics", 10)
    pictures(here / "test", 2, seed=1)
    assert train("pics", "test", "run") == 0
    capsys.readouterr()
    resume = ["train", "--resume", "run/checkpoint.npz", "--epochs", "2", "--no-progress"]
    assert cli.main(resume + ["--lr", "0.01"]) == 1
    assert one_line(capsys) == ("error: --resume run/checkpoint.npz continues a run whose recipe has --lr 0.001 (not "
                                "0.01); leave --lr out (with --resume, only --epochs may change), or start a new run "
                                "without --resume")
    assert cli.main(resume + ["--batch-size", "4", "--no-clip", "--test-samples", "1"]) == 1
    assert one_line(capsys) == ("error: --resume run/checkpoint.npz continues a run whose recipe has --batch-size 8 "
                                "(not 4), clipped noisy inputs (not --no-clip) and no --test-samples (not 1); leave "
                                "--batch-size, --no-clip and --test-samples out (with --resume, only --epochs may "
                                "change), or start a new run without --resume")


@pytest.mark.parametrize("model, shape, reason", [
    ("fc_ae", "1 32 32", "Linear: expected a floating-point input of shape (*, 784), got (1, 1024) float32"),
    ("conv_dae", "3 28 28", "Conv2d: expected a floating-point input of shape (N, 1, H, W) or (1, H, W)")])
def test_summary_names_an_input_shape_the_model_cannot_take(capsys, model, shape, reason):
    """It said only "error: Linear: expected ...", naming neither the shape given nor the model."""
    assert cli.main(["summary", model, "--input-shape", *shape.split()]) == 1
    err = one_line(capsys)
    assert err.startswith(f"error: summary {model}: the model cannot take an input of shape "
                          f"{shape.replace(' ', ' x ')} (--input-shape {shape}): {reason}"), err


def test_a_lab_tiff_is_read_in_grayscale_through_rgb(here, monkeypatch):
    """A LAB-mode TIFF read in grayscale said "conversion from LAB to RGB not supported" (Pillow converts LAB to RGB
    only); through RGB it reads as the RGB reading's luma. A mode Pillow cannot convert at all is named."""
    from minidae.data.images import DataError, read_picture
    Image.new("LAB", (40, 30), (140, 20, 230)).save(here / "lab.tif")
    rgb = read_picture(here / "lab.tif", 28, channels=3)
    gray = read_picture(here / "lab.tif", 28)
    luma = Image.fromarray(rgb.transpose(1, 2, 0), mode="RGB").convert("L")
    assert gray.shape == (28, 28) and np.array_equal(gray, np.asarray(luma)) and gray.max() > 0

    def refuse(image, mode=None, *args, **kwargs):
        raise ValueError(f"conversion from {image.mode} to {mode} not supported")

    monkeypatch.setattr(Image.Image, "convert", refuse)
    with pytest.raises(DataError) as refused:
        read_picture(here / "lab.tif", 28)
    assert str(refused.value) == (f"{here / 'lab.tif'}: Pillow cannot convert its colour mode LAB to grayscale; "
                                  f"save it as RGB or grayscale")
