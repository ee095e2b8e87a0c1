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
