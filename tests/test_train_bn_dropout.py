"""BatchNorm2d and Dropout in a Sequential trained by the trainer (minidae.train), registered as a model for the
test's duration: the loss falls, evaluation runs in eval mode and training resumes in training mode, and the
running statistics go through the checkpoint, --resume and the CLI."""
import numpy as np
import pytest

from minidae import backend, cli, models, nn, train as training
from minidae.checkpoint import load_checkpoint
from minidae.nn.module import is_grad_enabled


class Probe(nn.Module):
    """The identity, noting at every call whether the model was in training mode and gradients were on."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, ctx, x):
        self.calls.append((self.training, is_grad_enabled()))
        return x

    def backprop(self, ctx, dy):
        return dy


def tiny_bn_net():
    """(N, 1, 28, 28) -> (N, 1, 28, 28) in [0, 1] through both new layers (and Dropout2d after a convolution)."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout2d(0.1),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=None), nn.ReLU(), nn.Dropout(0.1),
                         Probe(), nn.Conv2d(8, 1, 3, padding=1), nn.Sigmoid())


@pytest.fixture
def registered(monkeypatch):
    """Register "tiny_bn" in models.MODELS for this test; returns the list of every model built by that name."""
    built = []

    def build():
        built.append(tiny_bn_net())
        return built[-1]

    monkeypatch.setitem(models.MODELS, "tiny_bn", build)
    return built


def config(tmp_path, mnist_root, **overrides):
    settings = dict(model="tiny_bn", epochs=2, batch_size=32, lr=3e-3, train_samples=256, test_samples=64,
                    data_dir=mnist_root, out=str(tmp_path), progress=False)
    settings.update(overrides)
    return training.TrainConfig(**settings)


def test_a_sequential_with_batchnorm_and_dropout_trains_and_evaluates_in_eval_mode(tmp_path, mnist_root, registered):
    training.train(config(tmp_path, mnist_root))
    model, = registered
    losses = load_checkpoint(tmp_path / "checkpoint.npz")["train_losses"]
    assert len(losses) == 16 and np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
    calls = model[8].calls
    assert [training_mode for training_mode, grad in calls if grad] == [True] * 16, "training steps in train mode"
    evaluations = [training_mode for training_mode, grad in calls if not grad]
    assert evaluations and not any(evaluations), "evaluate and denoise_examples must run the model in eval mode"
    assert all(module.training for _, module in model.named_modules()), "train() again after evaluating"
    assert int(model[1].num_batches_tracked) == int(model[5].num_batches_tracked) == 16

    # Evaluation in eval mode is deterministic: Dropout is the identity and BatchNorm2d uses running statistics.
    images, _ = training.load_split("mnist", "test", mnist_root, 64, progress=False)
    first, second = (training.evaluate(model, images, "gaussian", 0.5, seed=0) for _ in range(2))
    assert first == second and model.training


def test_running_statistics_go_through_the_checkpoint_resume_and_the_cli(tmp_path, mnist_root, registered):
    training.train(config(tmp_path, mnist_root, epochs=1))
    path = tmp_path / "checkpoint.npz"
    saved = load_checkpoint(path)["model"]
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked", "5.num_batches_tracked"} <= saved.keys()
    np.testing.assert_array_equal(saved["1.running_var"], registered[0][1].state_dict()["running_var"])
    assert saved["1.num_batches_tracked"].dtype == np.int64 and int(saved["1.num_batches_tracked"]) == 8

    training.train(config(None, mnist_root, epochs=2, out=None, resume=str(path)))
    resumed = registered[1]
    assert int(resumed[1].num_batches_tracked) == 16, "the resumed run started from the saved counter"
    assert int(load_checkpoint(path)["model"]["5.num_batches_tracked"]) == 16

    backend.use("numpy", seed_value=0)
    from PIL import Image
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(tmp_path / "in.png")
    assert cli.main(["denoise", str(path), str(tmp_path / "in.png"), str(tmp_path / "out.png")]) == 0
    assert registered[2][8].calls == [(False, False)], "minidae denoise runs the model in eval mode, keeping nothing for a backward"
    assert cli.main(["eval", str(path), "--noises", "gaussian", "--test-samples", "16", "--data-dir", mnist_root]) == 0
    assert registered[3][8].calls and not any(mode for mode, _ in registered[3][8].calls), \
        "minidae eval runs the model in eval mode"


def test_resume_draws_the_same_dropout_masks_as_one_run(tmp_path, mnist_root, registered):
    """The checkpoint keeps the backend generator's state, so that a run resumed after its first epoch ends with
    the very weights and running statistics of an uninterrupted run, dropout masks included."""
    training.train(config(tmp_path / "straight", mnist_root))
    training.train(config(tmp_path / "split", mnist_root, epochs=1))
    assert load_checkpoint(tmp_path / "split" / "checkpoint.npz")["rng_state"]["bit_generator"] == "PCG64"
    training.train(config(None, mnist_root, out=None, resume=str(tmp_path / "split" / "checkpoint.npz")))
    straight, split = (load_checkpoint(tmp_path / run / "checkpoint.npz")["model"] for run in ("straight", "split"))
    assert straight.keys() == split.keys()
    for key in straight:
        np.testing.assert_array_equal(straight[key], split[key], err_msg=key)
