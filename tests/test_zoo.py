"""Every system of the reference material: parameter counts, PyTorch twins, summaries, presets by name."""
import json
import re

import numpy as np
import pytest

from minidae import backend, cli, models
from minidae.checkpoint import load_checkpoint
from minidae.presets import PRESETS

COUNTS = {"conv_dae": 572_097, "fc_dae": 1_132_944, "dense_ae": 222_384, "fc_ae": 468_368, "conv_ae_pool": 74_497,
          "conv_denoiser": 9_585}


def test_parameter_counts_match_the_references():
    assert {name: models.parameter_count(models.build(name)) for name in models.MODELS} == COUNTS
    fc = models.fc_ae()
    assert sum(p.data.size for n, p in fc.named_parameters() if "Encoder" in n) == 233_856
    assert sum(p.data.size for n, p in fc.named_parameters() if "Decoder" in n) == 234_512
    pool = models.conv_ae_pool()
    assert sum(p.data.size for n, p in pool.named_parameters() if n[:5] in ("conv1", "conv2")) == 18_816
    assert sum(p.data.size for n, p in pool.named_parameters() if n[:5] in ("conv3", "conv4", "conv5")) == 55_681


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_model_matches_its_pytorch_twin(xp, torch_parity, name):
    import torch_reference
    x = np.random.default_rng(0).uniform(size=(3, 1, 28, 28))
    torch_parity(models.build(name), torch_reference.TWINS[name](), x, np.float64, label=name)


def test_dense_ae_is_he_normal_with_zero_biases():
    backend.use("numpy", seed_value=0)
    model = models.dense_ae()
    assert abs(model.fc1.weight.data.std() - np.sqrt(2 / 784)) < 0.02 * np.sqrt(2 / 784)
    assert abs(model.fc6.weight.data.std() - np.sqrt(2 / 128)) < 0.05 * np.sqrt(2 / 128)
    assert all(not layer.bias.data.any() for _, layer in model.named_modules() if hasattr(layer, "bias"))


@pytest.mark.parametrize("name", list(models.MODELS))
def test_docstring_tables_agree_with_the_summary(name):
    """Each row "name[+act] ... (N, ...) [params]" of a docstring table is a row of ``minidae summary``."""
    summary = models.summary(name)
    rows = {layer for layer, _, _, _ in summary}
    position = 0
    doc = (models.MODELS[name].__doc__ if name not in ("conv_dae", "conv_ae_pool", "conv_denoiser")
           else {"conv_dae": models.ConvDAE, "conv_ae_pool": models.ConvAEPool,
                 "conv_denoiser": models.ConvDenoiser}[name].__doc__)
    checked = 0
    for line in doc.splitlines():
        match = re.match(r"\s+(\w+)(?:\+\w+)?\s+.*?\(N, ([\d, ]+)\)(?:\s+([\d,]+))?\s*$", line)
        if not match or match.group(1) not in rows:
            continue
        layer, shape = match.group(1), tuple(int(d) for d in match.group(2).split(","))
        while summary[position][0] != layer:  # the next use of that layer (a shared pool appears several times)
            position += 1
        assert summary[position][1][1:] == shape, (name, layer)
        if match.group(3):
            assert summary[position][2] == int(match.group(3).replace(",", "")), (name, layer)
        position += 1
        checked += 1
    assert checked >= 4, f"{name}: the docstring table was not found"


def test_models_and_summary_commands(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for name, count in COUNTS.items():
        assert re.search(rf"{name}\s+{count:,}", out)
    assert cli.main(["summary", "conv_denoiser", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "t_conv1     (4, 8, 7, 7)" in out and re.search(r"total\s+9,585\s+7,371,520", out)


def test_help_lists_the_presets(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in PRESETS:
        assert name + ":" in text


def quick_args(tmp_path, mnist_root, *extra):
    return ["train", *extra, "--train-samples", "60", "--test-samples", "20", "--epochs", "1", "--no-progress",
            "--data-dir", mnist_root, "--out", str(tmp_path)]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_trains_by_name_and_the_checkpoint_rebuilds_its_model(tmp_path, mnist_root, preset):
    assert cli.main(quick_args(tmp_path, mnist_root, "--preset", preset)) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    row = PRESETS[preset]
    assert metrics["model"] == row["model"] and metrics["parameters"] == COUNTS[row["model"]]
    for key in ("optimizer", "lr", "batch_size", "noise", "noise_level", "clip", "loss", "momentum"):
        assert metrics["recipe"][key] == row[key], key
    assert load_checkpoint(tmp_path / "checkpoint.npz")["config"]["model"] == row["model"]
    assert cli.main(["eval", str(tmp_path / "checkpoint.npz"), "--noises", "gaussian", "--test-samples", "8",
                     "--data-dir", mnist_root]) == 0
    assert cli.main(["export", str(tmp_path / "checkpoint.npz"), str(tmp_path / "w.safetensors")]) == 0


def test_flags_override_the_preset(tmp_path, mnist_root):
    assert cli.main(quick_args(tmp_path, mnist_root, "--preset", "fc_ae", "--lr", "0.5", "--momentum", "0.9",
                               "--noise", "gaussian", "--noise-level", "0.3", "--no-clip", "--loss", "bce")) == 0
    recipe = json.loads((tmp_path / "metrics.json").read_text())["recipe"]
    assert (recipe["model"], recipe["optimizer"], recipe["lr"], recipe["momentum"]) == ("fc_ae", "sgd", 0.5, 0.9)
    assert (recipe["noise"], recipe["noise_level"], recipe["clip"], recipe["loss"]) == ("gaussian", 0.3, False, "bce")


def test_resume_without_epochs_finishes_the_checkpoints_run(tmp_path, mnist_root):
    """The Ctrl-C message says "continue with --resume ...": that must finish a 2-epoch run, not run to 10."""
    assert cli.main(quick_args(tmp_path, mnist_root, "--preset", "conv_denoiser")) == 0
    path = tmp_path / "checkpoint.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    config = json.loads(str(arrays["config"]))
    config["epochs"] = 2  # as if a 2-epoch run had been interrupted after its first epoch
    arrays["config"] = np.array(json.dumps(config))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    assert cli.main(["train", "--resume", str(path), "--no-progress", "--data-dir", mnist_root]) == 0
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and state["config"]["model"] == "conv_denoiser"


def test_a_checkpoint_of_an_unknown_or_mismatched_model_is_refused(tmp_path, mnist_root, capsys):
    assert cli.main(quick_args(tmp_path, mnist_root, "--preset", "fc_ae")) == 0
    path = tmp_path / "checkpoint.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    for model, message in (("resnet", "holds an unknown model 'resnet'"),
                           ("conv_ae_pool", "its weights do not fit the model")):
        config = json.loads(str(arrays["config"]))
        config["model"] = model
        arrays["config"] = np.array(json.dumps(config))
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        assert cli.main(["eval", str(path), "--data-dir", mnist_root]) == 1
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_trains_exactly_as_its_pytorch_twin_in_float64(xp, preset):
    """20 steps of each preset's recipe (model, optimiser, noise, loss) in float64, minidae beside its twin:
    where the full float32 runs differ by more than rounding, it is rounding that the recipe amplifies."""
    torch = pytest.importorskip("torch")
    import torch_reference
    from minidae import nn, train
    from parity import relative_error
    config = train.TrainConfig.from_preset(preset)
    backend.seed(0)
    ours = models.build(preset).to(np.float64)
    theirs = torch_reference.TWINS[preset]().double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    our_opt = train.make_optimizer(config, ours.parameters())
    their_opt = torch_reference.torch_optimizer(config, theirs.parameters())
    criterion, rng = nn.MSELoss(), np.random.default_rng(1)
    for step in range(20):
        clean = rng.uniform(size=(config.batch_size, 1, 28, 28))
        noisy = clean if config.noise == "none" else clean + config.noise_level * rng.normal(size=clean.shape)
        noisy = np.clip(noisy, 0, 1) if config.clip else noisy
        our_opt.zero_grad()
        loss = criterion(ours(xp.asarray(noisy)), xp.asarray(clean))
        ours.backward(criterion.backward())
        our_opt.step()
        their_opt.zero_grad()
        their_loss = torch.nn.functional.mse_loss(theirs(torch.tensor(noisy)), torch.tensor(clean))
        their_loss.backward()
        their_opt.step()
        assert abs(float(loss) - their_loss.item()) <= 1e-9 * their_loss.item(), f"step {step}"
    their_params = dict(theirs.named_parameters())
    errors = {name: relative_error(p.data, their_params[name].detach().numpy()) for name, p in ours.named_parameters()}
    assert max(errors.values()) < 1e-9, errors


def test_torch_reference_runs_end_to_end(tmp_path, mnist_root):
    """The PyTorch reference's command (what bench.py's trainer rows and docs/results.md run): one short
    epoch through minidae's data pipeline and evaluator, writing the metrics minidae's trainer writes."""
    pytest.importorskip("torch")
    import json

    import torch_reference
    torch_reference.main(["--epochs", "1", "--train-samples", "256", "--test-samples", "64", "--data-dir", mnist_root,
                          "--out", str(tmp_path), "--threads", "1"])
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    assert len(metrics["epoch_seconds"]) == 1 and metrics["epochs"][0]["epoch"] == 1
    assert 0 < metrics["test"]["mse_noisy"] < 1 and 0 < metrics["test"]["mse_denoised"] < 1
