"""The training job end to end: the example's artefacts, resume equivalence, interruption, NaN stop, CLI."""
import json
import os
import signal

import matplotlib.image
import numpy as np
import pytest

from minidae import backend, cli, optim, train as training
from minidae.checkpoint import load_checkpoint

BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.skipif(not backend.available("cupy"),
                                                                   reason="the CuPy case needs a CUDA GPU and CuPy"))]


def quick(tmp_path, mnist_root, **overrides):
    settings = dict(epochs=1, train_samples=512, test_samples=64, data_dir=mnist_root, out=str(tmp_path),
                    progress=False)
    settings.update(overrides)
    return training.TrainConfig(**settings)


def test_example_smoke_run_leaves_every_artefact(tmp_path, mnist_root, capsys):
    import runpy
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "train_conv_dae.py")
    main = runpy.run_path(example)["main"]
    assert main(["--epochs", "1", "--train-samples", "4096", "--test-samples", "256", "--data-dir", mnist_root,
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1: train loss" in printed and "samples/s" in printed
    for png in ("loss_vs_iters.png", "denoising.png"):
        image = matplotlib.image.imread(tmp_path / png)
        assert image.ndim == 3 and min(image.shape[:2]) > 100
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["recipe"]["lr"] == 1e-3 and metrics["recipe"]["weight_decay"] == 1e-5
    assert metrics["recipe"]["batch_size"] == 64 and metrics["backend"] == "numpy" and metrics["seed"] == 0
    assert {"numpy", "python", "minidae"} <= metrics["versions"].keys()
    assert len(metrics["epochs"]) == 1 and metrics["wall_seconds"] > 0 and metrics["test_images"] == 256
    test = metrics["test"]
    assert {"mse_noisy", "mse_denoised", "psnr_noisy", "psnr_denoised", "ssim_noisy", "ssim_denoised"} <= test.keys()
    assert test["mse_denoised"] < test["mse_noisy"] and test["psnr_denoised"] > test["psnr_noisy"]
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as checkpoint:
        assert int(checkpoint["epoch"]) == 1 and checkpoint["model.conv1.weight"].shape == (16, 1, 3, 3)
        assert "optim.state.0.exp_avg" in checkpoint.files and "optim.param_groups" in checkpoint.files


def final_weights(path):
    return load_checkpoint(os.path.join(path, "checkpoint.npz"))["model"]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_resume_gives_the_same_weights_as_one_run(tmp_path, mnist_root, backend_name):
    # On CuPy the steps are replayed as a CUDA graph, which the resumed run captures anew.
    training.train(quick(tmp_path / "straight", mnist_root, epochs=2, backend=backend_name))
    training.train(quick(tmp_path / "split", mnist_root, epochs=1, backend=backend_name))
    training.train(quick(None, mnist_root, epochs=2, out=None, resume=str(tmp_path / "split" / "checkpoint.npz"),
                         backend=backend_name))
    backend.use("numpy")
    straight, split = final_weights(tmp_path / "straight"), final_weights(tmp_path / "split")
    assert all(np.array_equal(straight[k], split[k]) for k in straight)
    assert len(load_checkpoint(tmp_path / "split" / "checkpoint.npz")["train_losses"]) == 16


def test_ctrl_c_saves_mid_epoch_and_resume_matches(tmp_path, mnist_root, monkeypatch):
    training.train(quick(tmp_path / "straight", mnist_root, epochs=2))
    real_step, calls = training._Run.step, {"n": 0}

    def step_then_ctrl_c(self, noisy, clean):
        calls["n"] += 1
        if calls["n"] == 11:  # in the second epoch, like a user pressing Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, noisy, clean)

    monkeypatch.setattr(training._Run, "step", step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt, match="after iteration 3"):
        training.train(quick(tmp_path / "split", mnist_root, epochs=2))
    saved = load_checkpoint(tmp_path / "split" / "checkpoint.npz")
    assert (saved["epoch"], saved["iteration"]) == (1, 3)
    monkeypatch.setattr(training._Run, "step", real_step)
    training.train(quick(None, mnist_root, epochs=2, out=None, resume=str(tmp_path / "split" / "checkpoint.npz")))
    straight, split = final_weights(tmp_path / "straight"), final_weights(tmp_path / "split")
    assert all(np.array_equal(straight[k], split[k]) for k in straight)


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(tmp_path, mnist_root, monkeypatch):
    real_step, calls = optim.Adam.step, {"n": 0}

    def step_then_poison(self):
        real_step(self)
        calls["n"] += 1
        if calls["n"] == 12:  # 8 steps per epoch: poison the 4th step of epoch 2
            self.params[0].data[...] = np.nan

    monkeypatch.setattr(optim.Adam, "step", step_then_poison)
    with pytest.raises(training.TrainingDiverged, match=r"became nan at iteration 13 \(epoch 2\).*checkpoint.npz"):
        training.train(quick(tmp_path, mnist_root, epochs=3))
    kept = load_checkpoint(tmp_path / "checkpoint.npz")
    assert kept["epoch"] == 1 and kept["iteration"] == 0
    assert all(np.isfinite(v).all() for v in kept["model"].values())


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_cli_eval_denoise_and_gradcheck(tmp_path, mnist_root, capsys, backend_name):
    training.train(quick(tmp_path, mnist_root, backend=backend_name))
    checkpoint = str(tmp_path / "checkpoint.npz")
    assert cli.main(["eval", checkpoint, "--noises", "gaussian", "mask", "--test-samples", "32",
                     "--data-dir", mnist_root, "--backend", backend_name]) == 0
    rows = json.loads((tmp_path / "eval.json").read_text())["rows"]
    assert [r["noise"] for r in rows] == ["gaussian"] * 5 + ["mask"] * 4
    assert matplotlib.image.imread(tmp_path / "psnr_vs_noise.png").ndim == 3
    assert "PSNR denoised" in capsys.readouterr().out

    from PIL import Image
    digit = np.zeros((56, 40), np.uint8)
    digit[10:46, 16:24] = 255
    Image.fromarray(digit).save(tmp_path / "in.png")
    assert cli.main(["denoise", checkpoint, str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--size", "84",
                     "--backend", backend_name]) == 0
    assert Image.open(tmp_path / "out.png").size == (84, 84)

    assert cli.main(["gradcheck", "--max-elements", "5", "--backend", backend_name]) == 0
    table = capsys.readouterr().out
    assert "all layers pass" in table and "ConvTranspose2d" in table and "conv_dae" in table
    backend.use("numpy")


def test_resuming_on_another_backend_warns_that_the_noise_changes(tmp_path, mnist_root, monkeypatch):
    training.train(quick(tmp_path, mnist_root))
    real_load = training.load_checkpoint

    def written_on_a_gpu(path):
        state = real_load(path)
        state["config"]["backend"] = "cupy"
        return state

    monkeypatch.setattr(training, "load_checkpoint", written_on_a_gpu)
    assert load_checkpoint(tmp_path / "checkpoint.npz")["config"]["backend"] == "numpy"  # recorded as run
    with pytest.warns(UserWarning, match=r"written on backend 'cupy' with backend 'numpy'.*generators differ"):
        training.train(quick(None, mnist_root, epochs=2, out=None, resume=str(tmp_path / "checkpoint.npz")))


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert cli.main(["train", "--noise-level", "-1", "--train-samples", "10", "--out", str(tmp_path),
                     "--no-progress", "--data-dir", str(tmp_path)]) == 1
    assert "error:" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "missing.npz")]) == 1
    assert "missing.npz: no such file" in capsys.readouterr().err
    assert cli.main(["denoise", str(tmp_path / "missing.npz"), "in.png", "out.png"]) == 1


def test_the_plain_loop_example_denoises(mnist_root):
    """examples/train_dae_loop.py, the loop a student reads first, on a slice of MNIST: the test MSE falls below
    the noisy input's."""
    import os
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                          "train_dae_loop.py")
    out = subprocess.run([sys.executable, script, "--train-samples", "3200", "--test-samples", "500"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "MINIDAE_DATA": mnist_root})
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip().splitlines()[-1]
    noisy, denoised = [float(word) for word in line.replace(";", " ").split() if "." in word][-2:]
    assert line.startswith("epoch 1:") and denoised < 0.7 * noisy
