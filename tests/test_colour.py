"""Colour end to end (issue 27, item 2) and the one picture-reading rule of train --data and denoise (issue 25).

Pictures in colour (N, 3, S, S) by the documented rule; the presets with a channel count (the spec network with 3
in and 3 out, its parameter count, its forward against the PyTorch twin); noise and metrics over colour (PSNR and
SSIM against scikit-image); arrays of 3 channels and what is refused; the run's first line.
"""
import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from minidae import cli, metrics, models
from minidae.data import DataError, load_images
from minidae.data.images import read_picture
from minidae.data.noise import apply_noise
from minidae.train import TrainConfig


def colour_folder(root, count=4, seed=0):
    """``count`` RGB pictures of 40 x 30 (not square) in two class folders; returns their arrays by path."""
    rng = np.random.default_rng(seed)
    made = {}
    for index in range(count):
        folder = root / ("red", "blue")[index % 2]
        folder.mkdir(parents=True, exist_ok=True)
        array = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"{index}.png")
        made[folder / f"{index}.png"] = array
    return made


def test_a_folder_in_colour_is_rgb_centre_cropped_and_resized_channels_first(tmp_path):
    made = colour_folder(tmp_path / "pictures")
    found = load_images(tmp_path / "pictures", channels=3)
    assert found.images.shape == (4, 3, 28, 28) and found.images.dtype == np.uint8 and found.channels == 3
    assert found.classes == ["blue", "red"] and found.pictures
    for got, (path, array) in zip(found.images, sorted(made.items(), key=lambda kv: (kv[0].parent.name, kv[0].name))):
        expected = np.asarray(ImageOps.fit(Image.fromarray(array), (28, 28), method=Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(got, expected.transpose(2, 0, 1))
    gray = load_images(tmp_path / "pictures").images
    assert gray.shape == (4, 28, 28), "channels=1 stays (N, S, S) grayscale"


def test_arrays_of_three_channels_and_what_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, size=(5, 3, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "colour.npy", colour)
    np.testing.assert_array_equal(load_images(tmp_path / "colour.npy", channels=3).images, colour)
    np.save(tmp_path / "last.npy", colour.transpose(0, 2, 3, 1))
    np.save(tmp_path / "gray.npy", colour[:, 0])
    for path, channels, message in (("colour.npy", 1, r"3 channels \(colour\).*give --channels 3"),
                                    ("last.npy", 3, r"channels-last.*transpose\(0, 3, 1, 2\)"),
                                    ("gray.npy", 3, r"expected colour images of shape \(N, 3, H, W\).*grayscale")):
        with pytest.raises(DataError, match=message):
            load_images(tmp_path / path, channels=channels)
    with pytest.raises(ValueError, match="channels must be 1 .* or 3"):
        load_images(tmp_path / "colour.npy", channels=2)


def test_every_preset_takes_a_channel_count_and_the_spec_network_has_572675_parameters(xp):
    counts = {name: models.parameter_count(models.build(name, channels=3)) for name in models.MODELS}
    assert counts["conv_dae"] == 572_675 == models.parameter_count(models.conv_dae()) + 2 * (2 * 16 * 9) + 2
    x = xp.asarray(np.random.default_rng(2).uniform(size=(2, 3, 28, 28)), dtype=np.float32)
    for name in models.MODELS:
        model = models.build(name, channels=3)
        assert tuple(model(x).shape) == (2, 3, 28, 28), name
        z = model.encode(x)
        assert tuple(model.decode(z).shape) == (2, 3, 28, 28), name
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 1, 28, 28\).*channels=3 for colour"):
        models.conv_dae()(x)


def test_the_three_channel_spec_network_is_its_pytorch_twin_in_float64(xp, torch_parity):
    """benchmarks/torch_reference.py's twin with conv1 taking and conv6 giving 3 channels (as
    docs/tools/colour_run.py builds it): output, input gradient and every parameter gradient."""
    import torch
    import torch_reference
    twin = torch_reference.TorchConvDAE()
    twin.conv1 = torch.nn.Conv2d(3, 16, 3, stride=2, padding=2)
    twin.conv6 = torch.nn.ConvTranspose2d(16, 3, 3, stride=2, padding=3, output_padding=1)
    x = np.random.default_rng(3).uniform(size=(3, 3, 28, 28))
    torch_parity(models.conv_dae(channels=3), twin, x, np.float64, label="conv_dae, 3 channels")


def test_noise_is_drawn_for_each_channel_and_metrics_cover_colour():
    skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is the reference for colour SSIM")
    rng = np.random.default_rng(5)
    clean = rng.uniform(size=(3, 3, 28, 28)).astype(np.float32)
    noisy = apply_noise("gaussian", clean, 0.2, seed=1)
    assert not np.allclose(noisy[:, 0] - clean[:, 0], noisy[:, 1] - clean[:, 1]), "each channel its own noise"
    ours_ssim, ours_psnr = metrics.ssim(noisy, clean), metrics.psnr(noisy, clean)
    for k in range(3):
        theirs = skimage_metrics.structural_similarity(noisy[k].astype(np.float64), clean[k].astype(np.float64),
                                                       channel_axis=0, gaussian_weights=True, sigma=1.5,
                                                       use_sample_covariance=False, data_range=1)
        assert ours_ssim[k] == pytest.approx(theirs, rel=1e-10)
        assert ours_psnr[k] == pytest.approx(skimage_metrics.peak_signal_noise_ratio(clean[k], noisy[k],
                                                                                     data_range=1), rel=1e-6)
    np.testing.assert_allclose(metrics.mse(noisy, clean), ((noisy - clean) ** 2).mean(axis=(1, 2, 3)), rtol=1e-6)
    gray = metrics.ssim(noisy[:, :1], clean[:, :1])  # one channel: as before, (N, 1, H, W) and (N, H, W) alike
    np.testing.assert_allclose(gray, metrics.ssim(noisy[:, 0], clean[:, 0]))


def test_the_runs_first_line_says_what_became_of_the_colour(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINIDAE_DATA", str(tmp_path / "cache"))
    colour_folder(tmp_path / "pictures", count=10)
    for channels, start in ((1, "pictures made grayscale (--channels 1, the default; --channels 3 keeps their "
                                "colour); training on 9 images"),
                            (3, "pictures kept in colour (RGB) (--channels 3; --channels 1 makes them grayscale); "
                                "training on 9 images")):
        assert cli.main(["train", "--data", str(tmp_path / "pictures"), "--channels", str(channels), "--epochs", "1",
                         "--batch-size", "4", "--out", str(tmp_path / f"run{channels}"), "--no-progress",
                         "--no-diagnostics"]) == 0
        assert capsys.readouterr().out.startswith(start)
        metrics_json = json.loads((tmp_path / f"run{channels}" / "metrics.json").read_text())
        assert metrics_json["recipe"]["channels"] == channels
        assert metrics_json["parameters"] == (572_097 if channels == 1 else 572_675)
    assert cli.main(["train", "--channels", "3", "--epochs", "1", "--out", str(tmp_path / "mnist")]) == 1
    err = capsys.readouterr().err
    assert err == "error: --channels 3 needs --data (pictures of one's own): mnist is grayscale\n"
    with pytest.raises(ValueError, match="--channels must be 1 .* or 3"):
        TrainConfig(data=str(tmp_path / "pictures"), channels=4).check()


# ----------------------------------------------------------------------- issue 25: one picture-reading rule

def stroke_drawing(ink_level):
    """A 28 x 36 (not square) picture: a stroke of ``ink_level`` on a transparent background (alpha 0 around it,
    its colour there black), and the same stroke opaque on the paper a viewer would need to see it."""
    rgba = np.zeros((28, 36, 4), np.uint8)
    rgba[4:24, 14:20] = (ink_level, ink_level, ink_level, 255)
    return rgba


def test_a_transparent_png_with_white_ink_reads_as_light_ink_on_black_for_training_and_denoise(tmp_path):
    """The issue's case: white ink on a transparent background, laid on white, trained as a blank image."""
    Image.fromarray(stroke_drawing(255)).save(tmp_path / "white_ink.png")
    opaque = stroke_drawing(255)[..., 0]  # white on black, no transparency
    Image.fromarray(opaque).save(tmp_path / "white_on_black.png")
    read = load_images(tmp_path / "white_ink.png").images[0]
    assert read.max() == 255 and read.min() == 0 and read[14, 14] == 255 and read[0, 0] == 0, "not blank"
    np.testing.assert_array_equal(read, load_images(tmp_path / "white_on_black.png").images[0])
    Image.fromarray(stroke_drawing(0)).save(tmp_path / "black_ink.png")  # dark ink: white paper, as a viewer
    dark = load_images(tmp_path / "black_ink.png").images[0]
    assert dark[0, 0] == 255 and dark[14, 14] == 0
    colour = read_picture(tmp_path / "white_ink.png", 28, channels=3)
    assert colour.shape == (3, 28, 28) and all(np.array_equal(c, read) for c in colour)


def test_denoise_reads_its_picture_by_the_rule_train_reads_with(tmp_path, monkeypatch, capsys):
    """One function for both: denoise's input is what load_images makes of the same file (cropped, not
    stretched; transparency on the paper that shows the ink), traced through read_picture."""
    from minidae.data import images as images_module
    np.save(tmp_path / "train.npy", np.random.default_rng(6).integers(0, 256, (20, 28, 28), dtype=np.uint8))
    assert cli.main(["train", "--data", str(tmp_path / "train.npy"), "--epochs", "1", "--batch-size", "8", "--out",
                     str(tmp_path / "run"), "--no-progress", "--no-diagnostics"]) == 0
    Image.fromarray(stroke_drawing(255)).save(tmp_path / "white_ink.png")
    seen = []
    real = images_module.read_picture
    monkeypatch.setattr(images_module, "read_picture", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    model_inputs = []
    from minidae.models import Chain
    original = Chain.__call__
    monkeypatch.setattr(Chain, "__call__", lambda self, x, **k: model_inputs.append(np.array(x)) or original(self, x, **k))
    assert cli.main(["denoise", str(tmp_path / "run" / "checkpoint.npz"), str(tmp_path / "white_ink.png"),
                     str(tmp_path / "out.png")]) == 0
    assert len(seen) == 1, "denoise reads through minidae.data.images.read_picture"
    np.testing.assert_array_equal(model_inputs[-1][0, 0], load_images(tmp_path / "white_ink.png").images[0] / np.float32(255))
