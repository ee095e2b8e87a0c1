"""Per-layer diagnostics (minidae.diagnostics) and the forward hooks they use."""
import json

import numpy as np

from minidae import backend, models, nn, optim
from minidae.diagnostics import Diagnostics, plot_layers


def test_forward_hooks_see_every_call_and_can_be_removed(xp):
    layer, seen = nn.ReLU(), []
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append((module, inputs[0], output)))
    x = xp.asarray(np.array([-1.0, 2.0]))
    y = layer(x)
    assert len(seen) == 1 and seen[0][0] is layer and seen[0][1] is x and seen[0][2] is y
    handle.remove()
    handle.remove()
    layer(x)
    assert len(seen) == 1


def train(model, steps, every, x, diagnostics=True, lr=1e-3):
    backend.seed(0)
    opt, loss = optim.Adam(model.parameters(), lr=lr), nn.MSELoss()
    recorder = Diagnostics(model, every=every) if diagnostics else None
    for iteration in range(steps):
        if recorder:
            recorder.before_step(iteration)
        opt.zero_grad()
        loss(model(x), x)
        model.backward(loss.backward())
        opt.step()
        if recorder:
            recorder.after_step(iteration, x)
    return recorder


def test_records_every_k_iterations_and_changes_no_number(xp, tmp_path):
    x = xp.asarray(np.random.default_rng(0).uniform(size=(8, 1, 28, 28)), dtype=np.float32)
    backend.seed(1)
    watched = models.build("conv_denoiser")
    backend.seed(1)
    plain = models.build("conv_denoiser")
    record = train(watched, 12, 5, x).as_dict()
    train(plain, 12, 5, x, diagnostics=False)
    for key, value in plain.state_dict().items():  # the recording changed nothing in training
        assert np.array_equal(backend.to_numpy(watched.state_dict()[key]), value), key
    assert record["iterations"] == [0, 5, 10] and record["every"] == 5
    assert list(record["gradient_norm"]) == [name for name, _ in watched.named_parameters()]
    outputs = record["output"]
    assert list(outputs)[:3] == ["conv1", "relu1", "pool"] and "flatten" not in " ".join(outputs)
    relu = outputs["relu1"]
    assert all(0 < z < 1 for z in relu["zeros"]) and all(s > 0 for s in relu["std"])
    assert all(r > 0 for r in record["update_ratio"]["conv1.weight"])
    (tmp_path / "m.json").write_text(json.dumps(record, allow_nan=False))
    plot_layers(tmp_path / "layers.png", record)
    assert (tmp_path / "layers.png").stat().st_size > 10000


def test_dead_units_and_exploding_updates_show(xp):
    """The signs docs/backprop.md describes: a ReLU whose inputs are all negative is all zeros; a huge learning
    rate gives update ratios far above 1e-3."""
    x = xp.asarray(np.random.default_rng(2).uniform(size=(4, 1, 28, 28)), dtype=np.float32)
    backend.seed(3)
    model = models.build("conv_dae")
    model.conv1.bias.data[...] = -100  # every pre-activation negative: conv1's ReLU is dead
    record = train(model, 1, 1, x, lr=1e-1).as_dict()
    assert record["output"]["relu1"]["zeros"][0] == 1.0
    assert max(v[0] for v in record["update_ratio"].values()) > 1e-2


def test_a_model_without_layers_list_records_its_leaf_modules(xp):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 4))
    record = train(model, 2, 1, xp.asarray(np.ones((2, 4)), dtype=np.float32)).as_dict()
    assert list(record["output"]) == ["1", "2", "3"]


def test_the_trainer_records_them_resumes_them_and_can_leave_them_out(tmp_path, mnist_root):
    """metrics.json's ``layers`` and layers.png from a run; a resumed run carries the records on from its
    checkpoint; --no-diagnostics writes neither and trains to the same weights."""
    from minidae import cli
    from minidae.checkpoint import load_checkpoint
    common = ["train", "--train-samples", "640", "--test-samples", "64", "--data-dir", mnist_root, "--no-progress"]
    assert cli.main(common + ["--epochs", "1", "--out", str(tmp_path / "on")]) == 0
    first = json.loads((tmp_path / "on" / "metrics.json").read_text())["layers"]
    assert first["iterations"] == [0, 9] and (tmp_path / "on" / "layers.png").stat().st_size > 10000  # and the last
    assert cli.main(["train", "--resume", str(tmp_path / "on" / "checkpoint.npz"), "--epochs", "3",
                     "--data-dir", mnist_root, "--no-progress"]) == 0
    resumed = json.loads((tmp_path / "on" / "metrics.json").read_text())["layers"]
    assert resumed["iterations"] == [0, 9, 25, 29] and resumed["gradient_norm"]["conv1.weight"][0] == \
        first["gradient_norm"]["conv1.weight"][0], "the records before the resume are kept"
    assert cli.main(common + ["--epochs", "3", "--no-diagnostics", "--out", str(tmp_path / "off")]) == 0
    assert "layers" not in json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert not (tmp_path / "off" / "layers.png").exists()
    on, off = (load_checkpoint(tmp_path / d / "checkpoint.npz")["model"] for d in ("on", "off"))
    for key in off:
        np.testing.assert_array_equal(on[key], off[key], err_msg=key)


def test_minidae_inspect_on_a_trained_checkpoint(tmp_path, mnist_root, capsys):
    from minidae import cli
    assert cli.main(["train", "--train-samples", "640", "--test-samples", "64", "--data-dir", mnist_root,
                     "--epochs", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    assert cli.main(["inspect", str(tmp_path / "checkpoint.npz"), "--data-dir", mnist_root, "--train-samples",
                     "500", "--test-samples", "200", "--probe-epochs", "2", "--out", str(tmp_path / "look")]) == 0
    out = capsys.readouterr().out
    assert "linear probe" in out and "from the 256-number code" in out
    report = json.loads((tmp_path / "look" / "inspect.json").read_text())
    assert (report["train_images"], report["test_images"], report["code_size"]) == (500, 200, 256)
    assert 0.1 < report["probe_accuracy_code"] <= 1 and report["skipped"] == {}
    for name in ("latent.png", "interpolation.png", "filters.png", "feature_maps.png"):
        assert (tmp_path / "look" / name).stat().st_size > 1000, name
